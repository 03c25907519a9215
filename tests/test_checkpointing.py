"""Checkpoints keep the latest and the best epoch, restore exactly, and fail clearly."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jimb import checkpointing
from jimb import mesh as mesh_lib
from jimb.fitting.step import TrainState


def _state(step):
  return mesh_lib.replicate(TrainState(step=jnp.int32(step), params={"w": jnp.arange(4.0) * step},
                                       rest={}, opt_state=(jnp.zeros(2),)), mesh_lib.make_mesh())


def test_keeps_latest_and_first_best(tmp_path):
  ckpt = checkpointing.FoldCheckpoints(tmp_path, keep_latest=1, keep_best=1)
  for epoch, value in [(1, 0.5), (2, 0.8), (3, 0.8), (4, 0.7), (5, 0.6)]:
    ckpt.save(epoch, _state(epoch), {"epoch": epoch}, value)
  ckpt.wait()
  # Epoch 2 is the first to reach the best value (the one the runner reports); 5 is the latest.
  assert ckpt.epochs() == [2, 5] and ckpt.latest_epoch() == 5
  state, meta = ckpt.restore(2, checkpointing.abstract_like(_state(0)))
  assert meta == {"epoch": 2} and int(state.step) == 2
  np.testing.assert_array_equal(state.params["w"], np.arange(4.0) * 2)
  assert state.params["w"].sharding.is_fully_replicated and len(state.params["w"].devices()) == 8
  ckpt.close()


def test_missing_and_corrupt_checkpoints(tmp_path):
  ckpt = checkpointing.FoldCheckpoints(tmp_path)
  with pytest.raises(checkpointing.CheckpointError, match="no checkpoint for epoch 3"):
    ckpt.restore(3, checkpointing.abstract_like(_state(0)))
  ckpt.save(1, _state(1), {"epoch": 1}, 0.1)
  ckpt.wait()
  wrong = checkpointing.abstract_like(_state(0).replace(params={"w": jnp.zeros(7)}))
  with pytest.raises(checkpointing.UnreadableCheckpoint,
                     match="cannot be restored.*--mode=train sets it aside"):
    ckpt.restore(1, wrong)
  ckpt.close()
