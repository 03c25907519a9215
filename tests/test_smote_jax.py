"""JaxSMOTE against imbalanced-learn's SMOTE and a brute-force float64 NumPy k-NN."""

from __future__ import annotations

import collections

from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from jimb.resampling import smote_jax
from jimb.resampling.smote_jax import JaxSMOTE

COUNTS = (300, 120, 37, 10)


def _data(counts=COUNTS, features=16, offset=10.0, seed=0):
  """Classes of Gaussian points around `offset`: far from the origin, as ReLU features are."""
  rng = np.random.default_rng(seed)
  y = rng.permutation(np.repeat(np.arange(len(counts)), counts))
  X = rng.normal(size=(len(y), features)) + offset + y[:, None]
  return X.astype(np.float32), y


def _knn(points, k):
  """(n, k) indices of each point's k nearest other points, by float64 brute force."""
  p = points.astype(np.float64)
  dist = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
  np.fill_diagonal(dist, np.inf)
  return np.argsort(dist, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("strategy", ["auto", "minority", "not majority", "not minority", "all",
                                      {1: 200, 2: 100, 3: 40}])
def test_same_counts_and_rows_as_imblearn(strategy):
  X, y = _data()
  X_ref, y_ref = SMOTE(sampling_strategy=strategy, k_neighbors=5, random_state=3).fit_resample(X, y)
  X_res, y_res = JaxSMOTE(sampling_strategy=strategy, random_state=3,
                          block_size=32).fit_resample(X, y)
  assert collections.Counter(y_res) == collections.Counter(y_ref)
  np.testing.assert_array_equal(y_res, y_ref)
  # Same draws and same neighbours: the rows agree up to float32 rounding.
  np.testing.assert_allclose(X_res, X_ref, rtol=1e-6, atol=1e-5)


def test_float_strategy_for_binary_targets():
  X, y = _data(counts=(200, 30))
  _, y_ref = SMOTE(sampling_strategy=0.6, random_state=0).fit_resample(X, y)
  _, y_res = JaxSMOTE(sampling_strategy=0.6, random_state=0).fit_resample(X, y)
  assert collections.Counter(y_res) == collections.Counter(y_ref) == {0: 200, 1: 120}


def test_synthetic_rows_lie_between_a_point_and_one_of_its_k_nearest_neighbours():
  k = 3
  X, y = _data(counts=(150, 90, 40), features=24)
  X_res, y_res = JaxSMOTE(k_neighbors=k, random_state=1, block_size=16).fit_resample(X, y)
  mask = np.arange(len(X_res)) >= len(X)
  for c in (1, 2):
    points = X[y == c].astype(np.float64)
    base = np.repeat(points, k, axis=0)                       # every (point, neighbour) segment
    direction = points[_knn(points, k).ravel()] - base
    synthetic = X_res[mask & (y_res == c)].astype(np.float64)
    offset = synthetic[:, None, :] - base[None]
    gap = (offset * direction).sum(-1) / (direction * direction).sum(-1)
    residual = np.linalg.norm(offset - gap[..., None] * direction, axis=-1)
    best = residual.argmin(axis=1)
    rows = np.arange(len(synthetic))
    assert np.all(residual[rows, best] < 1e-4)
    assert np.all((gap[rows, best] > -1e-6) & (gap[rows, best] < 1 + 1e-6))


def test_original_rows_come_first_unchanged_then_synthetic_rows_by_class():
  X, y = _data()
  X64 = X.astype(np.float64) + 1e-9  # float64 input keeps its dtype and its exact values
  sampler = JaxSMOTE(random_state=0)
  X_res, y_res = sampler.fit_resample(X64, y)
  assert X_res.dtype == np.float64
  np.testing.assert_array_equal(X_res[:len(X)], X64)
  np.testing.assert_array_equal(y_res[:len(y)], y)
  np.testing.assert_array_equal(sampler.synthetic_mask_, np.arange(len(y_res)) >= len(y))
  new_labels = y_res[len(y):]
  np.testing.assert_array_equal(new_labels, np.sort(new_labels))
  assert collections.Counter(new_labels) == {1: 180, 2: 263, 3: 290}


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_gives_imblearns_rows_in_its_format(fmt):
  X, y = _data()
  X[X < 11] = 0  # a third of the entries
  X_sparse = sparse.csr_matrix(X).asformat(fmt)
  X_ref, y_ref = SMOTE(random_state=2).fit_resample(X_sparse, y)
  X_res, y_res = JaxSMOTE(random_state=2, block_size=32).fit_resample(X_sparse, y)
  assert X_res.format == fmt
  np.testing.assert_array_equal(y_res, y_ref)
  np.testing.assert_allclose(X_res.toarray(), X_ref.toarray(), rtol=1e-6, atol=1e-5)


def test_balanced_data_comes_back_unchanged():
  X, y = _data(counts=(40, 40))
  sampler = JaxSMOTE(random_state=0)
  X_res, y_res = sampler.fit_resample(X, y)
  np.testing.assert_array_equal(X_res, X)
  np.testing.assert_array_equal(y_res, y)
  assert not sampler.synthetic_mask_.any()


def test_random_state_decides_the_samples():
  X, y = _data()
  first, _ = JaxSMOTE(random_state=7).fit_resample(X, y)
  again, _ = JaxSMOTE(random_state=7).fit_resample(X, y)
  other, _ = JaxSMOTE(random_state=8).fit_resample(X, y)
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first[len(X):], other[len(X):])


