"""GAN over-sampling with imbalanced-learn's interface, for tables and imblearn pipelines.

`GANOverSampler().fit_resample(X, y)` trains one tabular GAN per class to be topped up (all at
once, vmapped; one conditional GAN for `cgan`) on the rows it is given and appends samples, so
inside `imblearn.pipeline.Pipeline` and cross-validation it only ever sees training folds. The
runner's image synthesis stage (jimb.balance.synthesis) is the same idea with convolutional
generators, caching and a judge classifier.

It logs (module logger) per class the real rows a GAN learns from and the rows asked of it, and
warns for a class with fewer real rows than `min_real_rows`: a GAN fitted to a handful of rows
mostly reproduces them.
"""

from __future__ import annotations

import logging
import numbers

import jax
import numpy as np
from scipy import sparse
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from jimb.generative import budget as budget_lib
from jimb.generative import gan, quality_filter

_LOG = logging.getLogger(__name__)


class GANOverSampler(BaseOverSampler):
  """Tops up classes with samples of MLP GANs trained on them (seed 004's LSGAN by default).

  Args:
    sampling_strategy: imbalanced-learn's over-sampling semantics (ignored when `budget` is set).
    method: lsgan | dcgan (BCE) | wgan_gp | cgan (one conditional GAN for all classes).
    budget: None, or seed 000's rules "majority" | "min_count" | "ceil_multiple".
    min_count: the minimum per class of budget="min_count".
    steps, batch_size, latent_dim, hidden, learning_rate (0: the method's default): the GAN's.
    filter: none | classifier | knn | both: reject samples a classifier fitted on the real rows
      puts in another class, or outside their class's k-NN manifold (`filter_k`); rejected
      rows are not replaced, and `filter_report_` gives the rejection rate.
    min_real_rows: warn (logging) for a class to be topped up with fewer real rows than this.
    random_state: int, RandomState or None.
  After fitting, `synthetic_mask_` marks the appended rows of the output.
  """

  _parameter_constraints: dict = {
      **BaseOverSampler._parameter_constraints,
      "method": [StrOptions({"lsgan", "dcgan", "wgan_gp", "cgan"})],
      "budget": [StrOptions({"majority", "min_count", "ceil_multiple"}), None],
      "min_count": [Interval(numbers.Integral, 1, None, closed="left")],
      "steps": [Interval(numbers.Integral, 1, None, closed="left")],
      "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
      "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
      "hidden": [tuple, list],
      "learning_rate": [Interval(numbers.Real, 0, None, closed="left")],
      "filter": [StrOptions(set(quality_filter.METHODS))],
      "filter_k": [Interval(numbers.Integral, 1, None, closed="left")],
      "min_real_rows": [Interval(numbers.Integral, 1, None, closed="left")],
  }

  def __init__(self, sampling_strategy="auto", method="lsgan", budget=None, min_count=800,
               steps=1000, batch_size=64, latent_dim=32, hidden=(128, 128), learning_rate=0.0,
               filter="none", filter_k=5, min_real_rows=10, random_state=None):
    super().__init__(sampling_strategy=sampling_strategy)
    self.method = method
    self.budget = budget
    self.min_count = min_count
    self.steps = steps
    self.batch_size = batch_size
    self.latent_dim = latent_dim
    self.hidden = hidden
    self.learning_rate = learning_rate
    self.filter = filter
    self.filter_k = filter_k
    self.min_real_rows = min_real_rows
    self.random_state = random_state

  def _fit_resample(self, X, y):
    given = X   # sparse X (CSR or CSC) gives sparse output in its format, as SMOTE's does
    # imblearn's input check has refused NaN and infinities; the GANs train on dense rows.
    X = np.asarray(X.toarray() if sparse.issparse(X) else X, np.float32)
    add = (budget_lib.synthesis_counts(y, self.budget, min_count=self.min_count) if self.budget
           else dict(self.sampling_strategy_))
    classes = sorted(c for c, n in add.items() if n > 0)
    seed = int(check_random_state(self.random_state).randint(2**31 - 1))
    if not classes:
      self.synthetic_mask_ = np.zeros(len(y), bool)
      self.filter_report_ = {}
      return given if sparse.issparse(given) else X, y
    labels, codes = np.unique(y, return_inverse=True)
    conditional = self.method == "cgan"
    self._log_plan(y, classes, add, conditional)
    spec = gan.GANSpec(kind=self.method, sample_shape=(X.shape[1],), arch="mlp",
                       num_classes=len(labels) if conditional else 0,
                       latent_dim=self.latent_dim, hidden=tuple(self.hidden), steps=self.steps,
                       batch_size=self.batch_size,
                       **({"learning_rate": self.learning_rate} if self.learning_rate else {}))
    train_key, sample_key = jax.random.split(jax.random.key(seed))
    code = {c: int(np.flatnonzero(labels == c)[0]) for c in classes}
    if conditional:
      trained = gan.train(spec, [X], train_key, labels=[codes.astype(np.int32)],
                          members=["all classes"], log=_LOG.debug)
      draw = lambda c, k: gan.sample(trained, 0, add[c], k, label=code[c])
    else:
      trained = gan.train(spec, [X[y == c] for c in classes], train_key,
                          members=[f"class {c}" for c in classes], log=_LOG.debug)
      draw = lambda c, k: gan.sample(trained, classes.index(c), add[c], k)
    x_new = np.concatenate([draw(c, jax.random.fold_in(sample_key, i))
                            for i, c in enumerate(classes)]).astype(X.dtype)
    y_new = np.concatenate([np.full(add[c], c, dtype=np.asarray(y).dtype) for c in classes])
    keep, self.filter_report_ = quality_filter.keep_mask(X, y, x_new, y_new, self.filter,
                                                         k=self.filter_k, seed=seed)
    if self.filter != "none":
      _LOG.info("GANOverSampler %s filter kept %s", self.filter, ", ".join(
          f"class {c}: {keep[y_new == c].sum()} of {add[c]}" for c in classes))
    self.synthetic_mask_ = np.concatenate([np.zeros(len(y), bool), np.ones(keep.sum(), bool)])
    y_out = np.concatenate([y, y_new[keep]])
    if sparse.issparse(given):
      return sparse.vstack([given, sparse.csr_matrix(x_new[keep])], format=given.format), y_out
    return np.concatenate([X, x_new[keep]]), y_out

  def _log_plan(self, y, classes, add, conditional: bool) -> None:
    """Per class: the real rows its GAN learns from and the rows asked of it; warns below min."""
    real = dict(zip(*np.unique(y, return_counts=True)))
    model = "one conditional GAN on all rows" if conditional else "one GAN per class"
    for c in classes:
      _LOG.info("GANOverSampler %s (%s): class %s: %d real rows, %d synthetic rows requested",
                self.method, model, c, real[c], add[c])
      if real[c] < self.min_real_rows:
        _LOG.warning("GANOverSampler: class %s has %d real rows, fewer than min_real_rows=%d; a "
                     "GAN fitted to so few rows mostly reproduces them. Prefer RandomOverSampler "
                     "or SMOTE for it, or lower min_real_rows to accept this", c, real[c],
                     self.min_real_rows)
