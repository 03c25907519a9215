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
