"""Tiny classes end to end: tables shaped like yeast, lymphography and ecoli (made-up values, the
real class counts) split into folds and resampled by SMOTE, following each error's advice; and
what the GAN over-sampler and the synthesis stage say about the few rows they learn from."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from helpers import tiny_config
from jimb import experiment
from jimb.data import sources, splits
from jimb.data.dataset import Dataset
from jimb.generative.oversampler import GANOverSampler
from jimb.resampling import samplers

YEAST = {"CYT": 463, "NUC": 429, "MIT": 244, "ME3": 163, "ME2": 51, "ME1": 44, "EXC": 35,
         "VAC": 30, "POX": 20, "ERL": 5}
LYMPHOGRAPHY = {"normal": 2, "metastases": 81, "malign_lymph": 61, "fibrosis": 4}
ECOLI = {"cp": 143, "im": 77, "pp": 52, "imU": 35, "om": 20, "omL": 5, "imL": 2, "imS": 2}


def _table(counts: dict[str, int], name: str) -> Dataset:
  rng = np.random.default_rng(0)
  y = rng.permutation(np.repeat(np.arange(len(counts)), list(counts.values())))
  x = rng.normal(size=(len(y), 7)) + y[:, None]
  return Dataset(x.astype(np.float32), y, tuple(counts), name=name)


def _split_fixes(message: str) -> list[tuple[str, str]]:
  fixes = re.findall(r"--config\.split\.(folds|small_classes)=(\w+)", message.split("; set ")[1])
  assert fixes, message
  return fixes


def _folds_after(ds: Dataset, key: str, value: str, folds: int = 5) -> tuple[Dataset, list]:
  """The data and folds once the fix `key`=`value` is applied to `folds`, small_classes=error."""
  settings = {"folds": folds, "small_classes": "error"}
  settings[key] = int(value) if key == "folds" else value
  kept = splits.check_class_sizes(ds, settings["folds"], settings["small_classes"],
                                  val_fraction=0.15, seed=0)
  return kept, splits.make_folds(kept, settings["folds"], 0.15, seed=0)


def _smote_balances_every_fold(ds: Dataset, folds: list, policy: str, params=None) -> None:
  for f in folds:
    out = samplers.resample("SMOTE", params or {}, ds.x[f.train], ds.y[f.train], seed=0,
                            small_classes=policy)
    counts = np.bincount(out.y, minlength=ds.num_classes)
    assert np.all(counts == counts.max()), (policy, counts)


def _smote_follows_its_advice(ds: Dataset, folds: list) -> list[tuple[str, str]]:
  """SMOTE's error on each fold's training part, each suggested fix applied: the fixes."""
  suggested = set()
  for f in folds:
    try:
      samplers.resample("SMOTE", {}, ds.x[f.train], ds.y[f.train], seed=0)
      continue
    except ValueError as e:
      fixes = ([("small_classes", v) for v in
                re.findall(r"--config\.resample\.small_classes=(\w+)", str(e))]
               + [("k_neighbors", v) for v in
                  re.findall(r"c\.resample\.k_neighbors = (\d+)", str(e))])
    assert fixes, "no fix suggested"
    for key, value in fixes:
      params = {"k_neighbors": int(value)} if key == "k_neighbors" else {}
      _smote_balances_every_fold(ds, [f], value if key == "small_classes" else "error", params)
    suggested.update(fixes)
  return sorted(suggested)


def test_yeast_five_folds_keep_erl_in_every_part_and_smote_works():
  ds = _table(YEAST, "yeast")
  folds = splits.make_folds(splits.check_class_sizes(ds, 5, "error"), 5, 0.15, seed=0)
  for f in folds:
    for part in (f.train, f.val, f.test):
      assert np.isin(np.arange(10), ds.y[part]).all()
  _smote_balances_every_fold(ds, folds, "reduce_k")
  _smote_balances_every_fold(ds, folds, "ros")
  assert ("small_classes", "ros") in _smote_follows_its_advice(ds, folds)


def test_yeast_ten_folds_name_erl_and_the_fixes_work():
  ds = _table(YEAST, "yeast")
  with pytest.raises(ValueError) as e:
    splits.check_class_sizes(ds, 10, "error")
  assert "class 'ERL' (#9: 5 examples) cannot reach all 10 test folds" in str(e.value)
  assert _split_fixes(str(e.value)) == [("folds", "5"), ("small_classes", "drop")]
  for key, value in _split_fixes(str(e.value)):
    kept, folds = _folds_after(ds, key, value, folds=10)
    _smote_balances_every_fold(kept, folds, "ros")


def test_lymphography_fixes_work_and_smote_has_a_path(caplog):
  ds = _table(LYMPHOGRAPHY, "lymphography")
  with pytest.raises(ValueError) as e:
    splits.check_class_sizes(ds, 5, "error")
  assert ("class 'normal' (#0: 2 examples), class 'fibrosis' (#3: 4 examples) cannot reach all 5 "
          "test folds") in str(e.value)
  assert _split_fixes(str(e.value)) == [("folds", "2"), ("small_classes", "drop")]
  # folds=2: one 'normal' example per training part, which stays there (and says so).
  with caplog.at_level(logging.WARNING):
    kept, folds = _folds_after(ds, "folds", "2")
  assert ("no validation example of class 'normal' (#0: 1 example in the training part): a "
          "single member stays in training") in caplog.text
  assert all((ds.y[f.val] == 3).sum() == 1 for f in folds)   # 'fibrosis' is validated
  # A class of one row leaves SMOTE random over-sampling as the only path, and it works.
  assert _smote_follows_its_advice(kept, folds) == [("small_classes", "ros")]
  with pytest.raises(ValueError, match=r"single row .*small_classes=ros"):
    _smote_balances_every_fold(kept, folds, "reduce_k")
  # drop: the two large classes remain, and every SMOTE setting works.
  kept, folds = _folds_after(ds, "small_classes", "drop")
  assert kept.class_names == ("metastases", "malign_lymph")
  for policy in samplers.SMALL_CLASS_POLICIES:
    _smote_balances_every_fold(kept, folds, policy)


def test_ecoli_drop_keeps_oml_validated_and_smote_reduces_k(caplog):
  ds = _table(ECOLI, "ecoli")
  with pytest.raises(ValueError) as e:
    splits.check_class_sizes(ds, 5, "error")
  assert "class 'imL' (#6: 2 examples), class 'imS' (#7: 2 examples)" in str(e.value)
  assert _split_fixes(str(e.value)) == [("folds", "2"), ("small_classes", "drop")]
  with caplog.at_level(logging.WARNING):
    kept, folds = _folds_after(ds, "small_classes", "drop")
  assert "dropping class 'imL' (#6: 2 examples), class 'imS' (#7: 2 examples)" in caplog.text
  oml = kept.class_names.index("omL")
  assert all((kept.y[f.val] == oml).sum() == 1 for f in folds)
  with caplog.at_level(logging.WARNING):
    _smote_balances_every_fold(kept, folds, "reduce_k")
  assert "k_neighbors 5 -> 2" in caplog.text
  _smote_balances_every_fold(kept, folds, "ros")
  assert sorted(_smote_follows_its_advice(kept, folds)) == [
      ("k_neighbors", "2"), ("small_classes", "reduce_k"), ("small_classes", "ros")]
  kept, folds = _folds_after(ds, "folds", "2")
  _smote_balances_every_fold(kept, folds, "ros")


def _oversampler(**options) -> GANOverSampler:
  return GANOverSampler(steps=2, batch_size=8, latent_dim=4, hidden=(8,), random_state=0,
                        **options)


@pytest.mark.parametrize("method", ["lsgan", "cgan"])
def test_gan_oversampler_logs_each_class_and_warns_below_min_real_rows(caplog, method):
  x = np.random.default_rng(0).normal(size=(43, 3)).astype(np.float32)
  y = np.repeat([0, 1, 2], [30, 3, 10])
  with caplog.at_level(logging.INFO, logger="jimb.generative.oversampler"):
    _, y_out = _oversampler(method=method).fit_resample(x, y)
  assert np.bincount(y_out).tolist() == [30, 30, 30]
  text = caplog.text
  assert "class 1: 3 real rows, 27 synthetic rows requested" in text
  assert "class 2: 10 real rows, 20 synthetic rows requested" in text
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert "class 1 has 3 real rows, fewer than min_real_rows=10" in warnings[0]


def test_gan_oversampler_min_real_rows_is_a_checked_option(caplog):
  x = np.random.default_rng(0).normal(size=(33, 3)).astype(np.float32)
  y = np.repeat([0, 1], [30, 3])
  with caplog.at_level(logging.INFO, logger="jimb.generative.oversampler"):
    _oversampler(min_real_rows=3).fit_resample(x, y)
  assert "3 real rows" in caplog.text and "min_real_rows" not in caplog.text
  with pytest.raises(ValueError, match="min_real_rows"):
    _oversampler(min_real_rows=0).fit_resample(x, y)


def test_synthesis_stage_warns_below_min_real_rows(monkeypatch, tmp_path):
  ds = _table({"a": 60, "b": 24, "c": 12}, "abc")
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  config = tiny_config(**{
      "model.name": "mlp", "model.mlp": {"hidden": (8,), "dropout": 0.0}, "train.epochs": 1,
      "train.batch_size": 16, "split.folds": 3, "split.only_folds": "0",
      "augment.enabled": False, "imbalance.profile": "none", "sampler.name": "instance",
      "data.normalize": "none", "synth.method": "lsgan", "synth.lsgan.hidden": "8",
      "synth.lsgan.latent_dim": 4, "synth.lsgan.steps": 2, "synth.lsgan.batch_size": 8,
      "synth.judge_epochs": 0, "synth.min_real_rows": 12})
  lines = []
  experiment.train_and_evaluate(config, tmp_path, log=lines.append)
  text = "\n".join(lines)
  assert re.search(r"synthesis: lsgan \(majority budget\) for b \(\d+ real rows, \d+ synthetic "
                   r"requested\), c \(\d+ real rows", text)
  assert re.search(r"synthesis warning: 'c' \(#2: \d\) has fewer real training rows than "
                   r"--config\.synth\.min_real_rows=12", text)
