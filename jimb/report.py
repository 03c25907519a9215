"""Results: per-fold and mean +/- std metrics, pooled out-of-fold metrics, readable tables.

Two summaries are given and labelled, because they differ with rare classes: the mean over
folds of each fold's metric, and the metric of the pooled out-of-fold predictions (every
example predicted exactly once, by the fold that held it out). The pooled summary also holds
stratified bootstrap intervals (`ci`) for the headline metrics.
"""

from __future__ import annotations

import math

import numpy as np

from jimb import metrics

SHOWN = metrics.METRIC_NAMES + metrics.LOWER_IS_BETTER


def one_line(m: dict) -> str:
  return "  ".join(f"{k} {m[k]:.4f}" for k in ("macro_f1", "balanced_accuracy", "roc_auc", "mcc"))


def max_metric_diff(a: dict, b: dict) -> float:
  """Largest absolute difference over the scalar metrics that `a` holds (NaN == NaN); a record
  stored before a metric existed lacks it."""
  diffs = [0.0 if (math.isnan(a[k]) and math.isnan(b[k])) else abs(a[k] - b[k])
           for k in SHOWN if k in a]
  return max(diffs)


def assemble(config: dict, data: dict, folds, records: list[dict], labels: np.ndarray,
             probs: list[np.ndarray], post_hoc: list[dict[str, np.ndarray]] | None = None) -> dict:
  """results.json's content. `post_hoc` holds each fold's `probs_calibrated` and
  `decision_pred` (evaluate.post_hoc) when those steps ran: their pooled metrics are
  `pooled_calibrated` and `pooled_decision` (whose probability metrics use the calibrated
  probabilities when there are any)."""
  k = len(data["class_names"])
  y = labels[np.concatenate([f.test for f in folds])]
  resamples = config["report"]["bootstrap"]

  def pooled_metrics(pooled_probs, y_pred=None):
    out = metrics.classification_metrics(y, pooled_probs, k, y_pred)
    if resamples:
      out["ci"] = metrics.bootstrap_ci(y, pooled_probs, k, resamples, config["seed"],
                                       y_pred=y_pred)
    return out

  summary = {
      "mean_std": metrics.summarize([r["test"] for r in records]),
      "pooled": pooled_metrics(np.concatenate(probs)),
      "pooled_note": "metrics of all out-of-fold test predictions pooled into one confusion matrix",
  }
  if resamples:
    summary["ci_note"] = (
        f"pooled 95% CI: stratified bootstrap (resampling within each class), {resamples} "
        f"resamples, percentile method, seed {config['seed']}")
  pooled = lambda key: (np.concatenate([p[key] for p in post_hoc])
                        if post_hoc and all(key in p for p in post_hoc) else None)
  calibrated, decided = pooled("probs_calibrated"), pooled("decision_pred")
  if calibrated is not None:
    summary["pooled_calibrated"] = pooled_metrics(calibrated)
  if decided is not None:
    summary["pooled_decision"] = pooled_metrics(
        np.concatenate(probs) if calibrated is None else calibrated, decided)
  return {"config": config, "data": data, "folds": records, "summary": summary}


def summary_table(results: dict) -> str:
  names = results["data"]["class_names"]
  lines = ["", "test metrics per fold (best epoch by validation "
           f"{results['config']['train']['select_metric']}):"]
  lines.append(f"{'':>14}" + "".join(f"{s:>19}" for s in SHOWN))
  for r in results["folds"]:
    lines.append(f"{'fold ' + str(r['index']):>14}" + "".join(f"{r['test'][s]:>19.4f}" for s in SHOWN))
  ms = results["summary"]["mean_std"]
  lines.append(f"{'mean +/- std':>14}" + "".join(
      f"{ms[s]['mean']:>11.4f} +/-{ms[s]['std']:.3f}"[-19:].rjust(19) for s in SHOWN))
  pooled = results["summary"]["pooled"]
  lines.append(f"{'pooled':>14}" + "".join(f"{pooled[s]:>19.4f}" for s in SHOWN))
  if "ci" in pooled:
    ci = pooled["ci"]
    lines.append(f"{'pooled 95% CI':>14}" + "".join(
        (f"[{ci[s][0]:.3f}, {ci[s][1]:.3f}]" if s in ci else "").rjust(19) for s in SHOWN).rstrip())
    lines.append(results["summary"]["ci_note"])
  rule = results["config"].get("decision", {}).get("rule", "")
  notes = {"pooled_calibrated": ("calibrated", "temperature-scaled probabilities"),
           "pooled_decision": ("decision", f"predictions of the {rule} rule")}
  for key, (label, what) in notes.items():
    if key in results["summary"]:
      row = results["summary"][key]
      lines.append(f"{label:>14}" + "".join(f"{row[s]:>19.4f}" for s in SHOWN))
      lines.append(f"{'':>14}pooled {what}, fitted on each fold's validation part")
  lines.append(f"lower is better for {' and '.join(metrics.LOWER_IS_BETTER)}, higher for the rest")
  lines.append("")
  lines.append("pooled per-class (sensitivity = recall; one-vs-rest specificity and ROC-AUC):")
  lines.append(f"{'class':>14}{'support':>10}{'precision':>11}{'sensitivity':>13}"
               f"{'specificity':>13}{'f1':>9}{'roc_auc':>9}")
  pc = pooled["per_class"]
  for i, name in enumerate(names):
    lines.append(f"{name[:14]:>14}{pc['support'][i]:>10}{pc['precision'][i]:>11.4f}"
                 f"{pc['sensitivity'][i]:>13.4f}{pc['specificity'][i]:>13.4f}"
                 f"{pc['f1'][i]:>9.4f}{pc['roc_auc'][i]:>9.4f}")
  return "\n".join(lines)
