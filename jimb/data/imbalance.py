"""Turns a balanced source into a long-tailed one, for controlled studies of imbalance.

The profiles follow LDAM-DRW (Cao et al., 2019), the usual way CIFAR-10-LT style benchmarks
are built, so imbalance ratios here mean the same as in that literature.
"""

from __future__ import annotations

import numpy as np

from jimb.data import scenarios
from jimb.data.dataset import Dataset

PROFILES = ("exp", "step")


def long_tail_counts(n_max: int, num_classes: int, ratio: float, profile: str) -> np.ndarray:
  """Examples per class, head (class 0) first, so that n_max / n_min is about `ratio`."""
  if ratio < 1:
    raise ValueError(f"imbalance ratio must be >= 1 (n_max / n_min), got {ratio}; "
                     "fix --config.imbalance.ratio")
  if num_classes < 2:
    raise ValueError(f"a long tail needs at least 2 classes, got {num_classes}")
  if profile == "exp":
    counts = [int(n_max * ratio ** (-c / (num_classes - 1))) for c in range(num_classes)]
  elif profile == "step":
    head = num_classes // 2
    counts = [n_max] * head + [int(n_max / ratio)] * (num_classes - head)
  else:
    raise ValueError(f"unknown imbalance profile {profile!r}; set --config.imbalance.profile to "
                     f"one of {('none',) + PROFILES} (the whole source) or "
                     f"{scenarios.SCENARIOS} (each fold's training part)")
  return np.asarray(counts, np.int64)


def make_imbalanced(ds: Dataset, cfg, seed: int) -> Dataset:
  """Subsamples `ds` per class to the counts of `cfg.profile` (the config's `imbalance` block).

  Each class keeps a prefix of one seeded permutation of its examples, so with the same seed a
  higher ratio keeps a subset of what a lower ratio keeps and results across ratios are nested.
  """
  if cfg.profile == "none":
    return ds
  available = ds.class_counts()
  if cfg.max_per_class < 0:
    raise ValueError(f"--config.imbalance.max_per_class must be >= 0, got {cfg.max_per_class}")
  n_max = int(cfg.max_per_class or available.min())
  if n_max < 1:
    raise ValueError(
        f"dataset {ds.name!r} has a class with no examples, so there is no head size; set "
        "--config.imbalance.max_per_class=N")
  targets = long_tail_counts(n_max, ds.num_classes, cfg.ratio, cfg.profile)
  rng = np.random.default_rng(seed)
  members = [np.flatnonzero(ds.y == c) for c in range(ds.num_classes)]
  orders = [rng.permutation(len(m)) for m in members]
  if cfg.shuffle_classes:
    targets = targets[np.argsort(rng.permutation(ds.num_classes))]
  for c, (target, have) in enumerate(zip(targets, available)):
    name = ds.class_names[c]
    if target > have:
      raise ValueError(
          f"class {c} ({name!r}) has {have} examples but the {cfg.profile} profile asks for "
          f"{target}; set --config.imbalance.max_per_class to at most {have} (or 0 for the "
          "smallest class count)")
    if target < 1:
      raise ValueError(
          f"class {c} ({name!r}) would keep no examples (n_max={n_max}, ratio={cfg.ratio}); "
          "lower --config.imbalance.ratio or raise --config.imbalance.max_per_class")
  kept = np.concatenate([m[o[:t]] for m, o, t in zip(members, orders, targets)])
  return ds.subset(np.sort(kept))
