"""TLC active sampling: quotas against the formula, exact batch composition, resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import assert_same_metrics, tiny_config
from jimb import experiment
from jimb.data import active
from jimb.data import sampler as sampler_lib

QUIET = lambda s: None


def _formula(f1, batch):
  need = 1.0 - np.asarray(f1, np.float64)
  return need / need.sum() * batch


@pytest.mark.parametrize("f1, batch", [([0.9, 0.5, 0.2, 0.0], 100), ([0.3, 0.31, 0.99], 64),
                                       ([0.7, 0.2, 0.5, 0.6, 0.95], 37)])
def test_quotas_follow_the_formula(f1, batch):
  q = active.quotas(np.array(f1), batch, floor=0)
  exact = _formula(f1, batch)
  assert q.sum() == batch and q.dtype == np.int64
  assert np.all(np.abs(q - exact) < 1)
  np.testing.assert_array_equal(q, np.floor(exact) + (q > np.floor(exact)))  # floor or ceil


def test_quotas_hand_case_largest_remainder():
  # (0.1, 0.5, 0.8, 1.0) / 2.4 * 100 = 4.17, 20.83, 33.33, 41.67 -> 4, 21, 33, 42
  np.testing.assert_array_equal(active.quotas(np.array([0.9, 0.5, 0.2, 0.0]), 100, floor=0),
                                [4, 21, 33, 42])


def test_floor_holds_and_the_rest_keeps_the_formula_proportions():
  q = active.quotas(np.array([1.0, 1.0, 0.0]), 12, floor=2)
  np.testing.assert_array_equal(q, [2, 2, 8])
  q = active.quotas(np.array([0.99, 0.5, 0.0, 0.0]), 40, floor=3)
  assert q[0] == 3 and q.sum() == 40
  np.testing.assert_allclose(q[1:], _formula([0.5, 0.0, 0.0], 37), atol=1)


def test_all_perfect_or_absent_classes_and_bad_floor():
  np.testing.assert_array_equal(active.quotas(np.ones(4), 8, floor=1), [2, 2, 2, 2])
  q = active.quotas(np.array([0.2, np.nan, 0.5]), 10, floor=1, present=np.array([1, 0, 1]))
  assert q[1] == 0 and q.sum() == 10
  with pytest.raises(ValueError, match="sampler.floor"):
    active.quotas(np.zeros(5), 8, floor=2)


def test_realised_batches_hold_exactly_the_quotas():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), [200, 50, 10, 3])
  rng.shuffle(labels)
  s = sampler_lib.ClassAwareSampler(labels, 4, mode="active", q=0.5, global_batch_size=16, seed=1)
  quotas = np.array([2, 3, 5, 6])
  batches = s.quota_batches(epoch=2, first_step=0, num_steps=300, quotas=quotas)
  assert batches.shape == (300, 16)
  per_batch = np.stack([np.bincount(labels[b], minlength=4) for b in batches])
  assert np.all(per_batch == quotas)
  # Within a class every member is drawn, about equally often (class 3: 3 members, 1800 draws).
  draws = np.bincount(batches.ravel(), minlength=len(labels))
  members = np.flatnonzero(labels == 3)
  np.testing.assert_allclose(draws[members] / draws[members].sum(), 1 / 3, atol=0.05)
  # Deterministic per (seed, epoch, step): a later segment is the same rows of the whole epoch.
  np.testing.assert_array_equal(s.quota_batches(2, 100, 5, quotas), batches[100:105])
  # Processes take disjoint columns whose union is the global batch.
  shards = [sampler_lib.ClassAwareSampler(labels, 4, mode="active", q=0.5, global_batch_size=16,
                                          seed=1, process_index=p, process_count=4)
            .quota_batches(2, 0, 10, quotas) for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(shards, axis=1), batches[:10])
  with pytest.raises(ValueError, match="summing to the batch size"):
    s.quota_batches(0, 0, 1, np.array([1, 1, 1, 1]))


def _active_config(**overrides):
  return tiny_config(**{"sampler.name": "active", "sampler.update_every_steps": 5,
                        "sampler.floor": 2, "split.only_folds": "0",
                        "checkpoint.keep_latest": 3, "checkpoint.min_interval_secs": 0.0,
                        **overrides})


def test_active_run_logs_quotas_and_a_resume_continues_with_them(tmp_path):
  logs = []
  reference = experiment.train_and_evaluate(_active_config(), tmp_path / "a", log=logs.append)
  fold = reference["folds"][0]
  history = fold["quota_history"]
  steps = fold["sizes"]["train"] // 32
  assert len(history) == 3 * -(-steps // 5)          # one update per 5 steps and per epoch end
  assert sum("-> quotas" in line for line in logs) == len(history)
  for update in history:
    assert sum(update["quotas"]) == 32 and min(update["quotas"]) >= 2
    np.testing.assert_array_equal(update["quotas"],
                                  active.quotas(np.array(update["f1"]), 32, 2))
  assert fold["class_counts"]["quotas_per_batch"] == history[-1]["quotas"]
  assert len(fold["sizes"]) == 4 and fold["sizes"]["contrast"] > 0

  # Interrupt after epoch 2: drop what epoch 3 wrote, then resume.
  run = tmp_path / "b"
  shutil.copytree(tmp_path / "a", run)
  for path in (run / "results.json", run / "fold_0" / "result.json",
               run / "fold_0" / "test_probs.npz"):
    path.unlink()
  shutil.rmtree(run / "fold_0" / "checkpoints" / "3")
  logs = []
  resumed = experiment.train_and_evaluate(_active_config(), run, log=logs.append)
  assert any("resumed from epoch 2" in line for line in logs)
  assert resumed["folds"][0]["quota_history"] == history
  np.testing.assert_array_equal(np.load(run / "fold_0" / "test_probs.npz")["probs"],
                                np.load(tmp_path / "a" / "fold_0" / "test_probs.npz")["probs"])
  assert_same_metrics(resumed, reference)


def test_contrast_fraction_must_leave_a_part(tmp_path):
  with pytest.raises(ValueError, match="contrast_fraction"):
    experiment.train_and_evaluate(_active_config(**{"sampler.contrast_fraction": 0.0}),
                                  tmp_path, log=QUIET)
