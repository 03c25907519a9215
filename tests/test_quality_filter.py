"""Quality filter on a hand-built 2-D case: points inside and outside known k-NN balls, a
mislabelled point deep inside another class, reduced k for small classes, the report's counts,
and real rows left untouched."""

from __future__ import annotations

import numpy as np
import pytest

from jimb.generative.quality_filter import keep_mask

SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
# Real rows: a unit square per class, class 1 shifted by 10 along x. With k = 1 every corner's
# ball has radius 1 (its nearest corner); with k = 3 radius sqrt(2) (the opposite corner).
X_REAL = np.concatenate([SQUARE, SQUARE + [10.0, 0.0]])
Y_REAL = np.repeat([0, 1], 4)
X_SYN = np.array([
    [0.5, 0.5],     # 0: centre of class 0's square        inside  (0.71 from a corner)
    [-0.9, 0.0],    # 0: 0.9 left of (0, 0)                inside for k=1 (0.9 <= 1)
    [-1.2, 0.0],    # 0: 1.2 left of (0, 0)                outside for k=1, inside for k=3
    [3.0, 3.0],     # 0: 2.83 from (1, 1)                  outside; the classifier still says 0
    [10.5, 0.5],    # 1: centre of class 1's square        inside
    [0.5, 0.5],     # 1: deep inside class 0               outside; the classifier says 0
])
Y_SYN = np.array([0, 0, 0, 0, 1, 1])


def _brute_knn(x_real, y_real, x_syn, y_syn, k):
  keep = []
  for s, c in zip(x_syn, y_syn):
    real = x_real[y_real == c]
    radii = [np.sort(np.linalg.norm(real - r, axis=1))[min(k, len(real) - 1)] for r in real]
    keep.append(any(np.linalg.norm(s - r) <= rad for r, rad in zip(real, radii)))
  return np.array(keep)


def test_knn_keeps_rows_inside_the_class_balls():
  mask, report = keep_mask(X_REAL, Y_REAL, X_SYN, Y_SYN, "knn", k=1)
  np.testing.assert_array_equal(mask, [True, True, False, False, True, False])
  assert report["notes"] == []
  assert report["classes"][0] == {"generated": 4, "kept": 2, "rejection_rate": 0.5,
                                  "passed_knn": 2}
  assert report["classes"][1] == {"generated": 2, "kept": 1, "rejection_rate": 0.5,
                                  "passed_knn": 1}
  assert report["overall"] == {"generated": 6, "kept": 3, "rejection_rate": 0.5}


def test_small_classes_use_k_of_size_minus_one_and_say_so():
  mask, report = keep_mask(X_REAL, Y_REAL, X_SYN, Y_SYN, "knn", k=5)   # 4 rows per class: k = 3
  np.testing.assert_array_equal(mask, [True, True, True, False, True, False])
  assert len(report["notes"]) == 2 and all("k=3" in n for n in report["notes"])


def test_classifier_rejects_a_mislabelled_row_deep_inside_another_class():
  mask, report = keep_mask(X_REAL, Y_REAL, X_SYN, Y_SYN, "classifier")
  np.testing.assert_array_equal(mask, [True, True, True, True, True, False])
  assert report["classes"][1]["passed_classifier"] == 1
  assert "passed_knn" not in report["classes"][1]


def test_both_keeps_what_passes_both_checks_and_none_keeps_all():
  mask, report = keep_mask(X_REAL, Y_REAL, X_SYN, Y_SYN, "both", k=1)
  np.testing.assert_array_equal(mask, [True, True, False, False, True, False])
  assert report["classes"][0]["passed_classifier"] == 4 and report["classes"][0]["passed_knn"] == 2
  mask, report = keep_mask(X_REAL, Y_REAL, X_SYN, Y_SYN, "none")
  assert mask.all() and report["overall"]["rejection_rate"] == 0.0


def test_knn_matches_a_brute_force_loop_on_images():
  rng = np.random.default_rng(0)
  y_real = np.repeat([0, 1, 2], [30, 12, 3])
  x_real = rng.random((len(y_real), 4, 4, 1)) + y_real[:, None, None, None] * 0.3
  y_syn = np.repeat([0, 1, 2], [20, 20, 10])
  x_syn = rng.random((len(y_syn), 4, 4, 1)) * 1.2 + y_syn[:, None, None, None] * 0.3
  mask, report = keep_mask(x_real, y_real, x_syn, y_syn, "knn", k=4)
  flat = lambda x: x.reshape(len(x), -1)
  expected = _brute_knn(flat(x_real), y_real, flat(x_syn), y_syn, 4)
  np.testing.assert_array_equal(mask, expected)
  assert 0 < mask.sum() < len(mask)
  assert report["notes"] == ["class 2: 3 real rows <= k=4; its k-NN manifold uses k=2"]


def test_real_rows_are_never_altered():
  x_real, y_real = X_REAL.copy(), Y_REAL.copy()
  for a in (x_real, y_real):
    a.flags.writeable = False   # any in-place write would raise
  for method in ("classifier", "knn", "both"):
    keep_mask(x_real, y_real, X_SYN, Y_SYN, method, k=1)
  np.testing.assert_array_equal(x_real, X_REAL)
  np.testing.assert_array_equal(y_real, Y_REAL)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match=r"--config.synth.filter=.*'both'"):
    keep_mask(X_REAL, Y_REAL, X_SYN, Y_SYN, "gan")
  with pytest.raises(ValueError, match="classes \\[2\\] have no real rows"):
    keep_mask(X_REAL, Y_REAL, X_SYN, np.array([0, 0, 0, 0, 1, 2]), "knn")
  with pytest.raises(ValueError, match="at least two classes.*--config.synth.filter"):
    keep_mask(SQUARE, np.zeros(4, int), X_SYN[:2], np.zeros(2, int), "classifier")
  with pytest.raises(ValueError, match="NaN"):
    keep_mask(X_REAL, Y_REAL, np.full((1, 2), np.nan), np.zeros(1, int), "knn")
