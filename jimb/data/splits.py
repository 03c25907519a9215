"""Stratified (and patient/lesion-grouped) k-fold splits with a validation part per fold.

Every class must reach train and test of every fold, and its validation part unless the
class has a single training member, or per-class metrics are undefined; classes too small for
that are rejected or dropped before splitting. An error suggests only the settings under which
splitting was tried and worked.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
from sklearn import model_selection

from jimb.data.dataset import Dataset


@dataclasses.dataclass(frozen=True)
class Fold:
  """Sorted int64 indices into the dataset; the three parts are disjoint."""

  index: int
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray


class _MissingClass(ValueError):
  """A fold part without some class; `problem` and `part` let make_folds add simulated fixes."""

  def __init__(self, problem: str, part: str, fixes: str):
    super().__init__(f"{problem}; use {fixes}" if fixes else problem)
    self.problem, self.part = problem, part


def _class_sizes(ds: Dataset, index: np.ndarray | None = None) -> np.ndarray:
  """Members per class (of the examples at `index`): examples, or distinct groups when grouped."""
  y = ds.y if index is None else ds.y[index]
  if ds.groups is None:
    return np.bincount(y, minlength=ds.num_classes)
  groups = ds.groups if index is None else ds.groups[index]
  return np.asarray([len(np.unique(groups[y == c])) for c in range(ds.num_classes)])


def _described(ds: Dataset, classes, sizes: np.ndarray, where: str = "") -> str:
  """Classes by name and index with their sizes: "class 'ERL' (#9: 5 examples), ..."."""
  unit = "example" if ds.groups is None else "distinct group"
  return ", ".join(f"class {ds.class_names[c]!r} (#{c}: {sizes[c]} {unit}"
                   f"{'' if sizes[c] == 1 else 's'}{where})" for c in classes)


def _without(ds: Dataset, classes: np.ndarray) -> Dataset:
  """`ds` without the examples of `classes`; the other classes keep their order, relabelled 0.."""
  keep_classes = np.setdiff1d(np.arange(ds.num_classes), classes)
  new_label = np.full(ds.num_classes, -1, np.int64)
  new_label[keep_classes] = np.arange(len(keep_classes))
  kept = ds.subset(np.flatnonzero(np.isin(ds.y, keep_classes)))
  return dataclasses.replace(
      kept, y=new_label[kept.y], class_names=tuple(ds.class_names[c] for c in keep_classes))


def _works(ds: Dataset, folds: int, val_fraction: float, seed: int) -> bool:
  """Whether make_folds succeeds with these settings (tried, quietly)."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)   # scikit-learn on classes below folds
      _split(ds, folds, val_fraction, seed, quiet=True)
  except ValueError:
    return False
  return True


def _advice(ds: Dataset, folds: int, val_fraction: float, seed: int, *, drop: bool = True,
            part: str = "") -> str:
  """The settings that fix a failed split, each tried: the most folds that work, dropping the
  classes below `folds` (when `drop` can apply), no validation part (when `part` is val)."""
  sizes = _class_sizes(ds)
  fixes = []
  most = next((f for f in range(min(folds - 1, sizes.min()), 1, -1)
               if _works(ds, f, val_fraction, seed)), None)
  if most:
    fixes.append(f"--config.split.folds={most} (the most that keeps every class in the training "
                 "and test parts of every fold)")
  small = np.flatnonzero(sizes < folds)
  left = ds.num_classes - len(small)
  if drop and len(small) and left >= 2 and _works(_without(ds, small), folds, val_fraction, seed):
    fixes.append(f"--config.split.small_classes=drop (drops {len(small)} class(es), keeps {left})")
  if part == "val" and _works(ds, folds, 0.0, seed):
    fixes.append("--config.split.val_fraction=0 (no validation part: the last epoch is kept)")
  if not fixes:
    return (f"no --config.split.folds below {folds}{' (nor small_classes=drop)' if drop else ''} "
            "keeps every class in the training and test parts; remove the smallest classes from "
            "the data")
  return "set " + ", or ".join(fixes)


