"""ClassAwareSampler: class shares, determinism, sharding and errors vs hand-computed targets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from jimb.config import base_config
from jimb.data import sampler as sampler_lib

# 100 examples over 5 classes; class 4 has none.
COUNTS = np.array([60, 30, 9, 1, 0])
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(5), COUNTS))
WEIGHTS = np.array([1.0, 2.0, 0.0, 3.0, 5.0])

# (mode, class weights, hand-computed class probabilities); absent class 4 always gets 0.
CASES = [
    ("instance", None, COUNTS / 100),
    ("class_balanced", None, np.array([1, 1, 1, 1, 0]) / 4),
    ("power", None, np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()),
    ("power", WEIGHTS, np.array([1, 2, 0, 3, 0]) / 6),
    ("instance", WEIGHTS, np.array([1, 2, 0, 3, 0]) / 6),
]


def make(mode="instance", q=0.5, batch=10, seed=3, labels=LABELS, **kw):
  return sampler_lib.ClassAwareSampler(
      labels, 5, mode=mode, q=q, global_batch_size=batch, seed=seed, **kw)


@pytest.mark.parametrize("mode,weights,target", CASES)
def test_class_frequencies_match_targets(mode, weights, target):
  s = make(mode)
  np.testing.assert_allclose(s.class_probabilities(weights), target, atol=1e-12)
  np.testing.assert_allclose(s.counts_per_epoch(weights), 100 * target, atol=1e-9)

  drawn = np.concatenate([s.epoch_indices(e, weights).ravel() for e in range(200)])
  observed = np.bincount(LABELS[drawn], minlength=5)
  assert observed[4] == 0 and (target > 0).sum() == (observed > 0).sum()
  present = target > 0
  _, p_value = stats.chisquare(observed[present], len(drawn) * target[present])
  assert p_value > 1e-4, (observed, len(drawn) * target)

  # Within a class every example is equally likely (class 0: 60 examples).
  members = np.flatnonzero(LABELS == 0)
  per_example = np.bincount(drawn, minlength=100)[members]
  _, p_value = stats.chisquare(per_example)
  assert p_value > 1e-4


def test_power_q_limits_equal_instance_and_class_balanced():
  np.testing.assert_allclose(make("power", q=1.0).class_probabilities(),
                             make("instance").class_probabilities())
  np.testing.assert_allclose(make("power", q=0.0).class_probabilities(),
                             make("class_balanced").class_probabilities())


def test_deterministic_per_seed_and_epoch():
  a, b = make("power"), make("power")
  np.testing.assert_array_equal(a.epoch_indices(4), b.epoch_indices(4))
  assert not np.array_equal(a.epoch_indices(4), a.epoch_indices(5))
  assert not np.array_equal(a.epoch_indices(4), make("power", seed=4).epoch_indices(4))
  assert a.epoch_indices(4).dtype == np.int64


@pytest.mark.parametrize("mode", ["instance", "power"])
@pytest.mark.parametrize("count", [2, 4])
def test_shards_are_disjoint_columns_of_the_single_process_map(mode, count):
  full = make(mode, batch=8).epoch_indices(2)
  shards = [make(mode, batch=8, process_index=p, process_count=count).epoch_indices(2)
            for p in range(count)]
  assert all(s.shape == (full.shape[0], 8 // count) for s in shards)
  np.testing.assert_array_equal(np.concatenate(shards, axis=1), full)
  if mode == "instance":  # without replacement: no position is in two shards
    flat = np.concatenate([s.ravel() for s in shards])
    assert len(np.unique(flat)) == flat.size


def test_instance_draws_distinct_examples():
  idx = make("instance", batch=10).epoch_indices(0)
  np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(100))  # 100 = 10 * 10
  idx = make("instance", batch=30).epoch_indices(0)  # 3 steps, 10 examples left out
  assert idx.shape == (3, 30) and len(np.unique(idx)) == 90


@pytest.mark.parametrize("mode", sampler_lib.MODES.names())
@pytest.mark.parametrize("batch", [7, 32, 100])
def test_steps_per_epoch_follow_the_real_example_count(mode, batch):
  s = make(mode, batch=batch)
  assert s.steps_per_epoch == 100 // batch
  assert s.epoch_indices(0).shape == (100 // batch, batch)


def test_from_config_reads_the_sampler_block():
  cfg = base_config().sampler
  cfg.name, cfg.q = "power", 0.25
  s = sampler_lib.from_config(LABELS, 5, cfg, 10, seed=1, process_index=1, process_count=2)
  np.testing.assert_allclose(s.class_probabilities(), COUNTS ** 0.25 * (COUNTS > 0)
                             / (COUNTS ** 0.25 * (COUNTS > 0)).sum())
  assert s.epoch_indices(0).shape == (10, 5)


def test_too_few_examples_for_one_batch():
  with pytest.raises(ValueError, match=r"5 examples.*batch of 8.*--config.train.batch_size"):
    make(labels=LABELS[:5], batch=8)


@pytest.mark.parametrize("kw,match", [
    (dict(batch=10, process_count=4), "multiple of the 4 processes"),
    (dict(mode="sqrt"), "--config.sampler.name"),
    (dict(mode="power", q=float("nan")), "--config.sampler.q"),
    (dict(labels=LABELS + 2), r"\[0, 5\)"),
])
def test_bad_settings_raise(kw, match):
  with pytest.raises(ValueError, match=match):
    make(**kw)


@pytest.mark.parametrize("weights,match", [
    (np.ones(4), "one number per class"),
    (np.array([1.0, -1.0, 1.0, 1.0, 1.0]), "non-negative"),
    (np.array([0.0, 0.0, 0.0, 0.0, 1.0]), "zero on every class present"),
])
def test_bad_class_weights_raise(weights, match):
  with pytest.raises(ValueError, match=match):
    make().epoch_indices(0, weights)
