"""Tabular sources: a csv table with numeric (or one-hot encoded) feature columns, and the small
datasets bundled with scikit-learn, which need no file and no network.
"""

from __future__ import annotations

import math

import numpy as np

from jimb.data.dataset import Dataset
from jimb.data.sources.base import SOURCES, _default_class_names, _existing_path
from jimb.data.sources.csv_columns import (_group_column, _label_column, _read_csv,
                                           _require_column)

_MISSING_CELLS = frozenset({"", "na", "nan"})


def _to_float(cell: str) -> float | None:
  """The cell as a number, NaN when missing, None when it is not numeric."""
  if cell.strip().lower() in _MISSING_CELLS:
    return math.nan
  try:
    return float(cell)
  except ValueError:
    return None


def _one_hot(name: str, cells: list[str]) -> list[tuple[str, np.ndarray]]:
  """One indicator column per category, NaN where the cell is missing (left to imputation)."""
  missing = np.asarray([c.strip().lower() in _MISSING_CELLS for c in cells])
  values = np.asarray([c.strip() for c in cells])
  return [(f"{name}={v}", np.where(missing, np.nan, values == v).astype(np.float32))
          for v in sorted(set(values[~missing]))]


@SOURCES.register("csv")
def _load_csv(data_cfg) -> Dataset:
  """A clinical table: one row per example, a header, a label column and optional ids."""
  path = _existing_path(data_cfg)
  if data_cfg.categorical not in ("error", "drop", "onehot"):
    raise ValueError(f"unknown --config.data.categorical={data_cfg.categorical!r}; "
                     "choose error, drop or onehot")
  header, columns = _read_csv(path, "path")
  y, class_names = _label_column(path, header, columns, data_cfg.label_key)
  groups = None
  if data_cfg.group_key:
    groups = _group_column(path, header, columns, data_cfg.group_key)
  if data_cfg.feature_columns:
    names = [c.strip() for c in data_cfg.feature_columns.split(",") if c.strip()]
    for name in names:
      _require_column(path, header, name, "feature", "feature_columns")
  else:
    names = [h for h in header if h not in (data_cfg.label_key, data_cfg.group_key)]
  numbers = {n: [_to_float(c) for c in columns[n]] for n in names}
  categorical = [n for n in names if None in numbers[n]]
  if categorical and data_cfg.categorical == "error":
    raise ValueError(
        f"{path}: non-numeric feature column(s) {categorical}; set "
        "--config.data.categorical=drop to drop them or --config.data.categorical=onehot to "
        "one-hot encode them (or choose columns with --config.data.feature_columns)")
  features = []
  for n in names:
    if n not in categorical:
      features.append((n, np.asarray(numbers[n], np.float32)))
    elif data_cfg.categorical == "onehot":
      features += _one_hot(n, columns[n])
  if not features:
    raise ValueError(f"{path}: no numeric feature columns left; check "
                     "--config.data.feature_columns and --config.data.categorical")
  x = np.stack([v for _, v in features], axis=1)
  return Dataset(x, y, class_names, groups=groups,
                 feature_names=tuple(n for n, _ in features), name=path.stem)


@SOURCES.register("sklearn")
def _load_sklearn(data_cfg) -> Dataset:
  """Small bundled datasets that need no file and no network: smoke tests and examples."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  loaders = dict(digits=datasets.load_digits, breast_cancer=datasets.load_breast_cancer,
                 wine=datasets.load_wine, iris=datasets.load_iris)
  if data_cfg.name not in loaders:
    raise ValueError(
        f"unknown sklearn dataset {data_cfg.name!r}; set --config.data.name to one of "
        f"{sorted(loaders)}")
  bunch = loaders[data_cfg.name]()
  y = bunch.target.astype(np.int64)
  if data_cfg.name == "digits":
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    return Dataset(x, y, _default_class_names(y), name=data_cfg.name)
  return Dataset(
      bunch.data.astype(np.float32), y, tuple(str(c) for c in bunch.target_names),
      feature_names=tuple(str(f) for f in bunch.feature_names), name=data_cfg.name)
