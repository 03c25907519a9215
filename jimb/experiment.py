"""The k-fold experiment a config describes, resumable from its workdir.

workdir/
  .lock                       held by the run using the workdir (lock.py)
  config.json                 the resolved config (a rerun with another config is refused)
  data.json                   the data's fingerprint (a rerun on other data is refused)
  fold_<k>/indices.npz        the fold's train / val / test indices (another split is refused)
  fold_<k>/checkpoints/<epoch>  orbax checkpoints: latest and best by validation metric
  fold_<k>/result.json        written when the fold is finished; a finished fold is never redone
  fold_<k>/test_probs.npz     the fold's test indices and softmax probabilities
  results.json                per-fold and mean +/- std metrics, pooled out-of-fold metrics
Every file is written atomically; a damaged one is named with what to do about it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Callable

from etils import epath
import jax
import numpy as np

from jimb import checkpointing, files, lock, metrics, multihost, report
from jimb import config as config_lib
from jimb.data import fingerprint as fingerprint_lib
from jimb.data import dataset, duplicates, imbalance, scenarios, sources, splits
from jimb.data.dataset import Dataset
from jimb.training import fold as fold_lib
from jimb.training import mesh as mesh_lib

Log = Callable[[str], None]
# Keys that choose what to run or show, not what a fold computes: they may change on resume.
_FREE_KEYS = ("split.only_folds", "train.log_every_epochs", "synth.cache_dir", "synth.log_every",
              "synth.min_real_rows", "data.duplicates")
_FREE_BLOCKS = ("sweep.",)   # how a sweep tabulates its cells
# Blocks whose other keys matter only when their `method` is not "none".
_UNUSED_WHEN_OFF = ("synth.",)
# Post-hoc stages on the saved stage-1 checkpoints: eval mode may apply others than training did.
_POST_HOC = ("stage2.", "resample.feature.", "resample.small_classes", "report.")


def load_data(config, log: Log = print) -> tuple[Dataset, list[splits.Fold], dict]:
  """Source -> imbalance profile -> class-size check -> folds, with the counts at each stage.

  With split.mode=holdout the profile thins the training split only and the source's test split
  is the single fold's test part, as the long-tailed benchmarks prescribe; a fixed validation
  split (data.val_split), when set, is its validation part, untouched as well.
  """
  if config.train.select_metric not in metrics.METRIC_NAMES:
    raise ValueError(f"unknown --config.train.select_metric={config.train.select_metric!r}; "
                     f"choose one of {metrics.METRIC_NAMES}")
  if config.data.val_split and config.split.mode != "holdout":
    raise ValueError(f"--config.data.val_split={config.data.val_split!r} is the validation part "
                     "of --config.split.mode=holdout; k-fold carves validation from each training "
                     "part (split.val_fraction): unset data.val_split, or use holdout")
  source = sources.load_source(config.data)
  per_fold = config.imbalance.profile in scenarios.SCENARIOS   # seed 001: thin each fold's training part
  ds = source if per_fold else imbalance.make_imbalanced(source, config.imbalance, seed=config.seed)
  counts = ds.class_counts()   # what training and validation draw from
  if per_fold and config.split.mode != "kfold":
    raise ValueError(f"--config.imbalance.profile={config.imbalance.profile} thins the training "
                     "part of each fold; use --config.split.mode=kfold")
  _check_two_classes(ds)
  policy = config.data.duplicates
  if policy not in duplicates.POLICIES:
    raise ValueError(f"unknown --config.data.duplicates={policy!r}; choose one of "
                     f"{duplicates.POLICIES}")
  if config.split.mode == "holdout":
    num_train, fixed_val = len(ds.y), None
    if config.data.val_split:
      val = sources.load_test_source(config.data, "val_split")
      fixed_val = np.arange(num_train, num_train + len(val.y))
      ds = dataset.concat(ds, val)
    ds = dataset.concat(ds, sources.load_test_source(config.data))
    found = _find_duplicates(ds, config.data)
    folds = [splits.holdout_fold(ds, num_train, config.split.val_fraction, seed=config.seed,
                                 val=fixed_val)]
  elif config.split.mode == "kfold":
    ds = splits.check_class_sizes(ds, config.split.folds, config.split.small_classes,
                                  val_fraction=config.split.val_fraction, seed=config.seed)
    counts = ds.class_counts()
    found = _find_duplicates(ds, config.data)
    if policy == "group":   # duplicates share a group, so no fold splits them
      ds = duplicates.with_groups(ds, found)
    folds = splits.make_folds(ds, config.split.folds, config.split.val_fraction, seed=config.seed)
    if per_fold:
      folds = [_thinned(config, ds, fold) for fold in folds]
  else:
    raise ValueError(f"unknown --config.split.mode={config.split.mode!r}; choose kfold or holdout")
  info = {
      "name": ds.name, "num_examples": len(ds.y), "input_shape": list(ds.x.shape[1:]),
      "class_names": list(ds.class_names), **_grouping(config.data, ds),
      "source_class_counts": dict(zip(source.class_names, source.class_counts().tolist())),
      "class_counts": counts.tolist(),
      "imbalance_ratio": float(counts.max() / max(counts.min(), 1)),
      "split": config.split.mode,
  }
  grouped = (f"grouped by {info['group_by']} ({info['num_groups']} groups)" if info["grouped"]
             else "not grouped (no group ids)")
  fixed = f", fixed validation split {config.data.val_split!r}" if config.data.val_split else ""
  log(f"data: {ds.name} {tuple(ds.x.shape)}, {ds.num_classes} classes, counts "
      f"{info['class_counts']} (IR {info['imbalance_ratio']:.1f}), {len(folds)} folds, "
      f"{grouped}{fixed}")
  if found is not None:
    line = duplicates.check(found, folds, policy)   # raises for policy "error" and a leak
    if line:
      log(f"duplicates: {line}")
    info["duplicates"] = duplicates.summary(found, folds)
  return ds, _selected(folds, config.split.only_folds), info


def _find_duplicates(ds: Dataset, data_cfg) -> duplicates.Duplicates | None:
  """Exact and near duplicates of `ds` (data.duplicates, data.near_distance); None when off."""
  if data_cfg.duplicates == "off":
    return None
  return duplicates.find(ds, data_cfg.near_distance)


def _check_two_classes(ds: Dataset) -> None:
  """Refuses data with one class: every prediction would be right and every metric perfect."""
  present = np.flatnonzero(ds.class_counts())
  if len(present) == 1:
    raise ValueError(
        f"the data hold one class only, {ds.class_names[present[0]]!r} ({len(ds.y)} examples): "
        "there is nothing to classify. Check --config.data.label_key (the column, array or "
        "feature holding the labels) and the data at --config.data.path")


def _grouping(data_cfg, ds: Dataset) -> dict:
  """Whether splits keep each patient's or lesion's examples on one side, by which ids, and how
  many groups there are: for the log and results.json."""
  if ds.groups is None:
    return {"grouped": False, "group_by": "", "num_groups": 0}
  by = (f"file-name pattern {data_cfg.group_pattern!r}" if data_cfg.group_pattern
        else f"{data_cfg.group_key} of {data_cfg.group_csv}" if data_cfg.group_csv
        else data_cfg.group_key)
  return {"grouped": True, "group_by": by, "num_groups": ds.num_groups}


def _thinned(config, ds: Dataset, fold: splits.Fold) -> splits.Fold:
  """`fold` with its training and validation parts thinned to the imbalance scenario."""
  cfg = config.imbalance
  thin = lambda part: scenarios.thin(part, ds.y, ds.num_classes, cfg.profile, cfg.ratio,
                                     config.seed, fold.index, cfg.max_per_class)
  return dataclasses.replace(fold, train=thin(fold.train),
                             val=thin(fold.val) if len(fold.val) else fold.val)


def _selected(folds: list[splits.Fold], only: str) -> list[splits.Fold]:
  if not only:
    return folds
  wanted = [int(i) for i in str(only).split(",")]
  bad = [i for i in wanted if not 0 <= i < len(folds)]
  if bad:
    raise ValueError(f"--config.split.only_folds names folds {bad}; there are {len(folds)}")
  return [folds[i] for i in wanted]


def config_differences(old: dict, new: dict, post_hoc_free: bool = False) -> list[str]:
  """The keys in which two resolved configs differ in what a run computes.

  Keys that only choose what to run or show never count; synthesis options do not count while
  synthesis is off in both; with `post_hoc_free` the post-hoc stages do not count either (eval
  mode may apply others to the saved stage-1 checkpoints).
  """
  old, new = config_lib.flatten(old), config_lib.flatten(new)
  # Without synthesis its options change nothing (an arm of a comparison without a GAN).
  unused = tuple(p for p in _UNUSED_WHEN_OFF if old.get(p + "method") == new.get(p + "method")
                 == "none")
  free = lambda k: (k in _FREE_KEYS or k.startswith(_FREE_BLOCKS)
                    or (post_hoc_free and k.startswith(_POST_HOC)) or k.startswith(unused))
  return sorted(k for k in old.keys() | new.keys() if not free(k) and old.get(k) != new.get(k))


def check_workdir_config(config, workdir: epath.Path, write: bool) -> dict:
  """The resolved config, written to (write) or checked against `workdir`/config.json.

  A workdir holding another config is refused; without `write` (eval mode) the post-hoc keys
  may differ.
  """
  resolved = json.loads(config.to_json_best_effort())
  path = workdir / "config.json"
  stored = multihost.agree_bytes(lambda: path.read_bytes() if path.exists() else None)
  if stored is not None:
    try:
      old = json.loads(stored)
    except ValueError:
      raise files.CorruptFile(f"{path} is corrupt; delete it to have this config written there "
                              "(the data fingerprint and fold indices still guard the finished "
                              "folds)") from None
    diff = config_differences(old, resolved, post_hoc_free=not write)
    if diff:
      raise ValueError(
          f"{workdir} holds a run with a different config ({', '.join(diff[:10])} differ); "
          "use a new --workdir, or delete this one to start over")
  elif write:
    if multihost.is_writer():
      files.write_text(path, json.dumps(resolved, indent=2))
  else:
    raise FileNotFoundError(f"{workdir} holds no run (no config.json); train it first with --mode=train")
  return resolved


def _write_json(path: epath.Path, obj) -> None:
  if multihost.is_writer():
    files.write_text(path, json.dumps(obj, indent=1, allow_nan=True))


def _ckpt(config, fold_dir: epath.Path) -> checkpointing.FoldCheckpoints:
  return checkpointing.FoldCheckpoints(fold_dir / "checkpoints", config.checkpoint.keep_latest,
                                       config.checkpoint.keep_best)


def _synth_root(config, workdir: epath.Path) -> epath.Path:
  """Where the synthesis stage caches generators and samples (shareable between runs)."""
  return files.as_path(config.synth.cache_dir) if config.synth.cache_dir else (
      workdir / "synthesis")


@contextlib.contextmanager
def _opened(config, workdir: str | os.PathLike, mode: str):
  """The checked config's workdir, locked by process 0 for the block (lock.py)."""
  config_lib.validate(config)
  workdir = files.as_path(workdir)
  with lock.held(workdir, mode) if multihost.is_writer() else contextlib.nullcontext():
    yield workdir


