"""Where a sweep's jobs run: in this process, on Ray (this machine or a cluster), or on SLURM.

The engines do the scheduling; jimb gives each job one call of `job.run_job`, which is resumable,
so an engine's retry or requeue continues a killed cell from its checkpoints.
- inline: one job after another in this process.
- ray: one Ray task per job, each in a fresh worker process (`max_calls=1`) holding `cpus` CPU
  cores and `gpus` GPUs / `tpus` TPU chips of Ray's resource accounting, retried `retries` times
  when its process dies; an embedded `ray.init()` on this machine, or an existing cluster
  (`ray_address`).
- slurm: one SLURM job array through submitit (a job per array task) and an aggregation job that
  runs after it (`afterany`); `dry_run` writes and prints the sbatch scripts without submitting.
  Jobs are submitit Checkpointables: a pre-empted or timed-out task is requeued and resumes.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import Any, Callable, Sequence

from etils import epath

from jimb import tracking
from jimb.sweep import cells as cells_lib
from jimb.sweep import job as job_lib

EXECUTORS = ("inline", "ray", "slurm")
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Options:
  """The executor flags of `main.py --mode=sweep`."""

  executor: str = "inline"
  gpus: int = -1                 # per cell; -1: 1 where the Ray cluster has GPUs, else 0
  tpus: int = 0                  # TPU chips per cell (Ray resource "TPU")
  retries: int = 2               # a dead cell's process is started again this many times
  ray_address: str = ""          # an existing Ray cluster ("" = start one on this machine)
  slurm_partition: str = ""
  slurm_time_min: int = 240
  slurm_parallelism: int = 16    # array tasks running at once
  slurm_cluster: str = "slurm"   # submitit cluster: slurm, or local (a test double)
  dry_run: bool = False          # slurm: write the sbatch scripts, submit nothing


class EngineMissing(ImportError):
  """An optional engine that is not installed; the message names the extra."""


class CellsFailed(RuntimeError):
  """Some jobs of a sweep failed; the others finished. The message lists them."""


def engine(name: str):
  """The optional engine module `name`, or an error naming the extra that installs it."""
  try:
    return importlib.import_module(name)
  except ImportError as e:
    executor = {"ray": "ray", "submitit": "slurm"}.get(name, name)
    raise EngineMissing(f"--executor={executor} needs {name}, which is not installed: pip "
                        "install -e '.[sweep]' (or choose --executor=inline)") from e


def default_executor() -> str:
  """ray where it is installed, else inline."""
  try:
    importlib.import_module("ray")
  except ImportError:
    return "inline"
  return "ray"


def run_inline(jobs: Sequence[cells_lib.Job], workdir: str, settings: job_lib.Settings,
               log: Log, track: tracking.Tracking = tracking.OFF) -> dict[str, str]:
  """Runs the jobs here, one after another, this process pinned to `settings.cpus` cores (as
  a cell in a fresh process only if JAX has not started yet); returns {job: error} of those
  that failed. `track` draws a bar of the jobs done."""
  failed = {}
  log = track.log(log)
  bar = track.bar(len(jobs), "sweep", unit="job", leave=True)
  with job_lib.pinned(settings.cpus):
    for job in jobs:
      log(f"sweep: job {job.name} ({len(job.cells)} cell(s))")
      try:
        job_lib.run_cell_job(job, workdir, settings, log=log)
      except Exception as e:  # one bad cell must not stop the others; reported at the end
        log(f"sweep: job {job.name} failed: {type(e).__name__}: {e}")
        failed[job.name] = f"{type(e).__name__}: {e}"
      bar.update()
  bar.close()
  return failed


def run_ray(jobs: Sequence[cells_lib.Job], workdir: str, settings: job_lib.Settings,
            options: Options, log: Log,
            track: tracking.Tracking = tracking.OFF) -> dict[str, str]:
  """Runs the jobs as Ray tasks and waits for them; returns {job: error} of those that failed.
  `track` draws a bar of the jobs done (the cells' own bars stay in their workers)."""
  ray = engine("ray")
  started = not ray.is_initialized()
  if started:
    ray.init(address=options.ray_address or None, include_dashboard=False,
             log_to_driver=True, configure_logging=False)
  try:
    gpus = options.gpus if options.gpus >= 0 else int(ray.cluster_resources().get("GPU", 0) > 0)
    # A cell on an accelerator is not pinned to CPU cores (its numbers come from the device).
    cell_settings = (settings if not (gpus or options.tpus) else
                     dataclasses.replace(settings, cpus=0))
    task = ray.remote(max_calls=1)(job_lib.run_job).options(
        num_cpus=max(settings.cpus, 1), num_gpus=gpus, max_retries=options.retries,
        resources={"TPU": options.tpus} if options.tpus else None)
    log(f"sweep: {len(jobs)} job(s) on Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs, "
        f"{ray.cluster_resources().get('GPU', 0):g} GPUs; per cell {max(settings.cpus, 1)} CPU, "
        f"{gpus} GPU, {options.tpus} TPU)")
    pending = {task.remote(job, workdir, cell_settings): job for job in jobs}
    failed = {}
    log = track.log(log)
    bar = track.bar(len(jobs), "sweep", unit="job", leave=True)
    while pending:
      done, _ = ray.wait(list(pending), num_returns=1)
      job = pending.pop(done[0])
      try:
        ray.get(done[0])
        log(f"sweep: job {job.name} finished ({len(pending)} to go)")
      except Exception as e:  # ray wraps the job's error; the others go on
        log(f"sweep: job {job.name} failed: {e}")
        failed[job.name] = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
      bar.update()
    bar.close()
    return failed
  finally:
    if started:
      ray.shutdown()


def slurm_parameters(settings: job_lib.Settings, options: Options, gpus: int) -> dict[str, Any]:
  """sbatch parameters of the cells' array, in submitit's SLURM names."""
  params = dict(job_name="jimb-sweep", time=options.slurm_time_min, nodes=1, ntasks_per_node=1,
                cpus_per_task=max(settings.cpus, 1), array_parallelism=options.slurm_parallelism)
  if gpus:
    params["gpus_per_node"] = gpus
  if options.slurm_partition:
    params["partition"] = options.slurm_partition
  return params


def aggregation_parameters(params: dict[str, Any], array_id: str) -> dict[str, Any]:
  """The aggregation job's: one CPU, no GPU, after every task of array `array_id` ended."""
  out = {k: v for k, v in params.items() if k not in ("gpus_per_node", "array_parallelism")}
  return {**out, "job_name": "jimb-sweep-aggregate", "cpus_per_task": 1, "time": 30,
          "dependency": f"afterany:{array_id}"}


class SlurmJob:
  """A job as submitit runs it; on pre-emption or timeout submitit requeues the same call, and
  the job resumes from its workdir."""

  def __call__(self, job: cells_lib.Job, workdir: str, settings: job_lib.Settings) -> list[str]:
    return job_lib.run_job(job, workdir, settings)

  def checkpoint(self, *args, **kwargs):
    submitit = engine("submitit")
    return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def run_slurm(jobs: Sequence[cells_lib.Job], workdir: str, settings: job_lib.Settings,
              options: Options, aggregate: Callable[[], Any], log: Log) -> dict[str, str] | None:
  """Submits the jobs as one array and `aggregate` as a job that runs after all of them
  (returns None: the tables come later). With the `local` cluster (submitit's local executor,
  for tests and single machines) it waits for the jobs instead and returns {job: error} of those
  that failed, leaving the tables to the caller."""
  submitit = engine("submitit")
  gpus = max(options.gpus, 0)
  folder = epath.Path(workdir) / "slurm"
  params = slurm_parameters(settings, options, gpus)
  if options.dry_run:
    return _dry_run(submitit, jobs, folder, params, log)
  if options.slurm_cluster == "local":
    executor = submitit.LocalExecutor(folder=str(folder / "%j"))
    executor.update_parameters(timeout_min=options.slurm_time_min, gpus_per_node=gpus)
  else:
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=options.retries)
    executor.update_parameters(**params)
  n = len(jobs)
  array = executor.map_array(SlurmJob(), list(jobs), [workdir] * n, [settings] * n)
  array_id = array[0].job_id.split("_")[0]
  log(f"sweep: submitted {n} job(s) as array {array_id} (logs in {folder})")
  if options.slurm_cluster == "local":
    failed = {}
    for job, handle in zip(jobs, array):
      try:
        handle.result()
      except Exception as e:  # submitit re-raises the job's error with its traceback
        failed[job.name] = str(e).strip().splitlines()[-1]
    return failed
  follow = submitit.SlurmExecutor(folder=str(folder / "%j"))
  follow.update_parameters(**aggregation_parameters(params, array_id))
  after = follow.submit(aggregate)
  log(f"sweep: aggregation job {after.job_id} runs after array {array_id}; then "
      f"{workdir}/sweep.md holds the tables")
  return None


def _dry_run(submitit, jobs: Sequence[cells_lib.Job], folder: epath.Path, params: dict,
             log: Log) -> None:
  """The sbatch scripts a submission would use, written to `folder` and printed."""
  from submitit.slurm import slurm as slurm_lib
  folder.mkdir(parents=True, exist_ok=True)
  command = f"{sys.executable} -u -m submitit.core._submit {folder / '%j'}"
  array = slurm_lib._make_sbatch_string(command=command, folder=str(folder / "%j"),
                                        map_count=len(jobs), **params)
  after = slurm_lib._make_sbatch_string(command=command, folder=str(folder / "%j"),
                                        **aggregation_parameters(params, "<array job id>"))
  for name, text in (("array.sbatch", array), ("aggregate.sbatch", after)):
    (folder / f"dry_run_{name}").write_text(text)
    log(f"sweep: dry run, {folder / ('dry_run_' + name)}:\n{text}")
  log(f"sweep: dry run, {len(jobs)} array task(s): " + ", ".join(j.name for j in jobs))
