"""One fold's training: the checkpointed epoch loop (resumable inside an epoch), the best epoch
picked on the validation part, and the test record (with the stage-2 method, if any).

The fold's setup (training.setup) fitted everything on its training part; validation and test
inputs only pass through `evaluate.predict`, sequentially and unaugmented.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jimb import checkpointing, metrics, tracking
from jimb import mesh as mesh_lib
from jimb.data import active
from jimb.data import augment as augment_lib
from jimb.fitting import loop
from jimb.fitting import step as step_lib
from jimb.training import evaluate, stage2
from jimb.training.setup import FoldSetup

Log = Callable[[str], None]
# A training loss this many times a guessing model's (or the first epoch's) means divergence.
_DIVERGED = 100.0


def _new_meta(config, setup: FoldSetup) -> dict[str, Any]:
  meta = {"epoch": 0, "history": [], "best_epoch": 0, "best_value": None,
          "stopped_early": False}
  if config.sampler.name == "active":   # equal quotas until the first F1 measurement
    quotas = active.quotas(np.zeros(setup.num_classes), config.train.batch_size,
                           config.sampler.floor, setup.sampler.class_counts() > 0)
    meta.update(quotas=quotas.tolist(), quota_history=[])
  return meta


def _update_quotas(config, setup: FoldSetup, predict_fn, state, meta: dict, epoch: int,
                   step: int, log: Log) -> None:
  """TLC: the contrast part's per-class F1 sets the quotas of the batches that follow."""
  probs = evaluate.predict(setup, predict_fn, state, "contrast", config.train.eval_batch_size)
  confusion = metrics.confusion_matrix(setup.y["contrast"], probs.argmax(axis=1),
                                       setup.num_classes)
  # A class absent from the contrast part (NaN F1) counts as unlearnt, F1 0.
  f1 = np.nan_to_num(np.asarray(metrics.confusion_metrics(confusion)["per_class"]["f1"]), nan=0.0)
  quotas = active.quotas(f1, config.train.batch_size, config.sampler.floor,
                         setup.sampler.class_counts() > 0)
  meta["quotas"] = quotas.tolist()
  meta["quota_history"].append({"epoch": epoch, "step": step, "f1": np.round(f1, 4).tolist(),
                                "quotas": quotas.tolist()})
  log(f"  fold {setup.fold.index} epoch {epoch + 1} step {step}: contrast F1 "
      f"{np.round(f1, 2).tolist()} -> quotas {quotas.tolist()}")


def _train_epoch(config, setup: FoldSetup, train_step, predict_fn, state, meta: dict,
                 mid: checkpointing.FoldCheckpoints | None, log: Log, bar=tracking.NullBar()):
  """One epoch of steps from the position a mid-epoch checkpoint left in `meta`: (state, every
  step's loss on the host). The active sampler re-sets its quotas every `update_every_steps`
  steps (or once, after the epoch); every `train.checkpoint_every_steps` steps `mid` records
  the position; `bar` counts the steps."""
  epoch, steps = meta["epoch"], setup.sampler.steps_per_epoch
  is_active = config.sampler.name == "active"
  every = (config.sampler.update_every_steps or steps) if is_active else steps
  partial = meta.pop("partial", {"step": 0, "losses": []})
  earlier = list(partial["losses"])           # losses of the steps before a resume
  weights = mesh_lib.replicate(setup.loss.epoch_weights(epoch), setup.mesh)
  save_every = config.train.checkpoint_every_steps
  step_losses = []
  bar.reset(total=steps)
  bar.update(partial["step"])

  def checkpoint(first: int):
    def after(i: int, state, chunk_losses: list) -> None:
      done = first + i + 1 if is_active else i + 1
      if not (mid and save_every and done % save_every == 0 and done < steps):
        return
      if is_active and done % every == 0:   # the quota update after a chunk is not saved
        return
      losses = earlier + [float(v) for v in jax.device_get(step_losses + chunk_losses)]
      mid.save(epoch * steps + done, state, {**meta, "partial": {"step": done, "losses": losses}},
               float(epoch * steps + done))
    return after

  for first in range(0, steps, every):
    count = min(every, steps - first)
    if first + count <= partial["step"]:      # a chunk finished before the resume
      continue
    if is_active:
      index_map = setup.sampler.quota_batches(epoch, first, count, np.asarray(meta["quotas"]))
      start = max(partial["step"] - first, 0)
    else:
      index_map, start = setup.sampler.epoch_indices(epoch), partial["step"]
    state, chunk = loop.fit_batches(
        train_step, state, setup.pool.x, setup.pool.y, setup.pool.rows[index_map], setup.mesh,
        (setup.key, setup.mean, setup.std, weights), start, checkpoint(first), bar,
        setup.weights)
    step_losses += chunk
    if is_active:
      _update_quotas(config, setup, predict_fn, state, meta, epoch, first + count, log)
  return state, earlier + [float(v) for v in jax.device_get(step_losses)]


