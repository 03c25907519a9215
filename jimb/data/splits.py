"""Stratified (and patient/lesion-grouped) k-fold splits with a validation part per fold.

Every class must reach train, validation and test of every fold, or per-class metrics are
undefined; classes too small for that are rejected or dropped before splitting.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from sklearn import model_selection

from jimb.data.dataset import Dataset

_FIXES = ("--config.split.folds=<smaller>, a smaller --config.split.val_fraction, or "
          "--config.split.small_classes=drop")


@dataclasses.dataclass(frozen=True)
class Fold:
  """Sorted int64 indices into the dataset; the three parts are disjoint."""

  index: int
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray


def _class_sizes(ds: Dataset) -> np.ndarray:
  """Members per class: examples, or distinct groups when splits are grouped."""
  if ds.groups is None:
    return ds.class_counts()
  return np.asarray([len(np.unique(ds.groups[ds.y == c])) for c in range(ds.num_classes)])


def check_class_sizes(ds: Dataset, folds: int, policy: str) -> Dataset:
  """Rejects (policy "error") or removes (policy "drop") classes with fewer members than folds."""
  if policy not in ("error", "drop"):
    raise ValueError(f"unknown --config.split.small_classes={policy!r}; choose error or drop")
  sizes = _class_sizes(ds)
  small = np.flatnonzero(sizes < folds)
  if not len(small):
    return ds
  unit = "examples" if ds.groups is None else "distinct groups"
  described = ", ".join(f"class {c} ({ds.class_names[c]!r}: {sizes[c]} {unit})" for c in small)
  if policy == "error":
    most = f" (at most {sizes.min()} keeps every class)" if sizes.min() >= 2 else ""
    raise ValueError(
        f"{described} cannot appear in all {folds} test folds; set "
        f"--config.split.folds=<smaller>{most} or --config.split.small_classes=drop")
  keep_classes = np.setdiff1d(np.arange(ds.num_classes), small)
  if len(keep_classes) < 2:
    raise ValueError(f"dropping {described} leaves fewer than 2 classes; lower "
                     "--config.split.folds")
  logging.warning("dropping %s: fewer members than %d folds", described, folds)
  new_label = np.full(ds.num_classes, -1, np.int64)
  new_label[keep_classes] = np.arange(len(keep_classes))
  kept = ds.subset(np.flatnonzero(np.isin(ds.y, keep_classes)))
  return dataclasses.replace(
      kept, y=new_label[kept.y], class_names=tuple(ds.class_names[c] for c in keep_classes))


def carve(ds: Dataset, train: np.ndarray, fraction: float, seed: int, fold: int):
  """Splits a fold's training part into (rest, held out), stratified and group-disjoint.

  Used for the validation part and for the active sampler's contrast part.
  """
  y = ds.y[train]
  try:
    if ds.groups is None:
      rest, val = model_selection.train_test_split(
          train, test_size=fraction, stratify=y, random_state=seed + fold)
      return rest, val
    splitter = model_selection.StratifiedGroupKFold(
        n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed + fold)
    rest, val = next(splitter.split(np.zeros((len(train), 1)), y, ds.groups[train]))
    return train[rest], train[val]
  except ValueError as e:
    raise ValueError(f"fold {fold}: cannot carve a stratified part of {fraction:.0%} from the "
                     f"training part ({e}); use {_FIXES}") from e


def _checked_fold(ds: Dataset, index: int, train: np.ndarray, val: np.ndarray,
                  test: np.ndarray, fixes: str) -> Fold:
  """The fold, once every class is known to reach each of its (non-empty) parts."""
  parts = {name: np.sort(part).astype(np.int64)
           for name, part in (("train", train), ("val", val), ("test", test))}
  for name, part in parts.items():
    if name == "val" and not len(part):
      continue
    missing = np.setdiff1d(np.arange(ds.num_classes), ds.y[part])
    if len(missing):
      names = [ds.class_names[c] for c in missing]
      raise ValueError(
          f"fold {index}: the {name} part has no example of class(es) {names}; use {fixes}")
  return Fold(index, **parts)


def _check_val_fraction(val_fraction: float) -> None:
  if not 0 <= val_fraction < 1:
    raise ValueError(f"--config.split.val_fraction must lie in [0, 1), got {val_fraction}")


def make_folds(ds: Dataset, folds: int, val_fraction: float, seed: int) -> list[Fold]:
  """Stratified k-fold (grouped when `ds.groups` is set) with validation carved from train."""
  if folds < 2:
    raise ValueError(f"cross-validation needs --config.split.folds >= 2, got {folds}")
  _check_val_fraction(val_fraction)
  placeholder = np.zeros((len(ds.y), 1))
  if ds.groups is None:
    outer = model_selection.StratifiedKFold(folds, shuffle=True, random_state=seed).split(
        placeholder, ds.y)
  else:
    outer = model_selection.StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
        placeholder, ds.y, ds.groups)
  result = []
  for i, (train, test) in enumerate(outer):
    val = np.zeros(0, np.int64)
    if val_fraction > 0:
      train, val = carve(ds, train, val_fraction, seed, i)
    result.append(_checked_fold(ds, i, train, val, test, _FIXES))
  return result


def holdout_fold(ds: Dataset, num_train: int, val_fraction: float, seed: int) -> Fold:
  """One fold over a source's own split: rows [0, num_train) train (and val), the rest test.

  The long-tailed benchmarks (CIFAR-10/100-LT) train on a subsampled training split and test
  on the untouched, balanced official test split; there is nothing to cross-validate.
  """
  _check_val_fraction(val_fraction)
  train = np.arange(num_train, dtype=np.int64)
  test = np.arange(num_train, len(ds.y), dtype=np.int64)
  val = np.zeros(0, np.int64)
  if val_fraction > 0:
    train, val = carve(ds, train, val_fraction, seed, 0)
  return _checked_fold(ds, 0, train, val, test,
                       "a smaller --config.split.val_fraction or a milder --config.imbalance.ratio")
