"""The decoupled second stage after training (Kang et al. 2020), by name (`stage2.method`).

Each method turns the stage-1 state into probabilities of the evaluated parts (validation and
test, from one fit, so that post-hoc calibration sees the model the test part sees), fitting
only on the training part:
crt re-trains the classifier on the frozen backbone's features with a class-balanced sampler;
tau_norm rescales each class's classifier weights by 1 / norm^tau; logit_adjust subtracts
tau * log(training prior) from the logits (Menon et al. 2021); feature_resample fine-tunes the
classifier on the training part's features resampled by resample.feature (seed 001's FS / TS).
"""

from __future__ import annotations

import jax
import numpy as np

from jimb import losses
from jimb.fitting import step as step_lib
from jimb.registry import Registry
from jimb.resampling import samplers
from jimb.training import evaluate, head

METHODS = Registry("stage-2 method")


def check(config) -> None:
  """Refuses an unknown method, and feature_resample without its resampler (or the reverse)."""
  if config.stage2.method != "none":
    METHODS.get(config.stage2.method, "stage2.method")
  if (config.stage2.method == "feature_resample") != bool(config.resample.feature.name):
    raise ValueError("feature-space resampling is --config.stage2.method=feature_resample with "
                     "--config.resample.feature.name=<resampler>; set both or neither")


def probs(config, setup, predict_fn, state: step_lib.TrainState,
          parts: tuple[str, ...] = ("test",)) -> dict[str, np.ndarray]:
  """{part: probabilities} after `config.stage2.method` on the stage-1 `state`, fitted once."""
  return METHODS.get(config.stage2.method, "stage2.method")(config, setup, predict_fn, state,
                                                            parts)


def _predicted(config, setup, predict_fn, state, parts) -> dict[str, np.ndarray]:
  return {p: evaluate.predict(setup, predict_fn, state, p, config.train.eval_batch_size)
          for p in parts}


@METHODS.register("logit_adjust")
def _logit_adjust(config, setup, predict_fn, state, parts):
  out = {}
  for part, stage1 in _predicted(config, setup, predict_fn, state, parts).items():
    log_probs = np.log(np.maximum(stage1, np.finfo(np.float32).tiny))
    adjusted = losses.adjust_logits(log_probs, setup.sampler.class_counts(), config.stage2.tau)
    out[part] = np.asarray(jax.nn.softmax(adjusted, axis=-1))
  return out


@METHODS.register("tau_norm")
def _tau_norm(config, setup, predict_fn, state, parts):
  params = head.tau_normalize(state.params, config.stage2.tau)
  return _predicted(config, setup, predict_fn, state.replace(params=params), parts)


@METHODS.register("crt")
def _crt(config, setup, predict_fn, state, parts):
  features = _train_features(config, setup, state)
  return _retrained(config, setup, predict_fn, state, features, setup.y["train"], parts,
                    crt=True)


@METHODS.register("feature_resample")
def _feature_resample(config, setup, predict_fn, state, parts):
  features, feature_cfg = _train_features(config, setup, state), config.resample.feature
  out = samplers.resample(
      feature_cfg.name, {k: v for k, v in feature_cfg.items() if k != "name"}, features,
      setup.y["train"], seed=config.seed * 1000 + setup.fold.index,
      small_classes=config.resample.small_classes,
      where=f" (features of fold {setup.fold.index})", config_key="resample.feature")
  features = features[out.source] if out.x is None else out.x
  return _retrained(config, setup, predict_fn, state, features, out.y, parts, crt=False)


def _train_features(config, setup, state) -> np.ndarray:
  """The frozen backbone's features of the real training rows."""
  features = setup.jitted("features", lambda: step_lib.make_features(setup.graphdef, setup.mesh))
  return evaluate.batched(setup, features, state, "train", config.train.eval_batch_size)


def _retrained(config, setup, predict_fn, state, features, labels, parts,
               crt: bool) -> dict[str, np.ndarray]:
  """Probabilities of `parts` after re-training the classifier on (features, labels): cRT draws
  class-balanced batches from a new classifier; fine-tuning continues from stage 1's."""
  s2 = config.stage2
  params = head.retrain_head(
      setup.graphdef, state.params, state.rest, features, labels,
      num_classes=setup.num_classes, epochs=s2.epochs, batch_size=s2.batch_size,
      learning_rate=s2.learning_rate, sampler="class_balanced" if crt else "instance",
      reinit=crt, seed=config.seed * 1000 + setup.fold.index, layers=s2.layers)
  return _predicted(config, setup, predict_fn, state.replace(params=params), parts)
