"""Metrics against scikit-learn, imbalanced-learn and hand-computed cases."""

from __future__ import annotations

import imblearn.metrics
import numpy as np
import pytest
from sklearn import metrics as skm

from jimb import metrics


def _random_case(seed, k, n=60):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k, n)
  y[:k] = np.arange(k)  # every class present
  logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y] * rng.random((n, 1))
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return y, probs


def _reference_over(y, probs, labels):
  """Macro metrics restricted to `labels`, from scikit-learn and imbalanced-learn."""
  pred = probs.argmax(1)
  return {
      "accuracy": skm.accuracy_score(y, pred),
      "macro_f1": skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0),
      "balanced_accuracy": skm.recall_score(y, pred, average="macro", labels=labels),
      "mavg": imblearn.metrics.geometric_mean_score(y, pred, labels=labels),
      "mcc": skm.matthews_corrcoef(y, pred),
      "roc_auc": np.mean([skm.roc_auc_score(y == k, probs[:, k]) for k in labels]),
      "pr_auc": np.mean([skm.average_precision_score(y == k, probs[:, k]) for k in labels]),
  }


@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_and_imblearn(seed, k):
  y, probs = _random_case(seed, k)
  pred = probs.argmax(1)
  out = metrics.classification_metrics(y, probs, k)
  assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
  assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
  assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
  assert out["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
  assert out["mavg"] == pytest.approx(imblearn.metrics.geometric_mean_score(y, pred))
  p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
  np.testing.assert_allclose(out["per_class"]["precision"], p)
  np.testing.assert_allclose(out["per_class"]["recall"], r)
  np.testing.assert_allclose(out["per_class"]["f1"], f)
  np.testing.assert_array_equal(out["per_class"]["support"], s)
  np.testing.assert_array_equal(out["confusion"], skm.confusion_matrix(y, pred, labels=range(k)))
  if k == 2:
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
  else:
    assert out["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
  onehot = np.eye(k)[y]
  assert out["pr_auc"] == pytest.approx(
      skm.average_precision_score(onehot, probs, average="macro"))
  assert set(metrics.METRIC_NAMES) <= set(out)
  assert out["brier"] == pytest.approx(
      skm.brier_score_loss(y, probs, labels=range(k), scale_by_half=False))
  if k == 2:  # twice scikit-learn's default positive-class form for binary labels
    assert out["brier"] == pytest.approx(2 * skm.brier_score_loss(y, probs[:, 1]))
  np.testing.assert_allclose(out["per_class"]["sensitivity"], r)
  np.testing.assert_allclose(out["per_class"]["specificity"], imblearn.metrics.specificity_score(
      y, pred, labels=range(k), average=None))
  np.testing.assert_allclose(out["per_class"]["roc_auc"],
                             [skm.roc_auc_score(y == c, probs[:, c]) for c in range(k)])


@pytest.mark.parametrize("decimals", [0, 1, 2])
def test_ranking_scores_match_sklearn_with_tied_scores(decimals):
  """Rounded probabilities tie many scores: each tied run is one threshold, as in sklearn."""
  y, probs = _random_case(3, 5, n=300)
  probs = np.round(probs, decimals)
  out = metrics.classification_metrics(y, probs, 5)
  np.testing.assert_allclose(out["per_class"]["roc_auc"],
                             [skm.roc_auc_score(y == c, probs[:, c]) for c in range(5)],
                             rtol=0, atol=1e-12)
  assert out["pr_auc"] == pytest.approx(
      np.mean([skm.average_precision_score(y == c, probs[:, c]) for c in range(5)]),
      rel=0, abs=1e-12)


def test_confusion_matrix_rows_true_cols_predicted():
  cm = metrics.confusion_matrix(np.array([0, 0, 1, 2]), np.array([1, 0, 1, 1]), 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])
  assert cm.dtype == np.int64


def test_cba_hand_computed():
  # Rows true, cols predicted: [[3, 1], [2, 4]].
  y = np.array([0] * 4 + [1] * 6)
  pred = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
  probs = np.eye(2)[pred]
  out = metrics.classification_metrics(y, probs, 2)
  # class 0: 3 / max(4, 5); class 1: 4 / max(6, 5).
  assert out["cba"] == pytest.approx((3 / 5 + 4 / 6) / 2)
  assert out["mavg"] == pytest.approx(np.sqrt(3 / 4 * 4 / 6))
  # Specificity of class 0: TN 4 / (TN 4 + FP 2); of class 1: TN 3 / (TN 3 + FP 1).
  np.testing.assert_allclose(out["per_class"]["specificity"], [4 / 6, 3 / 4])
  np.testing.assert_allclose(out["per_class"]["sensitivity"], [3 / 4, 4 / 6])


def test_class_never_predicted_has_precision_zero_and_mavg_zero():
  y = np.array([0, 0, 1, 1, 2, 2])
  pred = np.array([0, 0, 1, 0, 0, 1])  # class 2 never predicted
  probs = np.eye(3)[pred] * 0.8 + 0.1
  with np.errstate(all="raise"):
    out = metrics.classification_metrics(y, probs, 3)
  assert out["per_class"]["precision"][2] == 0.0
  assert out["per_class"]["recall"][2] == 0.0
  assert out["per_class"]["f1"][2] == 0.0
  assert out["mavg"] == 0.0
  assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
  assert out["cba"] == pytest.approx((2 / 4 + 1 / 2 + 0) / 3)
  assert all(np.isfinite(out[name]) for name in metrics.METRIC_NAMES)


def test_class_absent_from_y_true_is_left_out_of_macro_averages():
  y, probs = _random_case(3, 4, n=80)
  y[y == 2] = 0  # class 2 absent, but still predicted sometimes
  probs[:5, 2] += 5.0
  probs /= probs.sum(1, keepdims=True)
  pred = probs.argmax(1)
  assert (pred == 2).any()
  labels = [0, 1, 3]
  out = metrics.classification_metrics(y, probs, 4)
  ref = _reference_over(y, probs, labels)
  for name, value in ref.items():
    assert out[name] == pytest.approx(value), name
  cm = skm.confusion_matrix(y, pred, labels=range(4))
  cba = [cm[k, k] / max(cm[k].sum(), cm[:, k].sum()) for k in labels]
  assert out["cba"] == pytest.approx(np.mean(cba))
  assert out["per_class"]["precision"][2] == 0.0
  assert np.isnan(out["per_class"]["recall"][2])
  assert out["per_class"]["support"][2] == 0
  auc = out["per_class"]["roc_auc"]
  assert np.isnan(auc[2])
  np.testing.assert_allclose([auc[c] for c in labels],
                             [skm.roc_auc_score(y == c, probs[:, c]) for c in labels])
  assert out["roc_auc"] == pytest.approx(np.mean([auc[c] for c in labels]))
  # An absent class predicted by mistake lowers its specificity like any other.
  assert out["per_class"]["specificity"][2] == pytest.approx(1 - (pred == 2).mean())


def test_perfect_predictions_give_one():
  y = np.array([0, 1, 2, 2, 1, 0, 2])
  out = metrics.classification_metrics(y, np.eye(3)[y], 3)
  for name in metrics.METRIC_NAMES:
    assert out[name] == pytest.approx(1.0), name


def test_single_class_in_y_true_gives_nan_auc_only():
  y = np.zeros(4, np.int64)
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
  out = metrics.classification_metrics(y, probs, 2)
  assert np.isnan(out["roc_auc"]) and np.isnan(out["pr_auc"])
  assert np.all(np.isnan(out["per_class"]["roc_auc"]))
  # Class 0 has no negatives; class 1 has 4, one of them predicted as class 1.
  assert np.isnan(out["per_class"]["specificity"][0])
  assert out["per_class"]["specificity"][1] == pytest.approx(3 / 4)
  assert np.isfinite(out["brier"]) and np.isfinite(out["ece"])
  assert out["accuracy"] == pytest.approx(0.75)
  assert out["balanced_accuracy"] == pytest.approx(0.75)
  assert out["mcc"] == pytest.approx(skm.matthews_corrcoef(y, probs.argmax(1)))


@pytest.mark.parametrize("bad, match", [
    (dict(probs=np.full((3, 2), 0.5), num_classes=3), "shape"),
    (dict(probs=np.array([[np.nan, 1.0]] * 3), num_classes=2), "learning_rate"),
    (dict(y=np.array([0, 1, 5]), probs=np.full((3, 2), 0.5), num_classes=2), r"\[0, 2\)"),
])
def test_bad_input_raises(bad, match):
  args = dict(y=np.array([0, 1, 1]))
  args.update(bad)
  with pytest.raises(ValueError, match=match):
    metrics.classification_metrics(args["y"], args["probs"], args["num_classes"])


def test_summarize_mean_std_ignores_nan():
  folds = [
      {"accuracy": 0.5, "roc_auc": 0.7, "per_class": {}, "confusion": [[1]]},
      {"accuracy": 0.7, "roc_auc": float("nan"), "per_class": {}, "confusion": [[1]]},
      {"accuracy": 0.9, "roc_auc": 0.9, "per_class": {}, "confusion": [[1]]},
  ]
  out = metrics.summarize(folds)
  assert set(out) == {"accuracy", "roc_auc"}
  assert out["accuracy"]["mean"] == pytest.approx(np.mean([0.5, 0.7, 0.9]))
  assert out["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
  assert out["roc_auc"]["mean"] == pytest.approx(0.8)
  assert out["roc_auc"]["std"] == pytest.approx(np.std([0.7, 0.9]))


def test_summarize_all_nan_and_empty():
  out = metrics.summarize([{"roc_auc": float("nan")}] * 2)
  assert np.isnan(out["roc_auc"]["mean"]) and np.isnan(out["roc_auc"]["std"])
  with pytest.raises(ValueError, match="only_folds"):
    metrics.summarize([])


def test_brier_hand_computed():
  y = np.array([0, 1])
  probs = np.array([[0.8, 0.2], [0.4, 0.6]])
  # (0.2^2 + 0.2^2 + 0.4^2 + 0.4^2) / 2; the positive-class form is half: (0.2^2 + 0.4^2) / 2.
  assert metrics.brier_score(y, probs) == pytest.approx(0.2)
  assert skm.brier_score_loss(y, probs[:, 1]) == pytest.approx(0.1)
  assert metrics.brier_score(np.array([0]), np.array([[0.0, 1.0, 0.0]])) == pytest.approx(2.0)


def test_ece_hand_computed():
  y = np.array([0, 1, 1, 0])
  probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.45, 0.55]])
  ece, bins = metrics.calibration(y, probs)
  # Bins of width 1/15: 0.9 (twice, one right) in bin 13, 0.7 (right) in 10, 0.55 (wrong) in 8.
  assert ece == pytest.approx((2 * abs(0.5 - 0.9) + abs(1 - 0.7) + abs(0 - 0.55)) / 4)
  assert len(bins["edges"]) == 16 and len(bins["count"]) == 15
  assert [i for i, n in enumerate(bins["count"]) if n] == [8, 10, 13]
  assert bins["count"][13] == 2
  assert bins["confidence"][13] == pytest.approx(0.9)
  assert bins["accuracy"][13] == pytest.approx(0.5)
  assert bins["accuracy"][8] == 0.0 and bins["accuracy"][10] == 1.0
  assert np.isnan(bins["confidence"][0]) and np.isnan(bins["accuracy"][0])


