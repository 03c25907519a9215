"""Fold partitions, stratification and grouping checked with plain NumPy set arithmetic."""

from __future__ import annotations

import itertools
import logging
import re

import numpy as np
import pytest

from jimb.data.dataset import Dataset
from jimb.data.splits import carve, check_class_sizes, make_folds


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
  with pytest.raises(ValueError, match=r"class 'c1' \(#1: 3 examples\) cannot reach all 5 test "
                     r"folds; set --config\.split\.folds=3 .*small_classes=drop"):
    check_class_sizes(ds, folds=5, policy="error")


def test_small_class_counts_groups_when_grouped():
  ds = _dataset([30, 12, 20], groups_per_example=4)  # class 1: 3 groups
  with pytest.raises(ValueError, match=r"class 'c1' \(#1: 3 distinct groups\)"):
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


def test_tiny_class_reaches_every_validation_part():
  # 5 examples of c1 over 5 folds leave 4 per training part: 10 % of 4 rounds to 0, yet each
  # validation part gets one of them.
  ds = _dataset([100, 5])
  for f in make_folds(ds, folds=5, val_fraction=0.1, seed=0):
    assert (ds.y[f.val] == 1).sum() == 1 and (ds.y[f.train] == 1).sum() == 3


def test_class_with_one_training_example_stays_in_training(caplog):
  ds = _dataset([40, 2, 30])   # 2 folds leave c1 a single training example
  with caplog.at_level(logging.WARNING):
    folds = make_folds(ds, folds=2, val_fraction=0.2, seed=0)
  for f in folds:
    assert (ds.y[f.train] == 1).sum() == 1 and (ds.y[f.test] == 1).sum() == 1
    assert not (ds.y[f.val] == 1).any()
  assert re.search(r"fold 0: no validation example of class 'c1' \(#1: 1 example in the "
                   r"training part\): a single member stays in training", caplog.text)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_class_missing_from_test_is_an_error():
  ds = _dataset([30, 2, 30])  # 2 examples cannot reach 3 test folds
  with pytest.raises(ValueError, match=r"fold \d: the test part has no example of class 'c1' "
                     r"\(#1: 2 examples\); set --config\.split\.folds=2 .*small_classes=drop"):
    make_folds(ds, folds=3, val_fraction=0.0, seed=0)


def _held_per_class(ds, held):
  return np.bincount(ds.y[held], minlength=ds.num_classes)


def test_carve_allocates_per_class_where_stratification_fails():
  # A class of 1 makes scikit-learn's stratified split refuse: each class then gives
  # max(1, round(0.1 n)) of its n members, at most n - 1, and the class of 1 none.
  ds = _dataset([1, 2, 3, 4, 40])
  rest, held = carve(ds, np.arange(len(ds.y)), 0.1, seed=3, fold=1)
  np.testing.assert_array_equal(_held_per_class(ds, held), [0, 1, 1, 1, 4])
  again = carve(ds, np.arange(len(ds.y)), 0.1, seed=3, fold=1)
  np.testing.assert_array_equal(again[1], held)   # seeded
  grouped = _dataset([2, 6, 9, 60], groups_per_example=3)   # 1, 2, 3 and 20 groups
  rest, held = carve(grouped, np.arange(len(grouped.y)), 0.1, seed=0, fold=0)
  groups_held = [len(set(grouped.groups[held][grouped.y[held] == c])) for c in range(4)]
  assert groups_held == [0, 1, 1, 2] and not set(grouped.groups[rest]) & set(grouped.groups[held])


@pytest.mark.parametrize("grouped", [False, True])
def test_carve_keeps_a_member_of_every_class_on_both_sides_brute_force(grouped):
  rng = np.random.default_rng(0)
  for trial in range(60):
    counts = rng.integers(1, 12, size=rng.integers(2, 6)) * (2 if grouped else 1)
    ds = _dataset(counts.tolist(), groups_per_example=2 if grouped else None, seed=trial)
    train = np.sort(rng.choice(len(ds.y), size=len(ds.y) - rng.integers(0, 3), replace=False))
    fraction = float(rng.choice([0.01, 0.1, 0.15, 0.3, 0.6, 0.9]))
    rest, held = carve(ds, train, fraction, seed=trial, fold=0)
    np.testing.assert_array_equal(np.sort(np.concatenate([rest, held])), train)
    unit = ds.groups if grouped else np.arange(len(ds.y))
    assert not set(unit[rest]) & set(unit[held])
    for c in range(ds.num_classes):
      members = len(set(unit[train][ds.y[train] == c]))
      assert (c in ds.y[rest]) == (members >= 1)
      assert (c in ds.y[held]) == (members >= 2), (counts, fraction, c)


def _followed(message: str, **settings):
  """The settings after applying each fix a split error suggests, one fix at a time."""
  _, advice = message.split("; set ", 1)
  fixes = re.findall(r"--config\.split\.(\w+)=(\S+)", advice)
  assert fixes, message
  for key, value in fixes:
    yield {**settings, key: type(settings[key])(value)}


@pytest.mark.parametrize("grouped", [False, True])
def test_suggested_fixes_work_when_followed(grouped):
  shapes = [[30, 3, 20], [2, 81, 61, 4], [143, 77, 52, 35, 20, 5, 2, 2], [100, 5, 7],
            [6, 40, 3, 3, 50]]
  # Grouped splits (scikit-learn's StratifiedGroupKFold) take longer: one setting, seed 1.
  settings = [(0.3,), (1,)] if grouped else [(0.1, 0.3), (0, 1)]
  for counts, folds, fraction, seed in itertools.product(shapes, (3, 5, 10), *settings):
    ds = _dataset([n * (2 if grouped else 1) for n in counts],
                  groups_per_example=2 if grouped else None)
    try:
      check_class_sizes(ds, folds, "error", val_fraction=fraction, seed=seed)
      continue
    except ValueError as e:
      message = str(e)
    for fix in _followed(message, folds=folds, small_classes="error", val_fraction=fraction):
      kept = check_class_sizes(ds, fix["folds"], fix["small_classes"],
                               val_fraction=fix["val_fraction"], seed=seed)
      make_folds(kept, fix["folds"], fix["val_fraction"], seed)


def test_drop_is_not_suggested_where_it_is_set_or_cannot_help():
  ds = _dataset([2, 3, 40])   # dropping both small classes leaves one
  with pytest.raises(ValueError) as e:
    check_class_sizes(ds, folds=5, policy="drop")
  assert "small_classes=drop would drop" in str(e.value)
  assert [fix["folds"] for fix in _followed(str(e.value), folds=5)] == [2]
  with pytest.raises(ValueError) as e:
    check_class_sizes(ds, folds=5, policy="error")
  assert "small_classes=drop" not in str(e.value)


def test_no_working_fix_says_so():
  with pytest.raises(ValueError, match=r"class 'c0' \(#0: 1 example\).*no "
                     r"--config\.split\.folds below 5 .*remove the smallest classes"):
    check_class_sizes(_dataset([1, 40]), folds=5, policy="error")


def test_folds_below_two_is_an_error():
  with pytest.raises(ValueError, match="split.folds"):
    make_folds(_dataset([10, 10]), folds=1, val_fraction=0.1, seed=0)
