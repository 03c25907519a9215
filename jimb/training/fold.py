"""One fold: fit preprocessing on its training part, train with checkpoints, pick the best epoch
on its validation part, and predict its test part.

Everything derived from data (normalisation statistics, imputation, class counts for losses
and samplers) is computed here from `fold.train` alone; validation and test inputs only ever
pass through `predict`, sequentially and unaugmented.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from jimb import checkpointing, losses, metrics
from jimb.data import active
from jimb.data import augment as augment_lib
from jimb.data import pipeline, preprocess
from jimb.data import sampler as sampler_lib
from jimb.data import splits
from jimb.data.dataset import Dataset
from jimb.data.splits import Fold
from jimb.generative import synthesis as synthesis_lib
from jimb.models import build_model, pretrained
from jimb.resampling import pool as pool_lib
from jimb.resampling import samplers
from jimb.training import mesh as mesh_lib
from jimb.training import head
from jimb.training import step as step_lib
from jimb.training import transfer

STAGE2_METHODS = ("none", "crt", "tau_norm", "logit_adjust", "feature_resample")

Log = Callable[[str], None]


@dataclasses.dataclass
class FoldSetup:
  """What a fold needs to train or evaluate: arrays, statistics, model and functions."""

  fold: Fold
  num_classes: int
  x: dict[str, np.ndarray]          # "train" / "val" / "test" (/ "contrast"), host-preprocessed
  y: dict[str, np.ndarray]
  mean: jax.Array
  std: jax.Array
  pool: pool_lib.TrainingPool       # what stage 1 draws batches from (resampled or synthesised)
  sampler: sampler_lib.ClassAwareSampler
  loss: losses.Loss
  graphdef: Any
  init_state: step_lib.TrainState
  tx: Any
  key: jax.Array
  mesh: jax.sharding.Mesh
  synthesis: dict | None = None      # the synthesis stage's report (jimb.generative.synthesis)


def _parts(config, ds: Dataset, fold: Fold) -> dict[str, np.ndarray]:
  """The fold's parts; the active sampler's contrast part is carved from the training part."""
  if config.sampler.name != "active":
    return {"train": fold.train, "val": fold.val, "test": fold.test}
  fraction = config.sampler.contrast_fraction
  if not 0 < fraction < 1:
    raise ValueError(f"--config.sampler.contrast_fraction must lie in (0, 1), got {fraction}; "
                     "the active sampler needs a contrast part to measure F1 on (e.g. 0.1)")
  # Another random stream than the validation carve's (seed), so the two parts are unrelated.
  train, contrast = splits.carve(ds, fold.train, fraction, config.seed + 1, fold.index)
  return {"train": np.sort(train), "contrast": np.sort(contrast), "val": fold.val,
          "test": fold.test}


def setup_fold(config, ds: Dataset, fold: Fold, mesh: jax.sharding.Mesh,
               synth_root: str | os.PathLike | None = None, log: Log = print) -> FoldSetup:
  """Everything a fold needs, fitted on its training part; `synth_root` caches the synthesis
  stage's generators and samples (config.synth)."""
  if config.stage2.method not in STAGE2_METHODS:
    raise ValueError(f"unknown --config.stage2.method={config.stage2.method!r}; choose one of "
                     f"{STAGE2_METHODS}")
  if (config.stage2.method == "feature_resample") != bool(config.resample.feature.name):
    raise ValueError("feature-space resampling is --config.stage2.method=feature_resample with "
                     "--config.resample.feature.name=<resampler>; set both or neither")
  parts = _parts(config, ds, fold)
  pre = preprocess.fit_preprocessor(ds.x[parts["train"]], config.data, ds.is_image,
                                    ds.feature_names)
  x = {k: pre.host(ds.x[idx], ds.feature_names) for k, idx in parts.items()}
  y = {k: ds.y[idx].astype(np.int32) for k, idx in parts.items()}
  mesh_lib.check_batch_size(config.train.batch_size, mesh)
  synthesis = None
  if config.synth.method == "none":
    pool = pool_lib.training_pool(x["train"], y["train"], config.resample,
                                  config.seed * 1000 + fold.index, fold.index)
  else:
    if config.resample.image.name:
      raise ValueError("choose one balancing stage of the training part: "
                       "--config.synth.method or --config.resample.image.name")
    if synth_root is None:
      raise ValueError("the synthesis stage needs a cache directory (synth_root)")
    made = synthesis_lib.synthesise(
        config, x["train"], y["train"], ds.class_names, fold.index,
        *mesh_lib.replicate((pre.mean, pre.std), mesh), mesh, synth_root, log)
    pool = pool_lib.with_synthetic(x["train"], y["train"], made.x, made.y)
    synthesis = made.report
  sampler = sampler_lib.from_config(
      pool.labels, ds.num_classes, config.sampler, config.train.batch_size,
      seed=config.seed * 1000 + fold.index, process_index=jax.process_index(),
      process_count=jax.process_count())
  loss = losses.build_loss(config.loss, sampler.class_counts())
  key = jax.random.fold_in(jax.random.key(config.seed), fold.index)
  init_key, train_key = jax.random.split(key)
  # Complement objective training updates twice per batch; schedules count updates.
  updates_per_epoch = sampler.steps_per_epoch * (2 if loss.complement else 1)
  tx = transfer.build_optimizer(config.optim, config.transfer,
                                config.train.epochs * updates_per_epoch, updates_per_epoch)
  shape = x["train"].shape[1:]
  build = lambda k: transfer.freeze_batch_norm(
      build_model(config.model, ds.num_classes, shape, k), config.transfer)
  graphdef, state = step_lib.create_state(build, tx, init_key, mesh)
  mean, std = pre.mean, pre.std
  if config.model.pretrained:
    params, rest, mean, std = pretrained.load(config.model, graphdef, state.params, state.rest,
                                              shape, ds.num_classes)
    state = mesh_lib.replicate(state.replace(params=params, rest=rest), mesh)
  mean, std = mesh_lib.replicate((np.asarray(mean), np.asarray(std)), mesh)
  return FoldSetup(fold, ds.num_classes, x, y, mean, std, pool, sampler, loss, graphdef, state,
                   tx, train_key, mesh, synthesis)


