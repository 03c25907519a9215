"""The runner end to end: main.py, resume after SIGKILL, eval mode, and no leak from test parts."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jimb import checkpointing, experiment
from jimb.fitting import step as step_lib
from jimb.training import fold as fold_lib
from jimb.data import folds as folds_lib
from jimb.data import pipeline, preprocess, sources
from jimb.data.dataset import Dataset
from tests.helpers import assert_same_metrics, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUIET = lambda s: None


def run_main(*args, timeout=300):
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """One uninterrupted tiny run, shared by the resume and eval tests."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  return workdir, experiment.train_and_evaluate(tiny_config(), workdir, log=QUIET)


def test_main_end_to_end(tmp_path):
  proc = run_main("--config=configs/default.py:tiny", f"--workdir={tmp_path}",
                  "--config.split.folds=2", "--config.train.epochs=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "mean +/- std" in proc.stdout and "pooled per-class" in proc.stdout
  assert "fold 1 epoch   1/1" in proc.stdout
  results = json.loads((tmp_path / "results.json").read_text())
  assert [f["index"] for f in results["folds"]] == [0, 1]
  assert results["config"]["loss"]["name"] == "focal"
  # Every example is predicted exactly once out of fold: pooled support is the dataset.
  pooled = results["summary"]["pooled"]
  assert sum(pooled["per_class"]["support"]) == results["data"]["num_examples"]
  assert set(results["summary"]["mean_std"]["macro_f1"]) == {"mean", "std"}
  fold0 = results["folds"][0]
  assert sum(fold0["class_counts"]["test"]) == fold0["sizes"]["test"]
  assert sum(fold0["class_counts"]["train_sampled_per_epoch"]) > 0

  proc = run_main("--config=configs/default.py:tiny", f"--workdir={tmp_path}",
                  "--config.split.folds=2", "--config.train.epochs=1", "--mode=eval")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "max |diff| vs training run: 0.00e+00" in proc.stdout
  assert_same_metrics(results, json.loads((tmp_path / "eval_results.json").read_text()))


def test_unknown_config_key_is_an_error(tmp_path):
  proc = run_main("--config=configs/default.py:tiny", f"--workdir={tmp_path}",
                  "--config.train.batchsize=8")
  assert proc.returncode != 0
  assert "batchsize" in proc.stderr
  proc = run_main("--config=configs/default.py:tiyn", f"--workdir={tmp_path}")
  assert proc.returncode != 0 and "tiyn" in proc.stderr


def test_eval_mode_reproduces_test_metrics(finished_run):
  workdir, results = finished_run
  again = experiment.evaluate(tiny_config(), workdir, log=QUIET)
  assert_same_metrics(results, again)


def test_resume_after_sigkill_equals_uninterrupted_run(finished_run, tmp_path):
  reference_dir, reference = finished_run
  args = ["--config=configs/default.py:tiny", f"--workdir={tmp_path}",
          "--config.split.folds=2", "--config.train.epochs=3",
          "--config.checkpoint.min_interval_secs=0"]   # every epoch: a kill between two
  proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  # Kill mid-fold: fold 0 finished, fold 1 has its first checkpoint but no result.
  target = tmp_path / "fold_1" / "checkpoints" / "1"
  deadline = time.time() + 240
  while not target.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert (tmp_path / "fold_0" / "result.json").exists()
  assert not (tmp_path / "fold_1" / "result.json").exists(), "killed too late to test a resume"

  logs = []
  resumed = experiment.train_and_evaluate(tiny_config(), tmp_path, log=logs.append)
  assert any("fold 0: finished earlier" in line for line in logs)
  assert any("resumed from epoch" in line for line in logs)
  assert_same_metrics(reference, resumed)
  for k in (0, 1):
    np.testing.assert_array_equal(np.load(tmp_path / f"fold_{k}" / "test_probs.npz")["probs"],
                                  np.load(reference_dir / f"fold_{k}" / "test_probs.npz")["probs"])


def test_rerun_with_another_config_is_refused(finished_run):
  workdir, _ = finished_run
  with pytest.raises(ValueError, match="different config.*train.epochs"):
    experiment.train_and_evaluate(tiny_config(**{"train.epochs": 5}), workdir, log=QUIET)


def test_eval_of_missing_run_and_corrupt_checkpoint(finished_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="--mode=train"):
    experiment.evaluate(tiny_config(), tmp_path / "nothing", log=QUIET)
  workdir, results = finished_run
  copy = tmp_path / "copy"
  subprocess.run(["cp", "-r", str(workdir), str(copy)], check=True)
  best = results["folds"][0]["best_epoch"]
  state_dir = copy / "fold_0" / "checkpoints" / str(best) / "state"
  for f in state_dir.rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
      f.write_bytes(b"garbage")
  with pytest.raises(checkpointing.CheckpointError, match="cannot be restored"):
    experiment.evaluate(tiny_config(), copy, log=QUIET)


def _id_dataset(n=240, k=3):
  """A table whose first feature is the example's own index, so every use can be traced."""
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(k), n // k)
  x = np.column_stack([np.arange(n), rng.normal(size=(n, 3)) + y[:, None]]).astype(np.float32)
  return Dataset(x=x, y=y, class_names=tuple("abc"), name="ids")


def test_no_evaluation_index_reaches_training(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  seen = []  # per fold: the ids the preprocessor was fitted on, and those of every batch
  real_batches, real_fit = pipeline.train_batches, preprocess.fit_preprocessor

  def spy_fit(train_x, *a, **kw):
    seen.append({"fit": train_x[:, 0].astype(int), "batches": []})
    return real_fit(train_x, *a, **kw)

  def spy_batches(x, y, index_map, start_step=0, **kw):
    for batch in real_batches(x, y, index_map, start_step, **kw):
      seen[-1]["batches"].append(batch["x"][:, 0].astype(int))
      yield batch

  monkeypatch.setattr(pipeline, "train_batches", spy_batches)
  monkeypatch.setattr(preprocess, "fit_preprocessor", spy_fit)
  c = tiny_config(**{"model.name": "mlp", "model.mlp": {"hidden": (8,), "dropout": 0.0},
                     "data.normalize": "dataset", "train.epochs": 2, "train.batch_size": 16,
                     "split.folds": 3, "augment.enabled": False})
  used_ds, folds, _ = folds_lib.load_data(c, QUIET)  # long-tailed subset of `ds`
  ids = used_ds.x[:, 0].astype(int)
  experiment.train_and_evaluate(c, tmp_path, log=QUIET)
  assert len(seen) == len(folds)
  for fold, record in zip(folds, seen, strict=True):
    train, held_out = set(ids[fold.train]), set(ids[fold.test]) | set(ids[fold.val])
    used = np.concatenate(record["batches"])
    assert len(record["batches"]) == 2 * (len(fold.train) // 16)
    assert set(used) <= train and not set(used) & held_out
    np.testing.assert_array_equal(np.sort(record["fit"]), np.sort(ids[fold.train]))
  # Evaluation covers every example of the experiment exactly once.
  tested = np.concatenate([ids[f.test] for f in folds])
  np.testing.assert_array_equal(np.sort(tested), np.sort(ids))


def test_throttled_checkpoints_resume_to_the_same_result(finished_run, tmp_path, monkeypatch):
  """Epoch saves at most every interval (a clock that ticks one second a reading, 1.5 s apart):
  a run killed inside fold 1 resumes from its last save, and ends as the run that saved every
  epoch did; a run that never reaches the interval keeps only the best and the last epoch."""
  _, reference = finished_run
  throttled = checkpointing.Throttled

  def ticking(ckpt, interval):
    clock = iter(range(10**6))
    return throttled(ckpt, interval, clock=lambda: float(next(clock)))

  monkeypatch.setattr(checkpointing, "Throttled", ticking)
  config = tiny_config(**{"checkpoint.min_interval_secs": 1.5, "train.epochs": 3})
  fit_epoch, calls = fold_lib._fit_epoch, []

  def killed_in_fold_1(config, setup, *args, **kwargs):
    calls.append(setup.fold.index)
    if calls.count(1) == 3:
      raise KeyboardInterrupt("killed")
    return fit_epoch(config, setup, *args, **kwargs)

  monkeypatch.setattr(fold_lib, "_fit_epoch", killed_in_fold_1)
  with pytest.raises(KeyboardInterrupt):
    experiment.train_and_evaluate(config, tmp_path, log=QUIET)
  monkeypatch.setattr(fold_lib, "_fit_epoch", fit_epoch)
  # Fold 1's clock read 0 at its start and 1 after epoch 1 (not due: held if the best); after
  # epoch 2 it read 2, so epoch 2 was written (with a held epoch 1 before it).
  saved = checkpointing.FoldCheckpoints(tmp_path / "fold_1" / "checkpoints").epochs()
  assert saved[-1] == 2
  logs = []
  resumed = experiment.train_and_evaluate(config, tmp_path, log=logs.append)
  assert any("fold 0: finished earlier" in line for line in logs)
  assert any("resumed from epoch 2" in line for line in logs)
  assert_same_metrics(reference, resumed)

  never = tmp_path / "never"
  lazy = experiment.train_and_evaluate(
      tiny_config(**{"checkpoint.min_interval_secs": 1e9, "train.epochs": 3}), never, log=QUIET)
  assert_same_metrics(reference, lazy)
  for k, fold in enumerate(lazy["folds"]):
    kept = checkpointing.FoldCheckpoints(never / f"fold_{k}" / "checkpoints").epochs()
    assert kept == sorted({fold["best_epoch"], fold["epochs_run"]})


def test_folds_share_one_train_step(finished_run, tmp_path, monkeypatch):
  """The folds of a run trace their train step once (their program keys are equal); a run that
  builds it for each fold ends the same."""
  _, reference = finished_run
  built, make = [], step_lib.make_train_step
  monkeypatch.setattr(step_lib, "make_train_step", lambda *a, **k: built.append(1) or make(*a, **k))
  shared = experiment.train_and_evaluate(tiny_config(), tmp_path / "shared", log=QUIET)
  assert len(built) == 1
  monkeypatch.setattr(step_lib.Programs, "get", lambda self, key, build: build())
  apart = experiment.train_and_evaluate(tiny_config(), tmp_path / "apart", log=QUIET)
  assert len(built) == 3
  assert_same_metrics(reference, shared)
  assert_same_metrics(reference, apart)
