"""Small shared pieces for the runner tests."""

from __future__ import annotations

import numpy as np

import configs.default


def tiny_config(**overrides):
  """The default experiment shrunk to seconds: tiny CNN, 2 folds, 3 epochs."""
  c = configs.default.get_config("tiny")
  c.split.folds = 2
  c.train.epochs = 3
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def scalar_metrics(results: dict) -> list[dict]:
  return [{k: v for k, v in r["test"].items() if isinstance(v, float)} for r in results["folds"]]


def assert_same_metrics(a: dict, b: dict) -> None:
  for fa, fb in zip(scalar_metrics(a), scalar_metrics(b), strict=True):
    for k in fa:
      np.testing.assert_equal(fa[k], fb[k], err_msg=k)