def train_fold(config, setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints,
               log: Log, track: tracking.Tracking = tracking.OFF,
               class_names: Sequence[str] = ()) -> tuple[dict, dict[str, np.ndarray]]:
  """Trains (or resumes) one fold: its record (test metrics included) and test arrays
  (finish_fold).

  A checkpoint that cannot be read (the latest when resuming, the best when finishing) is set
  aside and its epochs are trained again from the checkpoint before it: training is
  deterministic, so the fold ends exactly as it would have. `track` draws the fold's bars and
  writes its event files (steps count from 1 across epochs; a resume purges the later ones).
  """
  tc = config.train
  evaluate.positive_class(config, setup, class_names)   # refuses a bad rule before training
  channels = setup.x["train"].shape[-1]
  augment = augment_lib.make_augment(config.augment, channels) if setup.x["train"].ndim == 4 else None
  train_step = setup.jitted("train", lambda: step_lib.make_train_step(
      setup.graphdef, setup.tx, setup.loss.fn, augment, setup.mesh, setup.loss.complement))
  predict_fn = setup.jitted("predict", lambda: step_lib.make_predict(setup.graphdef, setup.mesh))
  mid = (checkpointing.FoldCheckpoints(ckpt.directory.parent / "checkpoints_mid")
         if tc.checkpoint_every_steps else None)
  # Saves inside epochs resume from the epoch before them: then every epoch is saved.
  interval = 0.0 if mid is not None else config.checkpoint.min_interval_secs
  train_time = 0.0
  while True:
    state, meta = _resume(setup, ckpt, mid, _new_meta(config, setup), log)
    saver = checkpointing.Throttled(ckpt, interval)
    writer = track.writer(purge_step=meta["epoch"] * setup.sampler.steps_per_epoch + 1)
    bars = (track.bar(tc.epochs, f"fold {setup.fold.index}", meta["epoch"], "epoch"),
            track.bar(setup.sampler.steps_per_epoch, "  steps"))
    try:
      while meta["epoch"] < tc.epochs and not meta["stopped_early"]:
        t0 = time.perf_counter()
        state = _fit_epoch(config, setup, saver, mid, train_step, predict_fn, state, meta, log,
                           writer, bars)
        train_time += time.perf_counter() - t0
    finally:
      writer.close()
      for bar in reversed(bars):
        bar.close()
    ckpt.wait()
    try:
      record = finish_fold(config, setup, ckpt, meta, train_time, class_names, log)
    except checkpointing.UnreadableCheckpoint as e:
      log(f"  the best epoch's checkpoint {e.epoch} cannot be read: {ckpt.set_aside(e.epoch)}")
      continue
    if mid is not None:
      mid.discard()   # the fold is done: positions inside its epochs are of no more use
    return record


def _resume(setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints,
            mid: checkpointing.FoldCheckpoints | None, meta: dict, log: Log):
  """(state, meta) to continue from: the newest readable epoch checkpoint, or a mid-epoch one
  inside the epoch after it; the initial state and `meta` when there is none."""
  abstract = checkpointing.abstract_like(setup.init_state)
  state = setup.init_state
  newest = ckpt.restore_newest(abstract, log)
  if newest is not None:
    latest, state, meta = newest
    log(f"  resumed from epoch {latest} ({ckpt.directory})")
  inside = mid.restore_newest(abstract, log) if mid is not None else None
  if inside is not None and inside[2]["epoch"] == meta["epoch"]:
    _, state, meta = inside
    log(f"  resumed inside epoch {meta['epoch'] + 1} after step {meta['partial']['step']} "
        f"({mid.directory})")
  return state, meta


