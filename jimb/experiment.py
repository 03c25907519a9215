"""The k-fold experiment a config describes, resumable from its workdir.

workdir/
  config.json, data.json, fold_<k>/indices.npz   the guards of jimb.workdir
  fold_<k>/checkpoints/<epoch>  orbax checkpoints: latest and best by validation metric
  fold_<k>/checkpoints_mid/     the latest checkpoint inside an epoch (train.checkpoint_every_steps)
  fold_<k>/result.json        written when the fold is finished; a finished fold is never redone
  fold_<k>/test_probs.npz     the fold's test indices, true labels and softmax probabilities
                              (post-hoc blocks on: probs_calibrated, decision_pred)
  results.json                per-fold and mean +/- std metrics, pooled out-of-fold metrics
  tb/fold_<k>/, tb/synth/     TensorBoard event files (report.tensorboard, jimb.tracking)
"""

from __future__ import annotations

import os
import time
from typing import Callable

from etils import epath
import jax
import numpy as np

from jimb import checkpointing, files, multihost, report, tracking, workdir as workdir_lib
from jimb import mesh as mesh_lib
from jimb.data import splits
from jimb.data.dataset import Dataset
from jimb.data.folds import load_data
from jimb.fitting import step as step_lib
from jimb.render import run as render_run
from jimb.training import fold as fold_lib
from jimb.training import setup as setup_lib

Log = Callable[[str], None]


def _ckpt(config, fold_dir: epath.Path, recover: bool) -> checkpointing.FoldCheckpoints:
  """The fold's checkpoints; only training (`recover`) sets unreadable ones aside."""
  return checkpointing.FoldCheckpoints(fold_dir / "checkpoints", config.checkpoint.keep_latest,
                                       config.checkpoint.keep_best, recover=recover)


def _synth_root(config, workdir: epath.Path) -> epath.Path:
  """Where the synthesis stage caches generators and samples (shareable between runs)."""
  return files.as_path(config.synth.cache_dir) if config.synth.cache_dir else (
      workdir / "synthesis")


def train_and_evaluate(config, workdir: str | os.PathLike, log: Log = print) -> dict:
  """Runs (or resumes) every fold and writes results.json; returns the results.

  `workdir` may be local or remote (gs://...). With several processes every one runs this and
  returns the same results; process 0 writes the files.
  """
  return _run_folds(config, workdir, _train_fold, "train", "results.json", log)


def evaluate(config, workdir: str | os.PathLike, log: Log = print,
             output: str | os.PathLike = "eval_results.json") -> dict:
  """Restores each fold's best checkpoint and re-evaluates its test part, without training.

  The stage-2 keys (`stage2`, `resample.feature`) may differ from the training run's: the
  post-hoc stage then runs on the saved stage-1 checkpoints (e.g. several feature-space
  resamplers on one trained backbone). Results go to `output`, a path relative to the workdir
  (or an absolute one: a sweep's post-hoc cell keeps its results in its own folder).
  """
  return _run_folds(config, workdir, _evaluate_fold, "eval", output, log)


def _run_folds(config, workdir: str | os.PathLike, run_fold, mode: str,
               output: str | os.PathLike, log: Log) -> dict:
  """The per-fold loop both modes share: checks, `run_fold` on each fold, pooled results."""
  t0 = time.perf_counter()
  with workdir_lib.opened(config, workdir, mode) as workdir:
    resolved = workdir_lib.check_workdir_config(config, workdir, write=mode == "train",
                                                log=log)
    ds, folds, info = load_data(config, log)
    info["fingerprint"] = workdir_lib.check_data(workdir, ds)
    mesh = mesh_lib.make_mesh()
    log(f"devices: {mesh.devices.size} x {jax.devices()[0].platform}, "
        f"{jax.process_count()} process(es)")
    records, probs, post_hoc = [], [], []
    programs = step_lib.Programs()   # the folds' jitted functions, traced once per run
    for fold in folds:
      fold_dir = workdir / f"fold_{fold.index}"
      workdir_lib.check_indices(fold_dir, fold)
      record, arrays = run_fold(config, workdir, ds, fold, mesh, log, programs)
      records.append(record)
      probs.append(arrays.pop("probs"))
      post_hoc.append(arrays)
    results = report.assemble(resolved, info, folds, records, ds.y, probs, post_hoc)
    results["timings"] = {"total_s": round(time.perf_counter() - t0, 2)}
    workdir_lib.write_json(workdir / output, results)
    if mode == "eval" and multihost.is_writer():
      _write_eval_arrays(workdir / output, folds, ds.y, probs, post_hoc)
    if config.report.figures and multihost.is_writer():
      log(f"report: {render_run.write(workdir, output)}")
    multihost.barrier(f"{output} written")
  log(report.summary_table(results))
  return results


