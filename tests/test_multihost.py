"""Multi-process runs: 2 processes x 2 CPU devices give exactly the results of 1 process x 4.

Each run is main.py in child processes joined on loopback (--coordinator_address, a free port).
Two facts of XLA:CPU decide what "the same run" means here:
- a process's intra-op thread pool has max(cores, local devices) threads (NPROC overrides the
  core count), and Eigen splits a convolution's sums by it; on a 2-core machine 4 local devices
  and 2 would split differently, so every child gets NPROC=4;
- without the distributed runtime a process sums across its devices in device order, while the
  gloo collectives of every multi-process CPU run sum around a ring; the reference is therefore
  one process joined through the runtime (--num_processes=1), which uses gloo too.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from jimb import distributed

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config=configs/default.py:tiny"]
GAN = [*TINY, "--config.split.folds=2", "--config.split.only_folds=0",
       "--config.synth.method=lsgan", "--config.synth.lsgan.latent_dim=8",
       "--config.synth.lsgan.hidden=16", "--config.synth.lsgan.steps=4",
       "--config.synth.lsgan.batch_size=8", "--config.synth.judge_epochs=1",
       "--config.synth.judge_batch_size=32", "--config.synth.log_every=2",
       # stage 2 on JAX SMOTE-resampled features: head re-training under several processes too
       "--config.stage2.method=feature_resample", "--config.resample.feature.name=JaxSMOTE",
       "--config.stage2.epochs=2"]
CYCLEGAN = [*TINY, "--config.split.folds=2", "--config.split.only_folds=0",
            "--config.synth.method=cyclegan", "--config.synth.budget=ceil_multiple",
            "--config.synth.classes=8,9", "--config.synth.cyclegan.ngf=4",
            "--config.synth.cyclegan.ndf=4", "--config.synth.cyclegan.n_blocks=1",
            "--config.synth.cyclegan.n_layers_D=1", "--config.synth.cyclegan.batch_size=8",
            "--config.synth.cyclegan.n_epochs=1", "--config.synth.cyclegan.n_epochs_decay=0",
            "--config.synth.judge_epochs=1",
            "--config.synth.judge_batch_size=32"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  """The test session's environment (compilation cache, fast-compile flags) with `devices` CPU
  devices per process."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  return {**os.environ, "JAX_PLATFORMS": "cpu", "NPROC": "4",
          "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])}


def _start(workdir: pathlib.Path, args: list[str], processes: int) -> list[subprocess.Popen]:
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, "main.py", f"--workdir={workdir}", *args,
       f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
       f"--process_id={i}"],
      cwd=ROOT, env=_env(4 // processes), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(processes)]


Ended = list[tuple[subprocess.Popen, str, str]]


def _wait(*groups: list[subprocess.Popen]) -> list[Ended]:
  """(process, stdout, stderr) of every process of every group; none outlives the call."""
  try:
    return [[(p, *p.communicate(timeout=600)) for p in procs] for procs in groups]
  finally:
    for p in [p for procs in groups for p in procs if p.poll() is None]:
      p.kill()
      p.wait()


def _results(workdir: pathlib.Path, ended: Ended) -> tuple[dict, str]:
  """(results.json, process 0's output) of a run whose processes all exited cleanly."""
  for i, (p, _, err) in enumerate(ended):
    assert p.returncode == 0, f"process {i} of {len(ended)} failed:\n{err[-3000:]}"
  return json.loads((workdir / "results.json").read_text()), ended[0][1]


def _differences(a, b, path: str = "") -> list[str]:
  """Where two results differ in a number or in structure; timings and strings aside."""
  if isinstance(a, dict) and isinstance(b, dict):
    if a.keys() != b.keys():
      return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
    return [d for k in a if k != "timings" for d in _differences(a[k], b[k], f"{path}.{k}")]
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return [f"{path}: lengths {len(a)} and {len(b)}"]
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))
    return [] if same else [f"{path}: {a!r} != {b!r}"]
  if type(a) is not type(b) and not {type(a), type(b)} <= {int, float}:
    return [f"{path}: {type(a).__name__} and {type(b).__name__}"]
  return []


@pytest.mark.parametrize("args", [TINY, GAN, CYCLEGAN], ids=["tiny", "lsgan", "cyclegan"])
def test_two_processes_give_the_metrics_of_one(args, tmp_path):
  # Side by side: while one process of the pair compiles, the other core runs the reference.
  one, two = tmp_path / "one", tmp_path / "two"
  ended = _wait(_start(one, args, 1), _start(two, args, 2))
  (reference, _), (results, log) = _results(one, ended[0]), _results(two, ended[1])
  assert "4 x cpu, 2 process(es)" in log
  assert _differences(reference, results) == []
  written = {p.name for p in two.rglob("*")}
  assert {"config.json", "results.json", "result.json", "test_probs.npz"} <= written
  if args is TINY:
    # A rerun agrees that every fold is finished and loads what process 0 wrote.
    rerun, log = _results(two, _wait(_start(two, args, 2))[0])
    assert log.count("finished earlier") == 3
    assert _differences(results, rerun) == []
  else:
    assert {"samples.npz", "report.json", "losses.json", "grid.png"} <= written


@pytest.mark.parametrize("kwargs, message", [
    (dict(process_id=0), "needs --coordinator_address, --num_processes as well"),
    (dict(coordinator_address="h:1", num_processes=2), "needs --process_id as well"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), "out of range"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), "at least 1"),
    (dict(coordinator_address="h", num_processes=2, process_id=0), "must be host:port"),
])
def test_inconsistent_settings_are_named(kwargs, message):
  settings = dict(coordinator_address=None, num_processes=None, process_id=None, auto=False)
  with pytest.raises(ValueError, match=message):
    distributed.check_settings(**{**settings, **kwargs})


def test_auto_detection_fills_in_what_is_not_given():
  distributed.check_settings(None, None, None, auto=True)
  distributed.check_settings("h:1", None, None, auto=True)


def test_slurm_steps_of_one_job_get_their_own_ports():
  ports = {distributed.slurm_step_port({"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": str(step)})
           for step in range(4)}
  assert len(ports) == 4 and all(61440 <= p <= 65535 for p in ports)
  assert distributed.slurm_step_port({}) is None


def test_a_port_another_coordinator_holds_is_refused():
  with socket.create_server(("", 0)) as held:
    port = held.getsockname()[1]
    with pytest.raises(RuntimeError, match="different incarnation"):
      distributed.check_port_free(port)
  distributed.check_port_free(port)