def _check_divergence(setup: FoldSetup, meta: dict, epoch: int, loss: float, log: Log) -> None:
  """Flags (once, in the log and the fold's record) a finite loss far above a model that knows
  nothing (log K for K classes): training has diverged and its metrics are not to be trusted."""
  limit = _DIVERGED * max(math.log(setup.num_classes), meta["history"][0]["loss"]
                          if meta["history"] else 0.0)
  if loss > limit and "diverged_at_epoch" not in meta:
    meta["diverged_at_epoch"] = epoch + 1
    log(f"  fold {setup.fold.index} epoch {epoch + 1}: WARNING: training diverged (loss "
        f"{loss:.3g}, a guessing model's is {math.log(setup.num_classes):.3g}); its metrics are "
        "not to be trusted. Lower --config.optim.learning_rate or set "
        "--config.optim.grad_clip=1.0, in a new --workdir")


def _fit_epoch(config, setup: FoldSetup, saver: checkpointing.Throttled,
               mid: checkpointing.FoldCheckpoints | None, train_step, predict_fn, state,
               meta: dict, log: Log, writer=tracking.NullWriter(),
               bars=(tracking.NullBar(), tracking.NullBar())):
  """One epoch: train, validate, update `meta` (history, best epoch, early stop), checkpoint,
  then log it: a line every `log_every_epochs`, and to `writer` every step's loss and the
  epoch's validation metrics (at the epoch's last step); `bars` count epochs and steps."""
  tc = config.train
  has_val = len(setup.y["val"]) > 0
  t0 = time.perf_counter()
  epoch = meta["epoch"]
  state, step_losses = _train_epoch(config, setup, train_step, predict_fn, state, meta, mid, log,
                                    bars[1])
  loss = float(np.mean(np.asarray(step_losses, np.float32)))
  if not math.isfinite(loss):
    saved = saver.ckpt.latest_epoch()
    kept = (f"checkpoints up to epoch {saved} are kept in {saver.ckpt.directory}, so change "
            "the config in a new --workdir" if saved else "no epoch was saved, so this "
            "--workdir may be used again")
    raise FloatingPointError(
        f"fold {setup.fold.index} epoch {epoch + 1}: training loss is {loss}. Lower "
        f"--config.optim.learning_rate or set --config.optim.grad_clip=1.0; {kept}")
  _check_divergence(setup, meta, epoch, loss, log)
  record = {"epoch": epoch + 1, "loss": loss}
  if has_val:
    val = metrics.classification_metrics(
        setup.y["val"], evaluate.predict(setup, predict_fn, state, "val", tc.eval_batch_size),
        setup.num_classes)
    value = val[tc.select_metric]
    record["val"] = {m: val[m] for m in metrics.METRIC_NAMES}
  else:
    value = float(epoch + 1)  # no validation part: the last epoch is the one kept
  best = meta["best_value"] is None or value > meta["best_value"]
  if best:
    meta["best_value"], meta["best_epoch"] = value, epoch + 1
  meta["history"].append(record)
  meta["epoch"] = epoch + 1
  meta["stopped_early"] = bool(tc.patience and has_val
                               and meta["epoch"] - meta["best_epoch"] >= tc.patience)
  saver.save(meta["epoch"], state, meta, value, best,
             final=meta["stopped_early"] or meta["epoch"] == tc.epochs)
  steps = setup.sampler.steps_per_epoch
  writer.series("train/loss", step_losses, epoch * steps + 1)
  writer.scalars({"train/epoch_loss": loss,
                  **{f"val/{name}": v for name, v in record.get("val", {}).items()}},
                 meta["epoch"] * steps)
  bars[0].update()
  if meta["epoch"] % tc.log_every_epochs == 0 or meta["stopped_early"] or meta["epoch"] == tc.epochs:
    val_text = f"  val {tc.select_metric} {value:.4f}" if has_val else ""
    log(f"  fold {setup.fold.index} epoch {meta['epoch']:>3}/{tc.epochs}  loss {loss:.4f}"
        f"{val_text}  best {meta['best_value']:.4f}@{meta['best_epoch']}"
        f"  {time.perf_counter() - t0:.1f}s" + ("  (early stop)" if meta["stopped_early"] else ""))
  return state


