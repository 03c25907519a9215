"""Classification metrics for imbalanced data, computed on the host from pooled predictions.

All confusion-matrix metrics come from one (K, K) matrix, so metrics of several batches,
devices or folds are exact when their predictions (or matrices) are pooled first rather than
averaged afterwards. Every metric is "higher is better".
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn import metrics as sk_metrics

METRIC_NAMES = (
    "accuracy", "macro_f1", "balanced_accuracy", "roc_auc", "pr_auc", "cba", "mavg", "mcc")


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den with 0 where den is 0, so empty classes never print warnings or give NaN."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)),
                   where=den != 0)


def _check_labels(y: np.ndarray, num_classes: int, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{what} must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(
        f"{what} must lie in [0, {num_classes}) for {num_classes} classes; found range "
        f"[{y.min()}, {y.max()}]. Check that the model's number of outputs matches the data.")
  return y


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts with rows = true class and columns = predicted class, shape (K, K) int64."""
  y_true = _check_labels(y_true, num_classes, "true labels")
  y_pred = _check_labels(y_pred, num_classes, "predicted labels")
  if y_true.shape != y_pred.shape:
    raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
  flat = y_true.astype(np.int64) * num_classes + y_pred
  return np.bincount(flat, minlength=num_classes * num_classes).reshape(
      num_classes, num_classes).astype(np.int64)


