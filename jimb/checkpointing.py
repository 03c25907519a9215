"""Every orbax call of the project: one fold's checkpoints, keeping the latest and the best.

orbax with `max_to_keep` + `best_fn` deletes the newest checkpoint when it is not among the best,
so a run could not resume from its latest epoch; a preservation policy that keeps the latest N
*and* the best N fixes that (DESIGN.md). Each checkpoint holds the train state (arrays) and a
JSON `meta` record (epoch, sampler position and class weights, validation history), so a killed
run continues exactly where its last checkpoint left off.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jimb import files


class CheckpointError(RuntimeError):
  """A checkpoint that is missing or cannot be read; the message says what to do."""


def _rank(metrics: dict[str, float]) -> tuple[float, int]:
  # Highest metric first; among equals the earliest epoch, which is the one the runner reports.
  value = metrics["value"]
  return (-math.inf if math.isnan(value) else value, -metrics["epoch"])


class FoldCheckpoints:
  """Checkpoints of one fold under `directory` (local or remote), numbered by completed epochs.

  Every process of a multi-process run makes the same calls; orbax coordinates them.
  """

  def __init__(self, directory: str | os.PathLike, keep_latest: int = 1, keep_best: int = 1):
    self.directory = files.as_path(directory)
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(keep_latest),
        policies.BestN(get_metric_fn=_rank, n=keep_best),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def epochs(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, epoch: int, state: Any, meta: dict[str, Any], value: float) -> None:
    """Saves after `epoch` completed epochs; `value` is the validation metric that ranks it."""
    self._manager.save(
        epoch,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        metrics={"value": float(value), "epoch": epoch})

  def restore(self, epoch: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores the state at `epoch` onto the shardings of `abstract_state`.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct`s with shardings (see
    `abstract_like`); a checkpoint that does not match it or cannot be read is a
    CheckpointError naming the path and the fix.
    """
    path = self.directory / str(epoch)
    if epoch not in self._manager.all_steps():
      raise CheckpointError(
          f"no checkpoint for epoch {epoch} under {self.directory} (found {self.epochs()}); "
          "the run's workdir is incomplete: train it again with --mode=train")
    try:
      restored = self._manager.restore(
          epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                         meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; all mean "unreadable here"
      raise CheckpointError(
          f"checkpoint {path} cannot be restored ({type(e).__name__}: {str(e)[:300]}). It is "
          f"corrupt or was written by a different config; delete {path} to resume from an earlier "
          f"checkpoint, or delete {self.directory.parent} to retrain this fold") from e
    return restored["state"], dict(restored["meta"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """Shape, dtype and sharding of every array: the restore target orbax needs."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