@pytest.mark.parametrize("block", [8, 16, 64])
def test_packed_neighbours_equal_brute_force_and_skip_padding(block):
  # Class sizes that fill no block; points around the origin, so the zero padding rows (at the
  # class centre once centred) would be everyone's nearest point if they were not masked.
  k, counts = 4, (13, 21, 6, 40)
  X, y = _data(counts=counts, offset=0.0, seed=2)
  classes = [0, 1, 2, 3]
  packing, packed = smote_jax.pack(X, y, classes, block)
  valid, means = smote_jax.block_layout(packing, packed)
  pairs, num_pairs = packing.block_pairs()
  found = np.asarray(smote_jax.nearest_neighbours(packed, valid, means, pairs, num_pairs,
                                                  k=k, block=block))
  for offset, rows in zip(packing.offsets, packing.indices):
    neighbours = found[offset:offset + len(rows)] - offset
    assert np.all((neighbours >= 0) & (neighbours < len(rows)))  # same class, never padding
    np.testing.assert_array_equal(neighbours, _knn(X[rows], k))


def test_one_compiled_shape_serves_nearby_sizes():
  assert [smote_jax.bucket_blocks(n) for n in (1, 3, 4, 5, 6, 7, 9, 13, 17, 100)] == [
      1, 3, 4, 6, 6, 8, 12, 16, 24, 128]
  packing, _ = smote_jax.pack(*_data(counts=(30, 50)), [0, 1], 16)
  pairs, num_pairs = packing.block_pairs()
  assert packing.num_rows == 96 and num_pairs == 3 + 10  # 2 blocks of class 0, 4 of class 1
  assert len(pairs) == 6 * 7 // 2
  assert [smote_jax.default_block_size(n) for n in (6, 8191, 8192)] == [256, 256, 512]  # CPU


def test_block_size_does_not_change_the_result():
  X, y = _data()
  results = [JaxSMOTE(random_state=0, block_size=b).fit_resample(X, y)[0] for b in (8, 128)]
  np.testing.assert_array_equal(results[0], results[1])


def test_class_with_too_few_members_is_an_error():
  X, y = _data()
  with pytest.raises(ValueError, match=r"class 3 has 10 samples.*k_neighbors to at most 9"):
    JaxSMOTE(k_neighbors=10).fit_resample(X, y)
  # A class left out of sampling_strategy may be small.
  JaxSMOTE(sampling_strategy={1: 150}, k_neighbors=10).fit_resample(X, y)


def test_nan_features_are_an_error():
  X, y = _data()
  X[5, 3] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    JaxSMOTE().fit_resample(X, y)


def test_runs_inside_an_imblearn_pipeline():
  X, y = _data(offset=0.0)
  model = Pipeline([("smote", JaxSMOTE(random_state=0)),
                    ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
  assert model.score(X, y) > 0.8
  assert model.named_steps["smote"].synthetic_mask_.sum() == 3 * 300 - 167
