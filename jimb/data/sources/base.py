"""The registry every data source adds itself to, and the checks they share: the data path,
integer labels, default class names and the few examples a message about many items quotes.
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from jimb.registry import Registry

SOURCES = Registry("data source")


def _existing_path(data_cfg) -> pathlib.Path:
  if not data_cfg.path:
    raise FileNotFoundError(
        f"data source {data_cfg.source!r} reads a file or folder: set --config.data.path=<path>")
  path = pathlib.Path(data_cfg.path).expanduser()
  if not path.exists():
    raise FileNotFoundError(
        f"{path} does not exist; fix --config.data.path (source {data_cfg.source!r})")
  return path


def _default_class_names(labels: np.ndarray) -> tuple[str, ...]:
  return tuple(str(k) for k in range(int(labels.max(initial=-1)) + 1))


def _integer_labels(values: np.ndarray, what: str, fix: str) -> np.ndarray:
  """`values` as int64 class indices, checked before the cast.

  A cast truncates 1.6 to 1 and turns NaN into a large negative number: such labels are
  regression targets or damaged data, and training on them would succeed silently.
  """
  values = np.asarray(values)
  if values.ndim != 1:
    raise ValueError(f"{what} has shape {values.shape}, but labels are one class index per "
                     f"example (for one-hot labels store their argmax); {fix}")
  if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
    return values.astype(np.int64)
  if not np.issubdtype(values.dtype, np.floating):
    raise ValueError(f"{what} holds {values.dtype} values, not class indices; {fix}")
  finite = np.isfinite(values)
  bad = np.flatnonzero(~finite | (values != np.where(finite, np.round(values), 0)))
  if len(bad):
    raise ValueError(
        f"{what} holds {len(bad)} non-integral or non-finite value(s), e.g. "
        f"{values[bad[:3]].tolist()} at row(s) {bad[:3].tolist()}, so they are not class "
        f"indices 0, 1, ...; {fix}")
  return values.astype(np.int64)


def _examples(items: Sequence[Any], k: int = 3) -> str:
  """The first few of `items`, for messages about many."""
  return ", ".join(repr(str(i)) for i in items[:k]) + (", ..." if len(items) > k else "")
