"""Configs: every experiment config builds, keys are closed, `arg` parsing is typed."""

from __future__ import annotations

import importlib
import pathlib

import pytest

from jimb import config as config_lib
from jimb.registry import Registry

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", [None, "tiny"])
def test_every_config_builds_with_the_base_keys(name, arg):
  c = importlib.import_module(f"configs.{name}").get_config(arg)
  base = config_lib.base_config()
  for block in ("data", "imbalance", "split", "sampler", "augment", "optim", "transfer", "train",
                "checkpoint"):
    assert set(c[block].keys()) == set(base[block].keys()), block
  assert set(base.model.keys()) <= set(c.model.keys()) and "name" in c.loss


def test_locked_config_rejects_unknown_keys():
  c = config_lib.base_config()
  c.lock()
  with pytest.raises(AttributeError, match="batchsize"):
    c.train.batchsize = 3


def test_parse_arg():
  a = config_lib.parse_arg("tiny,folds=3,lr=0.5,name=x", tiny=False, folds=5, lr=1.0, name="")
  assert (a.tiny, a.folds, a.lr, a.name) == (True, 3, 0.5, "x")
  assert config_lib.parse_arg(None, tiny=False).tiny is False
  with pytest.raises(ValueError, match="unknown config argument 'tyni'"):
    config_lib.parse_arg("tyni", tiny=False)


def test_registry_rejects_duplicates_and_unknown_options():
  r = Registry("thing")

  @r.register("a")
  def make(*, size=1):
    return size

  assert r.build("a", {"size": 3}) == 3
  with pytest.raises(ValueError, match="no option.*colour"):
    r.build("a", {"colour": 1})
  with pytest.raises(ValueError, match="registered twice"):
    r.register("a")(make)
