"""grain input pipelines: gathered training batches from an index map, padded evaluation batches.

Each element is a whole batch gathered with one fancy-indexing call, prefetched by a few
threads (no worker processes: the arrays are already in memory). Augmentation and
normalisation happen on the device, not here.
"""

from __future__ import annotations

from typing import Callable, Iterator

import grain
import numpy as np

Batch = dict[str, np.ndarray]


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= n (e.g. a batch size divisible by devices)."""
  if multiple < 1:
    raise ValueError(f"round_up needs a positive multiple, got {multiple}")
  return -(-n // multiple) * multiple


def num_eval_batches(n: int, batch_size: int) -> int:
  return round_up(n, batch_size) // batch_size


def train_batches(x: np.ndarray, y: np.ndarray, index_map: np.ndarray, start_step: int = 0,
                  *, weights: np.ndarray | None = None, num_threads: int = 2,
                  prefetch: int = 4) -> Iterator[Batch]:
  """Yields {"x": x[idx], "y": y[idx]} (and "w": weights[idx] with per-row `weights`) for each
  row idx of the index map from `start_step` on.

  `index_map` is one epoch of a sampler, (steps, local batch); resuming at `start_step`
  yields exactly the tail of the full pass.
  """
  _check_arrays(x, y)
  if weights is not None and np.shape(weights) != (len(x),):
    raise ValueError(f"per-row weights must have shape ({len(x)},), got {np.shape(weights)}")
  if index_map.ndim != 2 or not np.issubdtype(index_map.dtype, np.integer):
    raise ValueError(f"the index map must be a 2-D integer array (steps, batch), got "
                     f"{index_map.dtype} of shape {index_map.shape}")
  if index_map.size and (index_map.min() < 0 or index_map.max() >= len(x)):
    raise ValueError(f"the index map holds positions in [{index_map.min()}, "
                     f"{index_map.max()}] but there are {len(x)} examples")
  if not 0 <= start_step <= len(index_map):
    raise ValueError(f"start_step {start_step} is outside the epoch's {len(index_map)} steps")
  gather = lambda idx: {"x": x[idx], "y": y[idx]}
  if weights is not None:
    w = np.asarray(weights, np.float32)
    gather = lambda idx: {"x": x[idx], "y": y[idx], "w": w[idx]}
  return _iterate(index_map, gather, start_step, num_threads, prefetch)


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, num_threads: int = 2,
                 prefetch: int = 4) -> Iterator[Batch]:
  """Yields {"x", "y", "mask"} batches in order, each exactly `batch_size` rows.

  A fixed shape compiles the evaluation step once; the last batch repeats row 0 as padding
  with mask False there, so every example is evaluated exactly once when masked.
  """
  _check_arrays(x, y)
  if batch_size < 1:
    raise ValueError(f"evaluation batch size must be positive, got {batch_size}; set "
                     f"--config.train.eval_batch_size")
  n = len(x)
  positions = np.arange(num_eval_batches(n, batch_size) * batch_size).reshape(-1, batch_size)

  def gather(pos: np.ndarray) -> Batch:
    mask = pos < n
    idx = np.where(mask, pos, 0)
    return {"x": x[idx], "y": y[idx], "mask": mask}

  return _iterate(positions, gather, 0, num_threads, prefetch)


def _iterate(index_map: np.ndarray, gather: Callable[[np.ndarray], Batch], start_step: int,
             num_threads: int, prefetch: int) -> Iterator[Batch]:
  dataset = grain.MapDataset.source(index_map)[start_step:].map(gather)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(dataset.to_iter_dataset(options))


def _check_arrays(x: np.ndarray, y: np.ndarray) -> None:
  if len(x) != len(y):
    raise ValueError(f"{len(x)} inputs but {len(y)} labels")