def _write_eval_arrays(output: epath.Path, folds, labels: np.ndarray, probs: list[np.ndarray],
                      post_hoc: list[dict[str, np.ndarray]]) -> None:
  """An eval run's pooled test arrays beside its results (`<stem>_probs.npz`), for its report:
  the folds' test_probs.npz stay the training run's."""
  index = np.concatenate([f.test for f in folds])
  extra = {k: np.concatenate([a[k] for a in post_hoc]) for k in post_hoc[0]}
  files.write_npz(output.with_name(f"{output.stem}_probs.npz"), index=index,
                  labels=labels[index], probs=np.concatenate(probs), **extra)


def _train_fold(config, workdir: epath.Path, ds: Dataset, fold: splits.Fold, mesh,
                log: Log, programs: step_lib.Programs) -> tuple[dict, dict[str, np.ndarray]]:
  """A finished fold's stored record and test arrays, or the fold trained (resumed) and
  recorded."""
  fold_dir = workdir / f"fold_{fold.index}"
  done = fold_dir / "result.json"
  if multihost.agree(done.exists):
    log(f"fold {fold.index}: finished earlier, loaded from {done}")
    return workdir_lib.finished_fold(fold_dir, fold)
  log(f"fold {fold.index}: train {len(fold.train)}, val {len(fold.val)}, test {len(fold.test)}")
  track = tracking.from_config(config.report, workdir / "tb")
  shown = track.log(log)   # log lines around the bars
  setup = setup_lib.setup_fold(config, ds, fold, mesh, _synth_root(config, workdir), shown,
                               track.sub("synth"), programs)
  ckpt = _ckpt(config, fold_dir, recover=True)
  try:
    record, arrays = fold_lib.train_fold(config, setup, ckpt, shown,
                                         track.sub(f"fold_{fold.index}"), ds.class_names)
  finally:
    ckpt.close()
  if multihost.is_writer():
    files.write_npz(fold_dir / "test_probs.npz", index=fold.test, labels=ds.y[fold.test],
                    **arrays)
  workdir_lib.write_json(done, record)
  log(f"fold {fold.index}: test " + report.one_line(record["test"]))
  return record, arrays


def _evaluate_fold(config, workdir: epath.Path, ds: Dataset, fold: splits.Fold, mesh,
                   log: Log, programs: step_lib.Programs) -> tuple[dict, dict[str, np.ndarray]]:
  """The fold's best checkpoint evaluated again, compared with the training run's record."""
  fold_dir = workdir / f"fold_{fold.index}"
  setup = setup_lib.setup_fold(config, ds, fold, mesh, _synth_root(config, workdir), log,
                               programs=programs)
  done = fold_dir / "result.json"
  stored = (files.read_json(done, "delete it: the fold's record is then made again by "
                            "--mode=train from its checkpoints")
            if multihost.agree(done.exists) else None)
  ckpt = _ckpt(config, fold_dir, recover=False)
  try:
    meta = fold_lib.latest_meta(ckpt, setup)
    record, arrays = fold_lib.finish_fold(config, setup, ckpt, meta, class_names=ds.class_names,
                                          log=log)
  finally:
    ckpt.close()
  if stored is not None:
    # Stage 1 reproduces the training run's exactly; a stage 2 of eval's own is reported beside.
    stage1 = lambda r: r.get("test_stage1", r["test"])
    diff = report.max_metric_diff(stage1(stored), stage1(record))
    extra = (f"; stage 2 ({config.stage2.method}) test " + report.one_line(record["test"])
             if "test_stage1" in record else "")
    log(f"fold {fold.index}: epoch {meta['best_epoch']}, test " + report.one_line(stage1(record))
        + f"  (max |diff| vs training run: {diff:.2e}){extra}")
  else:
    log(f"fold {fold.index}: unfinished run, best epoch so far {meta['best_epoch']}: "
        + report.one_line(record["test"]))
  return record, arrays
