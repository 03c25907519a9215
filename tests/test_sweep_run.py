"""Sweeps end to end on every executor: inline here, Ray (2 concurrent CPU cells, a cell that
dies and resumes), SLURM through submitit (its local executor, the sbatch scripts it writes),
and main.py's flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import configs.study_001
from helpers import assert_same_metrics
from jimb import sweep
from jimb.sweep import executors
from jimb.sweep import job as job_lib

QUIET = lambda s: None
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# In this process JAX already runs, so pinning would only slow the tests: cells run unpinned here
# and pinned to 1 core in fresh processes (main.py, Ray, submitit).
HERE = job_lib.Settings(cpus=0)
FRESH = job_lib.Settings(cpus=1)
# Two cells of the tiny default run (sampler instance vs class-balanced), 2 folds, 2 epochs.
TWO_CELLS = textwrap.dedent("""
    from configs import default


    def get_config(arg=None):
      c = default.get_config("tiny")
      c.split.folds, c.train.epochs = 2, 2
      return c


    def sweep(arg=None):
      yield {"_name": "instance", "sampler.name": "instance"}
      yield {"_name": "balanced", "sampler.name": "class_balanced"}
""")


@pytest.fixture(scope="module")
def two_cells(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "two_cells.py"
  path.write_text(TWO_CELLS)
  import importlib.util
  spec = importlib.util.spec_from_file_location("two_cells", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()
  return config, str(path)


def _main(path, workdir, *flags):
  return subprocess.run(
      [sys.executable, "main.py", f"--config={path}", f"--workdir={workdir}", *flags,
       "--compilation_cache="], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
      capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def inline_reference(two_cells, tmp_path_factory):
  """The two cells through main.py's inline executor: a fresh process pinned to 1 core."""
  workdir = tmp_path_factory.mktemp("inline")
  done = _main(two_cells[1], workdir, "--mode=sweep", "--executor=inline", "--cell_cpus=1")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "| Approach | macro-F1 | AvAcc |" in done.stdout
  return workdir


def _results(workdir, name):
  return json.loads((workdir / name / "results.json").read_text())


def test_inline_study_shares_stage_1_and_prints_table_ii(tmp_path):
  config = configs.study_001.get_config("tiny")
  config.lock()
  out = sweep.run_sweep(config, "configs/study_001.py:tiny", str(tmp_path),
                        executors.Options(executor="inline"), HERE, log=QUIET)
  methods = ["baseline", "IS_SMOTE", "FS_RUS", "TS_SMOTE+RUS"]
  assert out["methods"] == methods
  # Stage 1 trained once per image-space resampler; the FS / TS cells evaluate its checkpoints.
  trained = sorted(p.parent.parent.name for p in tmp_path.glob("*/fold_0/checkpoints"))
  assert trained == ["linear_ir5_IS_SMOTE", "linear_ir5_baseline"]
  fs = _results(tmp_path, "linear_ir5_FS_RUS")
  assert fs["config"]["stage2"]["method"] == "feature_resample"
  assert all("test_stage1" in f for f in fs["folds"])
  baseline = _results(tmp_path, "linear_ir5_baseline")
  for f, b in zip(fs["folds"], baseline["folds"]):   # the same stage 1 under both
    assert f["test_stage1"]["macro_f1"] == b["test"]["macro_f1"]
  text = (tmp_path / "sweep.md").read_text()
  assert "| Approach | AvAcc | CBA | MAvG |" in text and "| TS_SMOTE+RUS |" in text
  assert out["blocks"]["balanced_accuracy"] == [["linear_ir5", 0], ["linear_ir5", 1]]
  for name in ("friedman", "nemenyi", "wilcoxon_holm"):
    assert name in json.loads((tmp_path / "sweep.json").read_text())
  assert (tmp_path / "sweep.csv").read_text().splitlines()[0].startswith("cell,method,task,status")
  # A rerun skips every finished cell and writes the same tables.
  lines = []
  again = sweep.run_sweep(config, "configs/study_001.py:tiny", str(tmp_path),
                          executors.Options(executor="inline"), HERE, log=lines.append)
  assert "(2 finished), 0 to run" in lines[0]
  assert again["ranking"] == out["ranking"]


def test_a_finished_cell_with_another_config_is_refused(two_cells, tmp_path):
  config, path = two_cells
  sweep.run_sweep(config, path, str(tmp_path), executors.Options(executor="inline"), HERE,
                  log=QUIET)
  changed = config.copy_and_resolve_references()
  changed.train.epochs = 3
  with pytest.raises(ValueError, match=r"holds cell 'instance' with a different config "
                                       r"\(train.epochs differ\)"):
    sweep.run_sweep(changed, path, str(tmp_path), executors.Options(executor="inline"),
                    HERE, log=QUIET)


def _dies_after_fold_0_once(job, workdir, settings):
  """run_job, but the first attempt of each job kills its own process once fold 0 is done."""
  import os as os_
  import signal as signal_
  from etils import epath
  from jimb.sweep import job as job_
  marker = epath.Path(workdir) / f"{job.name}.died"
  if marker.exists():
    return job_.run_job(job, workdir, settings)

  def log(message):
    print(message, flush=True)
    if message.startswith("fold 0: test"):
      marker.touch()
      os_.kill(os_.getpid(), signal_.SIGKILL)
  return job_.run_job(job, workdir, settings, log=log)


