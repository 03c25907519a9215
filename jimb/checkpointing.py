"""Every orbax call of the project: one fold's checkpoints, keeping the latest and the best.

orbax with `max_to_keep` + `best_fn` deletes the newest checkpoint when it is not among the best,
so a run could not resume from its latest epoch; a preservation policy that keeps the latest N
*and* the best N fixes that. Each checkpoint holds the train state (arrays) and a
JSON `meta` record (epoch, sampler position and class weights, validation history), so a killed
run continues exactly where its last checkpoint left off.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from typing import Any, Callable

from etils import epath
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jimb import files, multihost


class CheckpointError(RuntimeError):
  """A checkpoint that is missing or cannot be read; the message says what to do."""


class UnreadableCheckpoint(CheckpointError):
  """The checkpoint of `epoch` exists but cannot be restored."""

  def __init__(self, message: str, epoch: int):
    super().__init__(message)
    self.epoch = epoch


def _rank(metrics: dict[str, float]) -> tuple[float, int]:
  # Highest metric first; among equals the earliest epoch, which is the one the runner reports.
  value = metrics["value"]
  return (-math.inf if math.isnan(value) else value, -metrics["epoch"])


class FoldCheckpoints:
  """Checkpoints of one fold under `directory` (local or remote), numbered by completed epochs.

  Every process of a multi-process run makes the same calls; orbax coordinates them.
  """

  def __init__(self, directory: str | os.PathLike, keep_latest: int = 1, keep_best: int = 1,
               recover: bool = True):
    """`recover`: set aside steps whose metrics cannot be read (training replays them); without
    it (eval mode, which changes nothing) such a step is an UnreadableCheckpoint."""
    self.directory = files.as_path(directory)
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(keep_latest),
        policies.BestN(get_metric_fn=_rank, n=keep_best),
    ])
    # best_fn makes orbax write each step's metrics beside it, so that after a resume the
    # checkpoints saved before it are ranked too (without it they have no metrics, and BestN
    # keeps every one of them: disk use grew with each interruption).
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, cleanup_tmp_directories=True,
                                           best_fn=lambda m: m["value"], best_mode="max")
    # orbax reads every step's metrics when it opens the directory; a damaged metrics file would
    # stop it there, so such steps are set aside first (and trained again, see set_aside).
    for step in _steps(self.directory):
      try:
        json.loads((self.directory / str(step) / "metrics" / "metrics").read_text())
      except FileNotFoundError:
        pass
      except ValueError:
        if not recover:
          raise UnreadableCheckpoint(
              f"checkpoint {self.directory / str(step)} is damaged (its metrics cannot be read); "
              "--mode=train sets it aside and trains its epochs again from the newest readable "
              "earlier checkpoint, which gives the same result", step) from None
        logging.warning("checkpoint %s has unreadable metrics: set aside", step)
        _move_aside(self.directory, [step])
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def epochs(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, epoch: int, state: Any, meta: dict[str, Any], value: float) -> None:
    """Saves after `epoch` completed epochs; `value` is the validation metric that ranks it.

    `meta` is copied: the save is asynchronous, and callers go on appending to its lists.
    """
    self._manager.save(
        epoch,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(copy.deepcopy(meta))),
        metrics={"value": float(value), "epoch": epoch})

  def restore(self, epoch: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores the state at `epoch` onto the shardings of `abstract_state`.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s with shardings (see
    `abstract_like`); a checkpoint that does not match it or cannot be read is a
    CheckpointError naming the path and the fix.
    """
    path = self.directory / str(epoch)
    if epoch not in self._manager.all_steps():
      raise UnreadableCheckpoint(
          f"no checkpoint for epoch {epoch} under {self.directory} (found {self.epochs()}); "
          "--mode=train trains that epoch again from the newest earlier checkpoint, which "
          "gives the same result", epoch)
    try:
      restored = self._manager.restore(
          epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                         meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; all mean "unreadable here"
      raise UnreadableCheckpoint(
          f"checkpoint {path} cannot be restored ({type(e).__name__}: {str(e)[:300]}). It is "
          "corrupt or was written by other code; --mode=train sets it aside and trains again "
          "from the newest readable earlier checkpoint, which gives the same result", epoch) from e
    return restored["state"], dict(restored["meta"])

  def set_aside(self, epoch: int) -> str:
    """Moves the checkpoints of `epoch` and later out of the way (to `set_aside_<epoch>`...,
    which orbax ignores), so training replays those epochs; nothing is deleted. Says what moved
    and where training goes on from."""
    self._manager.wait_until_finished()
    steps = sorted(s for s in self._manager.all_steps() if s >= epoch)
    _move_aside(self.directory, steps)
    self._manager.reload()
    moved = (f"moved checkpoint(s) {steps} aside (set_aside_<epoch> in {self.directory})"
             if steps else "nothing to move aside")
    latest = self.latest_epoch()
    return f"{moved}; training again from {f'epoch {latest}' if latest else 'the start'}"

  def restore_newest(self, abstract_state: Any,
                     log: Callable[[str], None]) -> tuple[int, Any, dict[str, Any]] | None:
    """(epoch, state, meta) of the newest readable checkpoint, or None when there is none.

    Unreadable newer ones are set aside with a log line: training from the epoch before them
    replays the same epochs (it is deterministic) and so reaches the same result.
    """
    while (epoch := self.latest_epoch()) is not None:
      try:
        return (epoch, *self.restore(epoch, abstract_state))
      except UnreadableCheckpoint as e:
        log(f"  checkpoint {e.epoch} cannot be read: {self.set_aside(epoch)}")
    return None

  def discard(self) -> None:
    """Deletes every checkpoint here, and the folder (process 0; the others wait)."""
    self._manager.wait_until_finished()
    self._manager.close()
    if multihost.is_writer() and self.directory.exists():
      self.directory.rmtree()
    multihost.barrier(f"{self.directory} discarded")

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


class Throttled:
  """A fold's epoch saves at most every `min_interval_secs`, the best epoch never lost.

  An orbax save costs tens of milliseconds on the main thread and more on a background one; a
  small model's epoch may take less. So an epoch is saved when the interval has passed since the
  last save (or the fold has ended); a new best epoch in between is held (an on-device copy) and
  written just before the next save. Whatever epoch is the newest on disk, its best epoch is on
  disk too, and a resume replays at most one interval of epochs, which gives the same result
  (training is deterministic). With several processes process 0's clock decides for all.
  """

  def __init__(self, ckpt: FoldCheckpoints, min_interval_secs: float,
               clock: Callable[[], float] = time.monotonic):
    self.ckpt = ckpt
    self.min_interval_secs = min_interval_secs
    self._clock = clock
    self._last = clock()
    self._held = None

  def save(self, epoch: int, state: Any, meta: dict[str, Any], value: float, best: bool,
           final: bool) -> bool:
    """Offers epoch `epoch` (`best`: the best so far; `final`: the fold's last); whether it
    was written now."""
    due = final or multihost.agree(
        lambda: self._clock() - self._last >= self.min_interval_secs)
    if not due:
      if best:   # the step donates `state`: keep a copy, and meta as it is now
        self._held = (epoch, jax.tree.map(lambda a: a.copy(), state), copy.deepcopy(meta), value)
      return False
    if self._held is not None and not best:
      self.ckpt.save(*self._held)
    self._held = None
    self.ckpt.save(epoch, state, meta, value)
    self._last = self._clock()
    return True


def _steps(directory: epath.Path) -> list[int]:
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if (
      directory.exists()) else []


def _move_aside(directory: epath.Path, steps: list[int]) -> None:
  """Renames step folders to set_aside_<step> (orbax ignores them); process 0 does it."""
  if multihost.is_writer():
    for step in steps:
      target = directory / f"set_aside_{step}"
      if target.exists():
        target.rmtree()
      (directory / str(step)).rename(target)
  multihost.barrier(f"{directory}: steps {steps} set aside")


def abstract_like(tree: Any) -> Any:
  """Shape, dtype and sharding of every array: the restore target orbax needs."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
