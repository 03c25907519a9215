"""Sample grid: a PNG of the expected size whose tiles are the input images, upscaled pixel by
pixel; a class without synthetic samples gets an empty row."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jimb.generative.grid import save_grid

# 8x8 images are upscaled 8x to 64-pixel tiles; a cell adds 2 pixels of padding. Rows start below
# a 16-pixel header, real tiles right of a 96-pixel label column, synthetic tiles after the
# per_row real cells and a 16-pixel gap.
SCALE, CELL, HEADER, LABELS, GAP = 8, 66, 16, 96, 16


def _images(n, channels, seed):
  """Images whose values k / 255 convert to 8-bit exactly."""
  return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, channels)) / 255.0


def _tile(png, row, left, i):
  y0, x0 = HEADER + row * CELL, left + i * CELL
  return png[y0:y0 + 8 * SCALE, x0:x0 + 8 * SCALE]


def _expected(image):
  pixels = np.round(image * 255).astype(np.uint8).repeat(SCALE, 0).repeat(SCALE, 1)
  return np.broadcast_to(pixels, (*pixels.shape[:2], 3))


def test_tiles_are_the_input_images(tmp_path):
  per_row = 3
  real = {0: _images(4, 3, 0), 2: _images(2, 1, 1)}   # class 0 has more than per_row
  synthetic = {0: _images(2, 3, 2), 2: np.zeros((0, 8, 8, 1))}   # class 2: none
  path = tmp_path / "grids" / "fold0.png"
  save_grid(path, real, synthetic, ["nv", "mel", "vasc"], per_row=per_row)
  with Image.open(path) as picture:
    assert picture.format == "PNG"
    png = np.asarray(picture.convert("RGB"))
  synth_left = LABELS + per_row * CELL + GAP
  assert png.shape == (HEADER + 2 * CELL, synth_left + per_row * CELL, 3)
  for i in range(per_row):
    np.testing.assert_array_equal(_tile(png, 0, LABELS, i), _expected(real[0][i]))
  for i in range(2):
    np.testing.assert_array_equal(_tile(png, 0, synth_left, i), _expected(synthetic[0][i]))
    np.testing.assert_array_equal(_tile(png, 1, LABELS, i), _expected(real[2][i]))
  assert (_tile(png, 0, synth_left, 2) == 255).all()   # fewer synthetic images than per_row
  assert (_tile(png, 1, LABELS, 2) == 255).all()
  assert (png[HEADER + CELL:, synth_left:] == 255).all()   # class 2: an empty synthetic row


def test_a_class_missing_from_one_dict_is_an_empty_row(tmp_path):
  path = tmp_path / "grid.png"
  save_grid(path, {0: _images(1, 1, 3)}, {1: _images(1, 1, 4)}, {0: "a", 1: "b"}, per_row=1)
  png = np.asarray(Image.open(path).convert("RGB"))
  synth_left = LABELS + CELL + GAP
  assert png.shape == (HEADER + 2 * CELL, synth_left + CELL, 3)
  np.testing.assert_array_equal(_tile(png, 0, LABELS, 0), _expected(_images(1, 1, 3)[0]))
  np.testing.assert_array_equal(_tile(png, 1, synth_left, 0), _expected(_images(1, 1, 4)[0]))
  assert (_tile(png, 0, synth_left, 0) == 255).all() and (_tile(png, 1, LABELS, 0) == 255).all()


def test_bad_images_are_named(tmp_path):
  path = tmp_path / "grid.png"
  with pytest.raises(ValueError, match=r"\[0, 1\].*\(x \+ 1\) / 2"):
    save_grid(path, {0: _images(1, 3, 0) * 2 - 1}, {}, ["a"])
  with pytest.raises(ValueError, match="NHWC with 1 or 3 channels"):
    save_grid(path, {0: np.zeros((1, 8, 8, 2))}, {}, ["a"])
  with pytest.raises(ValueError, match="one height and width"):
    save_grid(path, {0: np.zeros((1, 8, 8, 1))}, {0: np.zeros((1, 4, 4, 1))}, ["a"])
  with pytest.raises(ValueError, match="no name for class 3"):
    save_grid(path, {3: np.zeros((1, 8, 8, 1))}, {}, ["a"])
  assert not path.exists()
