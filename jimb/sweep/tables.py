"""A sweep's results in one place: every cell's metrics, ranked tables and significance tests.

workdir/sweep.json   cells (overrides, labels, pooled and mean +/- std metrics, per-fold test
                     metrics), `ranking`, `friedman`, `nemenyi`, `wilcoxon_holm` per metric
workdir/sweep.csv    one row per cell: labels, overrides, pooled / mean / std of every metric
workdir/sweep.md     the same as tables, and seed 001's Table II layout for the ranked metrics
workdir/report.html  all of it as one page with figures (page.py)

Blocks are (task, fold) pairs: each method's test metric on one fold of one task (seed 001 ranks
within each (scenario, IR, fold)). Only blocks where every method is finished enter the ranks
and tests, so the tables can be written at any time over the finished cells.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable, Sequence

from etils import epath
import numpy as np

from jimb import metrics, stats
from jimb.sweep import cells as cells_lib
from jimb.sweep import job as job_lib
from jimb.sweep import page

Log = Callable[[str], None]
DISPLAY = {"balanced_accuracy": "AvAcc", "cba": "CBA", "mavg": "MAvG", "macro_f1": "macro-F1",
           "accuracy": "accuracy", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "mcc": "MCC"}


def settings(config) -> dict[str, Any]:
  """The `sweep` block as plain values, checked."""
  s = config.sweep
  names = [m.strip() for m in s.metrics.split(",") if m.strip()]
  bad = [m for m in names if m not in metrics.METRIC_NAMES]
  if bad or not names:
    raise ValueError(f"--config.sweep.metrics={s.metrics!r}: unknown metric(s) {bad}; choose "
                     f"from {metrics.METRIC_NAMES}")
  return {"metrics": names, "control": s.control, "alpha": float(s.alpha),
          "per_class": bool(s.per_class)}


def collect(jobs: Sequence[cells_lib.Job], workdir: epath.PathLike) -> list[dict]:
  """Every cell in sweep order, with its results where it is finished."""
  out = []
  for job, cell in sorted(((j, c) for j in jobs for c in j.cells), key=lambda jc: jc[1].index):
    path = job_lib.cell_dir(workdir, job, cell) / "results.json"
    out.append({"name": cell.name, "method": cell.method, "task": cell.task,
                "overrides": cell.overrides, "workdir": str(path.parent),
                "results": json.loads(path.read_text()) if path.exists() else None})
  return out


def block_scores(entries: list[dict], methods: list[str], metric: str):
  """([blocks], scores [blocks, methods]) over the blocks where every method has a result."""
  by_key = {}
  for e in entries:
    if e["results"] is None:
      continue
    for record in e["results"]["folds"]:
      by_key[(e["task"], record["index"], e["method"])] = record["test"][metric]
  blocks = sorted({(t, f) for t, f, _ in by_key})
  complete = [b for b in blocks if all((*b, m) in by_key for m in methods)]
  scores = np.asarray([[by_key[(*b, m)] for m in methods] for b in complete], np.float64)
  return complete, scores.reshape(len(complete), len(methods))


def _tests(scores: np.ndarray, methods: list[str], control: str, alpha: float) -> dict:
  """Friedman / Iman-Davenport, Nemenyi and Holm-corrected Wilcoxon, or why each was skipped."""
  out = {}
  named = lambda values: dict(zip(methods, values))
  for name, needs, run in (
      ("friedman", 3, lambda: stats.friedman(scores)),
      ("nemenyi", 3, lambda: stats.nemenyi(scores, alpha)),
      ("wilcoxon_holm", 2, lambda: stats.wilcoxon_holm(scores, methods.index(control), alpha))):
    if len(methods) < needs or len(scores) < 2 or np.isnan(scores).any():
      out[name] = {"skipped": f"needs >= {needs} methods and >= 2 complete blocks without NaN; "
                              f"has {len(methods)} methods, {len(scores)} blocks"}
      continue
    result = run()
    if "average_ranks" in result:
      result["average_ranks"] = named(result["average_ranks"])
    if name == "nemenyi":
      result["p_values"] = {a: named(row) for a, row in zip(methods, result["p_values"].tolist())}
    if name == "wilcoxon_holm":
      result["control"] = control
      result["comparisons"] = {methods[j]: v for j, v in result["comparisons"].items()}
    out[name] = result
  return out


def _synthesis_summary(folds: list[dict]) -> dict:
  """Rejection rate, mean per-class FID and k-NN precision / recall, final GAN losses."""
  reports = [f["synthesis"] for f in folds if "synthesis" in f]
  if not reports:
    return {}
  mean = lambda key: float(np.nanmean([s[key] for r in reports for s in r["scores"].values()]
                                      or [np.nan]))
  losses = [r["final_losses"] for r in reports if r.get("final_losses")]
  return {
      "rejection_rate": float(np.mean([r["filter"]["rejection_rate"] for r in reports])),
      "fid": mean("fid"), "precision": mean("precision"), "recall": mean("recall"),
      "final_losses": {k: float(np.mean([np.mean(l[k]) for l in losses])) for k in losses[0]}
      if losses else {},
  }


def control_method(sweep: dict[str, Any], methods: list[str]) -> str:
  """The Wilcoxon-Holm control: `sweep.control`, or the sweep's first method."""
  name = sweep["control"] or methods[0]
  if name not in methods:
    raise ValueError(f"--config.sweep.control={name!r} is not a method of this sweep; choose "
                     f"one of {methods}")
  return name


