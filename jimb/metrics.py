"""Classification metrics for imbalanced data, computed on the host from pooled predictions.

All confusion-matrix metrics come from one (K, K) matrix, so metrics of several batches,
devices or folds are exact when their predictions (or matrices) are pooled first rather than
averaged afterwards. Every metric of METRIC_NAMES is "higher is better", so they are the ones a
run selects epochs by and a sweep ranks; the Brier score and the calibration error
(LOWER_IS_BETTER) are reported beside them but kept out of that tuple for this reason.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

METRIC_NAMES = (
    "accuracy", "macro_f1", "balanced_accuracy", "roc_auc", "pr_auc", "cba", "mavg", "mcc")
LOWER_IS_BETTER = ("brier", "ece")
# Pooled metrics that get a bootstrap interval (report.bootstrap).
CI_METRICS = ("macro_f1", "balanced_accuracy", "roc_auc", "mcc", "brier")
ECE_BINS = 15
_CONFUSION_SCALARS = ("accuracy", "macro_f1", "balanced_accuracy", "cba", "mavg", "mcc")
# Resamples x examples per bootstrap chunk: each (chunk, N) array stays near 16 MB.
_BOOTSTRAP_CHUNK = 2 ** 21


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


def _confusion_stats(confusion: np.ndarray) -> dict[str, np.ndarray]:
  """Scalar metrics and per-class counts and rates of a stack of confusion matrices (..., K, K),
  vectorised so that all bootstrap resamples take one call."""
  cm = np.asarray(confusion, np.float64)
  tp = np.diagonal(cm, axis1=-2, axis2=-1)
  support = cm.sum(-1)
  predicted = cm.sum(-2)
  total = support.sum(-1)
  present = support > 0
  macro = lambda v: (v * present).sum(-1) / present.sum(-1)
  recall = _safe_divide(tp, support)
  f1 = _safe_divide(2 * tp, support + predicted)
  # The geometric mean is 0 as soon as one present class is never recognised.
  missed = np.any(present & (recall == 0), -1)
  log_recall = np.log(np.where(present & (recall > 0), recall, 1.0))
  mavg = np.where(missed, 0.0, np.exp(macro(log_recall)))
  # Gorodkin's multi-class Matthews correlation; 0 when either marginal is constant.
  cov_ytyp = tp.sum(-1) * total - (predicted * support).sum(-1)
  cov_ypyp = total ** 2 - (predicted ** 2).sum(-1)
  cov_ytyt = total ** 2 - (support ** 2).sum(-1)
  return {
      "accuracy": tp.sum(-1) / total,
      "macro_f1": macro(f1),
      "balanced_accuracy": macro(recall),
      "cba": macro(_safe_divide(tp, np.maximum(support, predicted))),
      "mavg": mavg,
      "mcc": _safe_divide(cov_ytyp, np.sqrt(cov_ypyp * cov_ytyt)),
      "tp": tp, "support": support, "predicted": predicted, "recall": recall, "f1": f1,
  }


def confusion_metrics(confusion: np.ndarray) -> dict[str, Any]:
  """Metrics that depend only on the confusion matrix (all but the AUCs and calibration).

  Classes with no true examples (empty rows) are left out of every macro average; see
  `classification_metrics` for the conventions.
  """
  cm = np.asarray(confusion, np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or not cm.shape[0]:
    raise ValueError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
  if cm.sum() == 0:
    raise ValueError("confusion matrix is empty: metrics need at least one example")
  stats = _confusion_stats(cm)
  tp, support, predicted = stats["tp"], stats["support"], stats["predicted"]
  present = support > 0
  # One-vs-rest specificity TN / (TN + FP); its denominator is the examples of other classes.
  negatives = cm.sum() - support
  specificity = np.where(negatives > 0,
                         _safe_divide(negatives - (predicted - tp), negatives), np.nan)
  # Recall (sensitivity) and F1 of a class with no true examples are undefined: NaN in the
  # per-class report, and never part of a macro average.
  recall_report = np.where(present, stats["recall"], np.nan).tolist()
  out: dict[str, Any] = {name: float(stats[name]) for name in _CONFUSION_SCALARS}
  out["per_class"] = {
      "precision": _safe_divide(tp, predicted).tolist(),
      "recall": recall_report,
      "sensitivity": recall_report,
      "specificity": specificity.tolist(),
      "f1": np.where(present, stats["f1"], np.nan).tolist(),
      "support": support.astype(np.int64).tolist(),
  }
  out["confusion"] = np.asarray(confusion, np.int64).tolist()
  return out


def _per_class_ranking(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """ROC-AUC and average precision of each class against the rest, two (K,) arrays.

  The same numbers as scikit-learn's `roc_auc_score` and `average_precision_score` (tied scores
  form one threshold; the ROC area is the trapezoid rule, AP the sum of precision times the
  recall step), from one sort per class: the run scores every epoch's validation part with
  them, and scikit-learn's input checks cost ~20 ms a call there. NaN for a class without
  positives or without negatives (absent, or alone in y_true).
  """
  roc = np.full(probs.shape[1], np.nan)
  ap = np.full(probs.shape[1], np.nan)
  present = np.unique(y_true)
  if len(present) < 2:
    return roc, ap
  for k in present:
    order = np.argsort(-probs[:, k], kind="stable")
    scores, positive = probs[order, k], y_true[order] == k
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]   # end of each tied run
    tps = np.cumsum(positive)[last].astype(np.float64)
    fps = last + 1 - tps
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    roc[k] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    ap[k] = float(np.sum(np.diff(tpr) * tps / (last + 1)))
  return roc, ap


def _nan_mean(values: np.ndarray) -> float:
  """Mean of the defined values: a macro average over the classes where a score exists."""
  defined = values[~np.isnan(values)]
  return float(defined.mean()) if defined.size else float("nan")


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
  """Multi-class Brier score: mean over examples of sum_k (p_k - 1[y = k])^2, in [0, 2].

  This is Brier's original convention (scikit-learn's `brier_score_loss(..., labels=range(K),
  scale_by_half=False)`). For K = 2 it is twice the positive-class form mean (p_1 - y)^2,
  which `brier_score_loss` gives by default for binary labels, since both classes' errors are
  equal there.
  """
  return float(_brier_terms(y_true, probs).mean())


def _brier_terms(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
  """Each example's sum_k (p_k - 1[y = k])^2, (N,)."""
  return np.square(probs - np.eye(probs.shape[1])[y_true]).sum(1)


