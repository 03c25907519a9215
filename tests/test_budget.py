"""Synthesis budgets: each rule by hand, against the rows seed 000's duplication samplers add,
and against imbalanced-learn's reading of `sampling_strategy`."""

from __future__ import annotations

import numpy as np
import pytest
from imblearn.over_sampling import RandomOverSampler

from jimb.generative.budget import parse_counts, synthesis_counts
from jimb.resampling import samplers

COUNTS = {0: 60, 1: 25, 2: 9, 3: 4}


def _labels(counts=COUNTS, seed=0):
  y = np.repeat(list(counts), list(counts.values()))
  return np.random.default_rng(seed).permutation(y)


def _added(sampler, y) -> dict[int, int]:
  """Rows a resampler adds per class, from its output labels."""
  _, y_out = sampler.fit_resample(np.arange(len(y))[:, None], y)
  before, after = np.bincount(y), np.bincount(y_out)
  return {c: int(after[c] - before[c]) for c in np.unique(y).tolist()}


def test_rules_by_hand():
  y = _labels()
  assert synthesis_counts(y, "majority") == {0: 0, 1: 35, 2: 51, 3: 56}
  assert synthesis_counts(y, "min_count", min_count=30) == {0: 0, 1: 5, 2: 21, 3: 26}
  # S_i = ceil((60 - N_i) / N_i) * N_i: ceil(35/25)*25, ceil(51/9)*9, ceil(56/4)*4.
  assert synthesis_counts(y, "ceil_multiple") == {0: 0, 1: 50, 2: 54, 3: 56}
  assert synthesis_counts(y, "counts", counts={1: 40, 3: 10}) == {0: 0, 1: 15, 2: 0, 3: 6}
  assert synthesis_counts(y, "min_count") == {0: 740, 1: 775, 2: 791, 3: 796}   # seed 000: 800


@pytest.mark.parametrize("budget, sampler", [
    ("majority", samplers.DuplicateToMax(random_state=0)),
    ("min_count", samplers.DuplicateToMinimum(min_count=30, random_state=0)),
    ("ceil_multiple", samplers.DuplicateCeilMultiple()),
])
def test_same_rows_as_the_duplication_samplers(budget, sampler):
  y = _labels({2: 7, 5: 30, 9: 13})   # class ids need not be 0..K-1
  assert synthesis_counts(y, budget, min_count=30) == _added(sampler, y)


@pytest.mark.parametrize("strategy", [
    "auto", "not majority", "minority", {1: 40, 2: 20}, lambda y: {3: 50}])
def test_sampling_strategy_reads_like_imbalanced_learn(strategy):
  y = _labels()
  expected = _added(RandomOverSampler(sampling_strategy=strategy, random_state=0), y)
  assert synthesis_counts(y, "sampling_strategy", sampling_strategy=strategy) == expected


def test_float_sampling_strategy_on_two_classes():
  y = _labels({0: 40, 1: 10})
  assert synthesis_counts(y, "sampling_strategy", sampling_strategy=0.5) == {0: 0, 1: 10}
  with pytest.raises(ValueError, match="--config.synth.sampling_strategy"):
    synthesis_counts(_labels(), "sampling_strategy", sampling_strategy=0.5)   # binary only


def test_classes_restricts_who_receives_samples():
  y = _labels()
  assert synthesis_counts(y, "majority", classes=[3]) == {0: 0, 1: 0, 2: 0, 3: 56}
  assert synthesis_counts(y, "ceil_multiple", classes=(1, 2)) == {0: 0, 1: 50, 2: 54, 3: 0}
  with pytest.raises(ValueError, match=r"--config.synth.classes.*\[7\]"):
    synthesis_counts(y, "majority", classes=[3, 7])


def test_bad_input_names_the_key():
  y = _labels()
  with pytest.raises(ValueError, match=r"--config.synth.budget.*'majority'.*'sampling_strategy'"):
    synthesis_counts(y, "balanced")
  with pytest.raises(ValueError, match=r"class 1 has 25 .*target 10 .*--config.synth.counts"):
    synthesis_counts(y, "counts", counts={1: 10})
  with pytest.raises(ValueError, match=r"class 8 .*--config.synth.counts"):
    synthesis_counts(y, "counts", counts={8: 100})
  with pytest.raises(ValueError, match="needs --config.synth.counts"):
    synthesis_counts(y, "counts")
  with pytest.raises(ValueError, match="--config.synth.min_count"):
    synthesis_counts(y, "min_count", min_count=0)
  with pytest.raises(ValueError, match="1-D integer"):
    synthesis_counts(np.array([0.5, 1.0]), "majority")


def test_parse_counts():
  assert parse_counts("0:800,3:500") == {0: 800, 3: 500}
  assert parse_counts(" 2 : 10 , 4:0") == {2: 10, 4: 0}
  for bad in ("", "0:800,", "0=800", "a:1", "0:-5", "0:1.5", "0:800:1"):
    with pytest.raises(ValueError, match=r"malformed --config.synth.counts.*'0:800,3:500'"):
      parse_counts(bad)
  with pytest.raises(ValueError, match="class 1 twice"):
    parse_counts("1:5,1:6")