def summarise(entries: list[dict], sweep: dict[str, Any]) -> dict:
  """The sweep's tables as data: cells, ranking and tests per metric."""
  methods = list(dict.fromkeys(e["method"] for e in entries))
  control = control_method(sweep, methods)
  cells = []
  for e in entries:
    r = e["results"]
    cell = {k: e[k] for k in ("name", "method", "task", "overrides", "workdir")}
    cell["status"] = "finished" if r else "missing"
    if r:
      pooled = r["summary"]["pooled"]
      cell["pooled"] = {m: pooled[m] for m in metrics.METRIC_NAMES}
      cell["mean_std"] = {m: r["summary"]["mean_std"][m] for m in metrics.METRIC_NAMES}
      cell["folds"] = [{"index": f["index"], **{m: f["test"][m] for m in metrics.METRIC_NAMES}}
                       for f in r["folds"]]
      cell["per_class"] = pooled["per_class"]
      cell["class_names"] = r["data"]["class_names"]
      cell["synthesis"] = _synthesis_summary(r["folds"])
    cells.append(cell)
  out = {"methods": methods, "control": control, "alpha": sweep["alpha"],
         "metrics": sweep["metrics"], "display": {m: DISPLAY[m] for m in sweep["metrics"]},
         "per_class": sweep["per_class"], "cells": cells, "ranking": {}, "blocks": {},
         "friedman": {}, "nemenyi": {}, "wilcoxon_holm": {}}
  for metric in sweep["metrics"]:
    blocks, scores = block_scores(entries, methods, metric)
    out["blocks"][metric] = [list(b) for b in blocks]
    ranks = (stats.average_ranks(scores).tolist() if len(blocks) and len(methods) >= 2
             and not np.isnan(scores).any() else [float("nan")] * len(methods))
    means = scores.mean(axis=0).tolist() if len(blocks) else [float("nan")] * len(methods)
    out["ranking"][metric] = {m: {"mean": a, "average_rank": b}
                              for m, a, b in zip(methods, means, ranks)}
    for name, result in _tests(scores, methods, control, sweep["alpha"]).items():
      out[name][metric] = result
  return out


def ranked_table(summary: dict) -> str:
  """Seed 001's Table II layout: mean (average rank) per method, the best mean in bold."""
  names = summary["metrics"]
  ranking = summary["ranking"]
  best = {n: max((ranking[n][m]["mean"] for m in summary["methods"]
                  if not np.isnan(ranking[n][m]["mean"])), default=None) for n in names}
  lines = ["| Approach | " + " | ".join(DISPLAY[n] for n in names) + " |",
           "|---" * (len(names) + 1) + "|"]
  for m in summary["methods"]:
    cells = []
    for n in names:
      value = ranking[n][m]
      text = f"{value['mean']:.4f} ({value['average_rank']:.2f})"
      cells.append(f"**{text}**" if value["mean"] == best[n] else text)
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _tests_table(summary: dict) -> str:
  lines = ["| metric | blocks | Friedman chi2 (p) | Iman-Davenport F (p) | Nemenyi CD |",
           "|---|---|---|---|---|"]
  for n in summary["metrics"]:
    f, nem = summary["friedman"][n], summary["nemenyi"][n]
    if "skipped" in f:
      lines.append(f"| {DISPLAY[n]} | {len(summary['blocks'][n])} | skipped: {f['skipped']} | | |")
      continue
    lines.append(f"| {DISPLAY[n]} | {f['num_blocks']} | {f['chi2']:.3f} ({f['p_value']:.3g}) | "
                 f"{f['iman_davenport']:.3f} ({f['iman_davenport_p_value']:.3g}) | "
                 f"{nem['critical_difference']:.3f} |")
  control = summary["control"]
  others = [m for m in summary["methods"] if m != control]
  lines += ["", f"Wilcoxon signed-rank against {control}, Holm-corrected p (alpha "
            f"{summary['alpha']}; * rejects equality):", "",
            "| method | " + " | ".join(DISPLAY[n] for n in summary["metrics"]) + " |",
            "|---" * (len(summary["metrics"]) + 1) + "|"]
  for m in others:
    row = []
    for n in summary["metrics"]:
      w = summary["wilcoxon_holm"][n]
      c = w.get("comparisons", {}).get(m)
      row.append("-" if c is None else f"{c['p_holm']:.3g}{' *' if c['reject'] else ''}")
    lines.append(f"| {m} | " + " | ".join(row) + " |")
  return "\n".join(lines)


