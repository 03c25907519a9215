"""Quality-controlled SMOTE: interpolate only between trustworthy minority rows, and drop
synthetic rows that land among another class.

After Upman & Gowda, "QC-SMOTE: Quality-Controlled SMOTE for Imbalanced Classification"
(arXiv:2606.24625, 2026). Only the abstract was available: a composite trust score per minority
row (local density, safe level, isolation from the majority), seeds chosen by it, candidates kept
by the purity of their neighbourhood, a fallback when candidates fail. The paper's exact formulas,
its IPQ best-of-K selection, regime-adaptive interpolation range and duplication fallback are not
reproduced; this is the reading below, with no published defaults to follow:

- trust = mean of three scores in [0, 1] for each row of a class being over-sampled:
  purity (share of its own class among its m_neighbors nearest rows of any class: the "safe
  level" of Safe-Level-SMOTE, Bunkhumpornpat et al. 2009), density (median over its class of the mean distance to its k_neighbors nearest
  same-class rows, divided by its own, capped at 1: isolated rows score low), and confidence (the
  probability of its own class given by a classifier that did not see it: out-of-fold
  predictions of a seeded stratified cross-validation on the rows given).
- seeds: rows with trust >= trust_threshold; SMOTE's draws (base row, neighbour rank, gap) among
  the seeds and their k_neighbors nearest seeds, so untrusted rows are neither bases nor partners.
- a candidate is kept when at least candidate_purity of its m_neighbors nearest real rows are of
  its class; rejected ones are drawn again, up to max_rounds, and what is still missing is left
  missing and reported (not filled by duplicates).

With trust_threshold=0 and candidate_purity=0 the draws and rows are imblearn's SMOTE's for an
int random_state (each class starts a fresh RandomState, as SMOTE's does).
"""

from __future__ import annotations

import numbers

from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_target_type
import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn_compat.utils.validation import validate_data

CLASSIFIERS = ("logistic", "knn")


