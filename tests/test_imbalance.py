"""Long-tail counts against the LDAM-DRW numbers and subsampling against NumPy counts."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from jimb.data.dataset import Dataset
from jimb.data.imbalance import long_tail_counts, make_imbalanced


def _cfg(**kw):
  base = dict(profile="exp", ratio=10.0, max_per_class=0, shuffle_classes=False)
  return ml_collections.ConfigDict({**base, **kw})


def _balanced(per_class=40, k=4):
  y = np.repeat(np.arange(k), per_class)
  x = np.arange(len(y), dtype=np.float32)[:, None]
  return Dataset(x, y, tuple(f"c{i}" for i in range(k)), groups=np.arange(len(y)))


def test_exp_counts_match_cifar10_lt_ir100():
  np.testing.assert_array_equal(
      long_tail_counts(5000, 10, 100.0, "exp"),
      [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def test_step_counts():
  np.testing.assert_array_equal(long_tail_counts(100, 5, 10.0, "step"), [100, 100, 10, 10, 10])


def test_ratio_below_one_and_unknown_profile_are_errors():
  with pytest.raises(ValueError, match="ratio"):
    long_tail_counts(100, 5, 0.5, "exp")
  with pytest.raises(ValueError, match="profile"):
    long_tail_counts(100, 5, 2.0, "linear")


def test_make_imbalanced_counts_and_order():
  ds = _balanced()
  out = make_imbalanced(ds, _cfg(ratio=8.0, max_per_class=32), seed=0)
  np.testing.assert_array_equal(np.bincount(out.y, minlength=4), [32, 16, 8, 4])
  kept = out.x[:, 0].astype(int)
  assert np.all(np.diff(kept) > 0)  # original order kept
  np.testing.assert_array_equal(out.groups, kept)  # groups follow their examples


def test_default_n_max_is_smallest_class():
  y = np.repeat(np.arange(3), [30, 20, 25])
  ds = Dataset(np.zeros((75, 1), np.float32), y, ("a", "b", "c"))
  out = make_imbalanced(ds, _cfg(ratio=4.0), seed=0)
  np.testing.assert_array_equal(out.class_counts(), [20, 10, 5])


def test_none_profile_returns_input():
  ds = _balanced()
  assert make_imbalanced(ds, _cfg(profile="none"), seed=0) is ds


def test_deterministic_and_nested():
  ds = _balanced()
  a = make_imbalanced(ds, _cfg(ratio=2.0), seed=3).x[:, 0]
  b = make_imbalanced(ds, _cfg(ratio=2.0), seed=3).x[:, 0]
  c = make_imbalanced(ds, _cfg(ratio=10.0), seed=3).x[:, 0]
  d = make_imbalanced(ds, _cfg(ratio=2.0), seed=4).x[:, 0]
  np.testing.assert_array_equal(a, b)
  assert set(c) < set(a)
  assert not np.array_equal(a, d)


def test_shuffle_classes_permutes_counts():
  ds = _balanced(k=6)
  out = make_imbalanced(ds, _cfg(ratio=8.0, shuffle_classes=True), seed=1)
  counts = out.class_counts()
  np.testing.assert_array_equal(np.sort(counts)[::-1], long_tail_counts(40, 6, 8.0, "exp"))
  assert counts[0] != 40 or not np.all(np.diff(counts) <= 0)


def test_class_too_small_is_an_error_naming_it():
  y = np.repeat(np.arange(3), [30, 5, 30])
  ds = Dataset(np.zeros((65, 1), np.float32), y, ("a", "rare", "c"))
  with pytest.raises(ValueError, match="'rare'.*max_per_class"):
    make_imbalanced(ds, _cfg(ratio=2.0, max_per_class=30), seed=0)