def finish_fold(config, setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints,
                meta: dict[str, Any], train_time: float = 0.0, class_names: Sequence[str] = (),
                log: Log = print) -> tuple[dict, dict[str, np.ndarray]]:
  """Restores the best epoch and evaluates it on the fold's test part: (record, test arrays).

  With a stage 2 the record's "test" is the stage-2 result and "test_stage1" the stage-1 one.
  The test arrays are `probs`, and with the post-hoc blocks on (evaluate.post_hoc, fitted on the
  validation part's probabilities of the same model) `probs_calibrated` and `decision_pred`;
  the record's "test" stays the argmax of `probs`.
  """
  t0 = time.perf_counter()
  if not meta["best_epoch"]:
    raise checkpointing.CheckpointError(
        f"fold {setup.fold.index} has no finished epoch in {ckpt.directory}; train it with --mode=train")
  state, _ = ckpt.restore(meta["best_epoch"], checkpointing.abstract_like(setup.init_state))
  predict_fn = setup.jitted("predict", lambda: step_lib.make_predict(setup.graphdef, setup.mesh))
  parts = evaluate.post_hoc_parts(config)
  probs = {p: evaluate.predict(setup, predict_fn, state, p, config.train.eval_batch_size)
           for p in parts}
  tests = {"test": evaluate.test_metrics(config, setup, probs["test"])}
  if config.stage2.method != "none":
    probs = stage2.probs(config, setup, predict_fn, state, parts)
    tests = {"test": evaluate.test_metrics(config, setup, probs["test"]),
             "test_stage1": tests["test"]}
  post_hoc, arrays = {}, {"probs": probs["test"]}
  if len(parts) > 1:
    post_hoc, extra = evaluate.post_hoc(config, setup, probs, class_names)
    arrays.update(extra)
    if "positive_class" in post_hoc.get("decision", {}) and not config.decision.positive_class:
      log(f"  fold {setup.fold.index}: decision rule {config.decision.rule} scores class "
          f"{post_hoc['decision']['positive_class']!r} (fewer training examples) against the "
          "other; --config.decision.positive_class chooses another")
  sampled = ({"quotas_per_batch": meta["quotas"]} if "quotas" in meta else
             {"train_sampled_per_epoch": np.round(setup.sampler.counts_per_epoch(), 2).tolist()})
  resampled = {}
  if config.resample.image.name or setup.synthesis is not None:
    resampled = {"train_resampled": np.bincount(setup.pool.labels,
                                                minlength=setup.num_classes).tolist(),
                 "train_synthetic": np.bincount(setup.pool.labels[setup.pool.synthetic],
                                                minlength=setup.num_classes).tolist()}
  return {
      "index": setup.fold.index,
      "sizes": {p: int(len(v)) for p, v in setup.y.items()},
      "class_counts": {**{p: np.bincount(v, minlength=setup.num_classes).tolist()
                          for p, v in setup.y.items()}, **resampled, **sampled},
      "best_epoch": meta["best_epoch"],
      "epochs_run": meta["epoch"],
      "stopped_early": meta["stopped_early"],
      **({"diverged_at_epoch": meta["diverged_at_epoch"]} if "diverged_at_epoch" in meta else {}),
      "history": meta["history"],
      **({"quota_history": meta["quota_history"]} if "quota_history" in meta else {}),
      **({"synthesis": setup.synthesis} if setup.synthesis is not None else {}),
      **tests,
      **post_hoc,
      "timings": {"train_s": round(train_time, 2), "test_s": round(time.perf_counter() - t0, 2)},
  }, arrays


def latest_meta(ckpt: checkpointing.FoldCheckpoints, setup: FoldSetup) -> dict[str, Any]:
  """The meta record of the newest checkpoint (which names the best epoch)."""
  latest = ckpt.latest_epoch()
  if latest is None:
    raise checkpointing.CheckpointError(
        f"no readable checkpoint under {ckpt.directory}: fold {setup.fold.index} was never "
        "trained, or its checkpoints were unreadable and set aside; --mode=train trains it "
        "(training is deterministic: the same result)")
  _, meta = ckpt.restore(latest, checkpointing.abstract_like(setup.init_state))
  return meta
