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
from typing import Sequence

import numpy as np

from jimb.data.content_hash import components, exact_groups, image_hashes, near_pairs
from jimb.data.dataset import Dataset
from jimb.data.splits import Fold

POLICIES = ("warn", "error", "group", "off")
PARTS = ("train", "val", "test")
_ACROSS = ((0, 1), (0, 2), (1, 2))  # train-val, train-test, val-test


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
