"""A finished run's report: workdir/figures/* and a self-contained workdir/report.html.

Drawn only from what the run saved (results.json, each fold's test_probs.npz, the synthesis
stage's losses.json and grids), never from the data or the models, so `--mode=report` is quick
and can be made again on any machine that holds the workdir.
"""

from __future__ import annotations

import math
import os

from etils import epath
import numpy as np

from jimb import config as config_lib
from jimb import files, metrics
from jimb.render import figures, html

SHOWN = metrics.METRIC_NAMES + metrics.LOWER_IS_BETTER
PER_CLASS = ("precision", "recall", "specificity", "f1", "roc_auc", "support")
# Written as PDF (vector, for papers) besides the PNG every figure gets.
VECTOR = ("confusion", "confusion_decision", "roc_pr", "reliability")
LOSSES = "generator_losses_fold_"   # + fold index: shown in that fold's synthesis section
DPI = 90   # small pages, still legible; the PDFs are vector
FIX_RESULTS = "train there first (--mode=train) or point --workdir at a finished run"


def write(workdir: str | os.PathLike, results_file: str | os.PathLike = "results.json"
          ) -> epath.Path:
  """Writes figures/*.png (a few also .pdf) and report.html beside `results_file` (relative to
  the workdir, or absolute); returns the page's path. Another results file than results.json
  (an eval run's) gets `<its stem>_` prefixed names, and its pooled figures from the eval
  run's `<its stem>_probs.npz` (the folds' test_probs.npz are the training run's)."""
  workdir = files.as_path(workdir)
  path = workdir / results_file
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: {FIX_RESULTS}")
  results = files.read_json(path, FIX_RESULTS)
  prefix = "" if path.name == "results.json" else f"{path.stem}_"
  pooled = _pooled(workdir, results["folds"]) if not prefix else _eval_pooled(path)
  synthesis = _synthesis(results)
  drawn = _figures(results, pooled, synthesis)
  pngs = {}
  for name, (fig, _) in drawn.items():
    pngs[name] = figures.save(fig, path.parent / f"{prefix}figures" / f"{name}.png", "png", DPI)
    if name in VECTOR:
      figures.save(fig, path.parent / f"{prefix}figures" / f"{name}.pdf", "pdf", DPI)
  sections = [_run_section(workdir, results), _data_section(results), _metric_section(results),
              _per_class_section(results), *_summaries(results)]
  if "note" in pooled:
    sections.append(html.section("Pooled figures", html.paragraph(pooled["note"])))
  sections.append(html.section("Figures", *(html.figure(pngs[n], caption, alt=n)
                                            for n, (_, caption) in drawn.items()
                                            if not n.startswith(LOSSES))))
  sections += _synthesis_sections(results, synthesis, pngs)
  page = path.parent / f"{prefix}report.html"
  title = f"{results['data'].get('name', 'run')}: {workdir.name}"
  files.write_text(page, html.document(title, sections))
  return page


def _pooled(workdir: epath.Path, folds: list[dict]) -> dict:
  """The out-of-fold test labels and probabilities of every fold, concatenated in fold order
  (+ `calibrated` when the folds saved temperature-scaled ones), or a `note` why not."""
  arrays = [files.read_npz(workdir / f"fold_{r['index']}" / "test_probs.npz") for r in folds]
  missing = [r["index"] for r, a in zip(folds, arrays) if "labels" not in a]
  if missing:
    return {"note": f"fold_{missing[0]}/test_probs.npz holds no test labels (it was written "
                    "before they were saved): the pooled confusion, ROC / PR and reliability "
                    "figures need them; train the config into a new workdir to have them"}
  out = {"labels": np.concatenate([a["labels"] for a in arrays]),
         "probs": np.concatenate([a["probs"] for a in arrays])}
  for key in ("probs_calibrated", "decision_pred"):
    if all(key in a for a in arrays):
      out[key] = np.concatenate([a[key] for a in arrays])
  return out


def _eval_pooled(path: epath.Path) -> dict:
  """An eval run's pooled arrays (experiment writes them beside its results), or a `note`."""
  arrays = path.with_name(f"{path.stem}_probs.npz")
  if not arrays.exists():
    return {"note": f"{arrays.name} is missing (written by --mode=eval since the reports "
                    "exist): run the eval again to draw its pooled figures"}
  saved = files.read_npz(arrays)
  return {k: saved[k] for k in ("labels", "probs", "probs_calibrated", "decision_pred")
          if k in saved}


