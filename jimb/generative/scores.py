"""How close synthetic samples are to the real ones: Frechet distance and k-NN precision/recall.

FID alone mixes fidelity and diversity into one number; the k-NN manifold precision (share of
synthetic samples that look real) and recall (share of real samples the generator covers) of
Kynkaanniemi et al. 2019 separate them, which matters for minority classes where a collapsed
generator can score a fair FID. All scores take rows of any shape (features or images, flattened)
and are computed per class, since a generator that balances a class must match that class.
The k-NN manifold here is also the one jimb.generative.quality_filter keeps samples inside.
"""

from __future__ import annotations

import numpy as np

# Entries of one block of the distance matrix (32 MiB in float64): large sets never build the
# whole matrix.
_BLOCK_ENTRIES = 1 << 22


def _flat(x) -> np.ndarray:
  x = np.asarray(x)
  return x.reshape(len(x), -1).astype(np.float64)


def _squared_distances(a: np.ndarray, b: np.ndarray):
  """Yields (rows of a, their squared distances to every row of b), one block at a time.

  The matmul form |a|^2 + |b|^2 - 2 a.b is what makes this fast on wide rows; callers centre the
  rows first so its rounding stays far below the distances, and values within that rounding
  (1e-12 of |a|^2 + |b|^2) are set to 0, so equal rows are exactly 0 apart.
  """
  b_sq = np.einsum("ij,ij->i", b, b)
  step = max(1, _BLOCK_ENTRIES // max(len(b), 1))
  for start in range(0, len(a), step):
    block = a[start:start + step]
    norms = np.einsum("ij,ij->i", block, block)[:, None] + b_sq[None]
    d = norms - 2.0 * (block @ b.T)
    yield slice(start, start + len(block)), np.where(d > 1e-12 * norms, d, 0.0)


def knn_radii(x, k: int) -> np.ndarray:
  """Distance from each row of `x` to its k-th nearest other row (0 for k = 0)."""
  x = _flat(x)
  if not 0 <= k < len(x):
    raise ValueError(f"the k-th nearest neighbour within {len(x)} rows needs 0 <= k < {len(x)}, "
                     f"got k={k}")
  x = x - x.mean(0)
  radii = np.empty(len(x))
  for rows, d in _squared_distances(x, x):
    # Each row's own distance (0) is the smallest, so index k is the k-th nearest other row.
    radii[rows] = np.sqrt(np.partition(d, k, axis=1)[:, k])
  return radii


def within_radii(query, ref, radii: np.ndarray) -> np.ndarray:
  """For each row q of `query`: is there a row r of `ref` with ||q - r|| <= radii[r]?"""
  query, ref = _flat(query), _flat(ref)
  centre = ref.mean(0)
  inside = np.zeros(len(query), bool)
  limit = np.asarray(radii, np.float64)[None] ** 2
  for rows, d in _squared_distances(query - centre, ref - centre):
    inside[rows] = (d <= limit).any(axis=1)
  return inside


def knn_precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
  """(precision, recall) of Kynkaanniemi et al. 2019 with k-th neighbour radii in each set.

  precision: share of `fake` rows inside the real manifold; recall: share of `real` rows inside
  the fake manifold.
  """
  if k < 1:
    raise ValueError(f"k-NN precision/recall needs k >= 1, got {k}")
  precision = within_radii(fake, real, knn_radii(real, k)).mean()
  recall = within_radii(real, fake, knn_radii(fake, k)).mean()
  return float(precision), float(recall)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh(m)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a, b) -> float:
  """Frechet distance between Gaussians fitted to rows `a` and `b` (FID on features).

  ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2). The trace term is taken from the
  eigenvalues of the symmetric sqrt(S_a) S_b sqrt(S_a), which equal those of S_a S_b: unlike
  scipy.linalg.sqrtm of the non-symmetric product (which pytorch-fid retries with an eps offset
  when it fails), it stays real and exact for singular covariances, e.g. fewer rows than
  features, so no offset is needed.
  """
  a, b = _flat(a), _flat(b)
  if len(a) < 2 or len(b) < 2:
    raise ValueError(f"the Frechet distance needs >= 2 rows per set, got {len(a)} and {len(b)}")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"sets have {a.shape[1]} and {b.shape[1]} features; compare like with like")
  cov_a = np.atleast_2d(np.cov(a, rowvar=False))
  cov_b = np.atleast_2d(np.cov(b, rowvar=False))
  root_a = _psd_sqrt(cov_a)
  cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
  diff = a.mean(0) - b.mean(0)
  tr_root = np.sqrt(np.clip(cross, 0.0, None)).sum()
  fid = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_root
  return float(max(fid, 0.0))   # rounding can leave -1e-12 for identical sets


def per_class_scores(feat_real, y_real, feat_syn, y_syn, k: int = 3) -> dict[int, dict]:
  """{class: {fid, precision, recall, n_real, n_syn, k, note}} for every class of either set.

  A score a class cannot have is NaN and `note` says why: FID needs >= 2 rows per set, the k-NN
  manifold >= 2; with fewer than k + 1 rows in a set, k drops to that set's size - 1 (noted).
  """
  feat_real, feat_syn = np.asarray(feat_real), np.asarray(feat_syn)
  y_real, y_syn = np.asarray(y_real), np.asarray(y_syn)
  if len(feat_real) != len(y_real) or len(feat_syn) != len(y_syn):
    raise ValueError(f"rows and labels differ in number: real {len(feat_real)} vs {len(y_real)}, "
                     f"synthetic {len(feat_syn)} vs {len(y_syn)}")
  out = {}
  for c in np.union1d(y_real, y_syn).tolist():
    real, syn = feat_real[y_real == c], feat_syn[y_syn == c]
    n_real, n_syn = len(real), len(syn)
    row = {"fid": float("nan"), "precision": float("nan"), "recall": float("nan"),
           "n_real": n_real, "n_syn": n_syn, "k": k, "note": ""}
    if min(n_real, n_syn) < 2:
      row["note"] = (f"needs >= 2 rows per set for FID and k-NN scores, has {n_real} real, "
                     f"{n_syn} synthetic")
    else:
      row["fid"] = frechet_distance(real, syn)
      row["k"] = min(k, n_real - 1, n_syn - 1)
      if row["k"] < k:
        row["note"] = f"k-NN scores use k={row['k']}: {min(n_real, n_syn)} rows in a set <= k={k}"
      row["precision"], row["recall"] = knn_precision_recall(real, syn, row["k"])
    out[c] = row
  return out
