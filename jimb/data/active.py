"""TLC's active sampling (Algorithm 1): per-class batch quotas from the F1 on a contrast part.

A class the model already separates well (high F1 on held-out training data) gets few places in
the next batches, a class it gets wrong gets many: n_k = (1 - F1_k) / sum_j (1 - F1_j) * N*,
with N* the fixed global batch size and every class kept at `floor` places or more, so that no
class drops out of training and its F1 can recover.
"""

from __future__ import annotations

import numpy as np


def quotas(f1: np.ndarray, batch_size: int, floor: int, present: np.ndarray | None = None
           ) -> np.ndarray:
  """Integer examples per class in one global batch; they sum to `batch_size`.

  `f1` holds one F1 per class (NaN counts as 0: a class never predicted is the most in need).
  Classes with `present` False (none in the training part) get 0. Shares follow the formula;
  classes it would give fewer than `floor` get `floor` and the rest is shared among the others
  in the formula's proportions; integers by largest remainder (ties to the lower class index).
  When every F1 is 1 the quotas are equal.
  """
  f1 = np.asarray(f1, np.float64)
  k = len(f1)
  present = np.ones(k, bool) if present is None else np.asarray(present, bool)
  if f1.ndim != 1 or present.shape != (k,):
    raise ValueError(f"need one F1 and one presence flag per class, got shapes {f1.shape} "
                     f"and {present.shape}")
  if floor < 0:
    raise ValueError(f"--config.sampler.floor must be >= 0, got {floor}")
  n_present = int(present.sum())
  if n_present == 0:
    raise ValueError("no class is present in the training part")
  if floor * n_present > batch_size:
    raise ValueError(
        f"a floor of {floor} per class for {n_present} classes needs a batch of at least "
        f"{floor * n_present}, but it is {batch_size}; lower --config.sampler.floor or raise "
        "--config.train.batch_size")
  need = np.where(present, 1.0 - np.nan_to_num(np.clip(f1, 0.0, 1.0), nan=0.0), 0.0)
  if need.sum() <= 0:
    need = present.astype(np.float64)
  share = need / need.sum()
  fixed = np.zeros(k, bool)          # classes held at the floor
  while True:
    free = present & ~fixed
    room = batch_size - floor * fixed.sum()
    target = np.where(fixed, float(floor), 0.0)
    if share[free].sum() > 0:
      target[free] = room * share[free] / share[free].sum()
    else:
      target[free] = room / free.sum()
    below = free & (target < floor)
    if not below.any():
      break
    fixed |= below
  out = np.floor(target).astype(np.int64)
  remainder = target - out
  order = np.lexsort((np.arange(k), -remainder))   # largest remainder first
  out[order[:batch_size - out.sum()]] += 1
  return out