def check_data(workdir: epath.Path, ds: Dataset) -> dict:
  """`ds`'s fingerprint, recorded in data.json on first sight; other data are refused."""
  new = fingerprint_lib.fingerprint(ds)
  path = workdir / "data.json"
  stored = multihost.agree_bytes(lambda: path.read_bytes() if path.exists() else None)
  if stored is None:
    if multihost.is_writer():
      files.write_text(path, json.dumps(new, indent=1))
    return new
  try:
    old = json.loads(stored)
  except ValueError:
    raise files.CorruptFile(f"{path} is corrupt; delete it to record these data (the fold "
                            "indices still guard the finished folds)") from None
  changed = fingerprint_lib.changes(old, new)
  if changed:
    raise ValueError(f"{workdir} holds a run on other data ({'; '.join(changed)}): its folds "
                     "were trained and tested on those. Restore them, or use a new --workdir")
  return new


def _check_indices(fold_dir: epath.Path, fold: splits.Fold) -> None:
  """The fold's parts, recorded in indices.npz on first sight; another split is refused."""
  path = fold_dir / "indices.npz"
  parts = {"train": fold.train, "val": fold.val, "test": fold.test}
  if not multihost.agree(path.exists):
    if multihost.is_writer():
      files.write_npz(path, **parts)
    return
  stored = files.read_npz(path, "delete it to record this fold's split again")
  changed = [k for k, v in parts.items()
             if k not in stored or not np.array_equal(stored[k], v)]
  if changed:
    raise ValueError(f"fold {fold.index}'s {', '.join(changed)} part(s) differ from those in "
                     f"{path} that its checkpoints were trained on (another split: a changed "
                     "seed, library version or data); use a new --workdir")


