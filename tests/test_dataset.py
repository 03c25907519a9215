"""The in-memory dataset type rejects malformed inputs with messages that say what to fix."""

from __future__ import annotations

import numpy as np
import pytest

from jimb.data.dataset import Dataset


def test_valid_images_and_tables():
  ds = Dataset(np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 1, 2]), ("a", "b", "c"),
               groups=np.array([7, 7, 8, 9]))
  assert ds.is_image and ds.num_classes == 3
  np.testing.assert_array_equal(ds.class_counts(), [1, 2, 1])
  sub = ds.subset(np.array([2, 0]))
  np.testing.assert_array_equal(sub.y, [1, 0])
  np.testing.assert_array_equal(sub.groups, [8, 7])
  table = Dataset(np.full((2, 3), np.nan, np.float32), np.array([0, 1]), ("a", "b"))
  assert not table.is_image


@pytest.mark.parametrize("x, y, names, match", [
    (np.zeros((4, 8, 8), np.uint8), np.zeros(4, int), ("a",), "channel axis"),
    (np.zeros((4, 3), np.float32), np.zeros(3, int), ("a",), "4 inputs but labels"),
    (np.zeros((2, 3), np.float32), np.array([0.0, 1.0]), ("a", "b"), "integers"),
    (np.zeros((2, 3), np.float32), np.array([0, 2]), ("a", "b"), r"\[0, 2\)"),
    (np.zeros((2, 4, 4, 1), np.int32), np.array([0, 1]), ("a", "b"), "uint8 or float32"),
])
def test_malformed_inputs_are_named(x, y, names, match):
  with pytest.raises(ValueError, match=match):
    Dataset(x, y, names)


def test_group_ids_must_match_examples():
  with pytest.raises(ValueError, match="2 group ids for 3 examples"):
    Dataset(np.zeros((3, 2), np.float32), np.zeros(3, int), ("a",), groups=np.arange(2))