def _batched(setup: FoldSetup, fn, state: step_lib.TrainState, part: str,
             batch_size: int) -> np.ndarray:
  """`fn` over every example of `part`, in order."""
  return step_lib.apply_batched(fn, state, setup.x[part], setup.mean, setup.std, setup.mesh, batch_size)


def predict(setup: FoldSetup, predict_fn, state: step_lib.TrainState, part: str,
            batch_size: int) -> np.ndarray:
  """Softmax probabilities for every example of `part`, in order; padding is masked away."""
  if not len(setup.y[part]):
    return np.zeros((0, setup.num_classes), np.float32)
  return _batched(setup, predict_fn, state, part, batch_size)


def _stage2(config, setup: FoldSetup, predict_fn, state: step_lib.TrainState) -> np.ndarray:
  """Test probabilities after the decoupled second stage (config.stage2) on the stage-1 state.

  Everything it fits (the re-trained classifier, the prior) comes from the training part.
  """
  s2, batch_size = config.stage2, config.train.eval_batch_size
  if s2.method == "logit_adjust":
    log_probs = np.log(np.maximum(predict(setup, predict_fn, state, "test", batch_size),
                                  np.finfo(np.float32).tiny))
    adjusted = losses.adjust_logits(log_probs, setup.sampler.class_counts(), s2.tau)
    return np.asarray(jax.nn.softmax(adjusted, axis=-1))
  seed = config.seed * 1000 + setup.fold.index
  if s2.method == "tau_norm":
    params = head.tau_normalize(state.params, s2.tau)
  else:  # crt, feature_resample: the classifier re-trained on the real training rows' features
    features = _batched(setup, step_lib.make_features(setup.graphdef, setup.mesh), state,
                        "train", batch_size)
    labels, crt = setup.y["train"], s2.method == "crt"
    if not crt:
      feature_cfg = config.resample.feature
      out = samplers.resample(
          feature_cfg.name, {k: v for k, v in feature_cfg.items() if k != "name"}, features,
          labels, seed=seed, small_classes=config.resample.small_classes,
          where=f" (features of fold {setup.fold.index})", config_key="resample.feature")
      features = features[out.source] if out.x is None else out.x
      labels = out.y
    params = head.retrain_head(
        setup.graphdef, state.params, state.rest, features, labels,
        num_classes=setup.num_classes, epochs=s2.epochs, batch_size=s2.batch_size,
        learning_rate=s2.learning_rate, sampler="class_balanced" if crt else "instance",
        reinit=crt, seed=seed, layers=s2.layers)
  return predict(setup, predict_fn, state.replace(params=params), "test", batch_size)


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
  probs = predict(setup, predict_fn, state, "contrast", config.train.eval_batch_size)
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
                 log: Log):
  """One epoch of steps: (state, mean loss). The active sampler re-sets its quotas every
  `update_every_steps` steps (or once, after the epoch)."""
  epoch, steps = meta["epoch"], setup.sampler.steps_per_epoch
  is_active = config.sampler.name == "active"
  every = (config.sampler.update_every_steps or steps) if is_active else steps
  if every < 0:
    raise ValueError(f"--config.sampler.update_every_steps must be >= 0, got {every}")
  weights = mesh_lib.replicate(setup.loss.epoch_weights(epoch), setup.mesh)
  step_losses = []
  for first in range(0, steps, every):
    count = min(every, steps - first)
    if is_active:
      index_map = setup.sampler.quota_batches(epoch, first, count, np.asarray(meta["quotas"]))
    else:
      index_map = setup.sampler.epoch_indices(epoch)
    for batch in pipeline.train_batches(setup.pool.x, setup.pool.y, setup.pool.rows[index_map]):
      state, m = train_step(state, mesh_lib.local_batch_to_global(batch, setup.mesh), setup.key,
                            setup.mean, setup.std, weights)
      step_losses.append(m["loss"])
    if is_active:
      _update_quotas(config, setup, predict_fn, state, meta, epoch, first + count, log)
  return state, float(np.mean(jax.device_get(step_losses)))


