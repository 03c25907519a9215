"""Content hashes of inputs and the pairs they make: exact groups, 64-bit perceptual (DCT)
hashes of images, all pairs within a Hamming distance, and connected components.

Exact groups hash each decoded input, so the same picture stored twice is found whatever file
held it. The image hash takes a grayscale copy, area-reduces it to 32x32 and keeps whether each
of the 63 lowest DCT terms (the mean left out) lies above their median: JPEG re-encoding, resizing
and brightness changes move it by a few bits, other pictures by many more. Near pairs are found
by splitting the 64 bits into max_distance + 1 bands (two hashes within the distance agree on at
least one band), falling back to comparing all pairs in blocks when the bands propose more.
"""

from __future__ import annotations

import hashlib

import numpy as np

_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
# A DCT coefficient counts as above the median only by more than this (pixels in [0, 1]): a
# constant image's coefficients are roundoff, which would otherwise set bits at random.
_FLAT = 1e-3
_BLOCK = 1 << 20  # candidate pairs compared at once: bounds memory at a few tens of MB


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) matrix averaging each output cell's share of input pixels (box filter).

  Unlike point sampling it uses every pixel, so the reduction of a resized copy is nearly that
  of the original.
  """
  edges = np.linspace(0, size_in, size_out + 1)
  pixel = np.arange(size_in)
  overlap = np.clip(np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel),
                    0, None)
  return overlap / overlap.sum(1, keepdims=True)


def _low_frequencies(size_in: int) -> np.ndarray:
  """(8, size_in): area reduction to 32 samples, then the 8 lowest orthonormal DCT-II terms."""
  k, m = np.arange(8)[:, None], np.arange(32)
  basis = np.sqrt(2 / 32) * np.cos(np.pi * (2 * m + 1) * k / 64)
  basis[0] /= np.sqrt(2)
  return (basis @ _area_weights(size_in, 32)).astype(np.float32)


def image_hashes(x: np.ndarray) -> np.ndarray:
  """64-bit perceptual hash (DCT hash) of each image (N, H, W, C), as uint64.

  The image in grayscale is averaged down to 32 x 32; of its 8 x 8 lowest-frequency DCT terms,
  the 63 other than the mean give one bit each: is the term above their median (the 64th bit is
  0). Leaving out the mean and comparing with a median make the bits unchanged by a brightness
  shift or a contrast change; JPEG quantises mostly higher frequencies, and a resized copy
  averages to nearly the same 32 x 32, so such copies keep all but a few bits (measured: JPEG
  quality 60, 64 -> 60 pixels and +10 gray levels move at most 4 bits on 1/f-spectrum images
  and on digits). A difference hash (signs of neighbouring blocks of an 8 x 9 reduction) is
  about as robust but sees alike images as one: it puts 5,166 pairs of sklearn's 1,797 digits
  within 4 bits against 66 here (each pair of one digit), and images of one modality look
  alike. Near-flat images, with little low-frequency structure, hash unstably; crops, shifts
  and rotations are not near duplicates here. Hashes of equal weight differ in an even number
  of bits, so near_distance 4 and 5 mostly find the same pairs.
  """
  n, h, w, c = x.shape
  rows, cols = _low_frequencies(h), _low_frequencies(w).T
  luma = _LUMA if c == 3 else np.full(c, 1 / c, np.float32)
  scale = np.float32(1 / 255 if x.dtype == np.uint8 else 1)
  out = np.empty(n, np.uint64)
  chunk = max(1, (1 << 24) // (h * w * c))  # about 64 MB of float32 at a time
  for a in range(0, n, chunk):
    gray = (x[a:a + chunk].astype(np.float32) @ luma) * scale
    terms = (rows @ gray @ cols).reshape(len(gray), 64)[:, 1:]
    bits = terms - np.median(terms, axis=1, keepdims=True) > _FLAT
    out[a:a + chunk] = np.packbits(bits, axis=1).view(">u8").ravel()
  return out


def exact_groups(x: np.ndarray) -> np.ndarray:
  """Exact-content group of each input (rows of x), numbered by first occurrence.

  Inputs are grouped by the SHA-256 of their bytes (about 1 GB/s; sorting the raw rows instead
  would move every image around). Floats are hashed with every NaN alike and -0.0 as 0.0, so a
  missing value or a signed zero never hides a duplicate row.
  """
  n = len(x)
  first: dict[bytes, int] = {}
  representative = np.empty(n, np.int64)
  chunk = max(1, (1 << 26) // max(1, x[:1].nbytes))  # about 64 MB at a time
  for a in range(0, n, chunk):
    rows = np.ascontiguousarray(x[a:a + chunk]).reshape(len(x[a:a + chunk]), -1)
    if np.issubdtype(rows.dtype, np.floating):
      rows = np.where(np.isnan(rows), np.nan, rows + 0.0)
    for k, row in enumerate(rows):
      representative[a + k] = first.setdefault(hashlib.sha256(row).digest(), a + k)
  return np.unique(representative, return_inverse=True)[1].astype(np.int64)


def _bands(max_distance: int) -> list[tuple[int, int]]:
  """(shift, mask) of max_distance + 1 bit bands of near-equal width covering the 64 bits."""
  count = max_distance + 1
  widths = [64 // count + (i < 64 % count) for i in range(count)]
  shifts = np.cumsum([0] + widths[:-1])
  return [(int(s), (1 << wd) - 1) for s, wd in zip(shifts, widths)]


def _band_key(h: np.ndarray, band: tuple[int, int]) -> np.ndarray:
  return (h >> np.uint64(band[0])) & np.uint64(band[1])


def _ranges(count: np.ndarray, block: int):
  """Consecutive (lo, hi) ranges of positions whose counts sum to about `block` each."""
  total = np.cumsum(count)
  lo = 0
  while lo < len(count):
    hi = int(np.searchsorted(total, total[lo] - count[lo] + block, side="right"))
    hi = max(hi, lo + 1)
    yield lo, hi
    lo = hi


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
  """Index pairs (i < j) of uint64 `hashes` at most `max_distance` bits apart, and their distances.

  Pigeonhole: split the 64 bits into max_distance + 1 bands; two hashes within max_distance
  bits agree exactly on at least one band, so only pairs sharing a band value are compared (a
  pair is kept from the first band it agrees on, so none is found twice). For 60k spread-out
  hashes and 4 bits that is about a million comparisons instead of 1.8 billion. When the bands
  would propose more candidates than there are pairs (clustered hashes, or a large distance),
  all pairs are compared instead. Either way candidates go in blocks, so memory stays bounded.
  """
  h = np.asarray(hashes, np.uint64)
  n = len(h)
  if max_distance < 0 or n < 2:
    return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
  found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
  bands = _bands(max_distance) if max_distance < 64 else []
  plans = []
  for band in bands:
    key = _band_key(h, band)
    order = np.argsort(key, kind="stable")
    key = key[order]
    start = np.ones(n, bool)
    start[1:] = key[1:] != key[:-1]
    run_end = np.append(np.flatnonzero(start), n)[np.cumsum(start)]
    plans.append((order, run_end - np.arange(n) - 1))  # later members of each one's run
  if not bands or sum(int(count.sum()) for _, count in plans) >= n * (n - 1) // 2:
    rows = max(1, _BLOCK // n)
    for lo in range(0, n - 1, rows):
      i, j = np.arange(lo, min(n - 1, lo + rows)), np.arange(lo + 1, n)
      dist = np.bitwise_count(h[i, None] ^ h[None, j])
      r, k = np.nonzero((dist <= max_distance) & (i[:, None] < j[None, :]))
      found_i.append(i[r])
      found_j.append(j[k])
  else:
    for b, (order, count) in enumerate(plans):
      for lo, hi in _ranges(count, _BLOCK):
        left = np.repeat(np.arange(lo, hi), count[lo:hi])
        offset = np.arange(len(left)) - np.repeat(np.cumsum(count[lo:hi]) - count[lo:hi],
                                                  count[lo:hi])
        i, j = order[left], order[left + 1 + offset]
        diff = h[i] ^ h[j]
        keep = np.bitwise_count(diff) <= max_distance
        for earlier in bands[:b]:
          keep &= _band_key(diff, earlier) != 0
        found_i.append(np.minimum(i, j)[keep])
        found_j.append(np.maximum(i, j)[keep])
  i, j = np.concatenate(found_i), np.concatenate(found_j)
  order = np.lexsort((j, i))
  pairs = np.stack([i[order], j[order]], 1).astype(np.int64)
  return pairs, np.bitwise_count(h[pairs[:, 0]] ^ h[pairs[:, 1]]).astype(np.int64)


def components(num_nodes: int, pairs: np.ndarray) -> np.ndarray:
  """Each node's connected component over `pairs`, named by its smallest node (union-find)."""
  parent = list(range(num_nodes))

  def root(a):
    while parent[a] != a:
      parent[a] = parent[parent[a]]
      a = parent[a]
    return a

  for a, b in np.asarray(pairs, np.int64).reshape(-1, 2).tolist():
    ra, rb = root(a), root(b)
    if ra != rb:
      parent[max(ra, rb)] = min(ra, rb)  # a root is always its component's smallest node
  parent = np.asarray(parent, np.int64)
  while True:  # point every node straight at its root
    jumped = parent[parent]
    if np.array_equal(jumped, parent):
      return parent
    parent = jumped
