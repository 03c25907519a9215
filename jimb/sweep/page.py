"""A sweep's report page, drawn from W/sweep.json alone (no training, no data loading).

W/figures/cd_<metric>.png        critical-difference diagram per ranked metric (Nemenyi)
W/figures/heatmap_<metric>.png   method x task means per ranked metric, each task's best marked
W/report.html                    one self-contained page (figures embedded): ranked tables (seed
                                 001's Table II layout), Friedman / Iman-Davenport, Nemenyi and
                                 Wilcoxon-Holm results, per-class tables when the sweep asks for
                                 them, and every cell with a link to its own report.html
Written after every aggregation (tables.write), so an unfinished sweep has a page that says what
is missing; `--mode=report` on a sweep root writes it again.
"""

from __future__ import annotations

import math
import pathlib

from etils import epath
import numpy as np

from jimb import files, multihost
from jimb.render import html
from jimb.render import figures, stats_figures

PER_CLASS = ("precision", "recall", "f1")


def _number(value, digits: int = 4) -> str:
  return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _p(value) -> str:
  return "-" if value is None or math.isnan(value) else f"{value:.3g}"


def _display(summary: dict, metric: str) -> str:
  return summary.get("display", {}).get(metric, metric)


def _folder(cell: dict) -> str:
  """The cell's folder under the sweep root (cells are its direct children)."""
  return pathlib.PurePath(cell["workdir"]).name


def heatmap_data(summary: dict, metric: str) -> tuple[list[str], list[str], np.ndarray]:
  """(methods, tasks, [methods, tasks] mean over folds of each finished cell; NaN: none)."""
  methods = summary["methods"]
  tasks = list(dict.fromkeys(c["task"] for c in summary["cells"]))
  values = np.full((len(methods), len(tasks)), np.nan)
  for c in summary["cells"]:
    if c["status"] == "finished":
      values[methods.index(c["method"]), tasks.index(c["task"])] = c["mean_std"][metric]["mean"]
  return methods, [t or "all" for t in tasks], values


def _status(summary: dict) -> str:
  cells = summary["cells"]
  missing = [c["name"] for c in cells if c["status"] != "finished"]
  text = (f"{len(cells) - len(missing)} of {len(cells)} cells finished; methods "
          f"{', '.join(summary['methods'])}; Wilcoxon-Holm control {summary['control']}; "
          f"alpha {summary['alpha']}.")
  if not missing:
    return html.paragraph(text)
  return html.paragraph(
      f"INCOMPLETE SWEEP: {text} Unfinished (not started, running or failed): "
      f"{', '.join(missing)}. Ranks and tests below use only the (task, fold) blocks where every "
      "method finished; run the sweep again to finish the rest.")


def _ranked(summary: dict) -> str:
  """Seed 001's Table II: mean over complete blocks (average rank); the best mean marked."""
  names = summary["metrics"]
  ranking = summary["ranking"]
  best = {n: max((v["mean"] for v in ranking[n].values() if not math.isnan(v["mean"])),
                 default=None) for n in names}
  text = lambda v, n: (f"{_number(v['mean'])} ({_number(v['average_rank'], 2)})"
                       + (" \u25c6" if v["mean"] == best[n] else ""))
  rows = [[m, *[text(ranking[n][m], n) for n in names]] for m in summary["methods"]]
  blocks = "/".join(str(n) for n in sorted({len(summary["blocks"][n]) for n in names}))
  return html.table(["Approach", *[_display(summary, n) for n in names]], rows,
                    f"Mean over {blocks} complete (task, fold) blocks, average rank in "
                    "parentheses (1 = best); \u25c6 the best mean")


