"""The one classifier fitting loop: an index map -> gathered batches -> the jitted step.

Folds, the synthesis judge and anything else that trains a classifier on batches run their
steps here, so batches are built, sharded over the mesh and stepped one way. The steps run under
a transfer guard: a host <-> device copy that nobody asked for (a numpy array passed to the
step, a Python scalar that becomes an array every call) is an error rather than a silent
slowdown; the batch crosses explicitly before the step, the losses after it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from jimb import mesh as mesh_lib
from jimb import tracking
from jimb.data import pipeline

Step = Callable[..., tuple[Any, dict]]


def fit_batches(step: Step, state: Any, x: np.ndarray, y: np.ndarray, index_map: np.ndarray,
                mesh: jax.sharding.Mesh, args: tuple = (), start_step: int = 0,
                after_step: Callable[[int, Any, list], None] | None = None,
                bar: tracking.NullBar = tracking.NullBar(),
                weights: np.ndarray | None = None) -> tuple[Any, list]:
  """Runs `step(state, batch, *args)` on the batches `index_map` (steps, local batch) draws
  from (x, y), from `start_step` on: (state, the steps' losses as device arrays). Per-row
  `weights` of x ride along as the batches' "w" (per-example loss weights).

  `after_step(i, state, losses)` runs after step i (0-based in the index map), e.g. to save a
  checkpoint; `losses` holds this call's losses so far. `bar` advances one step per step.
  """
  losses = []
  batches = pipeline.train_batches(x, y, index_map, start_step, weights=weights)
  for i, batch in enumerate(batches, start_step):
    batch = mesh_lib.local_batch_to_global(batch, mesh)   # the one copy a step needs
    with jax.transfer_guard("disallow"):
      state, metrics = step(state, batch, *args)
    losses.append(metrics["loss"])
    bar.update()
    if after_step is not None:
      after_step(i, state, losses)
  return state, losses