def purity(x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
  """Share of each row's m nearest other rows (any class) that are of its class."""
  nearest = NearestNeighbors(n_neighbors=min(m, len(y) - 1)).fit(x).kneighbors(
      return_distance=False)
  return np.mean(y[nearest] == y[:, None], axis=1)


def density(x_class: np.ndarray, k: int) -> np.ndarray:
  """Median of the class's mean k-NN distances over each row's own, capped at 1."""
  dist, _ = NearestNeighbors(n_neighbors=min(k, len(x_class) - 1)).fit(x_class).kneighbors()
  own = dist.mean(axis=1)
  typical = np.median(own)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(own > typical, typical / own, 1.0)


def confidence(x: np.ndarray, y: np.ndarray, classifier: str, folds: int, m: int,
               seed: int) -> np.ndarray:
  """Out-of-fold probability of each row's own class (stratified, shuffled by `seed`)."""
  _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
  folds = max(2, min(folds, int(counts.min())))
  model = (make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced",
                                                              max_iter=1000))
           if classifier == "logistic" else   # at most the rows of a training part
           KNeighborsClassifier(n_neighbors=max(1, min(m, len(y) - -(-len(y) // folds)))))
  probs = cross_val_predict(model, x, codes, method="predict_proba",
                            cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
  return probs[np.arange(len(y)), codes]


class QCSMOTE(BaseOverSampler):
  """SMOTE from trustworthy seeds with neighbourhood-checked candidates (see the module).

  Args:
    sampling_strategy: as imblearn's over-samplers.
    k_neighbors: same-class neighbours to interpolate towards (SMOTE's), among the seeds.
    m_neighbors: neighbours of any class behind purity and the candidate check (10, as
      imblearn's BorderlineSMOTE's danger test).
    trust_threshold: least trust in [0, 1] of a seed (0.5: a noisy row scores near 0 on all three,
      a safe one near 1; no published value).
    candidate_purity: least share of a candidate's m_neighbors real neighbours of its class (0.5:
      no other class may outnumber it there).
    classifier: logistic (standardised, class-balanced logistic regression) or knn
      (m_neighbors), the cross-validated judge of confidence.
    cv: folds of that cross-validation (fewer when a class has fewer rows, at least 2).
    max_rounds: draws of the missing candidates per class before giving up.
    random_state: int, RandomState or None.

  Attributes:
    trust_: (n,) trust of each input row; NaN for classes not over-sampled.
    report_: {class: {seeds, seeds_excluded, candidates_rejected, rounds, missing}}.
  """

  _parameter_constraints: dict = {
      **BaseOverSampler._parameter_constraints,
      "k_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
      "m_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
      "trust_threshold": [Interval(numbers.Real, 0, 1, closed="both")],
      "candidate_purity": [Interval(numbers.Real, 0, 1, closed="both")],
      "classifier": [StrOptions(set(CLASSIFIERS))],
      "cv": [Interval(numbers.Integral, 2, None, closed="left")],
      "max_rounds": [Interval(numbers.Integral, 1, None, closed="left")],
      "random_state": ["random_state"],
  }

  def __init__(self, sampling_strategy="auto", k_neighbors=5, m_neighbors=10,
               trust_threshold=0.5, candidate_purity=0.5, classifier="logistic", cv=5,
               max_rounds=10, random_state=None):
    super().__init__(sampling_strategy=sampling_strategy)
    self.k_neighbors = k_neighbors
    self.m_neighbors = m_neighbors
    self.trust_threshold = trust_threshold
    self.candidate_purity = candidate_purity
    self.classifier = classifier
    self.cv = cv
    self.max_rounds = max_rounds
    self.random_state = random_state

  def _check_X_y(self, X, y, accept_sparse=None):
    y, binarize_y = check_target_type(y, indicate_one_vs_all=True)
    X, y = validate_data(self, X=X, y=y, reset=True, accept_sparse=["csr", "csc"],
                         dtype=[np.float64, np.float32])
    return X, y, binarize_y

  def _fit_resample(self, X, y):
    dense = X.toarray() if sparse.issparse(X) else X
    targets = {c: n for c, n in self.sampling_strategy_.items() if n > 0}
    for c in targets:
      size = int(np.sum(y == c))
      if size <= self.k_neighbors:
        raise ValueError(f"QCSMOTE: class {c} has {size} rows, but interpolation needs more "
                         f"than k_neighbors={self.k_neighbors}; set k_neighbors to at most "
                         f"{size - 1} or leave class {c} out of sampling_strategy")
    self.trust_ = self._trust(dense, y, targets)
    self.report_, new = {}, []
    for c, n in targets.items():
      new.append(self._synthesise(dense, y, c, n))
    x_new = np.concatenate([np.empty((0, X.shape[1]), X.dtype), *new]).astype(X.dtype)
    y_new = np.concatenate([y[:0], *(np.full(len(rows), c, y.dtype)
                                     for c, rows in zip(targets, new))])
    if sparse.issparse(X):
      x_res = sparse.vstack([X, sparse.csr_matrix(x_new)], format=X.format)
    else:
      x_res = np.concatenate([X, x_new])
    return x_res, np.concatenate([y, y_new])

  def _trust(self, x: np.ndarray, y: np.ndarray, targets: dict) -> np.ndarray:
    """Mean of purity, density and out-of-fold confidence; NaN outside `targets`' classes."""
    trust = np.full(len(y), np.nan)
    if not targets:
      return trust
    seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
    scores = purity(x, y, self.m_neighbors) + confidence(
        x, y, self.classifier, self.cv, self.m_neighbors, seed)
    for c in targets:
      rows = np.flatnonzero(y == c)
      trust[rows] = (scores[rows] + density(x[rows], self.k_neighbors)) / 3
    return trust

  def _synthesise(self, x: np.ndarray, y: np.ndarray, c, n: int) -> np.ndarray:
    """`n` candidates of class c that pass the check (fewer after max_rounds); fills report_."""
    k = self.k_neighbors
    members = np.flatnonzero(y == c)
    seeds = members[self.trust_[members] >= self.trust_threshold]
    if len(seeds) <= k:
      raise ValueError(self._too_few_seeds(c, self.trust_[members], len(seeds)))
    x_seed = x[seeds]
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(x_seed).kneighbors(
        x_seed, return_distance=False)[:, 1:]
    checker = (NearestNeighbors(n_neighbors=min(self.m_neighbors, len(y))).fit(x)
               if self.candidate_purity > 0 else None)
    random_state = check_random_state(self.random_state)   # per class, as SMOTE's
    kept, missing, rejected, rounds = [], n, 0, 0
    while missing and rounds < self.max_rounds:
      rounds += 1
      drawn = random_state.randint(low=0, high=neighbours.size, size=missing)
      steps = random_state.uniform(size=missing)[:, None]
      base, rank = np.floor_divide(drawn, k), np.mod(drawn, k)
      candidates = x_seed[base] + steps * (x_seed[neighbours[base, rank]] - x_seed[base])
      if checker is not None:
        near = checker.kneighbors(candidates, return_distance=False)
        good = np.mean(y[near] == c, axis=1) >= self.candidate_purity
        rejected += int(np.sum(~good))
        candidates = candidates[good]
      kept.append(candidates)
      missing -= len(candidates)
    self.report_[c] = dict(seeds=len(seeds), seeds_excluded=len(members) - len(seeds),
                           candidates_rejected=rejected, rounds=rounds, missing=int(missing))
    return np.concatenate(kept)

  def _too_few_seeds(self, c, trust: np.ndarray, num_seeds: int) -> str:
    """The error for class c, whose rows have `trust`: the threshold and k that would work."""
    k = self.k_neighbors
    fixes = [f"trust_threshold to at most {np.floor(np.sort(trust)[-k - 1] * 1000) / 1000:g} "
             f"(admits {k + 1} seeds)"] + (
                 [f"k_neighbors to at most {num_seeds - 1}"] if num_seeds >= 2 else [])
    return (f"QCSMOTE: class {c} has {num_seeds} trusted row(s) of {len(trust)} (trust >= "
            f"trust_threshold={self.trust_threshold:g}), but interpolation needs more than "
            f"k_neighbors={k}; lower " + " or ".join(fixes)
            + f" in the resampler's options (a config's c.resample.image or .feature block), or "
            f"leave class {c} out of sampling_strategy")
