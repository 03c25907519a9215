"""A fold's setup, fitted on its training part: preprocessing, the balanced training pool, the
sampler, the loss, the optimizer and the initial (or pretrained) model state.

Everything derived from data (normalisation statistics, imputation, class counts for losses
and samplers) comes from `fold.train` alone; validation and test inputs are only transformed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

from jimb import balance as balance_lib
from jimb import losses
from jimb import mesh as mesh_lib
from jimb import tracking
from jimb.balance import pool as pool_lib
from jimb.balance import synthesis
from jimb.data import preprocess
from jimb.data import sampler as sampler_lib
from jimb.data import splits
from jimb.data.dataset import Dataset
from jimb.data.splits import Fold
from jimb.fitting import step as step_lib
from jimb.fitting import transfer
from jimb.models import build_model, pretrained
from jimb.resampling import complexity
from jimb.training import stage2

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
  synthesis: dict | None = None      # the synthesis stage's report (jimb.balance.synthesis)
  weights: np.ndarray | None = None  # per pool row loss weights (loss.instance_weights), or None
  # The run's jitted functions, and this fold's key into them (see `program_key`).
  programs: step_lib.Programs = dataclasses.field(default_factory=step_lib.Programs)
  program: Any = None

  def jitted(self, kind: str, build: Callable[[], Any]) -> Any:
    """The run's `kind` program ("train", "predict", ...) for this fold, built when missing."""
    return self.programs.get((kind, self.program), build)


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


