"""Seed 001's imbalance scenarios: its per-class counts, nesting across IR, class roles."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import tiny_config
from jimb.data import folds as folds_lib
from jimb.data import scenarios


def test_linear_ir10_eight_classes_of_625_by_hand():
  # r_i = 1 + 9/7 (i - 1); n_i = floor(625 / r_i)
  np.testing.assert_array_equal(scenarios.counts(625, "linear", 10.0, 8),
                                [625, 273, 175, 128, 101, 84, 71, 62])


@pytest.mark.parametrize("scenario, expected", [
    ("single_majority", [625] + [125] * 7), ("single_minority", [625] * 7 + [125]),
    ("half_minority", [625] * 4 + [125] * 4)])
def test_step_scenarios_at_ir5(scenario, expected):
  np.testing.assert_array_equal(scenarios.counts(625, scenario, 5.0, 8), expected)


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS)
def test_ir1_is_balanced(scenario):
  np.testing.assert_array_equal(scenarios.counts(625, scenario, 1.0, 8), [625] * 8)


def test_thin_is_nested_across_ir_and_keeps_class_roles():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(8), 100)
  index = np.sort(rng.choice(len(labels), 720, replace=False))   # one fold's training rows
  kept = {ir: scenarios.thin(index, labels, 8, "linear", ir, seed=3, fold=2) for ir in (1, 2, 5, 10)}
  assert set(kept[10]) <= set(kept[5]) <= set(kept[2]) <= set(kept[1]) <= set(index)
  n = np.bincount(labels[index], minlength=8).min()
  per_class = np.bincount(labels[kept[10]], minlength=8)
  np.testing.assert_array_equal(np.sort(per_class)[::-1], scenarios.counts(n, "linear", 10, 8))
  # The same majority class in every scenario of the fold; another fold orders classes anew.
  majority = {s: np.bincount(labels[scenarios.thin(index, labels, 8, s, 5, 3, 2)]).argmax()
              for s in ("single_majority", "linear")}
  assert len(set(majority.values())) == 1
  orders = {f: np.argsort(-np.bincount(labels[scenarios.thin(index, labels, 8, "linear", 10, 3, f)],
                                       minlength=8)) for f in range(4)}
  assert len({tuple(o) for o in orders.values()}) > 1
  np.testing.assert_array_equal(scenarios.thin(index, labels, 8, "linear", 10, seed=3, fold=2),
                                kept[10])


def test_bad_scenario_and_ratio():
  with pytest.raises(ValueError, match="imbalance.profile"):
    scenarios.ratios("triangle", 2.0, 8)
  with pytest.raises(ValueError, match="imbalance.ratio"):
    scenarios.ratios("linear", 0.5, 8)


def test_runner_thins_training_parts_and_keeps_test_parts():
  c = tiny_config(**{"imbalance.profile": "half_minority", "imbalance.ratio": 5.0,
                     "split.folds": 3})
  ds, folds, _ = folds_lib.load_data(c, log=lambda s: None)
  assert len(ds.y) == 1797                                    # digits, untouched
  tested = np.concatenate([f.test for f in folds])
  np.testing.assert_array_equal(np.sort(tested), np.arange(1797))
  for fold in folds:
    counts = np.bincount(ds.y[fold.train], minlength=10)
    assert (counts < counts.max() / 4).sum() == 5             # five minority classes at IR 5
    assert set(fold.val) | set(fold.train) <= set(range(1797)) - set(fold.test)
