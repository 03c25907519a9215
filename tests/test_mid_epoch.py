"""Checkpoints inside an epoch (train.checkpoint_every_steps): a run killed between two of them
resumes at the step it reached and ends exactly as an uninterrupted run; the fitting loop's
transfer guard turns hidden host <-> device copies into errors."""

from __future__ import annotations

import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jimb import experiment
from jimb import mesh as mesh_lib
from jimb.fitting import loop
from tests.helpers import assert_same_metrics, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUIET = lambda s: None
# Batches of 8 give ~45 steps an epoch, so a kill right after a mid-epoch checkpoint lands
# inside that epoch; 2 epochs, 2 folds.
OVERRIDES = {"train.batch_size": 8, "train.epochs": 2, "train.checkpoint_every_steps": 5}
FLAGS = [f"--config.{k}={v}" for k, v in OVERRIDES.items()] + ["--config.split.folds=2"]


def _kill_inside_an_epoch(workdir: pathlib.Path) -> None:
  """Runs main.py and SIGKILLs it as soon as fold 0 has a mid-epoch checkpoint."""
  proc = subprocess.Popen([sys.executable, "main.py", "--config=configs/default.py:tiny",
                           f"--workdir={workdir}", *FLAGS], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  mid = workdir / "fold_0" / "checkpoints_mid"
  deadline = time.time() + 240
  while proc.poll() is None and time.time() < deadline and not (
      mid.exists() and any(p.name.isdigit() for p in mid.iterdir())):
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def test_sigkill_inside_an_epoch_resumes_there_and_ends_as_uninterrupted(tmp_path):
  config = tiny_config(**OVERRIDES)
  reference = experiment.train_and_evaluate(config, tmp_path / "reference", log=QUIET)
  for attempt in range(3):   # the kill must land after a mid-epoch checkpoint, before the next
    workdir = tmp_path / f"killed_{attempt}"
    _kill_inside_an_epoch(workdir)
    logs = []
    resumed = experiment.train_and_evaluate(config, workdir, log=logs.append)
    if any("resumed inside epoch" in line for line in logs):
      break
    shutil.rmtree(workdir)
  else:
    pytest.fail("no kill landed inside an epoch in 3 tries")
  assert_same_metrics(reference, resumed)
  for k in (0, 1):
    np.testing.assert_array_equal(
        np.load(workdir / f"fold_{k}" / "test_probs.npz")["probs"],
        np.load(tmp_path / "reference" / f"fold_{k}" / "test_probs.npz")["probs"])
    assert [h["loss"] for h in resumed["folds"][k]["history"]] == [
        h["loss"] for h in reference["folds"][k]["history"]]
    assert not (workdir / f"fold_{k}" / "checkpoints_mid").exists()   # discarded when done


def test_the_fitting_loop_refuses_a_hidden_host_to_device_copy():
  mesh = mesh_lib.make_mesh()
  step = jax.jit(lambda state, batch, scale: (state + (batch["x"] * scale).sum(), {"loss": state}))
  x, y = np.ones((16, 2), np.float32), np.zeros(16, np.int32)
  index_map = np.arange(16).reshape(2, 8)
  state = mesh_lib.replicate(np.float32(0), mesh)
  on_mesh = mesh_lib.replicate(np.float32(2), mesh)
  state, losses = loop.fit_batches(step, state, x, y, index_map, mesh, (on_mesh,))
  assert float(state) == 64.0 and len(losses) == 2
  with pytest.raises(Exception, match="[Dd]isallowed host-to-device transfer"):
    loop.fit_batches(step, state, x, y, index_map, mesh, (np.float32(2),))
