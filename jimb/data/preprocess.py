"""What is fitted on the training part of a fold only: imputation and normalisation statistics.

Fitting on the training part alone keeps validation and test statistics out of the model.
The host does the once-per-array work (uint8 -> [0, 1], imputation); `(x - mean) / std` runs
inside the jitted step, after augmentation, which needs pixels in [0, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.impute import SimpleImputer

IMPUTE = ("", "mean", "median", "most_frequent")
IMAGE_NORMALIZE = ("dataset", "imagenet", "none")
TABLE_NORMALIZE = ("dataset", "minmax", "none")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CHUNK = 256  # images per pass when summing statistics, to bound host memory.
_MAX_NAMED = 20  # columns listed in an error message.


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessor:
  """Statistics of one fold's training part: per-channel (images) or per-feature (tables)."""

  mean: np.ndarray
  std: np.ndarray
  imputer: SimpleImputer | None = None

  def host(self, x: np.ndarray, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """float32 inputs ready for the device: images in [0, 1], tables imputed.

    Raises on NaN/inf images, and on a table with NaN when no imputation is configured.
    """
    if x.shape[-1:] != self.mean.shape or x.ndim not in (2, 4):
      raise ValueError(f"inputs of shape {x.shape} do not match the preprocessor fitted on "
                       f"{self.mean.shape[0]} channels/features")
    if x.ndim == 4:
      return _image_to_float(x)
    x = _checked_table(x, feature_names, imputing=self.imputer is not None)
    if self.imputer is None:
      return x
    return self.imputer.transform(x).astype(np.float32)


def normalize(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  """`(x - mean) / std` over the last axis, in x's dtype; meant for the jitted step."""
  return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


def fit_preprocessor(train_x: np.ndarray, data_cfg, is_image: bool,
                     feature_names: Sequence[str] | None = None) -> Preprocessor:
  """Fits imputation and `data_cfg.normalize` statistics on the training part only.

  An all-NaN training column is imputed with 0 (sklearn's keep_empty_features), so the
  number of features never depends on the fold.
  """
  if is_image != (train_x.ndim == 4) or train_x.ndim not in (2, 4):
    raise ValueError(f"expected {'images (N, H, W, C)' if is_image else 'a table (N, F)'}, "
                     f"got shape {train_x.shape}")
  if not len(train_x):
    raise ValueError("cannot fit normalisation on an empty training part; check the split "
                     "(--config.split.folds, --config.split.val_fraction)")
  if is_image:
    mean, std = _image_stats(train_x, data_cfg.normalize)
    return Preprocessor(mean, std)
  if data_cfg.impute not in IMPUTE:
    raise ValueError(f"unknown imputation {data_cfg.impute!r}; set --config.data.impute to "
                     f"one of {IMPUTE}")
  x = _checked_table(train_x, feature_names, imputing=bool(data_cfg.impute))
  imputer = None
  if data_cfg.impute:
    imputer = SimpleImputer(strategy=data_cfg.impute, keep_empty_features=True).fit(x)
    x = imputer.transform(x).astype(np.float32)
  mean, std = _table_stats(x, data_cfg.normalize)
  return Preprocessor(mean, std, imputer)


def _image_to_float(x: np.ndarray) -> np.ndarray:
  if x.dtype == np.uint8:
    return x.astype(np.float32) / np.float32(255)
  if x.dtype != np.float32:
    raise ValueError(f"images must be uint8 or float32 in [0, 1], got {x.dtype}")
  if not np.all(np.isfinite(x)):
    raise ValueError("images contain NaN or inf values; fix or drop them in the source")
  if x.size and (x.min() < 0 or x.max() > 1):
    raise ValueError(f"float32 images must lie in [0, 1], found [{x.min()}, {x.max()}]; "
                     f"scale them in the source or store them as uint8")
  return x


def _image_stats(x: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
  channels = x.shape[-1]
  if how == "none":
    return np.zeros(channels, np.float32), np.ones(channels, np.float32)
  if how == "imagenet":
    if channels == 3:
      return IMAGENET_MEAN, IMAGENET_STD
    if channels == 1:
      return IMAGENET_MEAN.mean(keepdims=True), IMAGENET_STD.mean(keepdims=True)
    raise ValueError(f"imagenet statistics exist for 1 or 3 channels, not {channels}; set "
                     f"--config.data.normalize=dataset")
  if how != "dataset":
    raise ValueError(f"unknown image normalisation {how!r}; set --config.data.normalize to "
                     f"one of {IMAGE_NORMALIZE}")
  total, squares = np.zeros(channels), np.zeros(channels)
  for start in range(0, len(x), _CHUNK):
    chunk = _image_to_float(x[start:start + _CHUNK])
    total += chunk.sum(axis=(0, 1, 2), dtype=np.float64)
    squares += np.square(chunk).sum(axis=(0, 1, 2), dtype=np.float64)
  count = x.size // channels
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
  return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def _table_stats(x: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
  """Standard (StandardScaler: population std) or min-max scaling; constant columns get 1."""
  x = x.astype(np.float64)
  constant = np.ptp(x, axis=0) == 0
  if how == "none":
    mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
  elif how == "dataset":
    mean, scale = x.mean(axis=0), x.std(axis=0)
  elif how == "minmax":
    mean, scale = x.min(axis=0), np.ptp(x, axis=0)
  else:
    raise ValueError(f"unknown table normalisation {how!r}; set --config.data.normalize to "
                     f"one of {TABLE_NORMALIZE}")
  return mean.astype(np.float32), np.where(constant, 1.0, scale).astype(np.float32)


def _checked_table(x: np.ndarray, feature_names: Sequence[str] | None,
                   imputing: bool) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if np.isinf(x).any():
    raise ValueError(f"the table has infinite values in {_columns(np.isinf(x), feature_names)}; "
                     f"replace them with NaN in the source and set --config.data.impute=median")
  nan = np.isnan(x)
  if not imputing and nan.any():
    raise ValueError(f"the table has missing values (NaN) in {_columns(nan, feature_names)}; "
                     f"set --config.data.impute=median (or mean, most_frequent)")
  return x


def _columns(bad: np.ndarray, feature_names: Sequence[str] | None) -> str:
  index = np.flatnonzero(bad.any(axis=0))
  named = [f"{i} ({feature_names[i]})" if feature_names is not None else str(i)
           for i in index[:_MAX_NAMED]]
  more = f" and {len(index) - _MAX_NAMED} more" if len(index) > _MAX_NAMED else ""
  return f"column(s) {', '.join(named)}{more}"