def _figures(results: dict, pooled: dict, synthesis: dict) -> dict[str, tuple]:
  """name -> (Figure, caption) in the page's order."""
  data, folds = results["data"], results["folds"]
  names = data["class_names"]
  source = data.get("source_class_counts") or {}
  out = {"class_counts": (figures.class_counts(
      names, [source.get(n, 0) for n in names], data["class_counts"], folds),
      "Examples per class: the source data, after the imbalance profile, and each fold's "
      "training part as trained on (synthetic rows hatched)")}
  select = results["config"]["train"]["select_metric"]
  out["learning_curves"] = (figures.learning_curves(folds, select),
                            f"Training loss and validation {select} per fold; the star marks the "
                            "best epoch, whose checkpoint is tested")
  if "labels" in pooled:
    labels, probs = pooled["labels"], pooled["probs"]
    out["confusion"] = (figures.confusion(labels, probs.argmax(1), names),
                        "Pooled out-of-fold confusion matrix (rows: true class)")
    if "decision_pred" in pooled:
      rule = results["config"].get("decision", {}).get("rule", "")
      out["confusion_decision"] = (
          figures.confusion(labels, pooled["decision_pred"], names),
          f"Pooled out-of-fold confusion matrix of the {rule} decision rule (fitted on each "
          "fold's validation part)")
    out["roc_pr"] = (figures.roc_pr(labels, probs, names),
                     "One-vs-rest ROC and precision-recall curves of the pooled out-of-fold "
                     "probabilities, per class and macro-averaged")
    sets = {"softmax": probs}
    if "probs_calibrated" in pooled:
      sets["temperature-scaled"] = pooled["probs_calibrated"]
    out["reliability"] = (figures.reliability(labels, sets),
                          f"Reliability diagram of the pooled top-class confidence "
                          f"({metrics.ECE_BINS} equal-width bins)")
  for k, (histories, _) in synthesis.items():
    out[f"{LOSSES}{k}"] = (figures.generator_losses(histories), "")
  return out


def _synthesis(results: dict) -> dict[int, tuple[list, bytes | None]]:
  """Per fold with a synthesis stage: its loss histories and real-vs-synthetic grid (PNG)."""
  out = {}
  for r in results["folds"]:
    directory = r.get("synthesis", {}).get("directory")
    if not directory:
      continue
    directory = files.as_path(directory)
    losses = directory / "losses.json"
    grid = directory / "grid.png"
    if losses.exists():
      out[r["index"]] = (files.read_json(losses, "delete the samples folder to make it again"),
                         grid.read_bytes() if grid.exists() else None)
  return out


def _fmt(value) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4g}"
  return str(value)


def _run_section(workdir: epath.Path, results: dict) -> str:
  """Where the run is and its config, the keys that differ from jimb.config's defaults first."""
  flat = config_lib.flatten(results["config"])
  default = config_lib.flatten(config_lib.base_config().to_dict())
  changed = [k for k in flat if k not in default or default[k] != flat[k]]
  took = results.get("timings", {}).get("total_s")
  return html.section(
      "Run", html.paragraph(f"workdir {workdir}" + (f"; run took {took} s" if took else "")),
      html.table(["config key", "value", "default"],
                 [[k, _fmt(flat[k]), _fmt(default.get(k, "(none)"))] for k in changed],
                 f"config: the {len(changed)} keys that differ from jimb/config.py's defaults"),
      html.folded(f"all {len(flat)} config keys", html.table(
          ["config key", "value"], [[k, _fmt(v)] for k, v in flat.items()])))


def _data_section(results: dict) -> str:
  data = results["data"]
  grouped = (f"grouped by {data.get('group_by') or 'group id'}, {data.get('num_groups')} groups"
             if data.get("grouped") else "not grouped")
  facts = [["data set", data.get("name", "")], ["examples", data.get("num_examples", "")],
           ["input shape", data.get("input_shape", "")], ["classes", len(data["class_names"])],
           ["imbalance ratio", data.get("imbalance_ratio", "")], ["split", data.get("split", "")],
           ["folds", grouped]]
  dup = data.get("duplicates")
  if isinstance(dup, dict) and "exact_pairs" in dup:
    facts.append(["duplicates", f"{dup['exact_pairs']} exact and {dup.get('near_pairs', 0)} near "
                                f"pairs among {dup.get('examples_involved', 0)} examples"])
  parts = [html.table([], [[k, _fmt(v)] for k, v in facts], "data")]
  source = data.get("source_class_counts") or {}
  parts.append(html.table(
      ["class", "source", "after imbalance"],
      [[n, source.get(n, ""), c] for n, c in zip(data["class_names"], data["class_counts"])],
      "examples per class"))
  parts.append(html.table(
      ["fold", "train", "val", "test", "best epoch", "epochs run"] + (
          ["straddling duplicates (train-val / train-test / val-test)"]
          if isinstance(dup, dict) and "folds" in dup else []),
      [[r["index"], *(r["sizes"].get(p, "") for p in ("train", "val", "test")), r["best_epoch"],
        r.get("epochs_run", "")] + _straddles(dup, r["index"]) for r in results["folds"]],
      "fold sizes"))
  return html.section("Data and folds", *parts)


