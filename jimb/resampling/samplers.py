"""Resamplers by name: imbalanced-learn's, the duplication rules of seed 000, JAX SMOTE,
quality-controlled SMOTE and GAN over-sampling of tables.

Every resampler has imbalanced-learn's `fit_resample(X, y)`. `resample` runs one and says where
each output row came from (`source`: the input row, or -1 for a synthetic one), so callers can
keep selection-only resampling as indices (no pixel copies) and prove that synthetic rows never
reach evaluation. Resamplers only ever see the training part of a fold.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers

import numpy as np
from imblearn import combine, over_sampling, under_sampling
from imblearn.utils import check_sampling_strategy
from sklearn.utils._param_validation import Interval

from jimb.registry import Registry
from jimb.resampling.qc_smote import QCSMOTE
from jimb.resampling.smote_jax import JaxSMOTE


class _Duplication(over_sampling.RandomOverSampler):
  """Over-sampling by repeating input rows, by seed 000's rules.

  A RandomOverSampler to imbalanced-learn: its input checks (sparse, data frames and lists; any
  values, as rows are only copied), `sampling_strategy_`, one-vs-all targets, parameter
  validation and `sample_indices_`; only the rows repeated are seed 000's.
  """

  _parameter_constraints: dict = {
      k: v for k, v in over_sampling.RandomOverSampler._parameter_constraints.items()
      if k != "shrinkage"}

  def __init__(self, *, sampling_strategy="auto", random_state=None):
    self.sampling_strategy = sampling_strategy
    self.random_state = random_state

  def _repeats(self, y: np.ndarray) -> list:
    """Input rows to append, one array per class in class order."""
    raise NotImplementedError

  def _draw(self, y: np.ndarray, extra: dict) -> list:
    """`extra[c]` rows of each class c, drawn with replacement by seed 000's NumPy Generator."""
    rng = np.random.default_rng(self.random_state)
    return [rng.choice(np.flatnonzero(y == c), size=n, replace=True)
            for c, n in extra.items() if n > 0]

  def _fit_resample(self, X, y):
    self.sample_indices_ = np.concatenate([np.arange(len(y)), *self._repeats(y)]).astype(np.int64)
    rows = X.iloc[self.sample_indices_] if hasattr(X, "iloc") else X[self.sample_indices_]
    return rows, y[self.sample_indices_]


class DuplicateToMax(_Duplication):
  """Bootstrapped duplication of every class up to the majority count (seed 000).

  `sampling_strategy` as imbalanced-learn's over-samplers; its default is seed 000's rule.
  """

  def _repeats(self, y):
    return self._draw(y, self.sampling_strategy_)


class DuplicateToMinimum(_Duplication):
  """Duplicates rows of classes below `min_count` until they reach it (seed 000: 800).

  `sampling_strategy` picks the classes that may be topped up, as imbalanced-learn reads it (a
  dict's counts are ignored: `min_count` sets them); its default "all" is seed 000's rule.
  """

  _parameter_constraints: dict = {
      **_Duplication._parameter_constraints,
      "min_count": [Interval(numbers.Integral, 1, None, closed="left")],
  }

  def __init__(self, *, min_count: int = 800, sampling_strategy="all", random_state=None):
    super().__init__(sampling_strategy=sampling_strategy, random_state=random_state)
    self.min_count = min_count

  def _repeats(self, y):
    return self._draw(y, {c: self.min_count - np.sum(y == c) for c in self.sampling_strategy_})


class DuplicateCeilMultiple(_Duplication):
  """Seed 000's S_i = ceil((N_max - N_i) / N_i) * N_i extra rows for class i: whole copies of
  the class (each row repeated equally often, so nothing random), which can overshoot N_max.

  `sampling_strategy` as imbalanced-learn's over-samplers gives the rows asked of each class
  (default: N_max - N_i), rounded up to whole copies.
  """

  _parameter_constraints: dict = {"sampling_strategy":
                                  _Duplication._parameter_constraints["sampling_strategy"]}

  def __init__(self, *, sampling_strategy="auto"):
    self.sampling_strategy = sampling_strategy

  def _repeats(self, y):
    members = {c: np.flatnonzero(y == c) for c in self.sampling_strategy_}
    return [np.tile(rows, math.ceil(self.sampling_strategy_[c] / len(rows)))
            for c, rows in members.items()]