def _tests(summary: dict) -> str:
  """Friedman / Iman-Davenport with the Nemenyi CD, and Wilcoxon-Holm against the control; a
  test that could not run is named with the reason instead."""
  names = summary["metrics"]
  tested = [n for n in names if "skipped" not in summary["friedman"][n]]
  rows = [[_display(summary, n), f["num_blocks"], f"{f['chi2']:.3f}", _p(f["p_value"]),
           f"{f['iman_davenport']:.3f}", _p(f["iman_davenport_p_value"]), f"{nem['q_alpha']:.3f}",
           f"{nem['critical_difference']:.3f}"]
          for n in tested for f, nem in [(summary["friedman"][n], summary["nemenyi"][n])]]
  parts = [html.table(["metric", "blocks", "Friedman chi2", "p", "Iman-Davenport F", "p",
                       "Nemenyi q_alpha", "CD"], rows,
                      "Friedman test of equal average ranks, and the Nemenyi critical "
                      "difference")] if tested else []
  parts += [html.paragraph(f"Friedman and Nemenyi skipped for {_display(summary, n)}: "
                           f"{summary['friedman'][n]['skipped']}.") for n in names
            if n not in tested]
  control = summary["control"]
  compared = [n for n in names if "skipped" not in summary["wilcoxon_holm"][n]]
  cell = lambda c: (f"{_p(c['p_holm'])}{' *' if c['reject'] else ''} "
                    f"({c['median_difference']:+.4f})")
  if compared:
    parts.append(html.table(
        ["method", *[_display(summary, n) for n in compared]],
        [[m, *[cell(summary["wilcoxon_holm"][n]["comparisons"][m]) for n in compared]]
         for m in summary["methods"] if m != control],
        f"Wilcoxon signed-rank against {control}: Holm-corrected p (* rejects equality at "
        f"alpha {summary['alpha']}), median difference to {control} in parentheses"))
  parts += [html.paragraph(f"Wilcoxon-Holm skipped for {_display(summary, n)}: "
                           f"{summary['wilcoxon_holm'][n]['skipped']}.") for n in names
            if n not in compared]
  return "".join(parts)


def _nemenyi_p(summary: dict, metric: str) -> str:
  """The pairwise p-values as a matrix whose columns are numbered like its rows (method names
  as column heads would run off the page)."""
  nem = summary["nemenyi"][metric]
  methods = summary["methods"]
  p = lambda a, b: _p(nem["p_values"][a][b]) + (" *" if nem["p_values"][a][b] < nem["alpha"]
                                                 and a != b else "")
  rows = [[f"{i} {a}", *[p(a, b) for b in methods]] for i, a in enumerate(methods, 1)]
  return html.table(["", *map(str, range(1, len(methods) + 1))], rows,
                    f"Nemenyi pairwise p-values, {_display(summary, metric)} (* below "
                    f"{nem['alpha']})")


def _figures(summary: dict, metric: str, folder: epath.Path) -> str:
  """The metric's CD diagram and heatmap: saved under W/figures/ and embedded in the page."""
  name = _display(summary, metric)
  parts = []
  nem = summary["nemenyi"][metric]
  if "skipped" in nem:
    parts.append(html.paragraph(f"No critical-difference diagram: Nemenyi skipped, "
                                f"{nem['skipped']}."))
  else:
    methods = summary["methods"]
    fig = stats_figures.cd_diagram(methods, [nem["average_ranks"][m] for m in methods],
                                   nem["critical_difference"], name)
    parts.append(_save(fig, folder / f"cd_{metric}.png",
                       f"Average ranks over {nem['num_blocks']} blocks (1 = best); thick bars "
                       "join methods whose ranks differ by no more than the critical "
                       f"difference (Nemenyi, alpha {nem['alpha']}): no pair in a group differs "
                       "significantly.", f"critical-difference diagram, {name}"))
  methods, tasks, values = heatmap_data(summary, metric)
  if np.isfinite(values).any():
    fig = stats_figures.heatmap(methods, tasks, values, name)
    parts.append(_save(fig, folder / f"heatmap_{metric}.png",
                       f"{name}: mean over folds of each cell, per task; each task's best is bold "
                       "and boxed, a grey cell has no result yet.", f"heatmap of {name}"))
  if "skipped" not in nem:
    parts.append(_nemenyi_p(summary, metric))
  return "".join(parts)


