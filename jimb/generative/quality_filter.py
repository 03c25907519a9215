"""Which synthetic samples to keep: a sample must look like its class, judged by real rows only.

Generators of small classes produce off-class and off-manifold samples; training on them teaches
the classifier noise. Two checks, both fitted on the fold's real training rows and never on
anything synthetic or held out: a classifier that must agree with the sample's label, and the
k-NN manifold of the real rows of its class (Kynkaanniemi et al. 2019, shared with
jimb.generative.scores). The real rows are only read.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jimb.generative.scores import knn_radii, within_radii

METHODS = ("none", "classifier", "knn", "both")


def _rows(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x), np.asarray(y)
  if y.ndim != 1 or len(x) != len(y):
    raise ValueError(f"{what} rows and labels differ: {x.shape} rows, labels of shape {y.shape}")
  x = x.reshape(len(x), -1)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{what} rows hold NaN or infinite values; check the generator's output")
  return x, y


def classifier_agrees(x_real, y_real, x_syn, y_syn, *, seed: int = 0) -> np.ndarray:
  """Whether a classifier fitted on the real rows predicts each synthetic row's own label.

  Multinomial logistic regression on standardised rows: fitted on real rows only, with no
  neighbourhood size to tune on tiny classes and a different notion of "belongs to c" than the
  k-NN check (a linear class boundary, not local density), so the two checks complement each
  other. Standardising makes every feature (pixel) count alike. `seed` seeds the solver.
  """
  if len(np.unique(y_real)) < 2:
    raise ValueError("the classifier filter needs real rows of at least two classes; set "
                     "--config.synth.filter to knn or none")
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
  model.fit(x_real, y_real)
  return model.predict(x_syn) == y_syn


def inside_class_manifold(x_real, y_real, x_syn, y_syn, *, k: int = 5,
                          notes: list[str] | None = None) -> np.ndarray:
  """Whether each synthetic row of class c lies in some real row r of c's ball of radius
  ||r - (k-th nearest real neighbour of r in c)||. A class with n <= k real rows uses k = n - 1
  (one real row: only its exact copies are kept), appended to `notes`."""
  inside = np.zeros(len(y_syn), bool)
  for c in np.unique(y_syn).tolist():
    real = x_real[y_real == c]
    k_c = min(k, len(real) - 1)
    if k_c < k and notes is not None:
      notes.append(f"class {c}: {len(real)} real rows <= k={k}; its k-NN manifold uses k={k_c}")
    rows = y_syn == c
    inside[rows] = within_radii(x_syn[rows], real, knn_radii(real, k_c))
  return inside


def keep_mask(x_real, y_real, x_syn, y_syn, method: str, *, k: int = 5,
              seed: int = 0) -> tuple[np.ndarray, dict]:
  """(mask of synthetic rows to keep, report) for filter `method` in METHODS.

  `both` keeps the rows that pass both checks. The report gives, per class and overall, the rows
  generated and kept and the rejection rate, per class the rows passing each check, and notes.
  """
  if method not in METHODS:
    raise ValueError(f"unknown --config.synth.filter={method!r}; choose one of {METHODS}")
  if k < 1:
    raise ValueError(f"--config.synth.filter_k must be >= 1, got {k}")
  x_real, y_real = _rows(x_real, y_real, "real")
  x_syn, y_syn = _rows(x_syn, y_syn, "synthetic")
  if x_real.shape[1] != x_syn.shape[1]:
    raise ValueError(f"real rows have {x_real.shape[1]} values, synthetic {x_syn.shape[1]}; the "
                     "generator must produce samples shaped like the data")
  unseen = sorted(set(np.unique(y_syn).tolist()) - set(np.unique(y_real).tolist()))
  if unseen:
    raise ValueError(f"synthetic rows of classes {unseen} have no real rows to be judged against")
  notes: list[str] = []
  checks = {}
  if method in ("classifier", "both"):
    checks["classifier"] = classifier_agrees(x_real, y_real, x_syn, y_syn, seed=seed)
  if method in ("knn", "both"):
    checks["knn"] = inside_class_manifold(x_real, y_real, x_syn, y_syn, k=k, notes=notes)
  mask = np.ones(len(y_syn), bool)
  for passed in checks.values():
    mask &= passed
  classes = {}
  for c in np.unique(y_syn).tolist():
    rows = y_syn == c
    classes[c] = {**_tally(rows.sum(), mask[rows].sum()),
                  **{f"passed_{name}": int(passed[rows].sum()) for name, passed in checks.items()}}
  report = {"method": method, "k": k, "classes": classes,
            "overall": _tally(len(y_syn), mask.sum()), "notes": notes}
  return mask, report


def _tally(generated, kept) -> dict:
  return {"generated": int(generated), "kept": int(kept),
          "rejection_rate": float(generated - kept) / max(int(generated), 1)}
