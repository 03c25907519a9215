"""Progress bars and TensorBoard event files (jimb.tracking): the events read back hold what
the fold's result records, a resumed run replaces the steps it trains again, bars are drawn
only when asked or at a terminal, logs without bars are unchanged, and TensorFlow stays out."""

from __future__ import annotations

import io
import json
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jimb import checkpointing, experiment, tracking
from jimb.generative import loop as gen_loop
from jimb.sweep import executors
from tests.helpers import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUIET = lambda s: None


def _records(path: pathlib.Path):
  """The payloads of a TFRecord file: length (u64), its CRC, data, the data's CRC."""
  data = path.read_bytes()
  at = 0
  while at < len(data):
    (length,) = struct.unpack("<Q", data[at:at + 8])
    yield data[at + 12:at + 12 + length]
    at += 12 + length + 4


def read_scalars(directory: pathlib.Path, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} of a folder's event files in TensorBoard's order (file names sort
  by opening time); `purge` drops, as TensorBoard does, the scalars an event file opened with
  `purge_step` N replaces (those stored before it at steps >= N)."""
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(directory.glob("events.out.tfevents.*")):
    for payload in _records(path):
      event = event_pb2.Event.FromString(payload)
      if purge and event.session_log.status == event_pb2.SessionLog.START:
        out = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in out.items()}
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


class _Stop(Exception):
  pass


def _stop_after(line: str):
  def log(text: str) -> None:
    if line in text:
      raise _Stop(text)
  return log


def test_events_hold_the_fold_history_and_a_resume_replaces_steps(tmp_path):
  config = tiny_config(**{"train.epochs": 3, "checkpoint.keep_latest": 3,
                          "checkpoint.min_interval_secs": 0.0, "report.progress": "off"})
  with pytest.raises(_Stop):   # stopped after fold 0's second epoch was saved and logged
    experiment.train_and_evaluate(config, tmp_path, log=_stop_after("fold 0 epoch   2/3"))
  shutil.rmtree(tmp_path / "fold_0" / "checkpoints" / "2")   # epoch 2 is trained again
  experiment.train_and_evaluate(config, tmp_path, log=QUIET)

  record = json.loads((tmp_path / "fold_0" / "result.json").read_text())
  tb = tmp_path / "tb" / "fold_0"
  raw, scalars = read_scalars(tb, purge=False), read_scalars(tb)
  losses = scalars["train/loss"]
  steps = len(losses) // 3
  assert [s for s, _ in losses] == list(range(1, 3 * steps + 1))   # each step once, in order
  assert len(raw["train/loss"]) == 4 * steps                       # epoch 2 was written twice
  for epoch, h in enumerate(record["history"], 1):
    epoch_losses = [v for s, v in losses if (epoch - 1) * steps < s <= epoch * steps]
    np.testing.assert_allclose(np.mean(epoch_losses), h["loss"], rtol=1e-5)
    for name, value in h["val"].items():
      assert (epoch * steps, pytest.approx(value, rel=1e-6)) in scalars[f"val/{name}"]
  assert [s for s, _ in scalars["val/macro_f1"]] == [steps, 2 * steps, 3 * steps]
  assert (tmp_path / "tb" / "fold_1").is_dir()


def test_progress_choices():
  tty, pipe = io.StringIO(), io.StringIO()
  tty.isatty = lambda: True
  assert tracking.progress_enabled("auto", tty) and not tracking.progress_enabled("auto", pipe)
  assert tracking.progress_enabled("on", pipe) and not tracking.progress_enabled("off", tty)
  with pytest.raises(ValueError, match="report.progress='sometimes'"):
    tracking.progress_enabled("sometimes", tty)
  assert isinstance(tracking.OFF.writer(1), tracking.NullWriter)
  assert tracking.OFF.sub("fold_0") == tracking.OFF


def test_bars_are_drawn_to_stderr_when_on(tmp_path, capsys):
  config = tiny_config(**{"train.epochs": 2, "report.progress": "on",
                          "report.tensorboard": False})
  lines = []
  experiment.train_and_evaluate(config, tmp_path, log=lines.append)
  err = capsys.readouterr().err
  assert re.search(r"fold 0: 100%\|.*\| 2/2", err), err[-2000:]
  assert "steps:" in err
  assert sum("epoch   2/2" in line for line in lines) == 2   # the log lines are all there
  assert not (tmp_path / "tb").exists()


_RUN = """
import runpy, sys
sys.argv = ["main.py", *sys.argv[1:]]
try:
  runpy.run_path("main.py", run_name="__main__")