SAMPLERS = Registry("resampler", {
    "RandomOverSampler": over_sampling.RandomOverSampler, "SMOTE": over_sampling.SMOTE,
    "BorderlineSMOTE": over_sampling.BorderlineSMOTE, "SVMSMOTE": over_sampling.SVMSMOTE,
    "ADASYN": over_sampling.ADASYN, "RandomUnderSampler": under_sampling.RandomUnderSampler,
    "TomekLinks": under_sampling.TomekLinks,
    "EditedNearestNeighbours": under_sampling.EditedNearestNeighbours,
    "SMOTEENN": combine.SMOTEENN, "SMOTETomek": combine.SMOTETomek, "JaxSMOTE": JaxSMOTE,
    "DuplicateToMax": DuplicateToMax, "DuplicateToMinimum": DuplicateToMinimum,
    "DuplicateCeilMultiple": DuplicateCeilMultiple, "QCSMOTE": QCSMOTE,
})
# GANOverSampler is registered by jimb.balance, so that this library needs no generative models.
# Resamplers that only look at labels: they get row numbers, not the data, and return indices.
LABEL_ONLY = frozenset({"RandomOverSampler", "RandomUnderSampler", "DuplicateToMax",
                        "DuplicateToMinimum", "DuplicateCeilMultiple"})
# Resamplers that interpolate between k nearest same-class neighbours.
_NEIGHBOUR_SAMPLERS = frozenset({"SMOTE", "BorderlineSMOTE", "SVMSMOTE", "ADASYN", "SMOTEENN",
                                 "SMOTETomek", "JaxSMOTE", "QCSMOTE"})
SMALL_CLASS_POLICIES = ("error", "reduce_k", "ros")


def build(name: str, params: dict, seed: int, config_key: str = "resample"):
  """The resampler `name` with `params`; `random_state` defaults to `seed`."""
  cls = SAMPLERS.get(name, f"{config_key}.name")
  known = cls().get_params(deep=False)
  unknown = sorted(set(params) - set(known))
  if unknown:
    raise ValueError(f"{name} has no option(s) {unknown}; its options are {sorted(known)}")
  params = dict(params)
  if "random_state" in known and params.get("random_state") is None:
    params["random_state"] = seed
  return cls(**params)


@dataclasses.dataclass(frozen=True)
class Resampled:
  """Resampled rows: `x` is None for label-only resamplers (use `source` to index the input)."""

  x: np.ndarray | None
  y: np.ndarray
  source: np.ndarray   # input row of each output row; -1 marks a synthetic row

  @property
  def synthetic(self) -> np.ndarray:
    return self.source < 0


def _k(sampler) -> int | None:
  k = getattr(sampler, "k_neighbors", None)
  return k if isinstance(k, (int, np.integer)) else None


def _targets(sampler, y: np.ndarray) -> dict:
  """Rows each class must gain, by imbalanced-learn's reading of `sampling_strategy`."""
  return check_sampling_strategy(sampler.sampling_strategy, y, "over-sampling")


def _too_small(sampler, name: str, y: np.ndarray) -> dict:
  """Classes to be synthesised that have no k + 1 members: {class: size}."""
  k = _k(sampler)
  if name not in _NEIGHBOUR_SAMPLERS or k is None:
    return {}
  counts = dict(zip(*np.unique(y, return_counts=True)))
  return {c: int(counts[c]) for c, n in _targets(sampler, y).items() if n > 0 and counts[c] <= k}


def _source(sampler, n: int, y_out: np.ndarray) -> np.ndarray:
  """Where each output row came from (-1: synthetic), from what the resampler records."""
  if hasattr(sampler, "sample_indices_"):
    return np.asarray(sampler.sample_indices_, np.int64)
  cleaner = getattr(sampler, "enn_", None) or getattr(sampler, "tomek_", None)
  if cleaner is not None:   # SMOTE then cleaning: indices into SMOTE's output, originals first
    kept = np.asarray(cleaner.sample_indices_, np.int64)
    return np.where(kept < n, kept, -1)
  # Over-samplers return the input rows first, then the synthetic ones.
  return np.concatenate([np.arange(n), np.full(len(y_out) - n, -1)]).astype(np.int64)