@pytest.mark.parametrize("seed", [0, 1])
def test_ece_matches_a_loop_over_bins(seed):
  y, probs = _random_case(seed, 7, n=500)
  out = metrics.classification_metrics(y, probs, 7)
  confidence, correct = probs.max(1), probs.argmax(1) == y
  edges = np.linspace(0, 1, 16)
  ece, counts = 0.0, []
  for lower, upper in zip(edges[:-1], edges[1:]):
    inside = (confidence > lower) & (confidence <= upper)
    counts.append(inside.sum())
    if inside.any():
      ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
  assert out["ece"] == pytest.approx(ece)
  assert out["calibration_bins"]["count"] == counts
  assert sum(counts) == len(y)


def _loop_bootstrap(y, probs, k, resamples, seed):
  """The stratified bootstrap one resample at a time with classification_metrics: per
  resample one row of uniforms, taken by the classes' members in label order."""
  rng = np.random.default_rng(seed)
  members = [np.flatnonzero(y == c) for c in range(k)]
  values = {name: [] for name in metrics.CI_METRICS}
  for _ in range(resamples):
    u = rng.random(len(y))
    drawn, at = [], 0
    for m in members:
      drawn.append(m[np.floor(u[at:at + len(m)] * len(m)).astype(int)])
      at += len(m)
    drawn = np.concatenate(drawn)
    out = metrics.classification_metrics(y[drawn], probs[drawn], k)
    for name in values:
      values[name].append(out[name])
  return {name: np.percentile(v, [2.5, 97.5]).tolist() for name, v in values.items()}


