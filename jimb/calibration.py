"""Post-hoc calibration and decision rules, fitted on a fold's validation part only.

Temperature scaling (Guo et al. 2017) divides the logits by one T > 0 chosen for minimal
validation negative log-likelihood. It keeps every argmax, so it changes the probabilities
(Brier score, calibration error) and never the confusion matrix. Softmax probabilities carry
the logits up to a per-example constant, so log-probabilities serve as logits.

Decision rules replace the argmax by an operating point chosen on validation, as a screening
study fixes its threshold before it sees the test set:
  * one class against the rest (binary tasks, or `positive` named): predict `positive` when
    p(positive) >= threshold, otherwise the most probable other class. `balanced_accuracy`
    and `youden` pick the threshold of maximal (TPR + TNR) / 2 = (1 + J) / 2, so the two
    coincide for one threshold; `sensitivity` picks the highest threshold whose validation
    sensitivity reaches the target (a screening operating point).
  * several classes and no positive one: predict argmax_c p_c / t_c. `balanced_accuracy` finds
    the t_c by coordinate ascent on the multi-class balanced accuracy; `youden` sets each t_c to
    class c's own one-vs-rest Youden threshold, so a class is favoured by how far its probability
    clears the cut that best separates it from the rest (the per-class operating points a
    reader of one-vs-rest ROC curves expects), without optimising the joint decision.
Ties go to the highest threshold (the fewest positive calls); a validation part that cannot
inform a rule (the positive class or every other class absent, fewer than two classes present)
leaves the argmax, with the reason recorded in `fallback`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from scipy import optimize, special

RULES = ("argmax", "balanced_accuracy", "youden", "sensitivity")
# T is searched on log T within these bounds (a validation part whose NLL still falls at a
# bound is nearly separated: T stops there).
TEMPERATURE_BOUNDS = (0.05, 20.0)
_TINY = 1e-30          # floor of probabilities before logs and ratios
_MAX_SWEEPS = 50       # coordinate ascent stops earlier, when a sweep changes nothing


def log_probs(probs: np.ndarray) -> np.ndarray:
  """log p in float64, with p floored so that a probability that underflowed stays finite."""
  return np.log(np.maximum(np.asarray(probs, np.float64), _TINY))


def nll(log_p: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
  """Mean negative log-likelihood of `labels` under softmax(log_p / temperature)."""
  z = np.asarray(log_p, np.float64) / temperature
  return float(np.mean(special.logsumexp(z, axis=1) - z[np.arange(len(labels)), labels]))


def separated(log_p: np.ndarray, labels: np.ndarray) -> bool:
  """Whether the argmax gets every example right: the NLL then has no minimum (it falls to 0
  as T -> 0), and a temperature fitted there would only saturate the probabilities."""
  return bool(np.all(np.asarray(log_p).argmax(1) == np.asarray(labels)))


def fit_temperature(log_p: np.ndarray, labels: np.ndarray) -> float:
  """The T in TEMPERATURE_BOUNDS of minimal validation NLL of softmax(log_p / T); 1 when the
  validation part is `separated`, which says nothing about the calibration.

  The NLL is convex in 1 / T, hence unimodal in log T, where bounded Brent search finds the
  minimum deterministically (to 1e-6 in log T).
  """
  labels = np.asarray(labels)
  if not len(labels):
    raise ValueError("temperature scaling needs validation examples; raise "
                     "--config.split.val_fraction or set --config.calibration.temperature=False")
  log_p = np.asarray(log_p, np.float64)
  if separated(log_p, labels):
    return 1.0
  found = optimize.minimize_scalar(lambda s: nll(log_p, labels, np.exp(s)),
                                   bounds=np.log(TEMPERATURE_BOUNDS), method="bounded",
                                   options={"xatol": 1e-6})
  return float(np.exp(found.x))


def apply_temperature(log_p: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(log_p / temperature) in float64: a T < 1 sharpens small probabilities below
  float32's range, where they would tie at 0 and blur the rankings the AUCs read."""
  return special.softmax(np.asarray(log_p, np.float64) / temperature, axis=1)


