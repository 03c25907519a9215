"""What guards a workdir: the lock, the data fingerprint, the fold indices, checkpoint retention
and recovery, damaged files named with their fix, config ranges and one-line errors."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jimb import checkpointing, experiment, files, lock
from jimb import workdir as workdir_lib
from jimb import config as config_lib
from jimb.data import sources
from tests.helpers import assert_same_metrics, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUIET = lambda s: None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A finished tiny run (2 folds, 3 epochs) to copy and damage."""
  workdir = tmp_path_factory.mktemp("run")
  return workdir, experiment.train_and_evaluate(tiny_config(), workdir, log=QUIET)


def _copy(run, tmp_path) -> pathlib.Path:
  shutil.copytree(run[0], tmp_path / "w")
  return tmp_path / "w"


def test_a_second_process_on_a_workdir_is_refused_with_its_holder(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, pathlib; from jimb import lock\n"
       f"with lock.held(pathlib.Path({str(tmp_path)!r}), 'train'):\n"
       "  print('held', flush=True); sys.stdin.read()"],
      cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(lock.WorkdirInUse, match=rf"in use by pid {holder.pid} on host .* \(train"):
      experiment.train_and_evaluate(tiny_config(), tmp_path, log=QUIET)
  finally:
    holder.kill()       # a killed holder releases the lock
    holder.wait()
  with lock.held(tmp_path, "eval"):
    pass


def test_eval_on_an_unwritable_workdir_fails_before_any_work(run, tmp_path, monkeypatch):
  workdir = _copy(run, tmp_path)
  (workdir / ".lock").unlink()
  (workdir / ".lock").mkdir()    # unwritable even for root, unlike chmod
  monkeypatch.setattr(sources, "load_source", lambda cfg: pytest.fail("work began"))
  with pytest.raises(PermissionError, match="cannot write the lock file .*make it .* writable"):
    experiment.evaluate(tiny_config(), workdir, log=QUIET)


def test_changed_data_are_refused_naming_what_changed(run, tmp_path, monkeypatch):
  workdir = _copy(run, tmp_path)
  real = sources.load_source

  def relabelled(cfg):
    ds = real(cfg)
    y = ds.y.copy()
    y[:5] = (y[:5] + 1) % ds.num_classes
    return ds.__class__(ds.x, y, ds.class_names, ds.groups, ds.feature_names, ds.name)

  monkeypatch.setattr(sources, "load_source", relabelled)
  for run_it in (experiment.train_and_evaluate, experiment.evaluate):
    with pytest.raises(ValueError, match=r"holds a run on other data \(.*labels"):
      run_it(tiny_config(), workdir, log=QUIET)
  stored = json.loads((workdir / "data.json").read_text())
  assert stored["num_examples"] == run[1]["data"]["num_examples"]
  assert run[1]["data"]["fingerprint"] == stored


def test_finished_folds_are_checked_against_the_current_split(run, tmp_path):
  workdir = _copy(run, tmp_path)
  indices = dict(np.load(workdir / "fold_0" / "indices.npz"))
  indices["test"] = indices["test"][::-1].copy()
  indices["test"][0] += 1
  np.savez(workdir / "fold_0" / "indices.npz", **indices)
  with pytest.raises(ValueError, match=r"fold 0's test part\(s\) differ"):
    experiment.train_and_evaluate(tiny_config(), workdir, log=QUIET)


@pytest.mark.parametrize("name, message", [
    ("fold_0/result.json", r"result.json is corrupt \(JSONDecodeError.*evaluated again"),
    ("fold_0/test_probs.npz", r"test_probs.npz is not a readable npz file.*evaluated again"),
    ("config.json", r"config.json is corrupt; delete it"),
    ("data.json", r"data.json is corrupt; delete it"),
])
def test_damaged_files_are_named_with_their_fix_and_the_fix_works(run, tmp_path, name, message):
  workdir = _copy(run, tmp_path)
  (workdir / name).write_bytes(b"\0" * 64)
  with pytest.raises(files.CorruptFile, match=message) as e:
    experiment.train_and_evaluate(tiny_config(), workdir, log=QUIET)
  assert "allow_pickle" not in str(e.value)
  (workdir / name).unlink()
  if name == "fold_0/test_probs.npz":
    (workdir / "fold_0" / "result.json").unlink()
  assert_same_metrics(experiment.train_and_evaluate(tiny_config(), workdir, log=QUIET), run[1])