def resample(name: str, params: dict, x: np.ndarray, y: np.ndarray, *, seed: int,
             small_classes: str = "error", where: str = "", config_key: str = "resample",
             policy_key: str = "resample.small_classes") -> Resampled:
  """Runs resampler `name` on (x, y); rows of any shape are flattened for it and reshaped back.

  A class to be synthesised with no more than k_neighbors members is handled by `small_classes`:
  `error` (a message naming class, size and fix), `reduce_k` (k = smallest such class - 1, logged)
  or `ros` (those classes are topped up by random over-sampling, the rest by `name`).
  """
  y = np.asarray(y)
  if x.shape[0] != len(y):
    raise ValueError(f"{len(x)} rows but {len(y)} labels")
  if small_classes not in SMALL_CLASS_POLICIES:
    raise ValueError(f"unknown --config.{policy_key}={small_classes!r}; choose one "
                     f"of {SMALL_CLASS_POLICIES}")
  sampler = build(name, params, seed, config_key)
  if name in LABEL_ONLY:
    rows = np.arange(len(y))[:, None]
    _, y_out = sampler.fit_resample(rows, y)
    return Resampled(None, y_out, _source(sampler, len(y), y_out))
  flat = x.reshape(len(y), -1).astype(np.float32)
  if not np.all(np.isfinite(flat)):
    raise ValueError(f"{name} got NaN or infinite features{where}; impute them first "
                     "(--config.data.impute=median)")
  topped_up = _small_classes(sampler, name, y, small_classes, where, config_key, policy_key)
  if topped_up is not None and not sampler.sampling_strategy:   # every target class was small
    x_out, y_out, source = flat, y, np.arange(len(y))
  else:
    x_out, y_out = sampler.fit_resample(flat, y)
    source = _source(sampler, len(y), y_out)
    _log_report(sampler, name, where)
  if topped_up:
    ros = over_sampling.RandomOverSampler(sampling_strategy=topped_up, random_state=seed)
    ros.fit_resample(np.arange(len(y))[:, None], y)
    extra = ros.sample_indices_[len(y):]
    x_out = np.concatenate([x_out, flat[extra]])
    y_out = np.concatenate([y_out, y[extra]])
    source = np.concatenate([source, extra])
  x_out = np.asarray(x_out, np.float32).reshape(len(y_out), *x.shape[1:])
  return Resampled(x_out, np.asarray(y_out), source)


def _log_report(sampler, name: str, where: str) -> None:
  """Logs what a quality-controlled resampler left out per class (`report_`, as QCSMOTE's), as
  the small-class adjustments are: the training data differ from what SMOTE would give."""
  for c, r in getattr(sampler, "report_", {}).items():
    logging.warning("%s%s: class %s: %d of %d rows excluded as seeds, %d candidates rejected "
                    "in %d round(s)%s", name, where, c, r["seeds_excluded"],
                    r["seeds"] + r["seeds_excluded"], r["candidates_rejected"], r["rounds"],
                    f"; {r['missing']} synthetic rows missing (lower candidate_purity or raise "
                    "max_rounds)" if r["missing"] else "")


def _small_classes(sampler, name: str, y: np.ndarray, policy: str, where: str, config_key: str,
                   policy_key: str) -> dict | None:
  """Applies `policy` to the classes too small for the sampler's k_neighbors: raises (error),
  lowers k (reduce_k), or leaves them to random over-sampling (ros: returns their targets)."""
  small = _too_small(sampler, name, y)
  if not small:
    return None
  described = ", ".join(f"class {c} ({n} row{'' if n == 1 else 's'})" for c, n in small.items())
  k, new_k = _k(sampler), min(small.values()) - 1
  if policy == "error":
    # Only fixes that work: a class of a single row has no neighbour to interpolate with.
    fixes = [f"--config.{policy_key}=reduce_k (k_neighbors becomes {new_k} where a class "
             "needs it, logged)",
             f"k_neighbors={new_k} in the config's {config_key} block "
             f"(c.{config_key}.k_neighbors = {new_k})"] if new_k >= 1 else []
    raise ValueError(
        f"{name} needs more than k_neighbors={k} rows in each class it synthesises, but "
        f"{described}{where} {'has' if len(small) == 1 else 'have'} too few; set "
        + ", or ".join([*fixes, f"--config.{policy_key}=ros (random over-sampling tops up "
                                "those classes)"]))
  if policy == "reduce_k":
    if new_k < 1:
      raise ValueError(f"{described}{where}: a single row has nothing to interpolate with, so "
                       f"no k_neighbors works; set --config.{policy_key}=ros")
    logging.warning("%s%s: %s; k_neighbors %d -> %d", name, where, described, k, new_k)
    sampler.set_params(k_neighbors=new_k)
    return None
  targets = _targets(sampler, y)
  counts = dict(zip(*np.unique(y, return_counts=True)))
  logging.warning("%s%s: %s topped up by random over-sampling", name, where, described)
  sampler.set_params(sampling_strategy={c: counts[c] + n for c, n in targets.items()
                                        if c not in small})
  return {c: counts[c] + targets[c] for c in small}