def positive_class(text: str, class_names: Sequence[str], train_counts: np.ndarray,
                   rule: str) -> int | None:
  """The class a threshold rule scores against the rest, or None for a multi-class rule.

  `text` names a class or gives its index. Unset, a binary task takes the class with fewer
  training examples (the later one on a tie), the usual positive of a screening task; more
  classes take none, which `sensitivity` refuses (whose sensitivity would it be).
  """
  k = len(train_counts)
  if rule == "argmax":
    return None
  if text:
    names = [str(n) for n in class_names]
    if text in names:
      return names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < k:
      return int(text)
    raise ValueError(f"--config.decision.positive_class={text!r} is no class; give a class name "
                     f"({', '.join(names[:10])}) or an index 0..{k - 1}")
  if k == 2:
    return 0 if train_counts[0] < train_counts[1] else 1
  if rule == "sensitivity":
    raise ValueError(f"--config.decision.rule=sensitivity on {k} classes needs the class whose "
                     "sensitivity it targets: set --config.decision.positive_class=<name or index>")
  return None


@dataclasses.dataclass(frozen=True)
class Decision:
  """A fitted rule: a `threshold` on p(`positive`), per-class `thresholds`, or neither (argmax)."""

  rule: str
  positive: int | None = None
  threshold: float | None = None
  thresholds: np.ndarray | None = None
  fallback: str = ""

  def predict(self, probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, np.float64)
    if self.threshold is not None:
      others = probs.copy()
      others[:, self.positive] = -np.inf
      return np.where(probs[:, self.positive] >= self.threshold, self.positive,
                      others.argmax(1)).astype(np.int64)
    if self.thresholds is not None:
      return (np.maximum(probs, _TINY) / self.thresholds).argmax(1).astype(np.int64)
    return probs.argmax(1).astype(np.int64)

  def record(self, class_names: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": self.rule}
    if self.positive is not None:
      out["positive_class"] = str(class_names[self.positive] if len(class_names) else
                                  self.positive)
    if self.threshold is not None:
      out["threshold"] = self.threshold
    if self.thresholds is not None:
      out["thresholds"] = self.thresholds.tolist()
    if self.fallback:
      out["fallback"] = self.fallback
    return out


def _threshold_rates(score: np.ndarray, is_positive: np.ndarray):
  """Candidate thresholds (inf, then every distinct score, descending) with their TPR and TNR
  for the call score >= threshold."""
  candidates = np.r_[np.inf, np.unique(score)[::-1]]
  positives, negatives = np.sort(score[is_positive]), np.sort(score[~is_positive])
  tp = len(positives) - np.searchsorted(positives, candidates, side="left")
  fp = len(negatives) - np.searchsorted(negatives, candidates, side="left")
  return candidates, tp / len(positives), 1.0 - fp / len(negatives)


def youden_threshold(score: np.ndarray, is_positive: np.ndarray) -> tuple[float, float]:
  """(threshold, J): the highest threshold of maximal TPR + TNR - 1 for score >= threshold."""
  candidates, tpr, tnr = _threshold_rates(score, is_positive)
  j = tpr + tnr - 1.0
  best = int(np.argmax(j))      # the first maximum: the highest threshold
  return float(candidates[best]), float(j[best])


def sensitivity_threshold(score: np.ndarray, is_positive: np.ndarray, target: float) -> float:
  """The highest threshold whose sensitivity (TPR of score >= threshold) reaches `target`."""
  candidates, tpr, _ = _threshold_rates(score, is_positive)
  return float(candidates[int(np.argmax(tpr >= target))])   # the lowest score reaches TPR 1


def _balanced_accuracy(labels: np.ndarray, pred: np.ndarray, present: np.ndarray) -> float:
  hits = np.bincount(labels[pred == labels], minlength=len(present))
  counts = np.bincount(labels, minlength=len(present))
  return float(np.mean(hits[present] / counts[present]))


def _ascend(probs: np.ndarray, labels: np.ndarray, present: np.ndarray) -> np.ndarray:
  """Per-class divisors t of argmax p_c / t_c by coordinate ascent on balanced accuracy.

  For class c with the others fixed, example i goes to c when t_c < r_i = p_ic / max_j!=c
  (p_ij / t_j), so the accuracy only changes at the r_i: each candidate t_c is the geometric
  midpoint between two consecutive distinct r_i (or beyond the extremes), scored at once from
  cumulative counts. A class moves only for a strictly better accuracy, to the best candidate
  nearest its current t_c; absent classes keep t_c = 1. Every move raises the accuracy, so the
  sweeps end; they are deterministic.
  """
  n, k = probs.shape
  counts = np.bincount(labels, minlength=k).astype(np.float64)
  t = np.ones(k)
  for _ in range(_MAX_SWEEPS):
    moved = False
    for c in np.flatnonzero(present):
      scaled = probs / t
      scaled[:, c] = -np.inf
      other = scaled.argmax(1)
      r = probs[:, c] / scaled[np.arange(n), other]
      order = np.argsort(-r, kind="stable")
      r_sorted, y_sorted, other_sorted = r[order], labels[order], other[order]
      # m examples (the first m by r) go to c; m only at boundaries between distinct r.
      cuts = np.r_[0, np.flatnonzero(np.diff(r_sorted) < 0) + 1, n]
      to_c = np.cumsum(np.eye(k)[y_sorted], axis=0)              # true classes among the first m
      kept = np.eye(k)[y_sorted] * (other_sorted == y_sorted)[:, None]
      kept_after = kept.sum(0) - np.cumsum(kept, axis=0)         # others' hits among the rest
      hits = np.vstack([kept.sum(0)[None], kept_after])[cuts]
      hits[:, c] = np.r_[0.0, to_c[:, c]][cuts]
      accuracy = (hits[:, present] / counts[present]).mean(1)
      upper = np.r_[r_sorted[0] * 2.0, r_sorted[cuts[1:-1] - 1], r_sorted[-1]]
      lower = np.r_[r_sorted[0], r_sorted[cuts[1:-1]], r_sorted[-1] / 2.0]
      candidate = np.sqrt(upper * lower)
      current = _balanced_accuracy(labels, (probs / t).argmax(1), present)
      best = accuracy.max()
      if best > current + 1e-12:
        ties = np.flatnonzero(accuracy == best)
        t[c] = candidate[ties[np.argmin(np.abs(np.log(candidate[ties] / t[c])))]]
        moved = True
    if not moved:
      break
  return t


def fit_decision(probs: np.ndarray, labels: np.ndarray, rule: str, positive: int | None = None,
                 target_sensitivity: float = 0.95) -> Decision:
  """The rule `rule` (RULES) fitted on validation `probs` (N, K) and `labels`."""
  if rule not in RULES:
    raise ValueError(f"unknown --config.decision.rule={rule!r}; choose one of {RULES}")
  probs = np.maximum(np.asarray(probs, np.float64), _TINY)
  labels = np.asarray(labels)
  k = probs.shape[1]
  present = np.bincount(labels, minlength=k) > 0
  if rule == "argmax":
    return Decision(rule)
  if positive is not None:
    is_positive = labels == positive
    if is_positive.all() or not is_positive.any():
      return Decision(rule, positive, fallback="the validation part holds "
                      + ("only" if is_positive.all() else "no") + " examples of the positive class")
    score = probs[:, positive]
    threshold = (sensitivity_threshold(score, is_positive, target_sensitivity)
                 if rule == "sensitivity" else youden_threshold(score, is_positive)[0])
    return Decision(rule, positive, threshold=threshold)
  if rule == "sensitivity":
    raise ValueError("--config.decision.rule=sensitivity needs --config.decision.positive_class")
  if present.sum() < 2:
    return Decision(rule, fallback="the validation part holds fewer than two classes")
  if rule == "balanced_accuracy":
    return Decision(rule, thresholds=_ascend(probs, labels, present))
  # youden: each present class's one-vs-rest cut; a class without an informative one (absent,
  # or no better than chance, J <= 0) takes the geometric mean of the others' cuts.
  cuts = np.full(k, np.nan)
  for c in np.flatnonzero(present):
    cut, j = youden_threshold(probs[:, c], labels == c)
    if j > 0:
      cuts[c] = max(cut, _TINY)
  if np.isnan(cuts).all():
    return Decision(rule, fallback="no class separates from the rest on the validation part")
  cuts[np.isnan(cuts)] = np.exp(np.mean(np.log(cuts[~np.isnan(cuts)])))
  return Decision(rule, thresholds=cuts)
