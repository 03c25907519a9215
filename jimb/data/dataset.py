"""The one in-memory dataset type every source returns and every later stage consumes."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Inputs, integer labels and their names, with optional group ids.

  `x` is either images (N, H, W, C) as uint8 in [0, 255] or float32 in [0, 1], or a
  table (N, F) as float32 where NaN marks a missing value. `groups` holds a patient or
  lesion id per example so that splits can keep a group on one side.
  """

  x: np.ndarray
  y: np.ndarray
  class_names: tuple[str, ...]
  groups: np.ndarray | None = None
  feature_names: tuple[str, ...] | None = None
  name: str = ""

  def __post_init__(self):
    if self.x.ndim not in (2, 4):
      raise ValueError(
          f"dataset {self.name!r}: inputs must be images (N, H, W, C) or a table (N, F); "
          f"got shape {self.x.shape}. Add a channel axis to grayscale images (x[..., None]).")
    n = len(self.x)
    if self.y.shape != (n,):
      raise ValueError(f"dataset {self.name!r}: {n} inputs but labels of shape {self.y.shape}")
    if not np.issubdtype(self.y.dtype, np.integer):
      raise ValueError(f"dataset {self.name!r}: labels must be integers, got {self.y.dtype}")
    k = len(self.class_names)
    if n and (self.y.min() < 0 or self.y.max() >= k):
      raise ValueError(
          f"dataset {self.name!r}: labels must lie in [0, {k}) for {k} class names; "
          f"found range [{self.y.min()}, {self.y.max()}]")
    if self.groups is not None and len(self.groups) != n:
      raise ValueError(
          f"dataset {self.name!r}: {len(self.groups)} group ids for {n} examples")
    if self.is_image and self.x.dtype not in (np.uint8, np.float32):
      raise ValueError(
          f"dataset {self.name!r}: images must be uint8 or float32 in [0, 1], got {self.x.dtype}")

  @property
  def is_image(self) -> bool:
    return self.x.ndim == 4

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def num_groups(self) -> int:
    """Distinct group ids, the units grouped splits distribute (0 without group ids)."""
    return 0 if self.groups is None else len(np.unique(self.groups))

  def class_counts(self) -> np.ndarray:
    return np.bincount(self.y, minlength=self.num_classes)

  def subset(self, index: np.ndarray) -> "Dataset":
    """The examples at `index`, in that order (no copy of class names or feature names)."""
    return dataclasses.replace(
        self, x=self.x[index], y=self.y[index],
        groups=None if self.groups is None else self.groups[index])


def concat(first: Dataset, second: Dataset) -> Dataset:
  """`first`'s rows then `second`'s: a training split and its separate test split as one."""
  if first.class_names != second.class_names:
    raise ValueError(f"datasets {first.name!r} and {second.name!r} name their classes "
                     f"differently: {first.class_names} vs {second.class_names}")
  if first.x.shape[1:] != second.x.shape[1:] or first.x.dtype != second.x.dtype:
    raise ValueError(f"datasets {first.name!r} and {second.name!r} hold different inputs: "
                     f"{first.x.dtype}{first.x.shape[1:]} vs {second.x.dtype}{second.x.shape[1:]}")
  if (first.groups is None) != (second.groups is None):
    raise ValueError(f"only one of {first.name!r} and {second.name!r} has group ids")
  groups = None if first.groups is None else np.concatenate([first.groups, second.groups])
  return dataclasses.replace(first, x=np.concatenate([first.x, second.x]),
                             y=np.concatenate([first.y, second.y]), groups=groups)
