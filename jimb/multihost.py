"""What the processes of one run must agree on: one writer, and one view of the workdir.

Every process runs the same program on the same data and computes the same results, so only
process 0 writes them (two writers of one file race). Decisions read from the workdir (is fold
k finished? are a fold's synthetic samples cached?) are process 0's, sent to the others: a file
that one host sees and another does not yet must not send processes down different branches,
whose collectives would then never meet. The workdir is shared (orbax needs that too), so after
such a decision every process may read what process 0 wrote. With one process every function
here is a local call.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
from jax.experimental import multihost_utils
import numpy as np

_CHUNK = 4096   # broadcast byte strings are padded to a multiple of this: few compiled shapes
T = TypeVar("T")


def is_writer() -> bool:
  """Whether this process writes the run's files."""
  return jax.process_index() == 0


def agree(decide: Callable[[], bool]) -> bool:
  """`decide()` evaluated on process 0, the same answer on every process."""
  if jax.process_count() == 1:
    return bool(decide())
  value = np.int32(decide()) if is_writer() else np.int32(0)
  return bool(multihost_utils.broadcast_one_to_all(value))


def agree_bytes(read: Callable[[], bytes | None]) -> bytes | None:
  """`read()` evaluated on process 0 (None for nothing), the same bytes on every process."""
  if jax.process_count() == 1:
    return read()
  data = read() if is_writer() else None
  size = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if data is None else len(data))))
  if size < 0:
    return None
  buffer = np.zeros(-(-size // _CHUNK) * _CHUNK, np.uint8)
  if data is not None:
    buffer[:size] = np.frombuffer(data, np.uint8)
  return multihost_utils.broadcast_one_to_all(buffer)[:size].tobytes()


def barrier(name: str) -> None:
  """Waits until every process gets here (e.g. before reading what process 0 wrote)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def writer_first(fn: Callable[[], T], name: str) -> T:
  """`fn()` on process 0 first, then on the others: a download into a shared cache is made once
  (the others find it there) instead of by every process at the same time."""
  if jax.process_count() == 1:
    return fn()
  if is_writer():
    out = fn()
  barrier(name)
  if not is_writer():
    out = fn()
  return out
