"""Fold partitions, stratification and grouping checked with plain NumPy set arithmetic."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from jimb.data.dataset import Dataset
from jimb.data.splits import check_class_sizes, make_folds


def _dataset(counts, groups_per_example=None, seed=0):
  y = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
  groups = None
  if groups_per_example:
    # Each group holds examples of one class, like the images of one lesion.
    groups = np.empty(len(y), np.int64)
    for c in range(len(counts)):
      idx = np.flatnonzero(y == c)
      groups[idx] = 1000 * c + np.arange(len(idx)) // groups_per_example
  names = tuple(f"c{c}" for c in range(len(counts)))
  return Dataset(np.zeros((len(y), 1), np.float32), y, names, groups=groups)


def test_folds_partition_and_stratify():
  ds = _dataset([60, 31, 17])
  folds = make_folds(ds, folds=5, val_fraction=0.2, seed=0)
  n = len(ds.y)
  tests = np.concatenate([f.test for f in folds])
  np.testing.assert_array_equal(np.sort(tests), np.arange(n))  # disjoint and covering
  for f in folds:
    parts = np.concatenate([f.train, f.val, f.test])
    np.testing.assert_array_equal(np.sort(parts), np.arange(n))
    for part in (f.train, f.val, f.test):
      assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    # Validation is about val_fraction of the training part.
    assert abs(len(f.val) - 0.2 * (len(f.train) + len(f.val))) <= 1
  per_fold = np.stack([np.bincount(ds.y[f.test], minlength=3) for f in folds])
  assert np.all(per_fold.max(0) - per_fold.min(0) <= 1)
  np.testing.assert_array_equal(per_fold.sum(0), np.bincount(ds.y))


def test_val_fraction_zero_gives_empty_val():
  ds = _dataset([20, 20])
  for f in make_folds(ds, folds=4, val_fraction=0.0, seed=1):
    assert f.val.size == 0 and f.val.dtype == np.int64
    assert len(f.train) + len(f.test) == 40


def test_grouped_folds_keep_groups_on_one_side():
  ds = _dataset([60, 40, 30], groups_per_example=3)
  for f in make_folds(ds, folds=3, val_fraction=0.25, seed=0):
    sides = [set(ds.groups[p]) for p in (f.train, f.val, f.test)]
    assert not sides[0] & sides[1] and not sides[0] & sides[2] and not sides[1] & sides[2]
    assert len(f.train) + len(f.val) + len(f.test) == len(ds.y)


def test_deterministic_for_a_seed():
  ds = _dataset([30, 20, 12])
  a, b = make_folds(ds, 3, 0.2, seed=7), make_folds(ds, 3, 0.2, seed=7)
  c = make_folds(ds, 3, 0.2, seed=8)
  for fa, fb in zip(a, b):
    for part in ("train", "val", "test"):
      np.testing.assert_array_equal(getattr(fa, part), getattr(fb, part))
  assert any(not np.array_equal(fa.test, fc.test) for fa, fc in zip(a, c))


def test_small_class_error_names_class_and_fixes():
  ds = _dataset([30, 3, 20])
  with pytest.raises(ValueError, match=r"'c1': 3 examples.*split\.folds.*small_classes=drop"):
    check_class_sizes(ds, folds=5, policy="error")


def test_small_class_counts_groups_when_grouped():
  ds = _dataset([30, 12, 20], groups_per_example=4)  # class 1: 3 groups
  with pytest.raises(ValueError, match="'c1': 3 distinct groups"):
    check_class_sizes(ds, folds=5, policy="error")


def test_drop_policy_reindexes_labels(caplog):
  ds = _dataset([30, 3, 20])
  with caplog.at_level(logging.WARNING):
    out = check_class_sizes(ds, folds=5, policy="drop")
  assert "c1" in caplog.text
  assert out.class_names == ("c0", "c2")
  np.testing.assert_array_equal(out.class_counts(), [30, 20])
  expected = ds.y[ds.y != 1]
  np.testing.assert_array_equal(out.y, np.where(expected == 2, 1, expected))


def test_large_enough_classes_pass_unchanged():
  ds = _dataset([10, 10])
  assert check_class_sizes(ds, folds=5, policy="error") is ds


def test_class_missing_from_val_is_an_error():
  # 5 examples of c1 over 5 folds leaves 4 per training part; a 10 % val part misses some.
  ds = _dataset([100, 5])
  with pytest.raises(ValueError, match=r"fold \d: the val part has no example.*'c1'"):
    make_folds(ds, folds=5, val_fraction=0.1, seed=0)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_class_missing_from_test_is_an_error():
  ds = _dataset([30, 2, 30])  # 2 examples cannot reach 3 test folds
  with pytest.raises(ValueError, match=r"fold \d: the test part has no example.*'c1'"):
    make_folds(ds, folds=3, val_fraction=0.0, seed=0)


def test_folds_below_two_is_an_error():
  with pytest.raises(ValueError, match="split.folds"):
    make_folds(_dataset([10, 10]), folds=1, val_fraction=0.1, seed=0)
