"""The rows stage 1 trains on after image-space resampling, kept as indices where possible.

Resamplers that select or repeat rows leave the training part as it is and give an index per
resampled row; synthesising ones add their new rows after the real ones. Batches are then
gathered through `rows`, so nothing is copied until a batch is built, and any row at or after
`num_real` is synthetic: evaluation parts are separate arrays that never pass through here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jimb.resampling import samplers


@dataclasses.dataclass(frozen=True)
class TrainingPool:
  x: np.ndarray        # the training part's rows, then the synthetic rows
  y: np.ndarray
  rows: np.ndarray     # the pool row behind each resampled row (what the sampler draws)
  num_real: int

  @property
  def labels(self) -> np.ndarray:
    """Labels of the resampled rows, in the sampler's order."""
    return self.y[self.rows]

  @property
  def synthetic(self) -> np.ndarray:
    """Which resampled rows are synthetic."""
    return self.rows >= self.num_real


def training_pool(x: np.ndarray, y: np.ndarray, resample_cfg, seed: int,
                  fold_index: int) -> TrainingPool:
  """The training part resampled by `resample_cfg.image` (none when its name is empty)."""
  n = len(y)
  name = resample_cfg.image.name
  if not name:
    return TrainingPool(x, y, np.arange(n), n)
  options = {k: v for k, v in resample_cfg.image.items() if k != "name"}
  out = samplers.resample(name, options, x, y, seed=seed, small_classes=resample_cfg.small_classes,
                          where=f" (training part of fold {fold_index})",
                          config_key="resample.image")
  rows = out.source.copy()
  new = np.flatnonzero(out.synthetic)
  rows[new] = n + np.arange(len(new))
  if not len(new):
    return TrainingPool(x, y, rows, n)
  # Interpolations of rows in [0, 1] (or of standardised features) stay valid rows.
  return dataclasses.replace(with_synthetic(x, y, out.x[new], out.y[new]), rows=rows)


def with_synthetic(x: np.ndarray, y: np.ndarray, x_syn: np.ndarray,
                   y_syn: np.ndarray) -> TrainingPool:
  """The training part followed by synthetic rows (from a generator), each drawn once."""
  if x_syn.shape[1:] != x.shape[1:]:
    raise ValueError(f"synthetic rows have shape {x_syn.shape[1:]}, the training part "
                     f"{x.shape[1:]}")
  n = len(y)
  return TrainingPool(np.concatenate([x, x_syn.astype(x.dtype)]),
                      np.concatenate([y, y_syn.astype(y.dtype)]), np.arange(n + len(y_syn)), n)