def test_ray_runs_two_cpu_cells_at_once_retries_a_dead_one_and_matches_inline(
    two_cells, inline_reference, tmp_path, monkeypatch):
  ray = pytest.importorskip("ray")
  config, path = two_cells
  # Ray pickles the task function by value when its module is registered so: the workers run
  # this test's function, which kills their process once after fold 0.
  ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
  monkeypatch.setattr(job_lib, "run_job", _dies_after_fold_0_once)
  lines = []
  out = sweep.run_sweep(config, path, str(tmp_path), executors.Options(executor="ray", retries=1),
                        FRESH, log=lines.append)
  assert any("2 job(s) on Ray (2 CPUs" in line for line in lines)
  for name in ("instance", "balanced"):
    assert (tmp_path / f"{name}.died").exists()       # each died once, then resumed
    assert_same_metrics(_results(tmp_path, name), _results(inline_reference, name))
  reference = json.loads((inline_reference / "sweep.json").read_text())
  assert out["ranking"] == reference["ranking"]


def test_ray_reports_a_failing_cell_and_finishes_the_others(two_cells, tmp_path):
  pytest.importorskip("ray")
  config, path = two_cells
  bad = config.copy_and_resolve_references()
  bad.split.only_folds = "7"       # no such fold: the cells fail with a clear message
  with pytest.raises(RuntimeError, match=r"2 of 2 jobs failed: .*only_folds names folds \[7\]"):
    sweep.run_sweep(bad, path, str(tmp_path), executors.Options(executor="ray", retries=0),
                    FRESH, log=QUIET)


def test_slurm_local_executor_runs_the_cells_as_inline_does(two_cells, inline_reference,
                                                           tmp_path):
  pytest.importorskip("submitit")
  config, path = two_cells
  out = sweep.run_sweep(config, path, str(tmp_path),
                        executors.Options(executor="slurm", slurm_cluster="local"), FRESH,
                        log=QUIET)
  assert [c["status"] for c in out["cells"]] == ["finished", "finished"]
  for name in ("instance", "balanced"):
    assert_same_metrics(_results(tmp_path, name), _results(inline_reference, name))
  assert list((tmp_path / "slurm").glob("*/*_log.out"))   # submitit's per-task logs


def _fake_slurm(bin_dir, record):
  """sbatch that records each script and answers like SLURM; srun so submitit sees a cluster."""
  bin_dir.mkdir()
  (bin_dir / "sbatch").write_text(textwrap.dedent(f"""\
      #!/bin/sh
      n=$(ls {record} | wc -l)
      cp "$1" {record}/$n.sbatch
      echo "Submitted batch job $((4242 + n))"
      """))
  (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
  for f in bin_dir.iterdir():
    f.chmod(0o755)


def test_slurm_submits_one_array_and_a_dependent_aggregation_job(two_cells, tmp_path,
                                                                 monkeypatch):
  pytest.importorskip("submitit")
  config, path = two_cells
  record = tmp_path / "submitted"
  record.mkdir()
  _fake_slurm(tmp_path / "bin", record)
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  options = executors.Options(executor="slurm", gpus=1, slurm_partition="gpu", slurm_time_min=90,
                              slurm_parallelism=1)
  assert sweep.run_sweep(config, path, str(tmp_path / "w"), options, FRESH,
                         log=QUIET) is None
  array, after = [(record / f"{i}.sbatch").read_text() for i in range(2)]
  for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --time=90",
               "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=1",
               "#SBATCH --job-name=jimb-sweep"):
    assert line in array.splitlines()
  assert "#SBATCH --dependency=afterany:4242" in after.splitlines()
  assert "#SBATCH --job-name=jimb-sweep-aggregate" in after.splitlines()
  assert "gpus-per-node" not in after
  # The dry run writes the same array script and submits nothing.
  dry = executors.Options(**{**options.__dict__, "dry_run": True})
  sweep.run_sweep(config, path, str(tmp_path / "dry"), dry, FRESH, log=QUIET)
  assert len(list(record.iterdir())) == 2
  text = (tmp_path / "dry" / "slurm" / "dry_run_array.sbatch").read_text()
  assert "#SBATCH --array=0-1%1" in text and "#SBATCH --partition=gpu" in text
  assert "afterany:<array job id>" in (tmp_path / "dry" / "slurm" /
                                       "dry_run_aggregate.sbatch").read_text()


def test_main_aggregate_and_flag_errors(two_cells, inline_reference):
  _, path = two_cells
  (inline_reference / "sweep.md").unlink()
  again = _main(path, inline_reference, "--mode=aggregate")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "| Approach | macro-F1 | AvAcc |" in (inline_reference / "sweep.md").read_text()
  bad = _main(path, inline_reference, "--mode=sweep", "--executor=inline", "--num_processes=2")
  assert bad.returncode != 0 and "start a multi-host single run with --mode=train" in bad.stderr


def test_pinned_cells_hold_distinct_cores(tmp_path):
  """Two processes claiming one core each get different cores while both live (their claims
  in a folder of their own: a sweep running on this machine holds cores too)."""
  if len(os.sched_getaffinity(0)) < 2:
    pytest.skip("needs 2 cores")
  code = ("from jimb.sweep import job; import sys\n"
          "with job.pinned(1) as cpus:\n  print(cpus, flush=True); sys.stdin.read()")
  env = {**os.environ, "TMPDIR": str(tmp_path)}
  procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
           for _ in range(2)]
  cores = [p.stdout.readline().strip() for p in procs]
  for p in procs:
    p.communicate("")
  assert cores[0] != cores[1] and all(len(json.loads(c)) == 1 for c in cores)
