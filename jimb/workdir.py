"""What guards a run's workdir: one process at a time, the same config, the same data, the same
split, and finished folds that describe these data.

workdir/
  .lock                       held by the run using the workdir (jimb.lock)
  config.json                 the resolved config (a rerun with another config is refused)
  data.json                   the data's fingerprint (a rerun on other data is refused)
  fold_<k>/indices.npz        the fold's train / val / test indices (another split is refused)
  fold_<k>/result.json        a finished fold's record; fold_<k>/test_probs.npz its predictions
Every file is written atomically by process 0; a damaged one is named with what to do about it.
"""

from __future__ import annotations

import contextlib
import json
import os

from etils import epath
import numpy as np

from jimb import config as config_lib
from jimb import files, lock, multihost
from jimb.data import fingerprint as fingerprint_lib
from jimb.data.dataset import Dataset
from jimb.data.splits import Fold

_FREE_BLOCKS = ("sweep.",)   # how a sweep tabulates its cells
# Blocks whose other keys matter only when their `method` is not "none".
_UNUSED_WHEN_OFF = ("synth.",)
# Post-hoc stages on the saved stage-1 checkpoints: eval mode may apply others than training did.
POST_HOC = ("stage2.", "resample.feature.", "resample.small_classes", "report.", "calibration.",
            "decision.")


def config_differences(old: dict, new: dict, post_hoc_free: bool = False) -> list[str]:
  """The keys in which two resolved configs differ in what a run computes.

  Keys that only choose what to run or show never count; synthesis options do not count while
  synthesis is off in both; with `post_hoc_free` the post-hoc stages do not count either (eval
  mode may apply others to the saved stage-1 checkpoints). A key that `old` lacks (a workdir
  written before the key existed) counts only when `new` moves it off its default: every new
  key's default keeps what runs computed before it.
  """
  old, new = config_lib.flatten(old), config_lib.flatten(new)
  defaults = config_lib.flatten(json.loads(config_lib.base_config().to_json_best_effort()))
  old.update({k: defaults[k] for k in new.keys() - old.keys() if k in defaults})
  # Without synthesis its options change nothing (an arm of a comparison without a GAN).
  unused = tuple(p for p in _UNUSED_WHEN_OFF if old.get(p + "method") == new.get(p + "method")
                 == "none")
  free = lambda k: (k in config_lib.FREE_KEYS or k.startswith(_FREE_BLOCKS)
                    or (post_hoc_free and k.startswith(POST_HOC)) or k.startswith(unused))
  return sorted(k for k in old.keys() | new.keys() if not free(k) and old.get(k) != new.get(k))


def check_workdir_config(config, workdir: epath.Path, write: bool, log=print) -> dict:
  """The resolved config, written to (write) or checked against `workdir`/config.json.

  A workdir holding work (a trained epoch, a finished fold, synthesised samples) for another
  config is refused; one that holds none (a run that stopped on its input, before training)
  takes the new config, so that following an error's advice in the same workdir works. Without
  `write` (eval mode) the post-hoc keys may differ.
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
    keys = f"{', '.join(diff[:10])} {'differs' if len(diff) == 1 else 'differ'}"
    if diff and not write:
      raise ValueError(
          f"{workdir} holds a run with a different config ({keys}); eval may change only the "
          f"post-hoc keys ({', '.join(k + '*' for k in POST_HOC)}): pass the training run's "
          "config, or train this one in a new --workdir")
    if diff and multihost.agree(lambda: holds_work(workdir)):
      raise ValueError(f"{workdir} holds a run with a different config ({keys}); use a new "
                       "--workdir, or delete this one to start over")
    if diff:
      log(f"{workdir} held no trained epoch for its earlier config ({keys}): starting afresh")
      if multihost.is_writer():
        for stale in [workdir / "data.json", *workdir.glob("fold_*/indices.npz")]:
          stale.unlink(missing_ok=True)
        files.write_text(path, json.dumps(resolved, indent=2))
  elif write:
    if multihost.is_writer():
      files.write_text(path, json.dumps(resolved, indent=2))
  else:
    raise FileNotFoundError(f"{workdir} holds no run (no config.json); train it first with --mode=train")
  return resolved


def holds_work(workdir: epath.Path) -> bool:
  """Whether `workdir` holds anything trained: a checkpoint, a finished fold, results, or
  synthesis outputs."""
  return any(True for pattern in ("fold_*/checkpoints*/*", "fold_*/result.json", "results.json",
                                  "synthesis/*")
             for _ in workdir.glob(pattern))


def write_json(path: epath.Path, obj) -> None:
  if multihost.is_writer():
    files.write_text(path, json.dumps(obj, indent=1, allow_nan=True))


@contextlib.contextmanager
def opened(config, workdir: str | os.PathLike, mode: str):
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


def check_indices(fold_dir: epath.Path, fold: Fold) -> None:
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


# What a fold stores for its test part beside the indices (experiment, training.fold).
TEST_ARRAYS = ("probs", "probs_calibrated", "decision_pred")


def finished_fold(fold_dir: epath.Path, fold: Fold) -> tuple[dict, dict[str, np.ndarray]]:
  """A finished fold's record and test arrays (TEST_ARRAYS it holds), checked against the
  current fold."""
  fix = (f"delete it and {fold_dir / 'result.json'}: the fold is then evaluated again from its "
         "checkpoints")
  saved = files.read_npz(fold_dir / "test_probs.npz", fix)
  if "index" not in saved or not np.array_equal(saved["index"], fold.test):
    raise ValueError(f"{fold_dir / 'test_probs.npz'} holds predictions for other examples than "
                     f"fold {fold.index}'s test part; use a new --workdir")
  record = files.read_json(fold_dir / "result.json", f"delete it: fold {fold.index} is then "
                           "evaluated again from its checkpoints")
  return record, {k: saved[k] for k in TEST_ARRAYS if k in saved}