def calibration(y_true: np.ndarray, probs: np.ndarray,
                bins: int = ECE_BINS) -> tuple[float, dict[str, list]]:
  """Expected calibration error of the top-class confidence, and its reliability-diagram bins.

  The confidence max_k p_k falls in one of `bins` equal-width bins (edges[i], edges[i+1]] (the
  first also takes 0); ECE = sum over bins of n_bin / N * |accuracy_bin - mean confidence_bin|
  (Guo et al. 2017, who use 15 bins). The bins give count, mean confidence and accuracy, NaN
  for an empty bin.
  """
  confidence = probs.max(1)
  correct = probs.argmax(1) == y_true
  edges = np.linspace(0.0, 1.0, bins + 1)
  index = np.digitize(confidence, edges[1:-1], right=True)
  count = np.bincount(index, minlength=bins)
  confidence_sum = np.bincount(index, confidence, bins)
  correct_sum = np.bincount(index, correct, bins)
  mean = lambda v: np.where(count > 0, _safe_divide(v, count), np.nan).tolist()
  ece = float(np.abs(correct_sum - confidence_sum).sum() / len(y_true))
  return ece, {"edges": edges.tolist(), "count": count.tolist(),
               "confidence": mean(confidence_sum), "accuracy": mean(correct_sum)}


def _check_inputs(y_true: np.ndarray, probs: np.ndarray,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
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
  return y_true, probs


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, num_classes: int,
                           y_pred: np.ndarray | None = None) -> dict[str, Any]:
  """Scalar metrics (`METRIC_NAMES`, `LOWER_IS_BETTER`), `per_class` lists, the `confusion`
  matrix and the reliability diagram's `calibration_bins`.

  Predictions are the argmax of `probs` (N, K), or `y_pred` when a decision rule made them
  (jimb.calibration); the AUCs, Brier score and ECE always come from `probs`. Conventions,
  chosen so that a fold whose
  evaluation part lacks a rare class still reports comparable numbers:
    * a class with no true examples in `y_true` is left out of every macro average
      (macro F1, balanced accuracy, ROC-AUC, PR-AUC, CBA, MAvG); its per-class recall
      (= sensitivity), F1 and ROC-AUC are NaN. Predictions of it still count as errors
      (accuracy, MCC, other precisions, specificities).
    * a class that is never predicted has precision 0 (and F1 0).
    * per-class specificity is one-vs-rest TN / (TN + FP), NaN for a class alone in `y_true`.
    * `roc_auc` and `pr_auc` are one-vs-rest macro averages over present classes (for K=2
      `roc_auc` equals the binary AUC of probs[:, 1]; `pr_auc` averages both classes'
      average precision). Both are NaN when `y_true` holds a single class, as is every
      per-class ROC-AUC then.
    * `mavg` is the geometric mean of per-class recalls, 0 when any present recall is 0.
    * `mcc` is 0 when all labels or all predictions are one class.
    * `brier` (in [0, 2], see `brier_score`) and `ece` (see `calibration`) are lower-better
      and use every example, whatever its class.
  """
  y_true, probs = _check_inputs(y_true, probs, num_classes)
  y_pred = probs.argmax(axis=1) if y_pred is None else np.asarray(y_pred)
  out = confusion_metrics(confusion_matrix(y_true, y_pred, num_classes))
  roc_auc, average_precision = _per_class_ranking(y_true, probs)
  out["roc_auc"] = _nan_mean(roc_auc)
  out["pr_auc"] = _nan_mean(average_precision)
  out["per_class"]["roc_auc"] = roc_auc.tolist()
  out["brier"] = brier_score(y_true, probs)
  out["ece"], out["calibration_bins"] = calibration(y_true, probs)
  return out