def pool_weights(config, pool: pool_lib.TrainingPool, num_classes: int, fold_index: int,
                 log: Log = print, embed: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> np.ndarray | None:
  """Per pool row loss weights of `loss.instance_weights`, from the real training rows alone,
  found as neighbours in the inputs or, with `embed`, in its features (`icost_embedding`).

  Resampled copies share their source row's weight, since batches gather through `pool.rows`.
  Synthetic rows weigh 1: they have no neighbourhood in the real part of their own, and they
  already rebalance their class, which an imbalance-ratio cost would count a second time.
  """
  if config.loss.instance_weights == "none":
    return None
  real = slice(0, pool.num_real)
  icost = config.loss.icost
  x = pool.x[real] if embed is None else embed(pool.x[real])
  weights, report = complexity.icost_weights(
      x, pool.y[real], num_classes, k=icost.k, groups=icost.groups, costs=icost.costs,
      scale_by_ir=icost.scale_by_ir)
  groups = "; ".join(f"class {c} (IR {report['ratio'][c]}): " + ", ".join(
      f"{n} {g}" for g, n in zip(report["groups"], counts))
      for c, counts in report["counts"].items())
  log(f"  fold {fold_index}: icost weights on {pool.num_real} real training rows: "
      f"{groups or 'no minority class'}")
  return np.concatenate([weights, np.ones(len(pool.x) - pool.num_real, np.float32)])


def icost_embedding(config, pool: pool_lib.TrainingPool, num_classes: int, fold_index: int,
                    placement: tuple, features: Callable, state: step_lib.TrainState,
                    synth_root: str | os.PathLike | None, log: Log = print
                    ) -> Callable[[np.ndarray], np.ndarray] | None:
  """rows -> the features `loss.icost.space` finds neighbours in (None: the inputs).

  `judge`: the synthesis judge (synth.judge_epochs of the experiment's model on the fold's real
  training rows, cached under `synth_root` and shared with the synthesis stage); `backbone`: the
  penultimate features (`features`, the run's jitted program) of the pretrained model before
  fine-tuning (`state`). Pixels are a poor
  space for images: two views of one lesion may be far apart and two lesions close.
  """
  if config.loss.instance_weights != "icost":
    return None
  space = complexity.check_space(config.loss.icost.space)
  mean, std, mesh = placement
  if space == "judge":
    if not config.synth.judge_epochs:
      raise ValueError("--config.loss.icost.space=judge finds neighbours in the synthesis "
                       "judge's features, which --config.synth.judge_epochs=0 turns off; set "
                       "it to e.g. 5")
    real = slice(0, pool.num_real)
    return synthesis.feature_space(config, pool.x[real], pool.y[real], num_classes, placement,
                                   synth_root, fold_index, log)
  if space == "backbone":
    if not config.model.pretrained:
      raise ValueError("--config.loss.icost.space=backbone finds neighbours in the pretrained "
                       "backbone's features, but this model starts from random weights; set "
                       "--config.model.pretrained (e.g. imagenet) or use "
                       "--config.loss.icost.space=judge")
    return lambda rows: step_lib.apply_batched(features, state, rows, mean, std, mesh,
                                               config.train.eval_batch_size)
  return None


def program_key(config, x_train: np.ndarray, num_classes: int, total_steps: int,
                updates_per_epoch: int, class_counts: np.ndarray,
                mesh: jax.sharding.Mesh) -> tuple:
  """Everything the fold's jitted functions close over, beyond their arguments: the config, the
  input shape, the optimizer schedule's lengths and the class counts a loss builds on (none
  for most). Folds with equal keys share one traced and compiled program."""
  return (config.to_json_best_effort(sort_keys=True), x_train.shape[1:], str(x_train.dtype),
          num_classes, total_steps, updates_per_epoch,
          losses.counts_key(config.loss.name, class_counts), mesh)


def setup_fold(config, ds: Dataset, fold: Fold, mesh: jax.sharding.Mesh,
               synth_root: str | os.PathLike | None = None, log: Log = print,
               track: tracking.Tracking = tracking.OFF,
               programs: step_lib.Programs | None = None) -> FoldSetup:
  """Everything a fold needs, fitted on its training part; `synth_root` caches the synthesis
  stage's generators and samples (config.synth), whose training `track` shows and records.
  `programs` holds the run's jitted functions, shared with its other folds."""
  stage2.check(config)
  parts = _parts(config, ds, fold)
  pre = preprocess.fit_preprocessor(ds.x[parts["train"]], config.data, ds.is_image,
                                    ds.feature_names)
  x = {k: pre.host(ds.x[idx], ds.feature_names) for k, idx in parts.items()}
  y = {k: ds.y[idx].astype(np.int32) for k, idx in parts.items()}
  mesh_lib.check_batch_size(config.train.batch_size, mesh)
  balanced = balance_lib.balance(config, x["train"], y["train"], ds.class_names, fold.index,
                                 *mesh_lib.replicate((pre.mean, pre.std), mesh), mesh,
                                 synth_root, log, track)
  pool = balanced.pool
  sampler = sampler_lib.from_config(
      pool.labels, ds.num_classes, config.sampler, config.train.batch_size,
      seed=config.seed * 1000 + fold.index, process_index=jax.process_index(),
      process_count=jax.process_count())
  loss = losses.build_loss(config.loss, sampler.class_counts())
  key = jax.random.fold_in(jax.random.key(config.seed), fold.index)
  init_key, train_key = jax.random.split(key)
  train_key = mesh_lib.replicate(train_key, mesh)   # on the mesh, as the step wants it
  # Complement objective training updates twice per batch; schedules count updates.
  updates_per_epoch = sampler.steps_per_epoch * (2 if loss.complement else 1)
  total_steps = config.train.epochs * updates_per_epoch
  programs = programs or step_lib.Programs()
  program = program_key(config, x["train"], ds.num_classes, total_steps, updates_per_epoch,
                        sampler.class_counts(), mesh)
  tx = programs.get(("tx", program), lambda: transfer.build_optimizer(
      config.optim, config.transfer, total_steps, updates_per_epoch))
  shape = x["train"].shape[1:]
  build = lambda k: transfer.freeze_batch_norm(
      build_model(config.model, ds.num_classes, shape, k), config.transfer)
  graphdef, state = programs.get(("init", program),
                                 lambda: step_lib.make_init(build, tx, mesh))(init_key)
  mean, std = pre.mean, pre.std
  if config.model.pretrained:
    params, rest, mean, std = pretrained.load(config.model, graphdef, state.params, state.rest,
                                              shape, ds.num_classes)
    state = mesh_lib.replicate(state.replace(params=params, rest=rest), mesh)
  mean, std = mesh_lib.replicate((np.asarray(mean), np.asarray(std)), mesh)
  features = programs.get(("features", program),
                          lambda: step_lib.make_features(graphdef, mesh))
  embed = icost_embedding(config, pool, ds.num_classes, fold.index, (mean, std, mesh), features,
                          state, synth_root, log)
  weights = pool_weights(config, pool, ds.num_classes, fold.index, log, embed)
  return FoldSetup(fold, ds.num_classes, x, y, mean, std, pool, sampler, loss, graphdef, state,
                   tx, train_key, mesh, balanced.synthesis, weights, programs, program)
