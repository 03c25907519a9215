"""What a run's data were, so that a rerun on other data is refused instead of silently mixed.

A workdir's finished folds hold predictions for the examples their indices name; pooled with the
labels of a changed file at the same path, they give wrong metrics without any error. The
fingerprint (content hashes of the inputs, labels and group ids the runner used, with their
counts) is written beside the config, and a rerun or an eval whose data differ is refused with
what changed.
"""

from __future__ import annotations

import hashlib

import numpy as np

from jimb.data.dataset import Dataset


def _digest(*arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
  return h.hexdigest()


def fingerprint(ds: Dataset) -> dict:
  """Content hashes and counts of `ds` (the data after the imbalance profile: what folds index)."""
  groups = None if ds.groups is None else _digest(np.asarray(ds.groups).astype(str))
  return {
      "num_examples": int(len(ds.y)),
      "class_names": list(ds.class_names),
      "class_counts": ds.class_counts().tolist(),
      "input_shape": list(ds.x.shape[1:]),
      "inputs_sha256": _digest(ds.x),
      "labels_sha256": _digest(ds.y.astype(np.int64)),
      "groups_sha256": groups,
  }


def changes(old: dict, new: dict) -> list[str]:
  """What differs between two fingerprints, in words."""
  out = []
  for key, what in (("num_examples", "number of examples"), ("class_names", "class names"),
                    ("input_shape", "input shape"), ("class_counts", "class counts")):
    if old.get(key) != new.get(key):
      out.append(f"{what} {old.get(key)} -> {new.get(key)}")
  for key, what in (("labels_sha256", "labels"), ("inputs_sha256", "inputs"),
                    ("groups_sha256", "group ids")):
    if old.get(key) != new.get(key) and not any(o.startswith(what) for o in out):
      out.append(f"{what} (content)")
  return out