def _finished_fold(fold_dir: epath.Path, fold: splits.Fold) -> tuple[dict, np.ndarray]:
  """A finished fold's record and test probabilities, checked against the current fold."""
  fix = (f"delete it and {fold_dir / 'result.json'}: the fold is then evaluated again from its "
         "checkpoints")
  saved = files.read_npz(fold_dir / "test_probs.npz", fix)
  if "index" not in saved or not np.array_equal(saved["index"], fold.test):
    raise ValueError(f"{fold_dir / 'test_probs.npz'} holds predictions for other examples than "
                     f"fold {fold.index}'s test part; use a new --workdir")
  record = files.read_json(fold_dir / "result.json", f"delete it: fold {fold.index} is then "
                           "evaluated again from its checkpoints")
  return record, saved["probs"]


def train_and_evaluate(config, workdir: str | os.PathLike, log: Log = print) -> dict:
  """Runs (or resumes) every fold and writes results.json; returns the results.

  `workdir` may be local or remote (gs://...). With several processes every one runs this and
  returns the same results; process 0 writes the files.
  """
  t0 = time.perf_counter()
  with _opened(config, workdir, "train") as workdir:
    resolved = check_workdir_config(config, workdir, write=True)
    ds, folds, info = load_data(config, log)
    info["fingerprint"] = check_data(workdir, ds)
    mesh = mesh_lib.make_mesh()
    log(f"devices: {mesh.devices.size} x {jax.devices()[0].platform}, "
        f"{jax.process_count()} process(es)")
    records, probs = [], []
    for fold in folds:
      fold_dir = workdir / f"fold_{fold.index}"
      _check_indices(fold_dir, fold)
      done = fold_dir / "result.json"
      if multihost.agree(done.exists):
        log(f"fold {fold.index}: finished earlier, loaded from {done}")
        record, fold_probs = _finished_fold(fold_dir, fold)
      else:
        log(f"fold {fold.index}: train {len(fold.train)}, val {len(fold.val)}, "
            f"test {len(fold.test)}")
        setup = fold_lib.setup_fold(config, ds, fold, mesh, _synth_root(config, workdir), log)
        ckpt = _ckpt(config, fold_dir)
        try:
          record, fold_probs = fold_lib.train_fold(config, setup, ckpt, log)
        finally:
          ckpt.close()
        if multihost.is_writer():
          files.write_npz(fold_dir / "test_probs.npz", index=fold.test, probs=fold_probs)
        _write_json(done, record)
        log(f"fold {fold.index}: test " + report.one_line(record["test"]))
      records.append(record)
      probs.append(fold_probs)
    results = report.assemble(resolved, info, folds, records, ds.y, probs)
    results["timings"] = {"total_s": round(time.perf_counter() - t0, 2)}
    _write_json(workdir / "results.json", results)
    multihost.barrier("results.json written")
  log(report.summary_table(results))
  return results