def check_class_sizes(ds: Dataset, folds: int, policy: str, *, val_fraction: float = 0.0,
                      seed: int = 0) -> Dataset:
  """Rejects (policy "error") or removes (policy "drop") classes with fewer members than folds.

  An error's fixes are tried with make_folds(..., val_fraction, seed): pass the run's values, as
  grouped data split differently per seed.
  """
  if policy not in ("error", "drop"):
    raise ValueError(f"unknown --config.split.small_classes={policy!r}; choose error or drop")
  sizes = _class_sizes(ds)
  small = np.flatnonzero(sizes < folds)
  if not len(small):
    return ds
  described = _described(ds, small, sizes)
  if policy == "error":
    raise ValueError(f"{described} cannot reach all {folds} test folds; "
                     f"{_advice(ds, folds, val_fraction, seed)}")
  if ds.num_classes - len(small) < 2:
    raise ValueError(f"--config.split.small_classes=drop would drop {described}, leaving fewer "
                     f"than 2 classes; {_advice(ds, folds, val_fraction, seed, drop=False)}")
  logging.warning("dropping %s: fewer members than %d folds", described, folds)
  return _without(ds, small)


def _stratified(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int):
  """scikit-learn's stratified (grouped) split of positions 0..len(y)-1, or None where it refuses
  (a class with a single member, fewer held-out rows or groups than classes or splits)."""
  positions = np.arange(len(y))
  try:
    if groups is None:
      return model_selection.train_test_split(positions, test_size=fraction, stratify=y,
                                              random_state=seed)
    splitter = model_selection.StratifiedGroupKFold(
        n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
    with warnings.catch_warnings():   # on classes below n_splits: the caller checks both sides
      warnings.simplefilter("ignore", UserWarning)
      return next(splitter.split(positions[:, None], y, groups))
  except ValueError:
    return None


def _per_class(y: np.ndarray, groups: np.ndarray | None, num_classes: int, fraction: float,
               rng: np.random.Generator) -> np.ndarray:
  """Which positions to hold out: of each class's n members (examples, or distinct groups),
  max(1, round(fraction * n)) and at most n - 1, none of a class of 1.

  Members are drawn in a seeded order, the smallest classes first; a group holding several
  classes is taken only while each of them keeps a member on the rest's side.
  """
  units, unit_of = np.unique(np.arange(len(y)) if groups is None else groups,
                             return_inverse=True)
  member = np.zeros((len(units), num_classes), bool)
  member[unit_of, y] = True
  sizes = member.sum(0)
  want = np.where(sizes >= 2, np.clip(np.floor(fraction * sizes + 0.5), 1, sizes - 1), 0)
  want = want.astype(np.int64)
  rest = sizes.copy()
  held = np.zeros(len(units), bool)
  order = rng.permutation(len(units))
  for c in np.argsort(sizes, kind="stable"):
    need = want[c] - (sizes[c] - rest[c])
    for u in order[member[order, c]]:
      if need <= 0:
        break
      if not held[u] and np.all(rest[member[u]] >= 2):
        held[u] = True
        rest -= member[u]
        need -= 1
  return held[unit_of]


def carve(ds: Dataset, train: np.ndarray, fraction: float, seed: int, fold: int):
  """Splits a fold's training part into (rest, held out), stratified and group-disjoint.

  Used for the validation part and for the active sampler's contrast part. scikit-learn's
  stratified (grouped) split is kept where every class reaches both sides (so splits that
  worked before stay the same); otherwise tiny classes would miss the held-out part, and it is
  carved per class (`_per_class`, seeded by seed + fold). A class with a single member in
  `train` stays in the rest.
  """
  y = ds.y[train]
  groups = None if ds.groups is None else ds.groups[train]
  split = _stratified(y, groups, fraction, seed + fold)
  if split is not None:
    rest, held = split
    splittable = np.flatnonzero(_class_sizes(ds, train) >= 2)
    if np.isin(splittable, y[held]).all() and np.isin(y, y[rest]).all():
      return train[rest], train[held]
  held = _per_class(y, groups, ds.num_classes, fraction, np.random.default_rng(seed + fold))
  return train[~held], train[held]


def _checked_fold(ds: Dataset, index: int, train: np.ndarray, val: np.ndarray,
                  test: np.ndarray, fixes: str = "", *, quiet: bool = False) -> Fold:
  """The fold, once every class is known to reach its train and test parts, and its non-empty
  validation part unless the class has a single training member (logged unless `quiet`)."""
  parts = {name: np.sort(part).astype(np.int64)
           for name, part in (("train", train), ("val", val), ("test", test))}
  for name, part in parts.items():
    if name == "val" and not len(part):
      continue
    missing = np.setdiff1d(np.arange(ds.num_classes), ds.y[part])
    sizes, where = _class_sizes(ds), ""
    if name == "val" and len(missing):
      sizes = _class_sizes(ds, np.concatenate([parts["train"], part]))
      where = " in the training part"
      single = missing[sizes[missing] == 1]
      if len(single) and not quiet:
        logging.warning("fold %d: no validation example of %s: a single member stays in "
                        "training, and validation metrics leave the class out", index,
                        _described(ds, single, sizes, where))
      missing = missing[sizes[missing] != 1]
    if len(missing):
      raise _MissingClass(f"fold {index}: the {name} part has no example of "
                          f"{_described(ds, missing, sizes, where)}", name, fixes)
  return Fold(index, **parts)


def _check_val_fraction(val_fraction: float) -> None:
  if not 0 <= val_fraction < 1:
    raise ValueError(f"--config.split.val_fraction must lie in [0, 1), got {val_fraction}")


def _split(ds: Dataset, folds: int, val_fraction: float, seed: int,
           quiet: bool = False) -> list[Fold]:
  """make_folds without its advice on failure, which `_works` tries settings with."""
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
    result.append(_checked_fold(ds, i, train, val, test, quiet=quiet))
  return result


def make_folds(ds: Dataset, folds: int, val_fraction: float, seed: int) -> list[Fold]:
  """Stratified k-fold (grouped when `ds.groups` is set) with validation carved from train.

  A part without some class is an error whose suggested settings were tried and work.
  """
  if folds < 2:
    raise ValueError(f"cross-validation needs --config.split.folds >= 2, got {folds}")
  _check_val_fraction(val_fraction)
  try:
    return _split(ds, folds, val_fraction, seed)
  except _MissingClass as e:
    advice = _advice(ds, folds, val_fraction, seed, part=e.part)
    raise ValueError(f"{e.problem}; {advice}") from None


def holdout_fold(ds: Dataset, num_train: int, val_fraction: float, seed: int,
                 val: np.ndarray | None = None) -> Fold:
  """One fold over a source's own splits: rows [0, num_train) train, the rest test.

  The long-tailed benchmarks (CIFAR-10/100-LT) train on a subsampled training split and test
  on the untouched, balanced official test split; there is nothing to cross-validate. `val`
  holds the rows of the source's fixed validation split when it has one (they are not tested);
  otherwise validation is carved from the training rows.
  """
  _check_val_fraction(val_fraction)
  train = np.arange(num_train, dtype=np.int64)
  rest = np.arange(num_train, len(ds.y), dtype=np.int64)
  if val is not None:
    if not np.isin(val, rest).all():
      raise ValueError("the fixed validation rows must lie outside the training rows "
                       f"[0, {num_train})")
    return _checked_fold(ds, 0, train, val, np.setdiff1d(rest, val),
                         "fixed splits (data.test_split, data.val_split) that each hold "
                         "every class, or a milder --config.imbalance.ratio")
  val = np.zeros(0, np.int64)
  if val_fraction > 0:
    train, val = carve(ds, train, val_fraction, seed, 0)
  return _checked_fold(ds, 0, train, val, rest,
                       "a smaller --config.split.val_fraction or a milder --config.imbalance.ratio")
