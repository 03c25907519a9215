"""Resampling inside the runner: image space (IS), feature space (FS) and both (TS) touch only the
training part of each fold; synthetic rows are marked and never evaluated."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import tiny_config
from jimb import experiment
from jimb.data import folds as folds_lib
from jimb.data import pipeline, sources
from jimb.data.dataset import Dataset
from jimb.resampling import samplers

QUIET = lambda s: None


def _id_dataset(counts=(60, 24, 12)):
  """A table whose first feature is the example's index, so every use can be traced."""
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(len(counts)), counts)
  x = np.column_stack([np.arange(len(y)), rng.normal(size=(len(y), 3)) + 2 * y[:, None]])
  return Dataset(x=x.astype(np.float32), y=y, class_names=tuple("abc"), name="ids")


def _config(**overrides):
  c = tiny_config(**{"model.name": "mlp", "model.mlp": {"hidden": (8,), "dropout": 0.0},
                     "train.epochs": 2, "train.batch_size": 16, "split.folds": 3,
                     "augment.enabled": False, "imbalance.profile": "none",
                     "sampler.name": "instance", **overrides})
  return c


@pytest.mark.parametrize("image, feature", [
    (dict(name="RandomOverSampler"), None),
    (dict(name="SMOTE", k_neighbors=3), None),
    (None, dict(name="RandomUnderSampler")),
    (dict(name="SMOTE", k_neighbors=3), dict(name="RandomUnderSampler")),
])
def test_resampling_sees_only_the_training_part(monkeypatch, tmp_path, image, feature):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  seen = {"batches": [], "resampled": []}
  real_batches, real_resample = pipeline.train_batches, samplers.resample

  def spy_batches(x, y, index_map, start_step=0, **kw):
    seen["batches"].append((x[index_map][..., 0], y[index_map], index_map))
    return real_batches(x, y, index_map, start_step, **kw)

  def spy_resample(name, options, x, y, **kw):
    seen["resampled"].append((name, x.copy(), y.copy()))
    return real_resample(name, options, x, y, **kw)

  monkeypatch.setattr(pipeline, "train_batches", spy_batches)
  monkeypatch.setattr(samplers, "resample", spy_resample)
  overrides = {"split.only_folds": "0"}
  if image:
    overrides["resample.image"] = image
  if feature:
    overrides.update({"resample.feature": feature, "stage2.method": "feature_resample",
                      "stage2.epochs": 2, "stage2.batch_size": 8})
  c = _config(**overrides)
  _, (fold, *_), _ = folds_lib.load_data(c, QUIET)
  results = experiment.train_and_evaluate(c, tmp_path, log=QUIET)
  record = results["folds"][0]
  train, held_out = set(fold.train), set(fold.val) | set(fold.test)

  # What the resamplers got: the training part (its inputs, or the features of its real rows).
  assert [name for name, _, _ in seen["resampled"]] == (
      ([image["name"]] if image else []) + ([feature["name"]] if feature else []))
  for name, x, y in seen["resampled"]:
    assert len(x) == len(fold.train)
    np.testing.assert_array_equal(np.sort(y), np.sort(ds.y[fold.train]))
  if image:
    assert set(seen["resampled"][0][1][:, 0].astype(int)) == train
  # What the batches held: real training rows, or rows marked synthetic (after the real ones).
  for ids, labels, rows in seen["batches"]:
    real = rows < len(fold.train)
    assert set(ids[real].astype(int)) <= train and not set(ids[real].astype(int)) & held_out
    if image is None or image["name"] != "SMOTE":
      assert real.all()
  if image and image["name"] == "SMOTE":
    synthetic = record["class_counts"]["train_synthetic"]
    assert synthetic[0] == 0 and synthetic[1] > 0 and synthetic[2] > 0
    assert any((~(rows < len(fold.train))).any() for _, _, rows in seen["batches"])
  if image:
    counts = record["class_counts"]["train_resampled"]
    assert counts == [max(counts)] * 3          # balanced to the majority
  # Evaluation saw every test example once, and nothing else.
  assert record["sizes"]["test"] == len(fold.test)
  assert sum(record["test"]["per_class"]["support"]) == len(fold.test)
  if feature:
    assert "test_stage1" in record


def test_feature_resampling_needs_both_keys(monkeypatch, tmp_path):
  monkeypatch.setattr(sources, "load_source", lambda cfg: _id_dataset())
  with pytest.raises(ValueError, match="feature_resample.*resample.feature.name"):
    experiment.train_and_evaluate(_config(**{"stage2.method": "feature_resample"}), tmp_path,
                                  log=QUIET)


def test_small_class_in_a_fold_names_class_fold_and_fix(monkeypatch, tmp_path):
  monkeypatch.setattr(sources, "load_source", lambda cfg: _id_dataset((60, 24, 6)))
  c = _config(**{"resample.image": dict(name="SMOTE")})
  with pytest.raises(ValueError, match=r"class 2 \(\d rows\).*fold 0.*resample.small_classes"):
    experiment.train_and_evaluate(c, tmp_path, log=QUIET)