def _state(step):
  from jimb import mesh as mesh_lib
  from jimb.fitting.step import TrainState
  import jax.numpy as jnp
  return mesh_lib.replicate(TrainState(step=jnp.int32(step), params={"w": jnp.arange(4.0) * step},
                                       rest={}, opt_state=(jnp.zeros(2),)), mesh_lib.make_mesh())


def test_retention_keeps_latest_and_best_after_any_number_of_resumes(tmp_path):
  values = {1: 0.5, 2: 0.9, 3: 0.4, 4: 0.3, 5: 0.95, 6: 0.1}
  for epochs in ((1, 2, 3), (4,), (5,), (6,)):      # three interruptions
    ckpt = checkpointing.FoldCheckpoints(tmp_path)
    for e in epochs:
      ckpt.save(e, _state(e), {"epoch": e}, values[e])
    ckpt.wait()
    ckpt.close()
  assert checkpointing.FoldCheckpoints(tmp_path).epochs() == [5, 6]


def test_unreadable_newest_checkpoints_are_set_aside_and_replayed(tmp_path):
  ckpt = checkpointing.FoldCheckpoints(tmp_path, keep_latest=3)
  for e in (1, 2, 3):
    ckpt.save(e, _state(e), {"epoch": e}, 0.1 * e)
  ckpt.wait()
  for f in (tmp_path / "3").rglob("*"):
    if f.is_file():
      f.write_bytes(b"\0")
  lines = []
  epoch, state, meta = ckpt.restore_newest(checkpointing.abstract_like(_state(0)), lines.append)
  assert (epoch, meta, int(state.step)) == (2, {"epoch": 2}, 2)
  assert lines[0].startswith("  checkpoint 3 cannot be read: moved checkpoint(s) [3] aside")
  assert lines[0].endswith("training again from epoch 2")
  assert ckpt.epochs() == [1, 2] and (tmp_path / "set_aside_3").is_dir()
  ckpt.save(3, _state(3), {"epoch": 3}, 0.3)      # the replayed epoch takes its place
  ckpt.wait()
  assert ckpt.epochs() == [1, 2, 3]
  ckpt.close()


def test_a_corrupt_best_checkpoint_is_retrained_to_the_same_result(run, tmp_path):
  workdir = _copy(run, tmp_path)
  best = run[1]["folds"][1]["best_epoch"]
  (workdir / "fold_1" / "result.json").unlink()
  (workdir / "fold_1" / "test_probs.npz").unlink()
  for f in (workdir / "fold_1" / "checkpoints" / str(best)).rglob("*"):
    if f.is_file():
      f.write_bytes(b"\0")
  before = sorted(p.name for p in (workdir / "fold_1" / "checkpoints").iterdir())
  with pytest.raises(checkpointing.CheckpointError, match="--mode=train"):
    experiment.evaluate(tiny_config(), workdir, log=QUIET)
  # Eval changes nothing in the workdir.
  assert sorted(p.name for p in (workdir / "fold_1" / "checkpoints").iterdir()) == before
  again = experiment.train_and_evaluate(tiny_config(), workdir, log=QUIET)
  assert (workdir / "fold_1" / "checkpoints" / f"set_aside_{best}").is_dir()
  assert_same_metrics(again, run[1])
  assert sorted(p.name for p in (workdir / "fold_1" / "checkpoints").iterdir()
                if p.name.isdigit()) == sorted({str(best), "3"})


