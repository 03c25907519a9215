"""Exact and near-duplicate inputs, and the pairs of them that straddle a fold's parts.

A duplicate with one copy in training and the other in test is a leak: the model is tested on
an example it was trained on, and its test metrics rise without a word (a public COVID-19 chest
X-ray set held 6 test images byte-identical to training images, and they got p = 0.995-1.0).
This module finds duplicates, reports the pairs each fold's parts share, and regroups a dataset
so that grouped folds keep every duplicate on one side.

Exact duplicates are identical decoded inputs: the same pixels whatever file held them, or the
same table row with NaN alike. Near duplicates are images whose 64-bit perceptual (DCT) hashes
differ in at most `near_distance` bits: one picture re-encoded, resized or brightened. Tables
get exact duplicates only: a distance between rows of mixed-scale features (age in years, a lab
value in mmol/l, a 0/1 flag) reflects units, not whether two rows describe one patient.
Identical rows of a few coarse features may also be different patients, which is why the
default policy warns.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from jimb.data.dataset import Dataset
from jimb.data.splits import Fold

POLICIES = ("warn", "error", "group", "off")
PARTS = ("train", "val", "test")
_ACROSS = ((0, 1), (0, 2), (1, 2))  # train-val, train-test, val-test
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
# A DCT coefficient counts as above the median only by more than this (pixels in [0, 1]): a
# constant image's coefficients are roundoff, which would otherwise set bits at random.
_FLAT = 1e-3
_BLOCK = 1 << 20  # candidate pairs compared at once: bounds memory at a few tens of MB


@dataclasses.dataclass(frozen=True)
class Duplicates:
  """Duplicates among one dataset's N examples.

  `exact` numbers each example's exact-content group (identical inputs share one) in order of
  first occurrence. `near` holds pairs (a < b) of exact groups whose image hashes differ in
  `distance` <= `near_distance` bits: every example of group a is a near duplicate of every
  example of group b. Storing groups rather than example pairs keeps k identical copies at k
  entries instead of k(k-1)/2 pairs. `component` numbers the duplicate groups (connected over
  both relations) by smallest member, -1 for an example with no duplicate. `near_distance` is
  None for tables (exact only). Labels and class names are kept for the messages.
  """

  exact: np.ndarray
  near: np.ndarray
  distance: np.ndarray
  component: np.ndarray
  y: np.ndarray
  class_names: tuple[str, ...]
  near_distance: int | None

  @property
  def exact_pairs(self) -> int:
    sizes = np.bincount(self.exact)
    return int((sizes * (sizes - 1) // 2).sum())

  @property
  def near_pairs(self) -> int:
    sizes = np.bincount(self.exact)
    return int((sizes[self.near[:, 0]] * sizes[self.near[:, 1]]).sum())

  @property
  def num_involved(self) -> int:
    return int((self.component >= 0).sum())

  @property
  def num_groups(self) -> int:
    return int(self.component.max(initial=-1) + 1)


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


def find(ds: Dataset, near_distance: int = 4) -> Duplicates:
  """Exact duplicates of `ds`'s inputs and, for images, near duplicates within `near_distance` bits.

  near_distance = -1 finds exact duplicates only; tables always get exact duplicates only.
  """
  if not -1 <= near_distance <= 64:
    raise ValueError(f"--config.data.near_distance must lie in [-1, 64] (bits of a 64-bit image "
                     f"hash; -1: exact duplicates only), got {near_distance}")
  exact = exact_groups(ds.x)
  near, distance = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
  if ds.is_image:
    first = np.unique(exact, return_index=True)[1]
    near, distance = near_pairs(image_hashes(ds.x)[first], near_distance)
  num_exact = int(exact.max(initial=-1) + 1)
  root = components(num_exact, near)[exact]
  involved = np.bincount(root, minlength=num_exact)[root] > 1
  component = np.full(len(exact), -1, np.int64)
  component[involved] = np.unique(root[involved], return_inverse=True)[1]
  return Duplicates(exact, near, distance, component, np.asarray(ds.y), ds.class_names,
                    near_distance if ds.is_image else None)


def _members(dup: Duplicates, part: np.ndarray, num_parts: int):
  """Smallest and second smallest example of each (exact group, part); -1 where there is none."""
  index = np.flatnonzero(part >= 0)
  key = dup.exact[index] * num_parts + part[index]
  order = np.argsort(key, kind="stable")
  key, index = key[order], index[order]
  new = np.ones(len(key), bool)
  new[1:] = key[1:] != key[:-1]
  again = np.zeros(len(key), bool)
  again[1:] = new[:-1] & ~new[1:]
  size = int(dup.exact.max(initial=-1) + 1) * num_parts
  first, second = np.full(size, -1, np.int64), np.full(size, -1, np.int64)
  first[key[new]] = index[new]
  second[key[again]] = index[again]
  return first.reshape(-1, num_parts), second.reshape(-1, num_parts)


def _tally(dup: Duplicates, part: np.ndarray, num_parts: int, max_examples: int) -> dict:
  """Exact and near pairs between parts p <= q of `part` (-1: in no part), with a few examples.

  Counted from the examples of each exact group per part, without listing pairs: between parts
  p != q a group of sizes (c_p, c_q) holds c_p * c_q exact pairs, within p c_p (c_p - 1) / 2; a
  near pair of groups (a, b) holds a_p * b_q + b_p * a_q pairs, within p a_p * b_p.
  """
  index = np.flatnonzero(part >= 0)
  num_exact = int(dup.exact.max(initial=-1) + 1)
  c = np.bincount(dup.exact[index] * num_parts + part[index],
                  minlength=num_exact * num_parts).reshape(num_exact, num_parts)
  a, b = dup.near[:, 0], dup.near[:, 1]
  exact_matrix, near_matrix = c.T @ c, c[a].T @ c[b]
  first, second = _members(dup, part, num_parts)
  out = {}
  for p in range(num_parts):
    for q in range(p, num_parts):
      if p == q:
        exact = (exact_matrix[p, p] - c[:, p].sum()) // 2
        near = near_matrix[p, p]
        g = np.flatnonzero(c[:, p] >= 2)[:max_examples]
        exact_examples = np.stack([first[g, p], second[g, p]], 1)
      else:
        exact = exact_matrix[p, q]
        near = near_matrix[p, q] + near_matrix[q, p]
        g = np.flatnonzero((c[:, p] > 0) & (c[:, q] > 0))[:max_examples]
        exact_examples = np.stack([first[g, p], first[g, q]], 1)
      near_examples = []
      for u, v in ([(a, b)] if p == q else [(a, b), (b, a)]):
        m = np.flatnonzero((c[u, p] > 0) & (c[v, q] > 0))[:max_examples]
        near_examples += np.stack([first[u[m], p], first[v[m], q], dup.distance[m]], 1).tolist()
      out[p, q] = {"exact": int(exact), "near": int(near),
                   "exact_examples": exact_examples.tolist(),
                   "near_examples": near_examples[:max_examples]}
  return out


def straddling(dup: Duplicates, fold: Fold, max_examples: int = 5) -> dict:
  """The leak report of one fold: duplicate pairs across its parts and within each part.

  Keys "train-val", "train-test", "val-test" (pairs across parts: leaks) and "train", "val",
  "test" (pairs within a part: harmless to the split, though they weigh twice) each map to
  counts of exact and near pairs and a few example index pairs, listed in the key's part order
  (near examples carry their distance in bits as a third entry).
  """
  part = np.full(len(dup.exact), -1, np.int64)
  for p, indices in enumerate((fold.train, fold.val, fold.test)):
    part[indices] = p
  tally = _tally(dup, part, len(PARTS), max_examples)
  report = {"fold": fold.index}
  for p, q in _ACROSS:
    report[f"{PARTS[p]}-{PARTS[q]}"] = tally[p, q]
  for p, name in enumerate(PARTS):
    report[name] = tally[p, p]
  return report


def _across(report: dict) -> dict[str, int]:
  """Pairs (exact and near) per pair of parts that share them."""
  counts = {}
  for p, q in _ACROSS:
    key = f"{PARTS[p]}-{PARTS[q]}"
    if report[key]["exact"] + report[key]["near"]:
      counts[key] = report[key]["exact"] + report[key]["near"]
  return counts


def summary(dup: Duplicates, folds: Sequence[Fold] = (), max_examples: int = 5) -> dict:
  """Counts, a few example pairs and the per-fold leak reports, for results.json."""
  whole = _tally(dup, np.zeros(len(dup.exact), np.int64), 1, max_examples)[0, 0]
  label_counts = np.bincount(dup.exact * len(dup.class_names) + dup.y,
                             minlength=(dup.exact.max(initial=-1) + 1) * len(dup.class_names))
  same_label = int((label_counts * (label_counts - 1) // 2).sum())
  return {
      "near_distance": dup.near_distance,
      "exact_pairs": dup.exact_pairs,
      "near_pairs": dup.near_pairs,
      "examples_involved": dup.num_involved,
      "groups": dup.num_groups,
      "largest_group": int(np.bincount(dup.component[dup.component >= 0]).max(initial=0)),
      "exact_pairs_with_different_labels": dup.exact_pairs - same_label,
      "exact_examples": whole["exact_examples"],
      "near_examples": whole["near_examples"],
      "folds": [straddling(dup, fold, max_examples) for fold in folds],
  }


def message(dup: Duplicates, folds: Sequence[Fold] = ()) -> str:
  """One line for the log: how many duplicate pairs, and which folds' parts share them."""
  n = len(dup.exact)
  if not dup.exact_pairs + dup.near_pairs:
    return f"no exact or near duplicate inputs among {n} examples"
  how = ("table rows: exact only" if dup.near_distance is None
         else f"near: image hashes within {dup.near_distance} bits")
  text = (f"{dup.exact_pairs} exact and {dup.near_pairs} near duplicate pairs ({how}) among "
          f"{dup.num_involved} of {n} examples in {dup.num_groups} groups")
  leaks = []
  for fold in folds:
    counts = _across(straddling(dup, fold, 0))
    if counts:
      leaks.append(f"fold {fold.index}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
  if leaks:
    return text + "; pairs across parts: " + "; ".join(leaks)
  return text + ("; no pair straddles the parts of a fold" if folds else "")


def _example_text(dup: Duplicates, key: str, report: dict) -> list[str]:
  """'train 12 ('covid') = test 340 ('covid')' for a few of a report's pairs."""
  first, second = key.split("-")

  def name(i):
    return f"{int(i)} ({dup.class_names[dup.y[i]]!r})"

  out = [f"{first} {name(i)} = {second} {name(j)}"
         for i, j in report[key]["exact_examples"][:2]]
  out += [f"{first} {name(i)} ~ {second} {name(j)} ({d} bits)"
          for i, j, d in report[key]["near_examples"][:2]]
  return out


def check(dup: Duplicates, folds: Sequence[Fold], policy: str) -> str:
  """Applies --config.data.duplicates: the line to log, or a ValueError when pairs straddle parts.

  "error" refuses folds whose parts share duplicates (a leak); "group" expects folds built from
  `with_groups`, so a pair still straddling means the split was fixed (a source's own test
  split) and grouping could not help; "warn" returns the line to log; "off" returns "" (the
  caller skips detection). Duplicates within one part are reported, never refused.
  """
  if policy not in POLICIES:
    raise ValueError(f"unknown --config.data.duplicates={policy!r}; choose {' | '.join(POLICIES)}")
  if policy == "off":
    return ""
  leaks, near_leaks = [], 0
  for fold in folds:
    report = straddling(dup, fold, 2)
    counts = _across(report)
    if counts:
      exact = sum(report[k]["exact"] for k in counts)
      near = sum(report[k]["near"] for k in counts)
      near_leaks += near
      examples = [e for k in counts for e in _example_text(dup, k, report)][:3]
      leaks.append(f"fold {fold.index}: {exact} exact and {near} near duplicate pairs across parts "
                   f"({', '.join(f'{v} {k}' for k, v in counts.items())}), e.g. "
                   + "; ".join(examples))
  if not leaks or policy == "warn":
    return message(dup, folds)
  if policy == "group":
    fixes = ("--config.data.duplicates=group could not keep them together: the folds come from a "
             "fixed split (or not from the merged groups); deduplicate the data, or set "
             "--config.data.duplicates=warn to proceed knowingly")
  else:
    fixes = ("set --config.data.duplicates=group to keep duplicates together in folds, or "
             "deduplicate the data")
  if near_leaks:
    fixes += (" (if the near pairs are different images, lower --config.data.near_distance; "
              "-1 counts exact copies only)")
  more = f" | and {len(leaks) - 3} more folds" if len(leaks) > 3 else ""
  raise ValueError("duplicate inputs straddle fold parts, so the model is tested on inputs it "
                   f"was trained on: {' | '.join(leaks[:3])}{more}. To fix: {fixes}.")


def with_groups(ds: Dataset, dup: Duplicates) -> Dataset:
  """`ds` with group ids that put every duplicate group in one group, so grouped folds keep it.

  A duplicate group and the existing groups of its members (patients, lesions) become one
  group, named by its smallest existing id (or, without group ids, its smallest example index)
  as a string; groups untouched by duplicates keep their id, as a string. Without duplicates
  `ds` is returned unchanged, so its folds stay those of a run without the check.
  """
  if len(dup.exact) != len(ds.y):
    raise ValueError(f"duplicates were found among {len(dup.exact)} examples but dataset "
                     f"{ds.name!r} has {len(ds.y)}; find them on the dataset being split")
  if not dup.num_involved:
    return ds
  if ds.groups is None:
    names, codes = np.arange(len(ds.y)), np.arange(len(ds.y))
  else:
    names, codes = np.unique(ds.groups, return_inverse=True)
    codes = codes.ravel()
  involved = np.flatnonzero(dup.component >= 0)
  smallest = involved[np.unique(dup.component[involved], return_index=True)[1]]
  links = np.stack([codes[involved], codes[smallest[dup.component[involved]]]], 1)
  merged = components(len(names), links)[codes]
  return dataclasses.replace(ds, groups=names[merged].astype(str))
