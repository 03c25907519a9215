"""The data a run's folds index: source -> imbalance profile -> class checks -> duplicates ->
folds, with the counts at each stage for the log and results.json.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jimb.data import dataset, duplicates, imbalance, scenarios, sources, splits
from jimb.data.dataset import Dataset

Log = Callable[[str], None]


def load_data(config, log: Log = print) -> tuple[Dataset, list[splits.Fold], dict]:
  """Source -> imbalance profile -> class-size check -> duplicates -> folds, with the counts at
  each stage.

  With split.mode=holdout the profile thins the training split only and the source's test split
  is the single fold's test part, as the long-tailed benchmarks prescribe; a fixed validation
  split (data.val_split), when set, is its validation part, untouched as well.
  """
  if config.data.val_split and config.split.mode != "holdout":
    raise ValueError(f"--config.data.val_split={config.data.val_split!r} is the validation part "
                     "of --config.split.mode=holdout; k-fold carves validation from each training "
                     "part (split.val_fraction): unset data.val_split, or use holdout")
  if config.data.duplicates not in duplicates.POLICIES:
    raise ValueError(f"unknown --config.data.duplicates={config.data.duplicates!r}; choose one "
                     f"of {duplicates.POLICIES}")
  source = sources.load_source(config.data)
  per_fold = config.imbalance.profile in scenarios.SCENARIOS   # seed 001: thin each fold's training part
  if per_fold and config.split.mode != "kfold":
    raise ValueError(f"--config.imbalance.profile={config.imbalance.profile} thins the training "
                     "part of each fold; use --config.split.mode=kfold")
  ds = source if per_fold else imbalance.make_imbalanced(source, config.imbalance, seed=config.seed)
  _check_two_classes(ds)
  if config.split.mode == "holdout":
    ds, counts, folds, found = _holdout(config, ds)
  elif config.split.mode == "kfold":
    ds, counts, folds, found = _kfold(config, ds, per_fold)
  else:
    raise ValueError(f"unknown --config.split.mode={config.split.mode!r}; choose kfold or holdout")
  info = _info(config, source, ds, counts, folds, log)
  if found is not None:
    line = duplicates.check(found, folds, config.data.duplicates)   # raises for "error" and a leak
    if line:
      log(f"duplicates: {line}")
    info["duplicates"] = duplicates.summary(found, folds)
  return ds, _selected(folds, config.split.only_folds), info


def _holdout(config, ds: Dataset):
  """The source's training split (thinned), its fixed validation split if any, then its test
  split, as one dataset and one fold: (ds, training counts, [fold], duplicates)."""
  counts = ds.class_counts()   # what training and validation draw from
  num_train, fixed_val = len(ds.y), None
  if config.data.val_split:
    val = sources.load_test_source(config.data, "val_split")
    fixed_val = np.arange(num_train, num_train + len(val.y))
    ds = dataset.concat(ds, val)
  ds = dataset.concat(ds, sources.load_test_source(config.data))
  found = _find_duplicates(ds, config.data)
  fold = splits.holdout_fold(ds, num_train, config.split.val_fraction, seed=config.seed,
                             val=fixed_val)
  return ds, counts, [fold], found


def _kfold(config, ds: Dataset, per_fold: bool):
  """Stratified (grouped) k-fold after the class-size check, duplicates grouped when asked:
  (ds, class counts, folds, duplicates)."""
  ds = splits.check_class_sizes(ds, config.split.folds, config.split.small_classes,
                                val_fraction=config.split.val_fraction, seed=config.seed)
  found = _find_duplicates(ds, config.data)
  if config.data.duplicates == "group":   # duplicates share a group, so no fold splits them
    ds = duplicates.with_groups(ds, found)
  folds = splits.make_folds(ds, config.split.folds, config.split.val_fraction, seed=config.seed)
  if per_fold:
    folds = [_thinned(config, ds, fold) for fold in folds]
  return ds, ds.class_counts(), folds, found


def _info(config, source: Dataset, ds: Dataset, counts, folds, log: Log) -> dict:
  """The data's summary for results.json, and its line in the log."""
  info = {
      "name": ds.name, "num_examples": len(ds.y), "input_shape": list(ds.x.shape[1:]),
      "class_names": list(ds.class_names), **_grouping(config.data, ds),
      "source_class_counts": dict(zip(source.class_names, source.class_counts().tolist())),
      "class_counts": counts.tolist(),
      "imbalance_ratio": float(counts.max() / max(counts.min(), 1)),
      "split": config.split.mode,
  }
  grouped = (f"grouped by {info['group_by']} ({info['num_groups']} groups)" if info["grouped"]
             else "not grouped (no group ids)")
  fixed = f", fixed validation split {config.data.val_split!r}" if config.data.val_split else ""
  log(f"data: {ds.name} {tuple(ds.x.shape)}, {ds.num_classes} classes, counts "
      f"{info['class_counts']} (IR {info['imbalance_ratio']:.1f}), {len(folds)} "
      f"{'fold' if len(folds) == 1 else 'folds'}, {grouped}{fixed}")
  return info


def _find_duplicates(ds: Dataset, data_cfg) -> duplicates.Duplicates | None:
  """Exact and near duplicates of `ds` (data.duplicates, data.near_distance); None when off."""
  if data_cfg.duplicates == "off":
    return None
  return duplicates.find(ds, data_cfg.near_distance)


def _check_two_classes(ds: Dataset) -> None:
  """Refuses data with one class: every prediction would be right and every metric perfect."""
  present = np.flatnonzero(ds.class_counts())
  if len(present) == 1:
    raise ValueError(
        f"the data hold one class only, {ds.class_names[present[0]]!r} ({len(ds.y)} examples): "
        "there is nothing to classify. Check --config.data.label_key (the column, array or "
        "feature holding the labels) and the data at --config.data.path")


def _grouping(data_cfg, ds: Dataset) -> dict:
  """Whether splits keep each patient's or lesion's examples on one side, by which ids, and how
  many groups there are: for the log and results.json."""
  if ds.groups is None:
    return {"grouped": False, "group_by": "", "num_groups": 0}
  by = (f"file-name pattern {data_cfg.group_pattern!r}" if data_cfg.group_pattern
        else f"{data_cfg.group_key} of {data_cfg.group_csv}" if data_cfg.group_csv
        else data_cfg.group_key)
  if data_cfg.duplicates == "group":   # duplicate inputs were merged into shared groups
    by = f"{by} and duplicate inputs" if by else "duplicate inputs"
  return {"grouped": True, "group_by": by, "num_groups": ds.num_groups}


def _thinned(config, ds: Dataset, fold: splits.Fold) -> splits.Fold:
  """`fold` with its training and validation parts thinned to the imbalance scenario."""
  cfg = config.imbalance
  thin = lambda part: scenarios.thin(part, ds.y, ds.num_classes, cfg.profile, cfg.ratio,
                                     config.seed, fold.index, cfg.max_per_class)
  return dataclasses.replace(fold, train=thin(fold.train),
                             val=thin(fold.val) if len(fold.val) else fold.val)


def _selected(folds: list[splits.Fold], only: str) -> list[splits.Fold]:
  if not only:
    return folds
  wanted = [int(i) for i in str(only).split(",")]
  bad = [i for i in wanted if not 0 <= i < len(folds)]
  if bad:
    raise ValueError(f"--config.split.only_folds names folds {bad}; there are {len(folds)}")
  return [folds[i] for i in wanted]
