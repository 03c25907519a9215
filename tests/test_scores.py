"""Frechet distance against Gaussian closed forms and scipy's sqrtm; k-NN precision/recall against
a brute-force loop and hand cases; per-class scores with classes too small to score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from jimb.generative.scores import (frechet_distance, knn_precision_recall, knn_radii,
                                    per_class_scores, within_radii)


def _brute_radii(x, k):
  return np.array([np.sort(np.linalg.norm(x - x[i], axis=1))[k] for i in range(len(x))])


def _brute_precision_recall(real, fake, k):
  r_real, r_fake = _brute_radii(real, k), _brute_radii(fake, k)

  def share(query, ref, radii):
    return np.mean([any(np.linalg.norm(q - r) <= rad for r, rad in zip(ref, radii))
                    for q in query])

  return share(fake, real, r_real), share(real, fake, r_fake)


def test_identical_sets_score_zero():
  x = np.random.default_rng(0).normal(size=(50, 6))
  assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
  assert knn_precision_recall(x, x, k=3) == (1.0, 1.0)


def test_fid_of_shifted_unit_gaussians_is_the_squared_shift():
  rng = np.random.default_rng(1)
  mu = np.array([1.0, -2.0, 0.5])
  a = rng.normal(size=(20000, 3))
  b = rng.normal(size=(20000, 3)) + mu
  assert frechet_distance(a, b) == pytest.approx(mu @ mu, abs=0.05)   # 5.25


def test_fid_matches_the_diagonal_closed_form():
  # Rows +-c_j e_j around a mean have exactly diagonal sample covariance, so the FID is
  # ||mu_a - mu_b||^2 + sum_j (sigma_a,j - sigma_b,j)^2 with moments taken from the rows.
  def axes(mean, scales):
    steps = np.diag(scales)
    return np.concatenate([mean + steps, mean - steps])

  a = axes(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 0.5]))
  b = axes(np.array([1.0, 1.0, -1.0]), np.array([3.0, 0.1, 0.5]))
  sd_a, sd_b = a.std(0, ddof=1), b.std(0, ddof=1)
  diff = a.mean(0) - b.mean(0)
  assert frechet_distance(a, b) == pytest.approx(diff @ diff + np.sum((sd_a - sd_b) ** 2),
                                                 rel=1e-10)


def test_fid_matches_scipy_sqrtm_on_full_covariances():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
  b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.3
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  diff = a.mean(0) - b.mean(0)
  expected = diff @ diff + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real)
  assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_fid_with_fewer_rows_than_features_stays_finite():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(5, 40)), rng.normal(size=(7, 40))   # singular covariances
  fid = frechet_distance(a, b)
  assert math.isfinite(fid) and fid > 0
  assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
  with pytest.raises(ValueError, match=">= 2 rows"):
    frechet_distance(a[:1], b)


def test_radii_and_precision_recall_match_a_brute_force_loop():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(60, 4))
  fake = rng.normal(size=(45, 4)) * 1.3 + 0.4
  for k in (0, 1, 3, 7):
    np.testing.assert_allclose(knn_radii(real, k), _brute_radii(real, k), rtol=1e-9, atol=1e-12)
  for k in (1, 3, 5):
    assert knn_precision_recall(real, fake, k) == pytest.approx(
        _brute_precision_recall(real, fake, k), abs=1e-12)


def test_rows_of_any_shape_are_flattened():
  rng = np.random.default_rng(5)
  real, fake = rng.random((20, 4, 4, 1)), rng.random((15, 4, 4, 1))
  assert knn_precision_recall(real, fake, 2) == knn_precision_recall(
      real.reshape(20, -1), fake.reshape(15, -1), 2)
  assert within_radii(fake, real, knn_radii(real, 2)).shape == (15,)


def test_disjoint_far_sets_score_zero():
  rng = np.random.default_rng(6)
  real = rng.normal(size=(30, 3))
  assert knn_precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


def test_per_class_scores():
  rng = np.random.default_rng(7)
  y_real = np.repeat([0, 1, 2], [40, 3, 5])
  y_syn = np.repeat([0, 1, 3], [30, 1, 4])
  feat_real = rng.normal(size=(len(y_real), 3)) + y_real[:, None]
  feat_syn = rng.normal(size=(len(y_syn), 3)) + y_syn[:, None]
  scores = per_class_scores(feat_real, y_real, feat_syn, y_syn, k=3)
  assert sorted(scores) == [0, 1, 2, 3]
  full = scores[0]
  assert (full["n_real"], full["n_syn"], full["k"], full["note"]) == (40, 30, 3, "")
  assert full["fid"] == frechet_distance(feat_real[:40], feat_syn[:30])
  assert (full["precision"], full["recall"]) == knn_precision_recall(feat_real[:40], feat_syn[:30],
                                                                     3)
  for c, (n_real, n_syn) in {1: (3, 1), 2: (5, 0), 3: (0, 4)}.items():
    row = scores[c]
    assert (row["n_real"], row["n_syn"]) == (n_real, n_syn)
    assert all(math.isnan(row[m]) for m in ("fid", "precision", "recall"))
    assert ">= 2 rows" in row["note"]
  # Three synthetic rows of a class with three real ones: k drops to 2 and says so.
  small = per_class_scores(feat_real[40:43], y_real[40:43], feat_syn[:3], np.ones(3, int), k=3)
  assert small[1]["k"] == 2 and "k=2" in small[1]["note"]
  assert (small[1]["precision"], small[1]["recall"]) == knn_precision_recall(
      feat_real[40:43], feat_syn[:3], 2)