def _save(fig, path: epath.Path, caption: str, alt: str) -> str:
  return html.figure(figures.save(fig, path), caption, alt)


def _cells(summary: dict, root: epath.Path) -> str:
  shown = summary["metrics"]
  rows = []
  for c in summary["cells"]:
    values = (["-"] * len(shown) if c["status"] != "finished" else
              [f"{c['pooled'][n]:.4f} ({c['mean_std'][n]['mean']:.4f}\u00a0\u00b1\u00a0"
               f"{c['mean_std'][n]['std']:.4f})" for n in shown])
    rows.append([c["name"], c["method"], c["task"] or "-", c["status"], *values])
  table = html.table(["cell", "method", "task", "status", *[_display(summary, n) for n in shown]],
                     rows, "Pooled out-of-fold metric (mean \u00b1 std over folds)")
  links = [f'<li><a href="{html.escape(_folder(c))}/report.html">{html.escape(c["name"])}</a>'
           "</li>" for c in summary["cells"] if (root / _folder(c) / "report.html").exists()]
  if not links:
    return table + html.paragraph("No cell has a report.html yet (python main.py --mode=report "
                                  "--workdir=W/<cell> writes one).")
  return table + "<p>Cell reports:</p><ul>" + "".join(links) + "</ul>\n"


def _per_class(summary: dict) -> str:
  """Pooled precision / recall / F1 per class, one table per measure and set of classes (the
  tasks of a sweep may be data sets with classes of their own)."""
  done = [c for c in summary["cells"] if c["status"] == "finished"]
  by_classes = {}
  for c in done:
    by_classes.setdefault(tuple(c["class_names"]), []).append(c)
  parts = [html.table(["cell", *names],
                      [[c["name"], *[_number(v, 3) for v in c["per_class"][measure]]]
                       for c in group], f"Pooled per-class {measure}")
           for names, group in by_classes.items() for measure in PER_CLASS]
  synthesis = [c for c in done if c.get("synthesis")]
  if synthesis:
    parts.append(html.table(
        ["cell", "rejected", "FID", "k-NN precision", "k-NN recall", "final losses"],
        [[c["name"], *[_number(c["synthesis"][k], 3) for k in ("rejection_rate", "fid",
                                                                 "precision", "recall")],
          " ".join(f"{k} {v:.3f}" for k, v in c["synthesis"]["final_losses"].items())]
         for c in synthesis], "Synthetic samples: filter rejection rate, mean per-class FID, "
                              "k-NN precision / recall, final GAN losses"))
  return "".join(parts)


def render(summary: dict, root: epath.Path) -> str:
  """The page's HTML; writes the figures under root/figures/ as it draws them."""
  finished = any(c["status"] == "finished" for c in summary["cells"])
  ranked = any(summary["blocks"][n] for n in summary["metrics"])
  sections = [html.section("Summary", _status(summary), _ranked(summary) if ranked else
                           html.paragraph("No (task, fold) block has every method finished: "
                                          "no ranks or tests yet."))]
  if ranked:
    sections.append(html.section("Significance tests", _tests(summary)))
  if finished:
    for metric in summary["metrics"]:
      sections.append(html.section(_display(summary, metric),
                                   _figures(summary, metric, root / "figures")))
    if summary.get("per_class"):
      sections.append(html.section("Per class", _per_class(summary)))
  sections.append(html.section("Cells", _cells(summary, root)))
  return html.document(f"Sweep {root.name}", sections)


def write(root) -> epath.Path:
  """Writes root/figures/ and root/report.html from root/sweep.json (process 0 only)."""
  root = files.as_path(root)
  source = root / "sweep.json"
  if not source.exists():
    raise FileNotFoundError(f"{source} does not exist; write it with --mode=aggregate (or "
                            "--mode=sweep) and the sweep's config first")
  summary = files.read_json(source, "run --mode=aggregate to write it again")
  path = root / "report.html"
  if multihost.is_writer():
    files.write_text(path, render(summary, root))
  return path