@pytest.mark.parametrize("key, value, message", [
    ("train.epochs", 0, r"train.epochs=0 is out of range: it must be >= 1"),
    ("data.image_size", -2, r"data.image_size=-2 is out of range: it must be >= 0"),
    ("optim.learning_rate", 0.0, r"learning_rate=0.0 is out of range: it must be > 0"),
    ("split.val_fraction", 1.5, r"must be >= 0 and <= 0.95"),
    ("sweep.alpha", 1.5, r"sweep.alpha=1.5 is out of range: it must be > 0 and <= 1"),
    ("synth.wgan_gp.learning_rate", 0.0, r"synth.wgan_gp.learning_rate=0.0 is out of range: it "
     r"must be > 0"),
    ("synth.cyclegan.n_epochs", -1, r"synth.cyclegan.n_epochs=-1 is out of range"),
])
def test_numeric_keys_are_range_checked(key, value, message):
  config = tiny_config(**{key: value})
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_free_keys_of_every_stage_may_change_on_resume():
  resolved = lambda **o: json.loads(tiny_config(**{"synth.method": "dcgan", **o})
                                    .to_json_best_effort())
  free = {"split.only_folds": "0", "train.log_every_epochs": 5, "synth.log_every": 7,
          "synth.checkpoint_every": 9, "synth.cache_dir": "/elsewhere", "synth.min_real_rows": 3}
  assert set(free) <= set(config_lib.FREE_KEYS)
  assert workdir_lib.config_differences(resolved(), resolved(**free)) == []
  assert workdir_lib.config_differences(resolved(), resolved(**{"synth.dcgan.steps": 7})) == [
      "synth.dcgan.steps"]


def test_a_workdir_from_before_a_key_existed_resumes_while_the_key_keeps_its_default():
  resolved = json.loads(tiny_config().to_json_best_effort())
  older = json.loads(json.dumps(resolved))
  del older["calibration"], older["report"]["figures"]      # keys a later version added
  assert workdir_lib.config_differences(older, resolved) == []
  moved = json.loads(tiny_config(**{"calibration.temperature": True}).to_json_best_effort())
  assert workdir_lib.config_differences(older, moved) == ["calibration.temperature"]


def test_every_shipped_config_passes_the_range_checks():
  import importlib
  for name, arg in (("default", None), ("tabular", None), ("study_001", "full"), ("tlc", None),
                    ("gan_004", "full"), ("cyclegan_000", "full"), ("cifar_lt", None),
                    ("transfer", None)):
    config_lib.validate(importlib.import_module(f"configs.{name}").get_config(arg))


def test_main_prints_input_errors_as_one_line_with_exit_2(tmp_path):
  run_main = lambda *flags: subprocess.run(
      [sys.executable, "main.py", "--config=configs/default.py:tiny", f"--workdir={tmp_path}",
       *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)
  proc = run_main("--config.train.epochs=0")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: --config.train.epochs=0 is out of range: it must be >= 1")
  assert "Traceback" not in proc.stderr
  proc = run_main("--config.train.epochs=0", "--verbosity=0")
  assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_an_errors_advice_can_be_followed_in_the_same_workdir(tmp_path):
  """A run that stopped on its input before training leaves only guards behind: the same
  command with the fix the message gives runs there (a workdir with work would be refused)."""
  with pytest.raises(ValueError, match=r"cannot reach all 400 test folds; set --config.split"):
    experiment.train_and_evaluate(tiny_config(**{"split.folds": 400}), tmp_path, log=QUIET)
  assert (tmp_path / "config.json").exists()
  lines = []
  results = experiment.train_and_evaluate(tiny_config(), tmp_path, log=lines.append)
  assert any("held no trained epoch for its earlier config (split.folds differs)" in line
             for line in lines)
  assert len(results["folds"]) == 2
  with pytest.raises(ValueError, match=r"holds a run with a different config \(split.folds"):
    experiment.train_and_evaluate(tiny_config(**{"split.folds": 3}), tmp_path, log=QUIET)


def test_diverged_training_is_flagged_in_the_log_and_the_record(tmp_path):
  lines = []
  results = experiment.train_and_evaluate(
      tiny_config(**{"optim.learning_rate": 1e6, "train.epochs": 2}), tmp_path, log=lines.append)
  assert any("WARNING: training diverged" in line for line in lines)
  assert all(f.get("diverged_at_epoch") for f in results["folds"])
