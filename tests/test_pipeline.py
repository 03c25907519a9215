"""grain pipelines: gathered batches equal NumPy indexing; evaluation covers every example once."""

from __future__ import annotations

import numpy as np
import pytest

from jimb.data import pipeline
from jimb.data.sampler import ClassAwareSampler


def arrays(n, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(n, 2, 2, 1)).astype(np.float32), rng.integers(0, 3, n)


def test_train_batches_are_the_index_map_rows_and_resume_is_the_tail():
  x, y = arrays(50)
  index_map = ClassAwareSampler(y, 3, mode="class_balanced", q=0.5, global_batch_size=8,
                                seed=0).epoch_indices(1)
  full = list(pipeline.train_batches(x, y, index_map))
  assert len(full) == len(index_map) == 6
  for idx, batch in zip(index_map, full):
    np.testing.assert_array_equal(batch["x"], x[idx])
    np.testing.assert_array_equal(batch["y"], y[idx])
  tail = list(pipeline.train_batches(x, y, index_map, start_step=4))
  assert len(tail) == 2
  for a, b in zip(tail, full[4:]):
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], b["y"])
  assert not list(pipeline.train_batches(x, y, index_map, start_step=6))


def test_train_batches_reject_bad_maps():
  x, y = arrays(10)
  with pytest.raises(ValueError, match="10 examples"):
    pipeline.train_batches(x, y, np.array([[0, 10]]))
  with pytest.raises(ValueError, match="start_step 3"):
    pipeline.train_batches(x, y, np.zeros((2, 2), np.int64), start_step=3)
  with pytest.raises(ValueError, match="2-D integer"):
    pipeline.train_batches(x, y, np.zeros(4, np.int64))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 29])
def test_eval_batches_cover_every_example_once(n):
  batch_size = 8
  x, y = arrays(n)
  batches = list(pipeline.eval_batches(x, y, batch_size))
  assert len(batches) == pipeline.num_eval_batches(n, batch_size) == -(-n // batch_size)
  for b in batches:
    assert b["x"].shape == (batch_size, 2, 2, 1) and b["y"].shape == b["mask"].shape == (8,)
    np.testing.assert_array_equal(b["x"][~b["mask"]], np.repeat(x[:1], (~b["mask"]).sum(), 0))
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == n and mask[:n].all()
  np.testing.assert_array_equal(np.concatenate([b["x"][b["mask"]] for b in batches]), x)
  np.testing.assert_array_equal(np.concatenate([b["y"][b["mask"]] for b in batches]), y)


def test_round_up():
  assert [pipeline.round_up(n, 8) for n in (0, 1, 8, 9, 256)] == [0, 8, 8, 16, 256]
  with pytest.raises(ValueError):
    pipeline.round_up(5, 0)