finally:
  print("heavy modules:", sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "torch"}),
        file=sys.stderr)
"""


def _main(workdir: pathlib.Path, *flags: str) -> str:
  """main.py's stdout + stderr with its pipes (no terminal), timings blanked."""
  proc = subprocess.run(
      [sys.executable, "-c", _RUN, "--config=configs/default.py:tiny", f"--workdir={workdir}",
       "--config.split.folds=2", "--config.train.epochs=2", "--config.report.figures=False",
       *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return re.sub(r"\d+(\.\d+)?s\b", "<t>s", proc.stdout + proc.stderr)


def test_logs_without_a_terminal_are_unchanged_and_no_tensorflow(tmp_path):
  off = _main(tmp_path / "off", "--config.report.progress=off",
              "--config.report.tensorboard=False")
  auto = _main(tmp_path / "auto")
  assert auto.replace(str(tmp_path / "auto"), "W") == off.replace(str(tmp_path / "off"), "W")
  assert "heavy modules: []" in auto
  assert "epoch   2/2" in auto and "%|" not in auto
  assert read_scalars(tmp_path / "auto" / "tb" / "fold_1")["val/macro_f1"]


def test_generative_loop_writes_every_step_and_a_resume_replaces_steps(tmp_path):
  """A toy loop whose metric at step s is (s, 2s) for two members; killed after a checkpoint
  at step 4 with steps 5 and 6 written, then resumed: each step once, values as computed."""
  track = tracking.Tracking(tensorboard=str(tmp_path / "tb"))

  def step_fn(limit):
    def step(state, batch, key):
      n = state["n"] + 1.0
      if int(n) > limit:
        raise _Stop(int(n))
      return {"n": n}, {"loss": jnp.stack([n, 2.0 * n])}
    return step

  def run(limit):
    ckpt = checkpointing.FoldCheckpoints(tmp_path / "ckpt")
    try:
      return gen_loop.run(step_fn(limit), {"n": jnp.zeros((), jnp.float32)}, lambda s: None,
                          jax.random.key(0), 10, members=["class a", "b"], ckpt=ckpt,
                          checkpoint_every=4, log_every=3, lr_key="--lr", log=QUIET,
                          track=track)
    finally:
      ckpt.close()

  with pytest.raises(_Stop):
    run(limit=7)                   # steps 1-6 written, the checkpoint at 4 kept
  _, history = run(limit=100)      # resumes at step 5
  scalars = read_scalars(tmp_path / "tb")
  assert scalars["loss/class_a"] == [(s, float(s)) for s in range(1, 11)]
  assert scalars["loss/b"] == [(s, 2.0 * s) for s in range(1, 11)]
  assert len(read_scalars(tmp_path / "tb", purge=False)["loss/b"]) == 12   # 5, 6 twice
  # The history keeps window means (windows end at logs and checkpoints): the events' means.
  assert history["step"] == [3, 4, 6, 8, 9, 10]
  for first, last, means in zip([0, *history["step"]], history["step"], history["loss"]):
    assert means == [np.mean(np.arange(first + 1, last + 1)) * k for k in (1, 2)]


def test_sweep_bar_counts_jobs(monkeypatch, capsys):
  ran = []
  monkeypatch.setattr(executors.job_lib, "run_cell_job", lambda job, *a, **k: ran.append(job))
  jobs = [types.SimpleNamespace(name=f"job{i}", cells=[None]) for i in range(3)]
  failed = executors.run_inline(jobs, "unused", executors.job_lib.Settings(cpus=0), QUIET,
                                tracking.Tracking(progress=True))
  assert failed == {} and ran == jobs
  assert re.search(r"sweep: 100%\|.*\| 3/3", capsys.readouterr().err)
