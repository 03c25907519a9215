"""One fold: fit preprocessing on its training part, train with checkpoints, pick the best epoch
on its validation part, and predict its test part.

Everything derived from data (normalisation statistics, imputation, class counts for losses
and samplers) is computed here from `fold.train` alone; validation and test inputs only ever
pass through `predict`, sequentially and unaugmented.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Callable

import jax
import numpy as np

from jimb import checkpointing, losses, metrics
from jimb.data import augment as augment_lib
from jimb.data import pipeline, preprocess
from jimb.data import sampler as sampler_lib
from jimb.data.dataset import Dataset
from jimb.data.splits import Fold
from jimb.models import build_model, pretrained
from jimb.training import mesh as mesh_lib
from jimb.training import step as step_lib
from jimb.training import transfer

Log = Callable[[str], None]


@dataclasses.dataclass
class FoldSetup:
  """What a fold needs to train or evaluate: arrays, statistics, model and functions."""

  fold: Fold
  num_classes: int
  x: dict[str, np.ndarray]          # "train" / "val" / "test", host-preprocessed float32
  y: dict[str, np.ndarray]
  mean: jax.Array
  std: jax.Array
  sampler: sampler_lib.ClassAwareSampler
  graphdef: Any
  init_state: step_lib.TrainState
  tx: Any
  key: jax.Array
  mesh: jax.sharding.Mesh


def setup_fold(config, ds: Dataset, fold: Fold, mesh: jax.sharding.Mesh) -> FoldSetup:
  parts = {"train": fold.train, "val": fold.val, "test": fold.test}
  pre = preprocess.fit_preprocessor(ds.x[fold.train], config.data, ds.is_image, ds.feature_names)
  x = {k: pre.host(ds.x[idx], ds.feature_names) for k, idx in parts.items()}
  y = {k: ds.y[idx].astype(np.int32) for k, idx in parts.items()}
  mesh_lib.check_batch_size(config.train.batch_size, mesh)
  sampler = sampler_lib.from_config(
      y["train"], ds.num_classes, config.sampler, config.train.batch_size,
      seed=config.seed * 1000 + fold.index, process_index=jax.process_index(),
      process_count=jax.process_count())
  key = jax.random.fold_in(jax.random.key(config.seed), fold.index)
  init_key, train_key = jax.random.split(key)
  total = config.train.epochs * sampler.steps_per_epoch
  tx = transfer.build_optimizer(config.optim, config.transfer, total, sampler.steps_per_epoch)
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
  return FoldSetup(fold, ds.num_classes, x, y, mean, std, sampler, graphdef, state, tx,
                   train_key, mesh)


def predict(setup: FoldSetup, predict_fn, state: step_lib.TrainState, part: str,
            batch_size: int) -> np.ndarray:
  """Softmax probabilities for every example of `part`, in order; padding is masked away."""
  batch_size = pipeline.round_up(batch_size, setup.mesh.devices.size)
  out = []
  for batch in pipeline.eval_batches(setup.x[part], setup.y[part], batch_size):
    xb = mesh_lib.full_batch_to_global({"x": batch["x"]}, setup.mesh)["x"]
    probs = predict_fn(state.params, state.rest, xb, setup.mean, setup.std)
    out.append(np.asarray(jax.device_get(probs))[batch["mask"]])
  return np.concatenate(out) if out else np.zeros((0, setup.num_classes), np.float32)


def _new_meta() -> dict[str, Any]:
  return {"epoch": 0, "class_weights": None, "history": [], "best_epoch": 0,
          "best_value": None, "stopped_early": False}


def train_fold(config, setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints,
               log: Log) -> tuple[dict, np.ndarray]:
  """Trains (or resumes) one fold: its record (test metrics included) and test probabilities."""
  tc = config.train
  k = setup.num_classes
  loss_fn = losses.build_loss(config.loss, setup.sampler.class_counts())
  channels = setup.x["train"].shape[-1]
  augment = augment_lib.make_augment(config.augment, channels) if setup.x["train"].ndim == 4 else None
  train_step = step_lib.make_train_step(setup.graphdef, setup.tx, loss_fn, augment, setup.mesh)
  predict_fn = step_lib.make_predict(setup.graphdef, setup.mesh)
  abstract = checkpointing.abstract_like(setup.init_state)
  has_val = len(setup.y["val"]) > 0

  state, meta = setup.init_state, _new_meta()
  latest = ckpt.latest_epoch()
  if latest is not None:
    state, meta = ckpt.restore(latest, abstract)
    log(f"  resumed from epoch {latest} ({ckpt.directory})")

  train_time = 0.0
  while meta["epoch"] < tc.epochs and not meta["stopped_early"]:
    t0 = time.perf_counter()
    epoch = meta["epoch"]
    weights = None if meta["class_weights"] is None else np.asarray(meta["class_weights"])
    index_map = setup.sampler.epoch_indices(epoch, weights)
    step_losses = []
    for batch in pipeline.train_batches(setup.x["train"], setup.y["train"], index_map):
      state, m = train_step(state, mesh_lib.local_batch_to_global(batch, setup.mesh), setup.key,
                            setup.mean, setup.std)
      step_losses.append(m["loss"])
    loss = float(np.mean(jax.device_get(step_losses)))
    if not math.isfinite(loss):
      raise FloatingPointError(
          f"fold {setup.fold.index} epoch {epoch + 1}: training loss is {loss}. Lower "
          "--config.optim.learning_rate or set --config.optim.grad_clip=1.0; checkpoints up to "
          f"epoch {epoch} are kept in {ckpt.directory}")
    record = {"epoch": epoch + 1, "loss": loss}
    if has_val:
      val = metrics.classification_metrics(
          setup.y["val"], predict(setup, predict_fn, state, "val", tc.eval_batch_size), k)
      value = val[tc.select_metric]
      record["val"] = {m: val[m] for m in metrics.METRIC_NAMES}
    else:
      value = float(epoch + 1)  # no validation part: the last epoch is the one kept
    improved = meta["best_value"] is None or value > meta["best_value"]
    if improved:
      meta["best_value"], meta["best_epoch"] = value, epoch + 1
    meta["history"].append(record)
    meta["epoch"] = epoch + 1
    meta["stopped_early"] = bool(tc.patience and has_val
                                 and meta["epoch"] - meta["best_epoch"] >= tc.patience)
    ckpt.save(meta["epoch"], state, meta, value)
    train_time += time.perf_counter() - t0
    if meta["epoch"] % tc.log_every_epochs == 0 or meta["stopped_early"] or meta["epoch"] == tc.epochs:
      val_text = f"  val {tc.select_metric} {value:.4f}" if has_val else ""
      log(f"  fold {setup.fold.index} epoch {meta['epoch']:>3}/{tc.epochs}  loss {loss:.4f}"
          f"{val_text}  best {meta['best_value']:.4f}@{meta['best_epoch']}"
          f"  {time.perf_counter() - t0:.1f}s" + ("  (early stop)" if meta["stopped_early"] else ""))
  ckpt.wait()
  return finish_fold(config, setup, ckpt, meta, train_time)


def finish_fold(config, setup: FoldSetup, ckpt: checkpointing.FoldCheckpoints,
                meta: dict[str, Any], train_time: float = 0.0) -> tuple[dict, np.ndarray]:
  """Restores the best epoch and evaluates it on the fold's test part: (record, test probs)."""
  t0 = time.perf_counter()
  if not meta["best_epoch"]:
    raise checkpointing.CheckpointError(
        f"fold {setup.fold.index} has no finished epoch in {ckpt.directory}; train it with --mode=train")
  state, _ = ckpt.restore(meta["best_epoch"], checkpointing.abstract_like(setup.init_state))
  predict_fn = step_lib.make_predict(setup.graphdef, setup.mesh)
  probs = predict(setup, predict_fn, state, "test", config.train.eval_batch_size)
  k = setup.num_classes
  return {
      "index": setup.fold.index,
      "sizes": {p: int(len(v)) for p, v in setup.y.items()},
      "class_counts": {
          **{p: np.bincount(v, minlength=k).tolist() for p, v in setup.y.items()},
          "train_sampled_per_epoch": np.round(setup.sampler.counts_per_epoch(
              None if meta["class_weights"] is None else np.asarray(meta["class_weights"])), 2).tolist(),
      },
      "best_epoch": meta["best_epoch"],
      "epochs_run": meta["epoch"],
      "stopped_early": meta["stopped_early"],
      "history": meta["history"],
      "test": metrics.classification_metrics(setup.y["test"], probs, k),
      "timings": {"train_s": round(train_time, 2), "test_s": round(time.perf_counter() - t0, 2)},
  }, probs


def latest_meta(ckpt: checkpointing.FoldCheckpoints, setup: FoldSetup) -> dict[str, Any]:
  """The meta record of the newest checkpoint (which names the best epoch)."""
  latest = ckpt.latest_epoch()
  if latest is None:
    raise checkpointing.CheckpointError(
        f"no checkpoint under {ckpt.directory}: fold {setup.fold.index} was never trained; "
        "run --mode=train first")
  _, meta = ckpt.restore(latest, checkpointing.abstract_like(setup.init_state))
  return meta
