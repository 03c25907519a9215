"""Runs an experiment: `python main.py --config=configs/default.py --workdir=runs/default`.

Flags only; all logic is in `jimb.experiment` and `jimb.sweep`. Override any config key with
`--config.block.key=value`; pass arguments to a config with `--config=configs/x.py:arg`.
"""

import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and results go; rerun the "
                               "same command to resume.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sweep", "aggregate", "report"],
                          "train: k-fold train and evaluate (resumes); eval: re-evaluate the "
                          "saved best checkpoints without training; sweep: every cell of the "
                          "config file's sweep(arg) in its own workdir under --workdir, on "
                          "--executor, then the tables (skips finished cells); aggregate: the "
                          "tables over the cells finished so far; report: figures and "
                          "report.html from --workdir's saved results (no --config, no "
                          "training, no data).")
_EXECUTOR = flags.DEFINE_enum("executor", None, ["inline", "ray", "slurm"],
                              "sweep: where cells run. inline: one after another here; ray: on "
                              "Ray, this machine or --ray_address (default when installed); "
                              "slurm: a SLURM job array through submitit.")
_CELL_CPUS = flags.DEFINE_integer("cell_cpus", 1, "sweep: CPU cores per cell; a CPU cell is "
                                  "pinned to them under every executor, so its numbers do not "
                                  "depend on where it ran (0: no pinning).")
_CELL_GPUS = flags.DEFINE_integer("cell_gpus", -1, "sweep: GPUs per cell (-1: on Ray 1 where "
                                  "the cluster has GPUs, else 0; on SLURM 0).")
_CELL_TPUS = flags.DEFINE_integer("cell_tpus", 0, "sweep, ray: TPU chips per cell.")
_RETRIES = flags.DEFINE_integer("retries", 2, "sweep: how often a cell whose process died (or "
                                "was pre-empted) is started again; it resumes from its "
                                "checkpoints.")
_RAY_ADDRESS = flags.DEFINE_string("ray_address", "", "sweep, ray: an existing Ray cluster "
                                   "('' = start one on this machine).")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", "", "sweep, slurm: the partition.")
_SLURM_TIME = flags.DEFINE_integer("slurm_time_min", 240, "sweep, slurm: minutes per cell "
                                   "(a cell that runs out is requeued and resumes).")
_SLURM_PARALLELISM = flags.DEFINE_integer("slurm_parallelism", 16, "sweep, slurm: array tasks "
                                          "running at once.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "sweep, slurm: write and print the sbatch "
                             "scripts under <workdir>/slurm without submitting them.")
_CACHE = flags.DEFINE_string("compilation_cache", "~/.cache/jimb/xla",
                             "Persistent XLA compilation cache ('' to disable): folds, resumed "
                             "runs and eval runs reuse compiled steps instead of recompiling.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process run: process "
                                   "0's host:port, the same for every process, a port no other "
                                   "run uses (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process run: the number of "
                                      "processes (one per host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process run: this process's "
                                   "number, 0 to --num_processes - 1.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Multi-process run whose coordinator, "
                                 "process count and number JAX reads from the cluster's "
                                 "environment (SLURM, Open MPI, Cloud TPU VMs); the three flags "
                                 "above override what it detects.")
flags.mark_flags_as_required(["workdir"])


def _sweep() -> None:
  """--mode=sweep / aggregate: each cell runs as its own process (or one after another here)."""
  from jimb import sweep
  from jimb.sweep import executors, job
  if _COORDINATOR.value or _NUM_PROCESSES.value or _DISTRIBUTED.value:
    raise ValueError("a sweep starts its cells itself; start a multi-host single run with "
                     "--mode=train")
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  if _MODE.value == "aggregate":
    sweep.aggregate_sweep(_CONFIG.value, config_file, _WORKDIR.value)
    return
  options = executors.Options(
      executor=_EXECUTOR.value or executors.default_executor(), gpus=_CELL_GPUS.value,
      tpus=_CELL_TPUS.value, retries=_RETRIES.value, ray_address=_RAY_ADDRESS.value,
      slurm_partition=_SLURM_PARTITION.value, slurm_time_min=_SLURM_TIME.value,
      slurm_parallelism=_SLURM_PARALLELISM.value, dry_run=_DRY_RUN.value)
  settings = job.Settings(cpus=_CELL_CPUS.value,
                          compilation_cache=os.path.expanduser(_CACHE.value))
  sweep.run_sweep(_CONFIG.value, config_file, _WORKDIR.value, options, settings)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  verbose = flags.FLAGS["verbosity"].present
  if not verbose:
    logging.set_verbosity(logging.WARNING)  # library INFO chatter hides the progress lines
  from jimb import checkpointing, lock
  from jimb.sweep import executors
  # Errors that mean "the input or the config is wrong": their messages name the fix.
  input_errors = (ValueError, FileNotFoundError, PermissionError, FloatingPointError,
                  lock.WorkdirInUse, checkpointing.CheckpointError, executors.EngineMissing,
                  executors.CellsFailed)
  try:
    if _MODE.value == "report":
      _report()
    elif _CONFIG.value is None:
      raise ValueError(f"--mode={_MODE.value} needs --config=configs/<file>.py")
    else:
      _sweep() if _MODE.value in ("sweep", "aggregate") else _run()
  except input_errors as e:
    if verbose:
      raise
    _fail(e)


def _report() -> None:
  """--mode=report: a run's (or a sweep's) pages drawn again from what its workdir saved."""
  from jimb import files
  workdir = files.as_path(_WORKDIR.value)
  if (workdir / "sweep.json").exists():
    from jimb.sweep import page
    print(f"report: {page.write(workdir)}")
  else:
    from jimb.render import run
    print(f"report: {run.write(workdir)}")


def _fail(error: Exception) -> None:
  """A bad input or config: its message names it and the fix; the traceback adds nothing."""
  print(f"error: {error}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a bad flag or config override (a misspelt key, a value of the wrong
  type) reported as one line and exit status 2 like every other input error."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections' overrides
    if "--verbosity" in " ".join(argv):
      raise
    key = re.search(r"'([^'\\]+)", str(e))
    hint = re.search(r'Did you mean "([^"]+)"', str(e))
    what = f"no key {key.group(1)!r}" if key else str(e)
    _fail(f"a --config override names {what}"
          + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
          + "; the keys and their meaning are in jimb/config.py")


def _run() -> None:
  """--mode=train / eval: one experiment, on one process or several (multi-host)."""
  import jax  # after flag parsing, so --help is fast
  from jimb import distributed
  # Before anything touches a device.
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         auto=_DISTRIBUTED.value)
  if _CACHE.value and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE.value))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  from jimb import experiment

  def log(message: str) -> None:
    if jax.process_index() == 0:
      print(message, flush=True)

  run = {"train": experiment.train_and_evaluate, "eval": experiment.evaluate}[_MODE.value]
  run(_CONFIG.value, _WORKDIR.value, log=log)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