def train_fold(config, setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints,
               log: Log) -> tuple[dict, np.ndarray]:
  """Trains (or resumes) one fold: its record (test metrics included) and test probabilities.

  A checkpoint that cannot be read (the latest when resuming, the best when finishing) is set
  aside and its epochs are trained again from the checkpoint before it: training is
  deterministic, so the fold ends exactly as it would have.
  """
  tc = config.train
  channels = setup.x["train"].shape[-1]
  augment = augment_lib.make_augment(config.augment, channels) if setup.x["train"].ndim == 4 else None
  train_step = step_lib.make_train_step(setup.graphdef, setup.tx, setup.loss.fn, augment,
                                        setup.mesh, setup.loss.complement)
  predict_fn = step_lib.make_predict(setup.graphdef, setup.mesh)
  abstract = checkpointing.abstract_like(setup.init_state)
  train_time = 0.0
  while True:
    state, meta = setup.init_state, _new_meta(config, setup)
    newest = ckpt.restore_newest(abstract, log)
    if newest is not None:
      latest, state, meta = newest
      log(f"  resumed from epoch {latest} ({ckpt.directory})")
    while meta["epoch"] < tc.epochs and not meta["stopped_early"]:
      t0 = time.perf_counter()
      state = _fit_epoch(config, setup, ckpt, train_step, predict_fn, state, meta, log)
      train_time += time.perf_counter() - t0
    ckpt.wait()
    try:
      return finish_fold(config, setup, ckpt, meta, train_time)
    except checkpointing.UnreadableCheckpoint as e:
      log(f"  {e}")
      log(f"  set aside as {ckpt.set_aside(e.epoch)}; training again from the checkpoint "
          "before it")


