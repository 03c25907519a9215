"""Figures for comparing methods over blocks: a critical-difference diagram and a metric heatmap.

Pure functions from numbers to matplotlib Figures (built without pyplot, so no global state and
no display are involved); the caller saves them. `cd_diagram` follows Demsar (2006, JMLR 7:1-30,
Fig. 1-2): methods placed on an average-rank axis (1 = best), the Nemenyi critical difference
drawn as a bar, and a thick line joining each maximal group of methods whose average ranks lie
within the critical difference of each other (no pair in it differs significantly).
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib
from matplotlib import colors
from matplotlib import figure as figure_lib
from matplotlib import patches
from matplotlib import textpath
import numpy as np

_FONT = 10            # points
_ROW = 0.24           # inches between method labels
_CLIQUE_ROW = 0.11    # inches between clique bars


def _width(text: str, size: float = _FONT) -> float:
  """The width of `text` in inches, measured on its glyphs (the figure is sized to fit it)."""
  return textpath.TextPath((0, 0), text, size=size).get_extents().width / 72


def _plain(text: str) -> str:
  """`text` shown as written: a "$" would otherwise start matplotlib's math mode."""
  return str(text).replace("$", r"\$")


def cliques(ranks: Sequence[float], critical_difference: float) -> list[tuple[int, ...]]:
  """Maximal groups (>= 2 methods, as indices sorted by rank) whose ranks differ by <= CD.

  In rank order each group is a run of neighbours; a run inside a longer one is dropped, so the
  diagram draws one bar per group as Demsar does.
  """
  order = sorted(range(len(ranks)), key=lambda i: (ranks[i], i))
  runs = []
  for start in range(len(order)):
    end = start
    while (end + 1 < len(order)
           and ranks[order[end + 1]] - ranks[order[start]] <= critical_difference):
      end += 1
    if end > start and not (runs and runs[-1][1] >= end):
      runs.append((start, end))
  return [tuple(order[a:b + 1]) for a, b in runs]


def cd_diagram(names: Sequence[str], ranks: Sequence[float], critical_difference: float,
               title: str = "") -> figure_lib.Figure:
  """Demsar's critical-difference diagram; the better half of the methods is labelled on the
  left, the rest on the right, one row each so that no two labels overlap."""
  k = len(names)
  if k < 2 or len(ranks) != k:
    raise ValueError(f"cd_diagram needs >= 2 methods and one rank per method; got {k} names "
                     f"and {len(ranks)} ranks")
  order = sorted(range(k), key=lambda i: (ranks[i], i))
  left, right = order[:math.ceil(k / 2)], order[math.ceil(k / 2):][::-1]
  label = lambda i: _plain(f"{names[i]} ({ranks[i]:.2f})")
  margin = lambda rows: max(_width(label(i)) for i in rows) + 0.35 if rows else 0.3
  side = margin(left)                             # inches left of rank 1
  span = max(3.0, 0.8 * (k - 1))                  # the rank axis, inches
  groups = cliques(ranks, critical_difference)
  axis_y = 0.85 + (0.25 if title else 0)
  first_row = axis_y + 0.3 + _CLIQUE_ROW * len(groups)
  height = first_row + _ROW * max(len(left), len(right)) + 0.1
  width = side + span + margin(right)
  fig = figure_lib.Figure(figsize=(width, height), dpi=110)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.set_xlim(0, width)
  ax.set_ylim(height, 0)       # inches from the top
  ax.set_axis_off()
  x = lambda r: side + (min(max(r, 1), k) - 1) / (k - 1) * span
  line = dict(color="black", linewidth=1)
  if title:
    ax.text(width / 2, 0.2, _plain(title), ha="center", va="center", fontsize=_FONT + 1,
            fontweight="bold")
  # The rank axis, 1 (best) on the left.
  ax.plot([x(1), x(k)], [axis_y, axis_y], **line)
  for r in range(1, k + 1):
    ax.plot([x(r), x(r)], [axis_y, axis_y - 0.08], **line)
    ax.text(x(r), axis_y - 0.12, str(r), ha="center", va="bottom", fontsize=_FONT - 1)
  for r in np.arange(1.5, k, 1.0):
    ax.plot([x(r), x(r)], [axis_y, axis_y - 0.04], **line)
  # The critical difference, from rank 1, labelled above; one beyond the axis is cut at its end.
  cd_y = axis_y - 0.45
  end = x(1 + critical_difference)
  ax.plot([x(1), end], [cd_y, cd_y], color="black", linewidth=1.5)
  for xx in (x(1), end):
    ax.plot([xx, xx], [cd_y - 0.05, cd_y + 0.05], **line)
  wide = " (beyond the axis)" if 1 + critical_difference > k else ""
  ax.text((x(1) + end) / 2, cd_y - 0.08, f"CD = {critical_difference:.3f}{wide}", ha="center",
          va="bottom", fontsize=_FONT - 1)
  # One row per method: a line from its rank down to its row, then out to its label.
  for rows, edge, align in ((left, side - 0.1, "right"), (right, side + span + 0.1, "left")):
    for row, i in enumerate(rows):
      y = first_row + _ROW * row
      ax.plot([x(ranks[i]), x(ranks[i]), edge], [axis_y, y, y], **line)
      ax.text(edge + (-0.05 if align == "right" else 0.05), y, label(i), ha=align,
              va="center", fontsize=_FONT)
  # Cliques: thick bars between the axis and the first label row.
  for n, group in enumerate(groups):
    y = axis_y + 0.22 + _CLIQUE_ROW * n
    ax.plot([x(ranks[group[0]]) - 0.05, x(ranks[group[-1]]) + 0.05], [y, y], color="black",
            linewidth=3.5, solid_capstyle="butt")
  return fig


