"""data.duplicates in the runner: a leak is logged and reported (warn), refused (error), or kept
inside one fold part (group)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jimb import experiment
from jimb.data import sources
from jimb.data.dataset import Dataset
from tests.helpers import tiny_config

QUIET = lambda s: None


def _with_copies(copies: int = 12) -> Dataset:
  """Digits with `copies` images stored twice: enough that 3-fold splits separate some."""
  ds = sources.load_source(tiny_config().data)
  rng = np.random.default_rng(0)
  picked = rng.choice(len(ds.y), copies, replace=False)
  return Dataset(np.concatenate([ds.x, ds.x[picked]]), np.concatenate([ds.y, ds.y[picked]]),
                 ds.class_names, name="digits+copies")


def _config(policy: str):
  return tiny_config(**{"data.duplicates": policy, "data.near_distance": -1, "train.epochs": 1,
                        "split.folds": 3, "imbalance.profile": "none"})


@pytest.fixture
def copies(monkeypatch):
  ds = _with_copies()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  return ds


def _straddling(results: dict) -> int:
  return sum(v["exact"] for f in results["data"]["duplicates"]["folds"]
             for k, v in f.items() if k in ("train-val", "train-test", "val-test"))


def test_warn_logs_and_reports_the_pairs_across_parts(copies, tmp_path):
  lines = []
  results = experiment.train_and_evaluate(_config("warn"), tmp_path, log=lines.append)
  report = results["data"]["duplicates"]
  assert report["exact_pairs"] == 12 and report["examples_involved"] == 24
  assert _straddling(results) > 0
  assert any(line.startswith("duplicates: 12 exact and 0 near duplicate pairs") and
             "pairs across parts" in line for line in lines)


def test_error_refuses_a_leak_naming_the_fix(copies, tmp_path):
  with pytest.raises(ValueError, match=r"straddle fold parts.*duplicates=group"):
    experiment.train_and_evaluate(_config("error"), tmp_path, log=QUIET)


def test_group_keeps_every_copy_on_one_side(copies, tmp_path):
  results = experiment.train_and_evaluate(_config("group"), tmp_path, log=QUIET)
  assert _straddling(results) == 0
  for k in range(3):
    parts = np.load(tmp_path / f"fold_{k}" / "indices.npz")
    side = {i: name for name in ("train", "val", "test") for i in parts[name]}
    for i, j in _pairs(copies):
      assert side[i] == side[j]
  assert json.loads((tmp_path / "results.json").read_text())["data"]["grouped"]


def _pairs(ds: Dataset) -> list[tuple[int, int]]:
  """(original, copy) index pairs by identical content."""
  flat = ds.x.reshape(len(ds.x), -1)
  n = len(ds.y) - 12
  return [(int(np.flatnonzero((flat[:n] == flat[j]).all(axis=1))[0]), j)
          for j in range(n, len(ds.y))]


def test_off_skips_detection(copies, tmp_path):
  results = experiment.train_and_evaluate(_config("off"), tmp_path, log=QUIET)
  assert "duplicates" not in results["data"]
