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


class _Clock:
  """A clock that advances `tick` seconds each time it is read."""

  def __init__(self, tick: float):
    self.now, self.tick = 0.0, tick

  def __call__(self) -> float:
    self.now += self.tick
    return self.now


def test_throttled_holds_the_best_and_writes_it_before_the_next_save(tmp_path):
  ckpt = checkpointing.FoldCheckpoints(tmp_path, keep_latest=10, keep_best=10)
  saver = checkpointing.Throttled(ckpt, min_interval_secs=10.0, clock=_Clock(4.0))
  best_so_far, written = -1.0, []
  for epoch, value in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.8), (5, 0.7), (6, 0.75)]:
    best = value > best_so_far
    best_so_far = max(best_so_far, value)
    state = _state(epoch)
    if saver.save(epoch, state, {"epoch": epoch}, value, best, final=epoch == 6):
      written.append(epoch)
    state.params["w"].delete()   # as the next step's donation does: the held copy survives
  ckpt.wait()
  # The clock reads 4 at the start; epochs 1 and 2 (bests) are held at 8 and 12; epoch 3 is due
  # at 16 (12 s later) and writes the held 2 first, then the clock reads 20; epoch 4 (best) is
  # held at 24, 5 is not due at 28; the final epoch 6 writes the held 4 first.
  assert written == [3, 6]
  assert ckpt.epochs() == [2, 3, 4, 6]
  state, meta = ckpt.restore(4, checkpointing.abstract_like(_state(0)))
  assert meta == {"epoch": 4}
  np.testing.assert_array_equal(state.params["w"], np.arange(4.0) * 4)
  ckpt.close()


def test_throttled_every_epoch_at_zero_and_best_superseded(tmp_path):
  ckpt = checkpointing.FoldCheckpoints(tmp_path, keep_latest=10, keep_best=10)
  saver = checkpointing.Throttled(ckpt, min_interval_secs=0.0, clock=_Clock(0.0))
  assert all(saver.save(e, _state(e), {}, 0.1 * e, True, final=False) for e in (1, 2, 3))
  lazy = checkpointing.Throttled(ckpt, min_interval_secs=1e9, clock=_Clock(1.0))
  for epoch in (4, 5, 6):
    lazy.save(epoch, _state(epoch), {}, 0.1 * epoch, best=True, final=epoch == 6)
  ckpt.wait()
  # Held bests 4 and 5 were superseded by 6, itself the best: nothing else to write.
  assert ckpt.epochs() == [1, 2, 3, 6]
  ckpt.close()