def best_per_column(values: np.ndarray) -> np.ndarray:
  """[rows, columns] True where a value is its column's maximum (ties all marked; NaN never)."""
  values = np.asarray(values, np.float64)
  top = np.where(np.isnan(values), -np.inf, values).max(axis=0, keepdims=True)
  return (values == top) & ~np.isnan(values)


def heatmap(rows: Sequence[str], columns: Sequence[str], values: np.ndarray, title: str = "",
            digits: int = 3) -> figure_lib.Figure:
  """`values` [rows, columns] coloured and written in each cell; each column's best (highest)
  value is bold and boxed. NaN (no result) is a grey cell marked "-"."""
  values = np.asarray(values, np.float64)
  if values.shape != (len(rows), len(columns)):
    raise ValueError(f"heatmap values have shape {values.shape}, expected "
                     f"({len(rows)}, {len(columns)}) for the row and column names")
  cell_w = max(0.75, 0.1 * (digits + 3))
  head = max(_width(_plain(c)) for c in columns)
  turn = head + 0.1 > cell_w        # column names too long to stand level: slanted
  label_w = max(_width(_plain(r)) for r in rows) + 0.3
  if turn:      # the first column's slanted name must not run off the left edge
    label_w = max(label_w, math.cos(math.radians(40)) * head - cell_w / 2 + 0.1)
  width = label_w + cell_w * len(columns) + 1.1          # 1.1: the colour bar
  top, body = (0.45 if title else 0.15), 0.35 * len(rows)
  bottom = 0.35 + (math.sin(math.radians(40)) * head if turn else 0)
  height = top + body + bottom
  fig = figure_lib.Figure(figsize=(width, height), dpi=110)
  ax = fig.add_axes((label_w / width, bottom / height, cell_w * len(columns) / width,
                     body / height))
  finite = values[np.isfinite(values)]
  norm = colors.Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
  cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
  image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
  ax.set_xticks(range(len(columns)), labels=[_plain(c) for c in columns], fontsize=_FONT,
                rotation=40 if turn else 0, ha="right" if turn else "center",
                rotation_mode="anchor")
  ax.set_yticks(range(len(rows)), labels=[_plain(r) for r in rows], fontsize=_FONT)
  ax.tick_params(length=0)
  best = best_per_column(values)
  for (r, c), v in np.ndenumerate(values):
    if np.isnan(v):
      ax.text(c, r, "-", ha="center", va="center", fontsize=_FONT, color="#555555")
      continue
    dark = np.mean(colors.to_rgb(cmap(norm(v)))) < 0.5
    ax.text(c, r, f"{v:.{digits}f}", ha="center", va="center", fontsize=_FONT,
            color="white" if dark else "black", fontweight="bold" if best[r, c] else "normal")
    if best[r, c]:
      ax.add_patch(patches.Rectangle(
          (c - 0.46, r - 0.44), 0.92, 0.88, fill=False, edgecolor="#d62728", linewidth=2))
  for spine in ax.spines.values():
    spine.set_visible(False)
  if title:
    ax.set_title(_plain(title), fontsize=_FONT + 1, fontweight="bold")
  bar = fig.add_axes((1 - 0.9 / width, bottom / height, 0.15 / width, body / height))
  fig.colorbar(image, cax=bar).ax.tick_params(labelsize=_FONT - 2)
  return fig
