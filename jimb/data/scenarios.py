"""The imbalance scenarios of seed 001: linear, single majority, single minority, half minority.

Class i (1-based, in a random order drawn per fold) keeps n_i = n / r_i examples with
r_i = 1 + (IR - 1) / (M - 1) * (i - 1) (linear) or r_i = IR for minority classes and 1 otherwise
(formulas (1)-(3) of the seed). The protocol thins each fold's training part after the folds are
drawn from the balanced data: per fold the class order is drawn once and every class keeps a
prefix of one fixed permutation of its members, so a class has the same role in every scenario
and the data of a higher IR is a subset of the data of a lower one. Test parts stay untouched.
"""

from __future__ import annotations

import numpy as np

SCENARIOS = ("linear", "single_majority", "single_minority", "half_minority")


def ratios(scenario: str, ir: float, num_classes: int) -> np.ndarray:
  """r_i for classes i = 1..M in scenario order (class 1 is never a minority)."""
  if ir < 1:
    raise ValueError(f"imbalance ratio must be >= 1, got {ir}; fix --config.imbalance.ratio")
  if num_classes < 2:
    raise ValueError(f"an imbalance scenario needs at least 2 classes, got {num_classes}")
  i = np.arange(1, num_classes + 1)
  if scenario == "linear":
    return 1 + (ir - 1) / (num_classes - 1) * (i - 1)
  minority = {"single_majority": i > 1, "single_minority": i == num_classes,
              "half_minority": i > num_classes - num_classes // 2}
  if scenario not in minority:
    raise ValueError(f"unknown scenario {scenario!r}; set --config.imbalance.profile to one of "
                     f"{SCENARIOS}")
  return np.where(minority[scenario], float(ir), 1.0)


def counts(n: int, scenario: str, ir: float, num_classes: int) -> np.ndarray:
  """n_i = n / r_i, rounded down, in scenario order (e.g. linear, IR 10, 8 x 625: 625 ... 62)."""
  return np.floor(n / ratios(scenario, ir, num_classes) + 1e-9).astype(np.int64)


def thin(index: np.ndarray, labels: np.ndarray, num_classes: int, scenario: str, ir: float,
         seed: int, fold: int, n: int = 0) -> np.ndarray:
  """The sorted subset of `index` (one fold's training rows) that `scenario` at `ir` keeps.

  `n` is the count of a class with r_i = 1 (0: the fold's smallest class count in `index`).
  The random class order and member permutations depend on (seed, fold) only.
  """
  rng = np.random.default_rng([seed, fold])
  order = rng.permutation(num_classes)            # order[j]: the class in position j + 1
  members = [index[labels[index] == c] for c in range(num_classes)]
  members = [m[rng.permutation(len(m))] for m in members]
  n = n or min(len(m) for m in members)
  targets = counts(n, scenario, ir, num_classes)
  kept = []
  for position, c in enumerate(order):
    if targets[position] > len(members[c]):
      raise ValueError(f"fold {fold}: class {c} has {len(members[c])} training examples but the "
                       f"{scenario} scenario asks for {targets[position]}; lower "
                       "--config.imbalance.max_per_class")
    if targets[position] < 1:
      raise ValueError(f"fold {fold}: class {c} would keep no examples; lower "
                       "--config.imbalance.ratio")
    kept.append(members[c][:targets[position]])
  return np.sort(np.concatenate(kept))
