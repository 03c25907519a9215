"""Sweeps: a config file's `sweep(arg)` cells run as ordinary experiments on an engine, then
tabulated with significance tests (`python main.py --config=configs/x.py --workdir=W --mode=sweep`).

W/<cell>/                 each cell's workdir (cells sharing a stage 1 share its training; job.py)
W/sweep.json, .csv, .md   the tables (tables.py), written again by --mode=aggregate at any time
W/slurm/                  submitit's scripts and logs (--executor=slurm)
Finished cells are skipped; a rerun of the same command runs what is missing or failed.
"""

from __future__ import annotations

import functools
import json
from typing import Callable

from etils import epath

from jimb import tracking
from jimb import workdir as workdir_lib
from jimb.sweep import cells as cells_lib
from jimb.sweep import executors
from jimb.sweep import job as job_lib
from jimb.sweep import tables

Log = Callable[[str], None]


def plan(config, config_file: str) -> list[cells_lib.Job]:
  """The sweep's jobs: cells expanded from `config_file`'s sweep(arg) over `config`."""
  return cells_lib.jobs(cells_lib.expand(config, cells_lib.load_sweep(config_file)), config)


def _check_finished(jobs: list[cells_lib.Job], workdir: epath.Path) -> None:
  """A finished cell whose stored config is not the cell's is another experiment: refuse it."""
  for job in jobs:
    for cell in job.cells:
      stored = job_lib.cell_dir(workdir, job, cell) / "config.json"
      if job_lib.finished(workdir, job, cell) and stored.exists():
        config = job.stage1 if cells_lib.trains(job, cell) else cell.config
        diff = workdir_lib.config_differences(json.loads(stored.read_text()),
                                             json.loads(config.to_json_best_effort()))
        if diff:
          raise ValueError(f"{stored.parent} holds cell {cell.name!r} with a different config "
                           f"({', '.join(diff[:10])} differ); delete that folder to run the cell "
                           "again, or give the changed cell another name")


def run_sweep(config, config_file: str, workdir: str, options: executors.Options,
              settings: job_lib.Settings, log: Log = print) -> dict | None:
  """Runs the unfinished cells on `options.executor` and writes the tables; returns them (None
  when a SLURM aggregation job will write them later)."""
  if options.executor not in executors.EXECUTORS:
    raise ValueError(f"unknown --executor={options.executor!r}; choose one of "
                     f"{executors.EXECUTORS}")
  jobs = plan(config, config_file)
  sweep = tables.settings(config)
  tables.control_method(sweep, list(dict.fromkeys(c.method for j in jobs for c in j.cells)))
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  _check_finished(jobs, root)
  pending = [j for j in jobs if not all(job_lib.finished(root, j, c) for c in j.cells)]
  num_cells = sum(len(j.cells) for j in jobs)
  log(f"sweep: {num_cells} cells in {len(jobs)} jobs ({len(jobs) - len(pending)} finished), "
      f"{len(pending)} to run on {options.executor}")
  aggregate = functools.partial(tables.write, jobs, str(root), sweep)
  failed = {}
  track = tracking.Tracking(progress=tracking.progress_enabled(config.report.progress))
  if pending and options.executor == "inline":
    failed = executors.run_inline(pending, str(root), settings, log, track)
  elif pending and options.executor == "ray":
    failed = executors.run_ray(pending, str(root), settings, options, log, track)
  elif pending:
    failed = executors.run_slurm(pending, str(root), settings, options, aggregate, log)
    if failed is None:
      return None
  summary = aggregate(log=log)
  if failed:
    raise executors.CellsFailed(f"{len(failed)} of {len(pending)} jobs failed: " + "; ".join(
        f"{name}: {error}" for name, error in failed.items()) + ". Their finished folds are kept: "
        "fix the cause and run the same command again")
  return summary


def aggregate_sweep(config, config_file: str, workdir: str, log: Log = print) -> dict:
  """Writes the tables over the cells finished so far (--mode=aggregate)."""
  jobs = plan(config, config_file)
  _check_finished(jobs, epath.Path(workdir))
  return tables.write(jobs, workdir, tables.settings(config), log=log)