def confusion_metrics(confusion: np.ndarray) -> dict[str, Any]:
  """Metrics that depend only on the confusion matrix (all but the AUCs).

  Classes with no true examples (empty rows) are left out of every macro average; see
  `classification_metrics` for the conventions.
  """
  cm = np.asarray(confusion, np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or not cm.shape[0]:
    raise ValueError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
  total = cm.sum()
  if total == 0:
    raise ValueError("confusion matrix is empty: metrics need at least one example")
  tp = np.diag(cm)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  present = support > 0

  precision = _safe_divide(tp, predicted)
  recall = _safe_divide(tp, support)
  f1 = _safe_divide(2 * tp, support + predicted)
  cba = _safe_divide(tp, np.maximum(support, predicted))
  # Recall and F1 of a class with no true examples are undefined: NaN in the per-class
  # report, and never part of a macro average.
  recall_report = np.where(present, recall, np.nan)
  f1_report = np.where(present, f1, np.nan)

  recall_present = recall[present]
  # The geometric mean is 0 as soon as one present class is never recognised.
  if np.all(recall_present > 0):
    mavg = float(np.exp(np.mean(np.log(recall_present))))
  else:
    mavg = 0.0

  # Gorodkin's multi-class Matthews correlation; 0 when either marginal is constant.
  cov_ytyp = tp.sum() * total - predicted @ support
  cov_ypyp = total ** 2 - predicted @ predicted
  cov_ytyt = total ** 2 - support @ support
  den = np.sqrt(cov_ypyp * cov_ytyt)
  mcc = float(cov_ytyp / den) if den > 0 else 0.0

  return {
      "accuracy": float(tp.sum() / total),
      "macro_f1": float(f1[present].mean()),
      "balanced_accuracy": float(recall_present.mean()),
      "cba": float(cba[present].mean()),
      "mavg": mavg,
      "mcc": mcc,
      "per_class": {
          "precision": precision.tolist(),
          "recall": recall_report.tolist(),
          "f1": f1_report.tolist(),
          "support": support.astype(np.int64).tolist(),
      },
      "confusion": np.asarray(confusion, np.int64).tolist(),
  }


def _one_vs_rest_auc(score_fn, y_true: np.ndarray, probs: np.ndarray) -> float:
  """Macro average of a binary ranking score over classes present in y_true.

  NaN when no class has both positives and negatives (a single class in y_true).
  """
  present = np.unique(y_true)
  if len(present) < 2:
    return float("nan")
  return float(np.mean([score_fn(y_true == k, probs[:, k]) for k in present]))


def classification_metrics(y_true: np.ndarray, probs: np.ndarray,
                           num_classes: int) -> dict[str, Any]:
  """Scalar metrics (`METRIC_NAMES`), `per_class` lists and the `confusion` matrix.

  Predictions are the argmax of `probs` (N, K). Conventions, chosen so that a fold whose
  evaluation part lacks a rare class still reports comparable numbers:
    * a class with no true examples in `y_true` is left out of every macro average
      (macro F1, balanced accuracy, ROC-AUC, PR-AUC, CBA, MAvG); its per-class recall and
      F1 are NaN. Predictions of it still count as errors (accuracy, MCC, other precisions).
    * a class that is never predicted has precision 0 (and F1 0).
    * `roc_auc` and `pr_auc` are one-vs-rest macro averages over present classes (for K=2
      `roc_auc` equals the binary AUC of probs[:, 1]; `pr_auc` averages both classes'
      average precision). Both are NaN when `y_true` holds a single class.
    * `mavg` is the geometric mean of per-class recalls, 0 when any present recall is 0.
    * `mcc` is 0 when all labels or all predictions are one class.
  """
  y_true = _check_labels(y_true, num_classes, "true labels")
  probs = np.asarray(probs, np.float64)
  if probs.shape != (len(y_true), num_classes):
    raise ValueError(
        f"probabilities must have shape (N, K) = ({len(y_true)}, {num_classes}), "
        f"got {probs.shape}")
  if not len(y_true):
    raise ValueError("no examples to evaluate: the evaluation part is empty; "
                     "lower --config.split.folds or raise --config.split.val_fraction")
  if not np.all(np.isfinite(probs)):
    raise ValueError("probabilities contain NaN or inf: training diverged; lower "
                     "--config.optim.learning_rate or set --config.optim.grad_clip=1.0")
  out = confusion_metrics(confusion_matrix(y_true, probs.argmax(axis=1), num_classes))
  out["roc_auc"] = _one_vs_rest_auc(sk_metrics.roc_auc_score, y_true, probs)
  out["pr_auc"] = _one_vs_rest_auc(sk_metrics.average_precision_score, y_true, probs)
  return out


def shot_accuracy(per_class_recall: Sequence[float], train_counts: np.ndarray, many_shot: int,
                  few_shot: int) -> dict[str, Any]:
  """Mean per-class accuracy (recall) over many-shot (> many_shot training examples), medium and
  few-shot (< few_shot) classes, the long-tailed recognition convention (Liu et al. 2019: 100
  and 20). A group without classes, or whose classes are absent from the evaluation part, is NaN.
  """
  if not 0 <= few_shot <= many_shot:
    raise ValueError(f"need 0 <= --config.report.few_shot ({few_shot}) <= "
                     f"--config.report.many_shot ({many_shot})")
  recall = np.asarray(per_class_recall, np.float64)
  counts = np.asarray(train_counts)
  groups = {"many": counts > many_shot, "few": counts < few_shot}
  groups["medium"] = ~(groups["many"] | groups["few"])
  out: dict[str, Any] = {"shot_classes": {}}
  for name, members in groups.items():
    values = recall[members & ~np.isnan(recall)]
    out[f"{name}_shot_accuracy"] = float(values.mean()) if values.size else float("nan")
    out["shot_classes"][name] = np.flatnonzero(members).tolist()
  return out


def summarize(per_fold: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """{metric: {"mean", "std"}} over folds for every scalar metric.

  The std is the population std (ddof=0). NaN folds (e.g. ROC-AUC of a fold with a single
  class) are ignored, so mean and std are over the folds where the metric is defined;
  NaN only when it is undefined in every fold.
  """
  if not per_fold:
    raise ValueError("no folds to summarize; check --config.split.only_folds")
  out = {}
  for key, value in per_fold[0].items():
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
      continue
    missing = [i for i, fold in enumerate(per_fold) if key not in fold]
    if missing:
      raise ValueError(f"metric {key!r} is missing from fold(s) {missing}")
    values = np.asarray([fold[key] for fold in per_fold], np.float64)
    defined = values[~np.isnan(values)]
    if defined.size:
      out[key] = {"mean": float(defined.mean()), "std": float(defined.std())}
    else:
      out[key] = {"mean": float("nan"), "std": float("nan")}
  return out
