"""Instance complexity of a training part: k-disagreeing neighbours, minority groups, iCost weights.

Cost-sensitive learning usually gives every minority example its class's weight. iCost (Newaz,
Adib and Jabid, "iCost: A Novel Instance Complexity Based Cost-Sensitive Learning Framework",
arXiv:2409.13007; reference implementation `icost` 0.2.0, github.com/newaz-aa/iCost) instead
weighs each minority example by how hard it is to learn: the share of its k nearest neighbours
with another label (kDN, Smith et al. 2014) puts it in a group, and each group has its own cost
times the imbalance ratio. Easy examples then pull less, boundary ones more, and examples deep
inside another class (likely noise) almost nothing.

Groups by the number d of disagreeing neighbours among k, as shares d / k so any k works:
  napierala  safe d/k < 0.3, borderline < 0.7, rare < 1, outlier d = k: Napierala and
             Stefanowski's types (2016) at k = 5 exactly (0-1, 2-3, 4, 5 of 5), the same shares
             for other k (k = 7: 0-2, 3-4, 5-6, 7).
  icost      pure d = 0, safe d/k < 0.5, border < 1, outlier d = k: the reference
             implementation's neighbour categories at k = 5 (0, 1-2, 3-4, 5).
Default costs: the reference's published ones for its own groups (pure 0.30, safe 0.75, border
1.00, outlier 0.10, each times the imbalance ratio). The Napierala groups have no published
costs; theirs are the reference's costs averaged over the counts each group holds at k = 5
(safe (0.30 + 0.75) / 2, borderline (0.75 + 1.00) / 2, rare 1.00, outlier 0.10), so the two
schemes agree wherever their groups do.

Several classes: the reference is binary (minority = the rarest class, IR = n_majority /
n_minority). Here every class smaller than the largest is a minority class with its own ratio
IR_c = n_max / n_c, which is the reference's for two classes; a neighbour disagrees when its
label differs, and examples of the largest class(es) weigh 1.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors

# Per scheme: group names and each group's lowest share d / k of disagreeing neighbours.
GROUPS = {
    "napierala": (("safe", "borderline", "rare", "outlier"), (0.0, 0.3, 0.7, 1.0)),
    "icost": (("pure", "safe", "border", "outlier"), (0.0, 1e-9, 0.5, 1.0)),
}
COSTS = {"napierala": (0.525, 0.875, 1.0, 0.1), "icost": (0.3, 0.75, 1.0, 0.1)}
# Where neighbours are found (jimb.training.setup embeds the rows): the inputs themselves, the
# synthesis judge's features (a classifier trained briefly on the fold's real training rows), or
# the pretrained backbone's features before fine-tuning.
SPACES = ("inputs", "judge", "backbone")


def standardised(x: np.ndarray) -> np.ndarray:
  """Rows flattened and standardised with their own statistics (a constant column stays 0), so
  no feature's scale decides the neighbours."""
  flat = np.asarray(x, np.float64).reshape(len(x), -1)
  std = flat.std(axis=0)
  return (flat - flat.mean(axis=0)) / np.where(std > 0, std, 1.0)


def disagreeing(x: np.ndarray, y: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
  """How many of each of `rows`' (default all) k nearest neighbours in x (Euclidean, itself
  excluded) have another label: (len(rows),) int. kDN is this over k."""
  y = np.asarray(y)
  rows = np.arange(len(y)) if rows is None else np.asarray(rows)
  if not 1 <= k < len(y):
    raise ValueError(f"k-disagreeing neighbours need 1 <= k < {len(y)} training rows, got "
                     f"k={k}; set --config.loss.icost.k to a smaller value (the default is 5)")
  _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x[rows])
  # Drop the row itself; with k + 1 exact copies it may be absent, then the farthest goes.
  others = idx != rows[:, None]
  idx = np.take_along_axis(idx, np.argsort(~others, axis=1, kind="stable")[:, :k], axis=1)
  return (y[idx] != y[rows, None]).sum(axis=1)


def group_of(count: np.ndarray, k: int, scheme: str = "icost") -> np.ndarray:
  """The group index (into GROUPS[scheme]'s names) of each disagreeing-neighbour count."""
  lowest = np.asarray(_checked(scheme)[1]) * k - 1e-9   # counts, with a margin for float shares
  return np.searchsorted(lowest, np.asarray(count), side="right") - 1


def _checked(scheme: str) -> tuple:
  if scheme not in GROUPS:
    raise ValueError(f"unknown instance-complexity groups {scheme!r}; set "
                     f"--config.loss.icost.groups to one of {tuple(GROUPS)}")
  return GROUPS[scheme]


def costs_of(spec: Any, scheme: str) -> np.ndarray:
  """(4,) group costs: the scheme's defaults for ""/None, else four non-negative numbers."""
  if spec is None or (isinstance(spec, str) and not spec.strip()):
    return np.asarray(COSTS[scheme], np.float64)
  try:
    values = np.asarray([float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)])
  except (TypeError, ValueError):
    values = np.asarray([])
  names = _checked(scheme)[0]
  if values.shape != (len(names),) or not np.all(np.isfinite(values)) or np.any(values < 0):
    raise ValueError(f"--config.loss.icost.costs={spec!r} must be {len(names)} non-negative "
                     f"numbers, one per group {names}, e.g. "
                     f"\"{','.join(str(c) for c in COSTS[scheme])}\" (or \"\" for those)")
  return values


def icost_weights(x: np.ndarray, y: np.ndarray, num_classes: int, *, k: int = 5,
                  groups: str = "icost", costs: Sequence[float] | str | None = None,
                  scale_by_ir: bool = True) -> tuple[np.ndarray, dict]:
  """Per-row loss weights of a training part (x, y) and a report of the minority groups.

  `x` holds the rows in the space neighbours are found in (the inputs or their features).
  A minority row of class c in group g weighs costs[g] * (n_max / n_c if scale_by_ir else 1);
  rows of the largest class weigh 1. Everything is fitted on (x, y) alone: pass only the
  training part. Report: {"groups": names, "counts": {class: per-group counts}, "ratio": IR_c}.
  """
  y = np.asarray(y)
  names = _checked(groups)[0]
  group_costs = costs_of(costs, groups)
  counts = np.bincount(y, minlength=num_classes)
  minority = np.flatnonzero((counts > 0) & (counts < counts.max()))
  weights = np.ones(len(y), np.float64)
  report = {"groups": list(names), "counts": {}, "ratio": {}}
  if not len(minority):
    return weights.astype(np.float32), report
  rows = np.flatnonzero(np.isin(y, minority))
  group = group_of(disagreeing(standardised(x), y, k, rows), k, groups)
  ratio = counts.max() / np.maximum(counts, 1)
  weights[rows] = group_costs[group] * (ratio[y[rows]] if scale_by_ir else 1.0)
  for c in minority:
    report["counts"][int(c)] = np.bincount(group[y[rows] == c], minlength=len(names)).tolist()
    report["ratio"][int(c)] = round(float(ratio[c]), 4)
  return weights.astype(np.float32), report


def check_space(space: str) -> str:
  if space not in SPACES:
    raise ValueError(f"instance complexity in space {space!r} is not available; set "
                     f"--config.loss.icost.space to one of {SPACES}")
  return space
