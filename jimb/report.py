"""Results: per-fold and mean +/- std metrics, pooled out-of-fold metrics, readable tables.

Two summaries are given and labelled, because they differ with rare classes: the mean over
folds of each fold's metric, and the metric of the pooled out-of-fold predictions (every
example predicted exactly once, by the fold that held it out).
"""

from __future__ import annotations

import math

import numpy as np

from jimb import metrics

SHOWN = ("accuracy", "macro_f1", "balanced_accuracy", "roc_auc", "pr_auc", "cba", "mavg", "mcc")


def one_line(m: dict) -> str:
  return "  ".join(f"{k} {m[k]:.4f}" for k in ("macro_f1", "balanced_accuracy", "roc_auc", "mcc"))


def max_metric_diff(a: dict, b: dict) -> float:
  """Largest absolute difference over the scalar metrics (NaN == NaN)."""
  diffs = [0.0 if (math.isnan(a[k]) and math.isnan(b[k])) else abs(a[k] - b[k])
           for k in metrics.METRIC_NAMES]
  return max(diffs)


def assemble(config: dict, data: dict, folds, records: list[dict], labels: np.ndarray,
             probs: list[np.ndarray]) -> dict:
  k = len(data["class_names"])
  index = np.concatenate([f.test for f in folds])
  pooled = metrics.classification_metrics(labels[index], np.concatenate(probs), k)
  return {
      "config": config,
      "data": data,
      "folds": records,
      "summary": {
          "mean_std": metrics.summarize([r["test"] for r in records]),
          "pooled": pooled,
          "pooled_note": "metrics of all out-of-fold test predictions pooled into one confusion matrix",
      },
  }


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
  lines.append("")
  lines.append("pooled per-class:")
  lines.append(f"{'class':>14}{'support':>10}{'precision':>11}{'recall':>9}{'f1':>9}")
  pc = pooled["per_class"]
  for i, name in enumerate(names):
    lines.append(f"{name[:14]:>14}{pc['support'][i]:>10}{pc['precision'][i]:>11.4f}"
                 f"{pc['recall'][i]:>9.4f}{pc['f1'][i]:>9.4f}")
  return "\n".join(lines)