def _resampled_auc(weights: np.ndarray, y: np.ndarray, probs: np.ndarray,
                   present: np.ndarray) -> np.ndarray:
  """One-vs-rest macro ROC-AUC of resamples given as example multiplicities `weights` (N, B).

  The Mann-Whitney form: per class, the weighted count of (positive, negative) pairs that the
  score orders correctly, ties counting one half, over the pairs. With the negatives' weights
  summed cumulatively in score order, a positive's term is the mean of that sum below its score
  and up to its score, so each class costs one pass over (N, B) and gathers of its positives.
  """
  if len(present) < 2:
    return np.full(weights.shape[1], np.nan)
  aucs = []
  for k in present:
    score = probs[:, k]
    positive = y == k
    negative_scores = np.sort(score[~positive])
    below = np.searchsorted(negative_scores, score[positive], side="left")
    up_to = np.searchsorted(negative_scores, score[positive], side="right")
    negatives = np.flatnonzero(~positive)[np.argsort(score[~positive], kind="stable")]
    cumulative = np.zeros((len(negatives) + 1, weights.shape[1]))
    np.cumsum(weights[negatives], axis=0, out=cumulative[1:])
    correct = weights[positive] * (cumulative[below] + cumulative[up_to])
    aucs.append(correct.sum(0) / (2 * positive.sum() * len(negatives)))
  return np.mean(aucs, axis=0)


def bootstrap_ci(y_true: np.ndarray, probs: np.ndarray, num_classes: int, resamples: int,
                 seed: int, level: float = 0.95,
                 y_pred: np.ndarray | None = None) -> dict[str, list[float]]:
  """{metric: [low, high]}: stratified bootstrap percentile intervals of the `CI_METRICS`,
  with predictions the argmax of `probs` or `y_pred` (as `classification_metrics`).

  Each resample draws, within every class, as many examples as the class has, with
  replacement, so class counts stay those of the data (as in a study that fixed them) and
  every resample's metrics are defined where the data's are. The interval is the
  (1 -/+ level) / 2 quantiles (linear interpolation) of the resampled metric.

  Resample b draws row b of rng.random((resamples, N)) (rng = default_rng(seed)); with the
  examples sorted by class (stable), position j of class c, whose n_c examples start at s_c,
  takes example s_c + floor(n_c * u[b, j]). Rows are drawn in chunks that give the same
  stream, so the intervals depend on the seed only. Metrics are computed for all resamples of
  a chunk at once: confusion matrices and multiplicities by bincounts, ROC-AUC by
  `_resampled_auc`.
  """
  y_true, probs = _check_inputs(y_true, probs, num_classes)
  if resamples < 1:
    raise ValueError(f"a bootstrap needs at least 1 resample, got {resamples}")
  order = np.argsort(y_true, kind="stable")
  y, probs = y_true[order], probs[order]
  pred = probs.argmax(1) if y_pred is None else np.asarray(y_pred)[order]
  n = len(y)
  counts = np.bincount(y, minlength=num_classes)
  size, start = counts[y], (np.cumsum(counts) - counts)[y]
  cell = y * num_classes + pred
  brier = _brier_terms(y, probs)
  present = np.flatnonzero(counts)
  values = {name: [] for name in CI_METRICS}
  rng = np.random.default_rng(seed)
  chunk = max(1, _BOOTSTRAP_CHUNK // n)
  for first in range(0, resamples, chunk):
    b = min(chunk, resamples - first)
    drawn = start + np.minimum((rng.random((b, n)) * size).astype(np.int64), size - 1)
    rows = np.arange(b)[:, None]
    cm = np.bincount((rows * num_classes ** 2 + cell[drawn]).ravel(),
                     minlength=b * num_classes ** 2).reshape(b, num_classes, num_classes)
    # Multiplicities as (N, chunk), so that gathering examples reads contiguous rows.
    weights = np.bincount((drawn * b + rows).ravel(), minlength=n * b).reshape(n, b)
    weights = weights.astype(np.float64)
    stats = _confusion_stats(cm)
    for name in ("macro_f1", "balanced_accuracy", "mcc"):
      values[name].append(stats[name])
    values["roc_auc"].append(_resampled_auc(weights, y, probs, present))
    values["brier"].append(brier @ weights / n)
  tails = [50 * (1 - level), 50 * (1 + level)]
  return {name: np.percentile(np.concatenate(v), tails).tolist() for name, v in values.items()}


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
      raise ValueError(f"metric {key!r} is missing from the record of fold(s) {missing}, made "
                       "by an earlier version; delete their result.json to have them evaluated "
                       "again from their checkpoints (the same model, every metric)")
    values = np.asarray([fold[key] for fold in per_fold], np.float64)
    defined = values[~np.isnan(values)]
    if defined.size:
      out[key] = {"mean": float(defined.mean()), "std": float(defined.std())}
    else:
      out[key] = {"mean": float("nan"), "std": float("nan")}
  return out