def evaluate(config, workdir: str | os.PathLike, log: Log = print,
             output: str | os.PathLike = "eval_results.json") -> dict:
  """Restores each fold's best checkpoint and re-evaluates its test part, without training.

  The stage-2 keys (`stage2`, `resample.feature`) may differ from the training run's: the
  post-hoc stage then runs on the saved stage-1 checkpoints (e.g. several feature-space
  resamplers on one trained backbone). Results go to `output`, a path relative to the workdir
  (or an absolute one: a sweep's post-hoc cell keeps its results in its own folder).
  """
  with _opened(config, workdir, "eval") as workdir:
    resolved = check_workdir_config(config, workdir, write=False)
    ds, folds, info = load_data(config, log)
    info["fingerprint"] = check_data(workdir, ds)
    mesh = mesh_lib.make_mesh()
    records, probs = [], []
    for fold in folds:
      fold_dir = workdir / f"fold_{fold.index}"
      _check_indices(fold_dir, fold)
      setup = fold_lib.setup_fold(config, ds, fold, mesh, _synth_root(config, workdir), log)
      done = fold_dir / "result.json"
      stored = (files.read_json(done, "delete it: the fold's record is then made again by "
                                "--mode=train from its checkpoints")
                if multihost.agree(done.exists) else None)
      ckpt = _ckpt(config, fold_dir)
      try:
        meta = fold_lib.latest_meta(ckpt, setup)
        record, fold_probs = fold_lib.finish_fold(config, setup, ckpt, meta)
      finally:
        ckpt.close()
      if stored is not None:
        diff = report.max_metric_diff(stored["test"], record["test"])
        log(f"fold {fold.index}: epoch {meta['best_epoch']}, test "
            + report.one_line(record["test"]) + f"  (max |diff| vs training run: {diff:.2e})")
      else:
        log(f"fold {fold.index}: unfinished run, best epoch so far {meta['best_epoch']}: "
            + report.one_line(record["test"]))
      records.append(record)
      probs.append(fold_probs)
    results = report.assemble(resolved, info, folds, records, ds.y, probs)
    _write_json(workdir / output, results)
    multihost.barrier(f"{output} written")
  log(report.summary_table(results))
  return results