def _straddles(dup, index: int) -> list:
  if not (isinstance(dup, dict) and "folds" in dup):
    return []
  fold = next((f for f in dup["folds"] if f.get("fold") == index), {})
  count = lambda part: sum(fold.get(part, {}).get(k, 0) for k in ("exact", "near"))
  return [" / ".join(str(count(p)) for p in ("train-val", "train-test", "val-test"))]


def _metric_section(results: dict) -> str:
  folds, summary = results["folds"], results["summary"]
  pooled, ms = summary["pooled"], summary["mean_std"]
  ci = pooled.get("ci", {})
  header = ["metric", *(f"fold {r['index']}" for r in folds), "mean +/- std", "pooled",
            "pooled 95% CI"]
  rows = [[m, *(_fmt(r["test"].get(m, "")) for r in folds),
           f"{_fmt(ms[m]['mean'])} +/- {_fmt(ms[m]['std'])}" if m in ms else "",
           _fmt(pooled.get(m, "")), "[{}, {}]".format(*map(_fmt, ci[m])) if m in ci else ""]
          for m in SHOWN if m in pooled or m in ms]
  notes = [summary[k] for k in ("pooled_note", "ci_note") if k in summary]
  return html.section("Test metrics", html.table(header, rows, "per fold, mean +/- std over "
                                                 "folds, and pooled out-of-fold"),
                      *(html.paragraph(n) for n in notes))


def _per_class_section(results: dict) -> str:
  per_class = results["summary"]["pooled"].get("per_class", {})
  columns = [c for c in PER_CLASS if c in per_class]
  rows = [[name, *(_fmt(per_class[c][i]) for c in columns)]
          for i, name in enumerate(results["data"]["class_names"])]
  return html.section("Per class (pooled)", html.table(
      ["class", *(c.replace("recall", "recall (sensitivity)") for c in columns)], rows,
      "one vs rest, from the pooled out-of-fold predictions"))


def _summaries(results: dict) -> list[str]:
  """Calibration and decision-rule summaries (pooled_calibrated, pooled_decision) when saved,
  beside the plain argmax's pooled metrics."""
  plain = results["summary"]["pooled"]
  out = []
  for key, title in (("pooled_calibrated", "Calibrated (pooled, temperature-scaled)"),
                     ("pooled_decision", "Decision rule (pooled)")):
    block = results["summary"].get(key)
    if isinstance(block, dict):
      ci = block.get("ci", {})
      rows = [[m, _fmt(plain.get(m, "")), _fmt(block[m]),
               "[{}, {}]".format(*map(_fmt, ci[m])) if m in ci else ""]
              for m in SHOWN if m in block]
      out.append(html.section(title, html.table(
          ["metric", "plain argmax", key, "95% CI"], rows,
          "fitted on each fold's validation part, applied to its test part")))
  return out


def _synthesis_sections(results: dict, synthesis: dict, pngs: dict[str, bytes]) -> list[str]:
  out = []
  for r in results["folds"]:
    report = r.get("synthesis")
    if not report:
      continue
    rows = [[name, report.get("requested", {}).get(name, ""), report.get("kept", {}).get(name, "")]
            for name in report.get("requested", {})]
    rejected = report.get("filter", {}).get("rejection_rate")
    parts = [html.paragraph(f"method {report.get('method')}, budget {report.get('budget')}, "
                            f"filter rejection rate {_fmt(rejected)}"),
             html.table(["class", "requested", "kept"], rows, "synthetic rows")]
    if f"{LOSSES}{r['index']}" in pngs:
      parts.append(html.figure(pngs[f"{LOSSES}{r['index']}"], "generator and discriminator "
                               "losses per model", alt=f"losses fold {r['index']}"))
    grid = synthesis.get(r["index"], (None, None))[1]
    if grid:
      parts.append(html.figure(grid, "real (left) and synthetic (right) rows per class",
                               alt=f"grid fold {r['index']}"))
    out.append(html.section(f"Synthesis, fold {r['index']}", *parts))
  return out