def per_class_table(cells: list[dict]) -> str:
  """Pooled per-class precision / recall / F1 per cell with the synthesis scores (seed 004's
  Table 1, seed 000's ORG vs GAN)."""
  done = [c for c in cells if c["status"] == "finished"]
  if not done:
    return ""
  names = done[0]["class_names"]
  head = "| cell | " + " | ".join(f"{n} P | {n} R | {n} F1" for n in names)
  head += " | macro-F1 | bal. acc | rejected | FID | k-NN P | k-NN R | final losses |"
  lines = [head, "|---" * (3 * len(names) + 8) + "|"]
  for c in done:
    pc = c["per_class"]
    row = [f"{pc[m][i]:.3f}" for i in range(len(names)) for m in ("precision", "recall", "f1")]
    row += [f"{c['pooled']['macro_f1']:.4f}", f"{c['pooled']['balanced_accuracy']:.4f}"]
    s = c["synthesis"]
    row += ([f"{s['rejection_rate']:.3f}", f"{s['fid']:.2f}", f"{s['precision']:.3f}",
             f"{s['recall']:.3f}", " ".join(f"{k} {v:.3f}" for k, v in s["final_losses"].items())]
            if s else ["-"] * 5)
    lines.append(f"| {c['name']} | " + " | ".join(row) + " |")
  return "\n".join(lines)


def markdown(summary: dict, per_class: bool) -> str:
  cells = summary["cells"]
  done = sum(c["status"] == "finished" for c in cells)
  shown = summary["metrics"]
  lines = [f"{done} of {len(cells)} cells finished; methods {summary['methods']}.", "",
           "Cells (pooled out-of-fold metrics; mean +/- std over folds):", "",
           "| cell | method | task | " + " | ".join(DISPLAY[n] for n in shown) + " |",
           "|---" * (len(shown) + 3) + "|"]
  for c in cells:
    values = (["missing"] * len(shown) if c["status"] != "finished" else
              [f"{c['pooled'][n]:.4f} ({c['mean_std'][n]['mean']:.4f} +/- "
               f"{c['mean_std'][n]['std']:.4f})" for n in shown])
    lines.append(f"| {c['name']} | {c['method']} | {c['task'] or '-'} | " + " | ".join(values)
                 + " |")
  blocks = {len(summary["blocks"][n]) for n in shown}
  lines += ["", f"Mean over {'/'.join(map(str, sorted(blocks)))} complete (task, fold) blocks, "
            "average rank in parentheses (1 = best):", "", ranked_table(summary), "",
            _tests_table(summary)]
  if per_class:
    lines += ["", "Per class (pooled):", "", per_class_table(cells)]
  return "\n".join(lines)


def csv_text(summary: dict) -> str:
  keys = list(dict.fromkeys(k for c in summary["cells"] for k in c["overrides"]))
  header = ["cell", "method", "task", "status", *keys]
  for m in metrics.METRIC_NAMES:
    header += [f"pooled_{m}", f"mean_{m}", f"std_{m}"]
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(header)
  for c in summary["cells"]:
    row = [c["name"], c["method"], c["task"], c["status"],
           *[c["overrides"].get(k, "") for k in keys]]
    for m in metrics.METRIC_NAMES:
      row += ([c["pooled"][m], c["mean_std"][m]["mean"], c["mean_std"][m]["std"]]
              if c["status"] == "finished" else ["", "", ""])
    writer.writerow(row)
  return out.getvalue()


def write(jobs: Sequence[cells_lib.Job], workdir: str, sweep: dict[str, Any],
          log: Log = print) -> dict:
  """Collects the finished cells and writes sweep.json, sweep.csv, sweep.md and the report page
  (page.py); re-runnable."""
  workdir = epath.Path(workdir)
  summary = summarise(collect(jobs, workdir), sweep)
  text = markdown(summary, sweep["per_class"])
  for name, content in (("sweep.json", json.dumps(summary, indent=1, allow_nan=True, default=str)),
                        ("sweep.csv", csv_text(summary)), ("sweep.md", text + "\n")):
    tmp = workdir / (name + ".tmp")
    tmp.write_text(content)
    tmp.replace(workdir / name)   # a reader never sees half a table
  log(text)
  log(f"report: {page.write(workdir)}")
  return summary
