"""One data-parallel mesh over every device: batches split on 'data', parameters replicated.

This is the current form of a pmapped step (jit over a Mesh with NamedSharding): the step is
written for the global batch, so BatchNorm statistics and the loss are global, and 1 device or
many give the same numbers up to float reassociation.
"""

from __future__ import annotations

from typing import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def jit_replicated(fn, mesh: Mesh | None, **kwargs):
  """`jax.jit(fn, **kwargs)` whose outputs are replicated on `mesh` (None: left where jit puts
  them, for callers that run without a mesh)."""
  if mesh is not None:
    kwargs["out_shardings"] = replicated(mesh)
  return jax.jit(fn, **kwargs)


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def put(value, sharding: NamedSharding) -> jax.Array:
  """`value` laid out as `sharding`, from this process's copy of it (every process holds the same).

  `value` may be numpy, a scalar, or a jax.Array (PRNG keys included) on any devices. It goes
  through host memory: jax.device_put cannot move an array committed to local devices onto
  devices of other processes.
  """
  if isinstance(value, jax.Array):
    if value.sharding.is_equivalent_to(sharding, value.ndim):
      return value
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(value), sharding),
                                      impl=jax.random.key_impl(value))
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def replicate(tree, mesh: Mesh):
  """Every leaf of `tree` whole on every device of `mesh` (see `put`)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda leaf: put(leaf, sharding), tree)


def local_batch_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a training batch -> one global array split over the mesh."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def full_batch_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """A batch every process holds whole (evaluation) -> one global array split over the mesh."""
  sharding = batch_sharded(mesh)
  return {k: put(v, sharding) for k, v in batch.items()}


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "--config.train.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{what}={batch_size} must be a multiple of the {n} devices in use; "
                     f"use {batch_size + (-batch_size) % n}")