@pytest.mark.parametrize("k, absent", [(2, None), (3, None), (5, 3)])
def test_bootstrap_matches_a_loop(k, absent, monkeypatch):
  y, probs = _random_case(k, k, n=60)
  if absent is not None:
    y[y == absent] = 0
  probs = np.round(probs, 1)  # tied scores
  monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK", 7 * len(y))  # chunks of 7, the last of 1
  fast = metrics.bootstrap_ci(y, probs, k, 50, seed=4)
  slow = _loop_bootstrap(y, probs, k, 50, seed=4)
  assert set(fast) == set(metrics.CI_METRICS)
  for name in metrics.CI_METRICS:
    np.testing.assert_allclose(fast[name], slow[name], rtol=1e-12, err_msg=name)
  pooled = metrics.classification_metrics(y, probs, k)
  assert all(fast[n][0] <= pooled[n] <= fast[n][1] for n in metrics.CI_METRICS)


def test_bootstrap_is_seeded_and_nan_without_two_classes():
  y, probs = _random_case(0, 3, n=90)
  a = metrics.bootstrap_ci(y, probs, 3, 30, seed=1)
  assert a == metrics.bootstrap_ci(y, probs, 3, 30, seed=1)
  assert a != metrics.bootstrap_ci(y, probs, 3, 30, seed=2)
  one = metrics.bootstrap_ci(np.zeros(5, np.int64), probs[:5], 3, 20, seed=0)
  assert np.all(np.isnan(one["roc_auc"]))
  assert np.all(np.isfinite(one["brier"]))
  with pytest.raises(ValueError, match="at least 1"):
    metrics.bootstrap_ci(y, probs, 3, 0, seed=0)


def test_lower_is_better_metrics_are_never_ranked():
  assert not set(metrics.LOWER_IS_BETTER) & set(metrics.METRIC_NAMES)
  assert set(metrics.CI_METRICS) <= set(metrics.METRIC_NAMES + metrics.LOWER_IS_BETTER)
