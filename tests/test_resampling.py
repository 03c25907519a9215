"""Resamplers by name: counts against imbalanced-learn, provenance of every row, seed 000's
duplication rules by hand, small-class policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from imblearn import combine, over_sampling, under_sampling

from jimb.resampling import samplers

COUNTS = (60, 25, 9, 4)


def _data(counts=COUNTS, features=5, seed=0):
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(len(counts)), counts)
  x = (rng.normal(size=(len(y), features)) + y[:, None]).astype(np.float32)
  order = rng.permutation(len(y))
  return x[order], y[order]


@pytest.mark.parametrize("name, reference, params", [
    ("RandomOverSampler", over_sampling.RandomOverSampler, {}),
    ("RandomUnderSampler", under_sampling.RandomUnderSampler, {}),
    ("SMOTE", over_sampling.SMOTE, {"k_neighbors": 3}),
    ("BorderlineSMOTE", over_sampling.BorderlineSMOTE, {"k_neighbors": 3}),
    ("SVMSMOTE", over_sampling.SVMSMOTE, {"k_neighbors": 3}),
    ("ADASYN", over_sampling.ADASYN, {"n_neighbors": 3}),
    ("TomekLinks", under_sampling.TomekLinks, {}),
    ("EditedNearestNeighbours", under_sampling.EditedNearestNeighbours, {}),
    ("SMOTEENN", combine.SMOTEENN, {}),
    ("SMOTETomek", combine.SMOTETomek, {}),
])
def test_matches_imbalanced_learn_and_traces_every_row(name, reference, params):
  x, y = _data()
  params = {**params, **({"smote": over_sampling.SMOTE(k_neighbors=3, random_state=1)}
                         if name in ("SMOTEENN", "SMOTETomek") else {})}
  out = samplers.resample(name, params, x, y, seed=1)
  ref_x, ref_y = reference(**params, **({} if name in ("TomekLinks", "EditedNearestNeighbours")
                                        else {"random_state": 1})).fit_resample(x, y)
  np.testing.assert_array_equal(out.y, ref_y)
  if out.x is None:       # label-only: indices into the input
    np.testing.assert_array_equal(x[out.source], ref_x)
  else:
    np.testing.assert_allclose(out.x, ref_x, rtol=1e-6)
    real = ~out.synthetic
    np.testing.assert_array_equal(out.x[real], x[out.source[real]])
    np.testing.assert_array_equal(out.y[real], y[out.source[real]])
    if name in ("SMOTE", "BorderlineSMOTE", "SVMSMOTE", "ADASYN"):
      assert out.synthetic.sum() == len(out.y) - len(y)


def test_label_only_samplers_never_touch_the_data():
  x = np.zeros((len(_data()[1]), 8, 8, 3), np.uint8)   # images: never flattened or copied
  y = _data()[1]
  out = samplers.resample("RandomOverSampler", {}, x, y, seed=0)
  assert out.x is None and np.all(np.bincount(out.y) == max(COUNTS))
  np.testing.assert_array_equal(y[out.source], out.y)


def test_duplication_rules_by_hand():
  x, y = _data()
  to_max = samplers.resample("DuplicateToMax", {}, x, y, seed=0)
  np.testing.assert_array_equal(np.bincount(to_max.y), [60, 60, 60, 60])
  to_min = samplers.resample("DuplicateToMinimum", {"min_count": 20}, x, y, seed=0)
  np.testing.assert_array_equal(np.bincount(to_min.y), [60, 25, 20, 20])
  ceil = samplers.resample("DuplicateCeilMultiple", {}, x, y, seed=0)
  # S_i = ceil((60 - N_i) / N_i) * N_i: 0, 50, 54, 56 -> 60, 75, 63, 60
  expected = [n + math.ceil((60 - n) / n) * n for n in COUNTS]
  np.testing.assert_array_equal(np.bincount(ceil.y), expected)
  for out in (to_max, to_min, ceil):
    np.testing.assert_array_equal(y[out.source], out.y)
    np.testing.assert_array_equal(out.source[:len(y)], np.arange(len(y)))   # originals kept
  # Whole copies: every row of class 3 (4 rows) appears 15 times.
  assert set(np.bincount(ceil.source[ceil.y == 3]).tolist()) - {0} == {15}


def test_deterministic_by_seed():
  x, y = _data()
  a, b = (samplers.resample("SMOTE", {"k_neighbors": 3}, x, y, seed=5) for _ in range(2))
  np.testing.assert_array_equal(a.x, b.x)
  c = samplers.resample("SMOTE", {"k_neighbors": 3}, x, y, seed=6)
  assert not np.array_equal(a.x, c.x)


def test_images_are_flattened_and_reshaped():
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(2), [30, 8])
  x = rng.uniform(size=(len(y), 6, 6, 3)).astype(np.float32)
  out = samplers.resample("SMOTE", {"k_neighbors": 3}, x, y, seed=0)
  assert out.x.shape == (60, 6, 6, 3) and out.x.dtype == np.float32
  assert out.x.min() >= 0 and out.x.max() <= 1


def test_small_classes_error_reduce_k_or_ros():
  x, y = _data()                       # class 3 has 4 rows: too few for k=5
  with pytest.raises(ValueError, match=r"class 3 \(4 rows\).*k_neighbors.*small_classes"):
    samplers.resample("SMOTE", {}, x, y, seed=0, where=" in fold 2")
  reduced = samplers.resample("SMOTE", {}, x, y, seed=0, small_classes="reduce_k")
  np.testing.assert_array_equal(np.bincount(reduced.y), [60] * 4)
  ros = samplers.resample("SMOTE", {}, x, y, seed=0, small_classes="ros")
  np.testing.assert_array_equal(np.bincount(ros.y), [60] * 4)
  # Class 3's new rows are copies of its own rows; the others are synthetic.
  assert np.all(ros.source[ros.y == 3] >= 0) and ros.synthetic[ros.y == 1].sum() == 35
  np.testing.assert_array_equal(ros.x[ros.y == 3], x[ros.source[ros.y == 3]])


def test_bad_names_options_and_inputs():
  x, y = _data()
  with pytest.raises(ValueError, match="unknown resampler 'SMOT'"):
    samplers.resample("SMOT", {}, x, y, seed=0)
  with pytest.raises(ValueError, match="no option.*k_neighbours"):
    samplers.resample("SMOTE", {"k_neighbours": 3}, x, y, seed=0)
  bad = x.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN.*impute"):
    samplers.resample("SMOTE", {"k_neighbors": 3}, bad, y, seed=0)
  with pytest.raises(ValueError, match="small_classes"):
    samplers.resample("SMOTE", {}, x, y, seed=0, small_classes="drop")
