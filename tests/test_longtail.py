"""Long-tailed benchmarks: a holdout split on the source's own test set (CIFAR-LT style),
many/medium/few-shot accuracy, and the decoupled second stages end to end."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from helpers import tiny_config
from jimb import experiment, metrics
from jimb.data import folds as folds_lib
from jimb.data.imbalance import long_tail_counts

QUIET = lambda s: None
ROOT = pathlib.Path(__file__).parents[1]
PER_CLASS = {"train": 60, "test": 20}


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
  """A balanced 4-class npz with a train (split 0) and a test (split 1) split, learnable."""
  rng = np.random.default_rng(0)
  labels, splits = [], []
  for split, n in enumerate(PER_CLASS.values()):
    labels.append(np.repeat(np.arange(4), n))
    splits.append(np.full(4 * n, split, np.int8))
  labels, splits = np.concatenate(labels), np.concatenate(splits)
  order = rng.permutation(len(labels))
  labels, splits = labels[order], splits[order]
  images = rng.integers(0, 120, (len(labels), 8, 8, 1))
  images[np.arange(len(labels)), labels * 2, labels * 2] = 255     # a class-specific bright pixel
  path = tmp_path_factory.mktemp("data") / "cifar_like.npz"
  np.savez(path, images=images.astype(np.uint8), labels=labels, split=splits,
           class_names=np.array(["a", "b", "c", "d"]))
  return path, labels, splits


def _holdout_config(path, **overrides):
  return tiny_config(**{
      "data.source": "npz", "data.path": str(path), "data.npz_split": 0, "data.test_split": "1",
      "imbalance.profile": "exp", "imbalance.ratio": 6.0, "imbalance.max_per_class": 60,
      "split.mode": "holdout", "split.val_fraction": 0.2, "sampler.name": "class_balanced",
      "train.batch_size": 16, "report.many_shot": 30, "report.few_shot": 15, **overrides})


def test_holdout_thins_the_training_split_and_keeps_the_test_split_whole(cifar_like):
  path, labels, splits = cifar_like
  ds, folds, info = folds_lib.load_data(_holdout_config(path), log=QUIET)
  (fold,) = folds
  expected = long_tail_counts(60, 4, 6.0, "exp")              # 60, 33, 18, 10
  assert info["class_counts"] == expected.tolist() and info["split"] == "holdout"
  train_pool = np.concatenate([fold.train, fold.val])
  np.testing.assert_array_equal(np.bincount(ds.y[train_pool], minlength=4), expected)
  np.testing.assert_array_equal(np.bincount(ds.y[fold.test], minlength=4), [20, 20, 20, 20])
  assert len(fold.test) == int((splits == 1).sum())
  assert not set(fold.test) & set(train_pool)
  # The test rows are the npz's split-1 rows, in file order.
  np.testing.assert_array_equal(ds.y[fold.test], labels[splits == 1])
  # Deterministic, and a higher ratio keeps a subset of a lower one (same seed).
  again, _, _ = folds_lib.load_data(_holdout_config(path), log=QUIET)
  np.testing.assert_array_equal(again.x, ds.x)
  steeper, (f2,), _ = folds_lib.load_data(_holdout_config(path, **{"imbalance.ratio": 12.0}),
                                           log=QUIET)
  kept = {ds.x[i].tobytes() for i in train_pool}
  assert {steeper.x[i].tobytes() for i in np.concatenate([f2.train, f2.val])} <= kept


def test_holdout_needs_a_test_split(cifar_like):
  path, _, _ = cifar_like
  with pytest.raises(ValueError, match="data.test_split"):
    folds_lib.load_data(_holdout_config(path, **{"data.test_split": ""}), log=QUIET)
  with pytest.raises(ValueError, match="no rows.*npz_split"):
    folds_lib.load_data(_holdout_config(path, **{"data.test_split": "7"}), log=QUIET)
  with pytest.raises(ValueError, match="has no fixed test split"):
    folds_lib.load_data(tiny_config(**{"split.mode": "holdout", "data.test_split": "test"}),
                         log=QUIET)


def test_holdout_from_tfds(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  cfg = tiny_config(**{"data.source": "tfds", "data.name": "cifar10", "data.data_dir": str(tmp_path),
                       "data.test_split": "test", "split.mode": "holdout",
                       "split.val_fraction": 0.0, "imbalance.profile": "none"})
  with tfds.testing.mock_data(num_examples=30):
    ds, (fold,), info = folds_lib.load_data(cfg, log=QUIET)
  assert ds.x.shape[1:] == (32, 32, 3) and len(fold.train) == 30 and len(fold.test) == 30


def test_shot_accuracy_hand_case():
  recall = [0.9, 0.8, 0.5, np.nan, 0.1]
  counts = np.array([500, 101, 100, 20, 19])
  out = metrics.shot_accuracy(recall, counts, many_shot=100, few_shot=20)
  assert out["many_shot_accuracy"] == pytest.approx(0.85)        # 500, 101
  assert out["medium_shot_accuracy"] == pytest.approx(0.5)       # 100, 20 (NaN: absent)
  assert out["few_shot_accuracy"] == pytest.approx(0.1)          # 19
  assert out["shot_classes"] == {"many": [0, 1], "few": [4], "medium": [2, 3]}
  assert np.isnan(metrics.shot_accuracy(recall, counts, 1000, 0)["many_shot_accuracy"])
  with pytest.raises(ValueError, match="few_shot"):
    metrics.shot_accuracy(recall, counts, 10, 20)


@pytest.fixture(scope="module")
def stage1_run(cifar_like, tmp_path_factory):
  """One trained holdout run without a stage 2; the stage-2 tests apply theirs in eval mode."""
  path, _, _ = cifar_like
  workdir = tmp_path_factory.mktemp("stage1")
  cfg = _holdout_config(path, **{"sampler.name": "instance"})
  return cfg, workdir, experiment.train_and_evaluate(cfg, workdir, log=QUIET)


def _with_stage2(cfg, **stage2):
  cfg = cfg.copy_and_resolve_references()
  cfg.stage2.update(stage2)
  return cfg


@pytest.mark.parametrize("method", ["crt", "tau_norm", "logit_adjust"])
def test_stage2_on_saved_checkpoints_keeps_stage1(stage1_run, method):
  cfg, workdir, stage1 = stage1_run
  cfg = _with_stage2(cfg, method=method, epochs=3, batch_size=16)
  results = experiment.evaluate(cfg, workdir, log=QUIET, output=f"eval_{method}.json")
  (record,) = results["folds"]
  assert set(record) >= {"test", "test_stage1"}
  assert record["test_stage1"]["confusion"] == stage1["folds"][0]["test"]["confusion"]
  for part in ("test", "test_stage1"):
    assert {"many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"} <= set(record[part])
    assert sum(record[part]["per_class"]["support"]) == 80        # nothing dropped
  # Deterministic: applying the same stage 2 again reproduces it exactly.
  again = experiment.evaluate(cfg, workdir, log=QUIET, output=f"eval_{method}.json")
  assert again["folds"][0]["test"]["confusion"] == record["test"]["confusion"]
  assert (workdir / f"eval_{method}.json").exists()


def test_logit_adjust_with_tau_0_changes_nothing(stage1_run):
  cfg, workdir, _ = stage1_run
  cfg = _with_stage2(cfg, method="logit_adjust", tau=0.0)
  (record,) = experiment.evaluate(cfg, workdir, log=QUIET, output="eval_tau0.json")["folds"]
  assert record["test"]["confusion"] == record["test_stage1"]["confusion"]


def test_training_config_other_than_stage2_is_still_checked_in_eval(stage1_run):
  cfg, workdir, _ = stage1_run
  cfg = cfg.copy_and_resolve_references()
  cfg.train.epochs = 7
  with pytest.raises(ValueError, match="different config.*train.epochs"):
    experiment.evaluate(cfg, workdir, log=QUIET)


def test_unknown_stage2_method_fails_before_training(cifar_like, tmp_path):
  path, _, _ = cifar_like
  with pytest.raises(ValueError, match="stage2.method"):
    experiment.train_and_evaluate(_holdout_config(path, **{"stage2.method": "lws"}), tmp_path,
                                  log=QUIET)
  assert not (tmp_path / "fold_0" / "checkpoints").exists()


def _main(config_arg, workdir):
  subprocess.run([sys.executable, "main.py", f"--config={config_arg}", f"--workdir={workdir}",
                  "--config.imbalance.max_per_class=60", "--config.imbalance.ratio=6"],
                 cwd=ROOT, check=True, capture_output=True, timeout=900)
  return json.loads((workdir / "results.json").read_text())


def test_cifar_lt_config_through_main(cifar_like, tmp_path):
  path, _, _ = cifar_like
  results = _main(f"configs/cifar_lt.py:tiny,npz={path}", tmp_path)
  (record,) = results["folds"]
  assert results["data"]["class_counts"] == [60, 33, 18, 10]
  assert record["sizes"]["test"] == 80 and "few_shot_accuracy" in record["test"]


@pytest.mark.slow
@pytest.mark.parametrize("method, loss", [("baseline", "focal"), ("tlc", "cot")])
def test_tlc_table3_config_through_main(cifar_like, tmp_path, method, loss):
  path, _, _ = cifar_like
  images = np.load(path)
  big = tmp_path / "big.npz"   # DenseNet-121 needs 32x32 inputs
  np.savez(big, **{**images, "images": np.repeat(np.repeat(images["images"], 4, 1), 4, 2)})
  results = _main(f"configs/tlc.py:tiny,method={method},loss={loss},npz={big}", tmp_path / "run")
  (record,) = results["folds"]
  assert ("quota_history" in record) == (method == "tlc")
