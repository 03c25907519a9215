"""Temperature scaling and decision rules (jimb.calibration) against brute-force references, and
their wiring: fitted on validation only, the same in eval mode as in training, old numbers kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import special
from sklearn import metrics as sk

from jimb import calibration, config as config_lib, experiment, metrics
from jimb.training import setup as setup_lib
from tests.helpers import tiny_config

QUIET = lambda *_: None


def _logits(n, k, seed, scale=3.0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, k)) * scale


def _sampled(logits, seed):
  """Labels drawn from softmax(logits): probabilities calibrated by construction."""
  p = special.softmax(logits, axis=1)
  u = np.random.default_rng(seed).random(len(p))[:, None]
  return (u > np.cumsum(p, 1)).sum(1)


def test_temperature_matches_a_brute_force_grid_of_nll():
  logits = _logits(600, 4, 0)
  labels = _sampled(logits / 2.5, 1)           # the model is overconfident: T near 2.5
  log_p = special.log_softmax(logits, axis=1)
  t = calibration.fit_temperature(log_p, labels)
  grid = np.exp(np.linspace(*np.log(calibration.TEMPERATURE_BOUNDS), 20001))
  nll = [-np.mean(special.log_softmax(log_p / g, 1)[np.arange(600), labels]) for g in grid]
  best = grid[int(np.argmin(nll))]
  assert abs(np.log(t / best)) < 1e-3
  assert calibration.nll(log_p, labels, t) <= min(nll) + 1e-9
  assert 1.8 < t < 3.5


def test_temperature_is_one_on_calibrated_data_and_keeps_the_argmax():
  logits = _logits(20000, 5, 2, scale=1.5)
  labels = _sampled(logits, 3)
  log_p = calibration.log_probs(special.softmax(logits, axis=1))
  t = calibration.fit_temperature(log_p, labels)
  assert abs(t - 1.0) < 0.05
  scaled = calibration.apply_temperature(log_p, 2.0)
  np.testing.assert_array_equal(scaled.argmax(1), logits.argmax(1))
  np.testing.assert_allclose(scaled.sum(1), 1.0, atol=1e-6)


def test_a_separated_validation_part_keeps_t_at_one():
  logits = _logits(200, 3, 4)
  log_p = special.log_softmax(logits, axis=1)
  assert calibration.fit_temperature(log_p, logits.argmax(1)) == 1.0


def _binary(seed, n=300):
  rng = np.random.default_rng(seed)
  y = (rng.random(n) < 0.2).astype(int)
  score = np.round(rng.normal(y * 1.2, 1.0), 1)       # rounded: ties among scores
  p1 = special.expit(score)
  return np.c_[1 - p1, p1], y


@pytest.mark.parametrize("rule", ["balanced_accuracy", "youden"])
def test_binary_threshold_is_the_best_roc_threshold(rule):
  probs, y = _binary(0)
  decision = calibration.fit_decision(probs, y, rule, positive=1)
  _, _, thresholds = sk.roc_curve(y, probs[:, 1], drop_intermediate=False)
  ba = np.array([sk.balanced_accuracy_score(y, probs[:, 1] >= t) for t in thresholds])
  best = thresholds[ba == ba.max()].max()       # ties: the highest threshold
  assert decision.threshold == pytest.approx(best)
  pred = decision.predict(probs)
  assert sk.balanced_accuracy_score(y, pred) == pytest.approx(ba.max())


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_sensitivity_threshold_is_the_highest_reaching_the_target(target):
  probs, y = _binary(1)
  decision = calibration.fit_decision(probs, y, "sensitivity", positive=1,
                                      target_sensitivity=target)
  _, tpr, thresholds = sk.roc_curve(y, probs[:, 1], drop_intermediate=False)
  assert decision.threshold == pytest.approx(thresholds[tpr >= target].max())
  assert sk.recall_score(y, decision.predict(probs)) >= target


def _multiclass(seed, n=400, k=4):
  rng = np.random.default_rng(seed)
  y = rng.choice(k, n, p=[0.55, 0.25, 0.15, 0.05])
  logits = rng.normal(size=(n, k)) + 1.2 * np.eye(k)[y] + np.log([0.55, 0.25, 0.15, 0.05])
  return special.softmax(logits, axis=1), y


def test_multiclass_youden_thresholds_are_each_classes_one_vs_rest_cut():
  probs, y = _multiclass(0)
  decision = calibration.fit_decision(probs, y, "youden")
  for c in range(probs.shape[1]):
    fpr, tpr, thresholds = sk.roc_curve(y == c, probs[:, c], drop_intermediate=False)
    j = tpr - fpr
    assert decision.thresholds[c] == pytest.approx(thresholds[j == j.max()].max())
  np.testing.assert_array_equal(decision.predict(probs), (probs / decision.thresholds).argmax(1))


def test_multiclass_balanced_accuracy_is_a_coordinate_optimum_above_argmax():
  probs, y = _multiclass(1)
  decision = calibration.fit_decision(probs, y, "balanced_accuracy")
  achieved = sk.balanced_accuracy_score(y, decision.predict(probs))
  assert achieved > sk.balanced_accuracy_score(y, probs.argmax(1)) + 0.02
  grid = np.exp(np.linspace(-8, 8, 801))
  for c in range(probs.shape[1]):             # no single class's weight does better
    t = decision.thresholds.copy()
    for g in grid:
      t[c] = g
      assert sk.balanced_accuracy_score(y, (probs / t).argmax(1)) <= achieved + 1e-12
  again = calibration.fit_decision(probs, y, "balanced_accuracy")
  np.testing.assert_array_equal(again.thresholds, decision.thresholds)


def test_degenerate_validation_parts_fall_back_to_argmax():
  probs, y = _multiclass(2)
  no_positive = calibration.fit_decision(probs, np.zeros_like(y), "youden", positive=3)
  assert no_positive.threshold is None and "positive" in no_positive.fallback
  np.testing.assert_array_equal(no_positive.predict(probs), probs.argmax(1))
  one_class = calibration.fit_decision(probs, np.zeros_like(y), "balanced_accuracy")
  assert one_class.thresholds is None and one_class.fallback
  absent = calibration.fit_decision(probs[y != 3], y[y != 3], "balanced_accuracy")
  assert absent.thresholds[3] == 1.0           # an absent class keeps its weight


def test_positive_class_by_name_index_or_training_minority():
  names = ("benign", "malignant")
  assert calibration.positive_class("benign", names, np.array([5, 50]), "youden") == 0
  assert calibration.positive_class("1", names, np.array([5, 50]), "youden") == 1
  assert calibration.positive_class("", names, np.array([5, 50]), "youden") == 0
  assert calibration.positive_class("", names, np.array([50, 50]), "youden") == 1
  assert calibration.positive_class("", names, np.array([5, 50]), "argmax") is None
  with pytest.raises(ValueError, match="is no class"):
    calibration.positive_class("melanoma", names, np.array([5, 50]), "youden")
  with pytest.raises(ValueError, match="positive_class=<name or index>"):
    calibration.positive_class("", "abc", np.array([5, 5, 5]), "sensitivity")


def test_metrics_take_predictions_other_than_argmax():
  probs, y = _multiclass(3)
  pred = np.random.default_rng(0).integers(0, 4, len(y))
  out = metrics.classification_metrics(y, probs, 4, y_pred=pred)
  assert out["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))
  assert out["brier"] == metrics.classification_metrics(y, probs, 4)["brier"]


def test_config_checks_rule_and_validation_part():
  c = tiny_config(**{"decision.rule": "cost"})
  with pytest.raises(ValueError, match="decision.rule"):
    config_lib.validate(c)
  c = tiny_config(**{"calibration.temperature": True, "split.val_fraction": 0.0})
  with pytest.raises(ValueError, match="val_fraction=0 leaves none"):
    config_lib.validate(c)


POST_HOC = {"calibration.temperature": True, "decision.rule": "balanced_accuracy"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("calibration")
  plain = experiment.train_and_evaluate(tiny_config(), root / "plain", log=QUIET)
  with_post_hoc = experiment.train_and_evaluate(tiny_config(**POST_HOC), root / "post_hoc",
                                                log=QUIET)
  return root, plain, with_post_hoc


def _same(a, b) -> bool:
  """Equal records, NaN included (as results.json writes them)."""
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _fitted(results):
  return [(r["calibration"]["temperature"], r["decision"]["thresholds"])
          for r in results["folds"]]


def test_post_hoc_steps_leave_the_old_numbers_and_add_their_own(runs):
  root, plain, post_hoc = runs
  for a, b in zip(plain["folds"], post_hoc["folds"], strict=True):
    assert _same(a["test"], b["test"])          # the plain argmax record is unchanged
    assert "calibration" not in a and "decision" not in a
    cal = b["calibration"]
    assert cal["val_nll_after"] <= cal["val_nll_before"] + 1e-12
  assert _same(post_hoc["summary"]["pooled"], plain["summary"]["pooled"])
  summary = post_hoc["summary"]
  assert "brier" in summary["pooled_calibrated"]["ci"]
  with np.load(root / "post_hoc" / "fold_0" / "test_probs.npz") as saved:
    np.testing.assert_array_equal(saved["decision_pred"],
                                  (saved["probs_calibrated"]
                                   / np.asarray(post_hoc["folds"][0]["decision"]["thresholds"])
                                   ).argmax(1))


def test_eval_mode_applies_post_hoc_steps_as_training_does(runs):
  root, _, trained = runs
  again = experiment.evaluate(tiny_config(**POST_HOC), root / "plain", log=QUIET,
                              output="eval_post_hoc.json")
  assert _fitted(again) == _fitted(trained)
  for a, b in zip(again["folds"], trained["folds"], strict=True):
    assert a["decision"]["test"]["balanced_accuracy"] == b["decision"]["test"]["balanced_accuracy"]
    assert a["calibration"] == b["calibration"]
  assert again["summary"]["pooled_decision"]["macro_f1"] == (
      trained["summary"]["pooled_decision"]["macro_f1"])
  # Its own pooled arrays (for its report), equal to what training with the steps saved.
  with np.load(root / "plain" / "eval_post_hoc_probs.npz") as saved:
    folds = [np.load(root / "post_hoc" / f"fold_{r['index']}" / "test_probs.npz")
             for r in trained["folds"]]
    for key in ("index", "labels", "probs", "probs_calibrated", "decision_pred"):
      np.testing.assert_array_equal(saved[key], np.concatenate([f[key] for f in folds]))
  page = (root / "plain" / "eval_post_hoc_report.html").read_text()
  assert "Reliability diagram" in page and "decision rule" in page


def test_test_labels_never_fit_the_temperature_or_the_rule(runs, monkeypatch):
  root, _, trained = runs
  real = setup_lib.setup_fold

  def shuffled_test_labels(*args, **kwargs):
    setup = real(*args, **kwargs)
    setup.y["test"] = np.random.default_rng(0).permutation(setup.y["test"])
    return setup

  monkeypatch.setattr(setup_lib, "setup_fold", shuffled_test_labels)
  shuffled = experiment.evaluate(tiny_config(**POST_HOC), root / "plain", log=QUIET,
                                 output="eval_shuffled.json")
  assert _fitted(shuffled) == _fitted(trained)
  assert shuffled["folds"][0]["calibration"]["test_after"] != (
      trained["folds"][0]["calibration"]["test_after"])
