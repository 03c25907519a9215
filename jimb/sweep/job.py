"""What one scheduled unit of a sweep does, in whichever process an executor runs it.

workdir/<job>/           the stage-1 experiment (a normal, resumable workdir); its results.json
                         is the result of the job's training cell
workdir/<cell>/          a post-hoc cell: config.json, and results.json from evaluating the
                         job's stage-1 checkpoints with the cell's post-hoc keys
workdir/<...>/cell.json  the cell's name, labels, overrides and stage-1 folder

A job is idempotent: finished cells are skipped and unfinished ones resume, so a retried or
requeued job continues where the killed one stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from typing import Callable, Iterator

from etils import epath

from jimb.sweep import cells as cells_lib

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Settings:
  """How each cell runs, whatever the executor."""

  cpus: int = 1                  # CPU cores a cell is pinned to (0: no pinning)
  compilation_cache: str = ""    # persistent XLA cache shared by the cells ("" = none)


def cell_dir(workdir: epath.PathLike, job: cells_lib.Job, cell: cells_lib.Cell) -> epath.Path:
  return epath.Path(workdir) / (job.name if cells_lib.trains(job, cell) else cell.name)


def finished(workdir: epath.PathLike, job: cells_lib.Job, cell: cells_lib.Cell) -> bool:
  return (cell_dir(workdir, job, cell) / "results.json").exists()


@contextlib.contextmanager
def pinned(count: int) -> Iterator[list[int]]:
  """Pins this process to `count` cores that no other pinned process on this machine holds.

  XLA:CPU sizes its thread pool by the process's CPU affinity when it starts, and its sums depend
  on the number of threads (weight gradients are split over them), so a cell pinned to the same
  number of cores gives the same numbers under every executor and on every machine, and
  concurrent cells do not oversubscribe the cores. Claims are advisory file locks, released when
  the block ends or the process dies, however it dies; the affinity is restored on exit.
  """
  before = sorted(os.sched_getaffinity(0))
  if count <= 0 or count >= len(before):
    yield before
    return
  lock_dir = epath.Path(tempfile.gettempdir()) / "jimb-cpu-claims"
  lock_dir.mkdir(parents=True, exist_ok=True)
  held = {}
  try:
    for cpu in before:
      fd = os.open(lock_dir / f"cpu{cpu}.lock", os.O_CREAT | os.O_RDWR)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        continue
      held[cpu] = fd
      if len(held) == count:
        break
    # More cells than cores (or claims by another program): share the first cores.
    cpus = sorted(held) if len(held) == count else before[:count]
    os.sched_setaffinity(0, cpus)
    yield cpus
  finally:
    os.sched_setaffinity(0, before)
    for fd in held.values():
      os.close(fd)


def write_cell_json(workdir: epath.PathLike, job: cells_lib.Job, cell: cells_lib.Cell) -> None:
  path = cell_dir(workdir, job, cell) / "cell.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"name": cell.name, "method": cell.method, "task": cell.task,
                              "overrides": cell.overrides, "stage1": job.name}, indent=1,
                             default=str))


def run_job(job: cells_lib.Job, workdir: str, settings: Settings,
            log: Log | None = None) -> list[str]:
  """In a process of its own (Ray, SLURM): `run_cell_job` pinned to `settings.cpus` cores."""
  with pinned(settings.cpus):
    return run_cell_job(job, workdir, settings, log)


def run_cell_job(job: cells_lib.Job, workdir: str, settings: Settings,
                 log: Log | None = None) -> list[str]:
  """Trains (or resumes) the job's stage 1 and evaluates its post-hoc cells; returns the names
  of the cells it finished."""
  import jax   # here, after any pinning: XLA sizes its thread pool when it starts
  from jimb import experiment
  from jimb import workdir as workdir_lib
  if settings.compilation_cache and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", settings.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  if log is None:
    log = lambda message: print(f"[{job.name}] {message}", flush=True)
  workdir = epath.Path(workdir)
  stage1 = workdir / job.name
  todo = [c for c in job.cells if not finished(workdir, job, c)]
  if not todo:
    return []
  for cell in todo:
    write_cell_json(workdir, job, cell)
  experiment.train_and_evaluate(job.stage1, stage1, log=log)
  for cell in todo:
    if not cells_lib.trains(job, cell):
      log(f"cell {cell.name}: post-hoc keys on the checkpoints of {job.name}")
      own = cell_dir(workdir, job, cell)
      workdir_lib.check_workdir_config(cell.config, own, write=True)
      experiment.evaluate(cell.config, stage1, log=log, output=own / "results.json")
  return [c.name for c in todo]