def _fit_epoch(config, setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints, train_step,
               predict_fn, state, meta: dict, log: Log):
  """One epoch: train, validate, update `meta` (history, best epoch, early stop), checkpoint."""
  tc = config.train
  has_val = len(setup.y["val"]) > 0
  t0 = time.perf_counter()
  epoch = meta["epoch"]
  state, loss = _train_epoch(config, setup, train_step, predict_fn, state, meta, log)
  if not math.isfinite(loss):
    raise FloatingPointError(
        f"fold {setup.fold.index} epoch {epoch + 1}: training loss is {loss}. Lower "
        "--config.optim.learning_rate or set --config.optim.grad_clip=1.0; checkpoints up to "
        f"epoch {epoch} are kept in {ckpt.directory}")
  record = {"epoch": epoch + 1, "loss": loss}
  if has_val:
    val = metrics.classification_metrics(
        setup.y["val"], predict(setup, predict_fn, state, "val", tc.eval_batch_size),
        setup.num_classes)
    value = val[tc.select_metric]
    record["val"] = {m: val[m] for m in metrics.METRIC_NAMES}
  else:
    value = float(epoch + 1)  # no validation part: the last epoch is the one kept
  if meta["best_value"] is None or value > meta["best_value"]:
    meta["best_value"], meta["best_epoch"] = value, epoch + 1
  meta["history"].append(record)
  meta["epoch"] = epoch + 1
  meta["stopped_early"] = bool(tc.patience and has_val
                               and meta["epoch"] - meta["best_epoch"] >= tc.patience)
  ckpt.save(meta["epoch"], state, meta, value)
  if meta["epoch"] % tc.log_every_epochs == 0 or meta["stopped_early"] or meta["epoch"] == tc.epochs:
    val_text = f"  val {tc.select_metric} {value:.4f}" if has_val else ""
    log(f"  fold {setup.fold.index} epoch {meta['epoch']:>3}/{tc.epochs}  loss {loss:.4f}"
        f"{val_text}  best {meta['best_value']:.4f}@{meta['best_epoch']}"
        f"  {time.perf_counter() - t0:.1f}s" + ("  (early stop)" if meta["stopped_early"] else ""))
  return state


def _test_metrics(config, setup: FoldSetup, probs: np.ndarray) -> dict[str, Any]:
  """Imbalance metrics plus many/medium/few-shot accuracy by training-part class size."""
  out = metrics.classification_metrics(setup.y["test"], probs, setup.num_classes)
  out.update(metrics.shot_accuracy(out["per_class"]["recall"], setup.sampler.class_counts(),
                                   config.report.many_shot, config.report.few_shot))
  return out


def finish_fold(config, setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints,
                meta: dict[str, Any], train_time: float = 0.0) -> tuple[dict, np.ndarray]:
  """Restores the best epoch and evaluates it on the fold's test part: (record, test probs).

  With a stage 2 the record's "test" is the stage-2 result and "test_stage1" the stage-1 one.
  """
  t0 = time.perf_counter()
  if not meta["best_epoch"]:
    raise checkpointing.CheckpointError(
        f"fold {setup.fold.index} has no finished epoch in {ckpt.directory}; train it with --mode=train")
  state, _ = ckpt.restore(meta["best_epoch"], checkpointing.abstract_like(setup.init_state))
  predict_fn = step_lib.make_predict(setup.graphdef, setup.mesh)
  probs = predict(setup, predict_fn, state, "test", config.train.eval_batch_size)
  tests = {"test": _test_metrics(config, setup, probs)}
  if config.stage2.method != "none":
    probs = _stage2(config, setup, predict_fn, state)
    tests = {"test": _test_metrics(config, setup, probs), "test_stage1": tests["test"]}
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
      "history": meta["history"],
      **({"quota_history": meta["quota_history"]} if "quota_history" in meta else {}),
      **({"synthesis": setup.synthesis} if setup.synthesis is not None else {}),
      **tests,
      "timings": {"train_s": round(train_time, 2), "test_s": round(time.perf_counter() - t0, 2)},
  }, probs


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
