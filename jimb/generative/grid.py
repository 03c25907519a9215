"""A PNG of real beside synthetic samples per class, for looking at what a generator made.

Numbers (jimb.generative.scores) do not show mode collapse, checkerboards or off-class colour the
way a picture does. Pillow only (no plotting stack), nearest-neighbour upscaling so that every
pixel of a tiny image stays a visible, exact block.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jimb import files

MIN_TILE = 64      # small images are upscaled by a whole factor to at least this many pixels
PAD = 2            # pixels after every tile, across and down
GAP = 16           # pixels between the real and the synthetic block
LABEL_WIDTH = 96   # left column for class names
HEADER = 16        # top row for the "real" / "synthetic" titles
_BACKGROUND = 255
_INK = (0, 0, 0)


def _check(images: np.ndarray, c: int, what: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"{what} images of class {c} must be NHWC with 1 or 3 channels, got shape "
                     f"{images.shape}")
  if not (images.min() >= 0 and images.max() <= 1):   # also catches NaN
    raise ValueError(f"{what} images of class {c} must lie in [0, 1]; map generator outputs in "
                     "[-1, 1] with (x + 1) / 2 first")
  return images


def save_grid(path, real: Mapping[int, np.ndarray], synthetic: Mapping[int, np.ndarray],
              class_names: Sequence[str] | Mapping[int, str], per_row: int = 8) -> None:
  """Writes one PNG to `path` (local or remote): a line per class (of either dict) with its name,
  then its first `per_row` real images, then its first `per_row` synthetic ones; missing images
  leave empty tiles."""
  if per_row < 1:
    raise ValueError(f"per_row must be >= 1, got {per_row}")
  classes = sorted(set(real) | set(synthetic))
  sets = [{c: _check(images, c, what)[:per_row] for c, images in group.items() if len(images)}
          for group, what in ((real, "real"), (synthetic, "synthetic"))]
  shapes = {images.shape[1:3] for group in sets for images in group.values()}
  if len(shapes) != 1:
    raise ValueError(f"images must exist and share one height and width, got {sorted(shapes)}")
  h, w = shapes.pop()
  names = [_name(class_names, c) for c in classes]
  scale = math.ceil(MIN_TILE / max(h, w))
  cell_h, cell_w = h * scale + PAD, w * scale + PAD
  block = per_row * cell_w
  canvas = np.full((HEADER + len(classes) * cell_h, LABEL_WIDTH + 2 * block + GAP, 3),
                   _BACKGROUND, np.uint8)
  for row, c in enumerate(classes):
    for left, group in zip((LABEL_WIDTH, LABEL_WIDTH + block + GAP), sets):
      for i, image in enumerate(group.get(c, ())):
        pixels = np.round(image * 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
        y0, x0 = HEADER + row * cell_h, left + i * cell_w
        canvas[y0:y0 + h * scale, x0:x0 + w * scale] = pixels   # 1 channel broadcasts to 3
  picture = Image.fromarray(canvas)
  _label(picture, names, cell_h, block)
  with files.replacing(files.as_path(path)) as f:
    picture.save(f, format="PNG")


def _name(class_names, c: int) -> str:
  try:
    return str(class_names[c])
  except (IndexError, KeyError):
    raise ValueError(f"class_names has no name for class {c}") from None


def _label(picture: Image.Image, names: list[str], cell_h: int, block: int) -> None:
  """Titles and class names in the margins (never over a tile), when Pillow has a font."""
  try:
    font = ImageFont.load_default()
  except OSError:
    return
  draw = ImageDraw.Draw(picture)

  def text(x: int, y: int, s: str, width: int) -> None:
    while s and draw.textlength(s, font=font) > width - 4:
      s = s[:-1]
    draw.text((x, y), s, fill=_INK, font=font)

  text(LABEL_WIDTH, 1, "real", block)
  text(LABEL_WIDTH + block + GAP, 1, "synthetic", block)
  for row, name in enumerate(names):
    text(2, HEADER + row * cell_h + 2, name, LABEL_WIDTH)
