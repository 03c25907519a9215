"""How many synthetic samples each class of a fold's training part gets.

A generator only makes samples; how many is a separate, testable decision. The rules are seed
000's (up to the majority count, up to a minimum count per class, whole-class multiples
S_i = ceil((N_max - N_i) / N_i) * N_i), explicit per-class totals, and imbalanced-learn's
`sampling_strategy`, so a GAN budget reads exactly like the duplication samplers of
jimb.resampling.samplers and like any imbalanced-learn over-sampler.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
from imblearn.utils import check_sampling_strategy

BUDGETS = ("majority", "min_count", "ceil_multiple", "counts", "sampling_strategy")
_COUNTS_FORMAT = "expected 'class:total,class:total', e.g. '0:800,3:500'"


def synthesis_counts(y, budget: str, *, min_count: int = 800, counts: dict | None = None,
                     classes: Iterable[int] | None = None,
                     sampling_strategy: Any = "auto") -> dict[int, int]:
  """Synthetic samples per class of labels `y` under `budget`; every class of `y` is a key.

  `majority`: N_max - N_i. `min_count`: max(min_count - N_i, 0). `ceil_multiple`: seed 000's S_i
  (0 for the majority). `counts`: `counts` maps classes to target totals. `sampling_strategy`:
  imbalanced-learn's over-sampling reading of `sampling_strategy` (float, str, dict, callable).
  Classes outside `classes` (when given) get 0.
  """
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or not y.size:
    raise ValueError(f"labels must be a non-empty 1-D integer array, got shape {y.shape} "
                     f"dtype {y.dtype}")
  labels, sizes = np.unique(y, return_counts=True)
  have = dict(zip(labels.tolist(), sizes.tolist()))
  top = max(have.values())
  if budget == "majority":
    extra = {c: top - n for c, n in have.items()}
  elif budget == "min_count":
    if min_count < 1:
      raise ValueError(f"--config.synth.min_count must be >= 1, got {min_count}")
    extra = {c: max(min_count - n, 0) for c, n in have.items()}
  elif budget == "ceil_multiple":
    extra = {c: math.ceil((top - n) / n) * n for c, n in have.items()}
  elif budget == "counts":
    extra = _to_targets(have, counts)
  elif budget == "sampling_strategy":
    try:
      targets = check_sampling_strategy(sampling_strategy, y, "over-sampling")
    except ValueError as e:
      raise ValueError(f"--config.synth.sampling_strategy={sampling_strategy!r}: {e}") from e
    extra = {c: int(targets.get(c, 0)) for c in have}
  else:
    raise ValueError(f"unknown --config.synth.budget={budget!r}; choose one of {BUDGETS}")
  if classes is None:
    return extra
  allowed = {int(c) for c in classes}
  unknown = sorted(allowed - set(have))
  if unknown:
    raise ValueError(f"--config.synth.classes names classes {unknown} that have no training rows "
                     f"here (classes present: {sorted(have)})")
  return {c: n if c in allowed else 0 for c, n in extra.items()}


def _to_targets(have: dict[int, int], counts: dict | None) -> dict[int, int]:
  """Rows each class needs to reach its target total in `counts` (0 for classes not named)."""
  if counts is None:
    raise ValueError(f"--config.synth.budget=counts needs --config.synth.counts: {_COUNTS_FORMAT}")
  targets = {int(c): int(t) for c, t in counts.items()}
  for c, total in targets.items():
    if c not in have:
      raise ValueError(f"class {c} in --config.synth.counts has no training rows here (classes "
                       f"present: {sorted(have)}); a generator cannot learn it")
    if total < have[c]:
      raise ValueError(f"class {c} has {have[c]} training rows, more than its target {total} in "
                       f"--config.synth.counts; raise the target to at least {have[c]} or drop "
                       "the class")
  return {c: targets.get(c, n) - n for c, n in have.items()}


def parse_counts(text: str) -> dict[int, int]:
  """'0:800,3:500' -> {0: 800, 3: 500}: target totals per class from a command-line string."""
  out: dict[int, int] = {}
  for part in text.split(","):
    label, sep, total = (s.strip() for s in part.partition(":"))
    if not (sep and label.isdecimal() and total.isdecimal()):
      raise ValueError(f"malformed --config.synth.counts={text!r} at {part.strip()!r}: "
                       f"{_COUNTS_FORMAT}")
    c, t = int(label), int(total)
    if c in out:
      raise ValueError(f"--config.synth.counts={text!r} names class {c} twice")
    out[c] = t
  return out
