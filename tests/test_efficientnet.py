"""EfficientNet B0-B7 against Keras: layout, parameter counts, weight conversion, training."""

from __future__ import annotations

import functools
import math
import zlib

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jimb.models import build_model, keras_import
from jimb.models import efficientnet

MEMBERS = [f"efficientnet_b{i}" for i in range(8)]
CHEAP, OTHERS = MEMBERS[0], MEMBERS[1:]
# keras.applications.EfficientNetB0..B7(weights=None).count_params() with Keras 3.15.1, run once.
KERAS_PARAMS = dict(zip(MEMBERS, [5_330_571, 7_856_239, 9_177_569, 12_320_535, 19_466_823,
                                  30_562_527, 43_265_143, 66_658_687]))
# Keras also counts its input Normalization layer's mean (3), variance (3) and count (1); jimb's
# model takes normalised input instead (the runner applies MODEL_STATISTICS), so has none.
NORMALIZATION_WEIGHTS = 7
SHAPE = (35, 32, 3)   # odd and even sides: both branches of Keras's correct_pad
VARIANCE_FLOOR = 0.7   # see _calibrate: keeps even B7 well conditioned, images still distinct


def _cfg(name, **options):
  return ml_collections.ConfigDict(dict(name=name, **options))


def _slow(names):
  return [pytest.param(n, marks=pytest.mark.slow) for n in names]


def _size(state) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))


@functools.lru_cache
def _abstract(name):
  """(graphdef, state of shapes) at 1000 classes, built without drawing any weight.

  Weight shapes do not depend on the resolution, so one build serves the parameter count
  (224 x 224) and the conversion checks (`SHAPE`).
  """
  return nnx.split(nnx.eval_shape(lambda: build_model(_cfg(name), 1000, (224, 224, 3),
                                                      jax.random.key(0))))


# --- building and training ------------------------------------------------------------------

TINY = dict(width_multiplier=0.05)   # every stage at the 8-channel minimum: seconds on CPU


@pytest.fixture(scope="module")
def tiny_b0():
  return build_model(_cfg(CHEAP, **TINY), 3, (32, 32, 3), jax.random.key(0))


def _train_step(model):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  y = jnp.array([0, 1, 2, 1])

  def objective(params, rest):
    m = nnx.merge(graphdef, params, rest, copy=True)
    logits = m(x, train=True, key=jax.random.key(2))
    return (optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
            nnx.state(m, nnx.BatchStat))

  (loss, stats), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params, rest)
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.any(grads["stem"]["conv"]["kernel"][...] != 0)
  # Training mode updates the moving statistics (fresh ones are 0 / 1).
  assert np.any(stats["top"]["bn"]["mean"][...] != 0)


def test_cheap_member_trains(tiny_b0):
  _train_step(tiny_b0)


@pytest.mark.parametrize("name", _slow(OTHERS))
def test_every_member_trains(name):
  _train_step(build_model(_cfg(name, **TINY), 3, (32, 32, 3), jax.random.key(0)))


def test_layout_follows_the_keras_table():
  """Hand-computed from Keras's round_filters / round_repeats for B3 (width 1.2, depth 1.4)."""
  assert [efficientnet.round_filters(f, 1.2) for f in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] \
      == [40, 24, 32, 48, 96, 136, 232, 384, 1536]
  assert [efficientnet.round_repeats(r, 1.4) for r in (1, 2, 2, 3, 3, 4, 1)] == \
      [2, 3, 3, 5, 5, 6, 2]
  model = nnx.merge(*_abstract("efficientnet_b3"))
  assert [len(stage) for stage in model.stages] == [2, 3, 3, 5, 5, 6, 2]
  first = model.stages[1][0]   # 24 -> 32 channels, expand 6, 3x3 stride 2, SE from 24 // 4
  assert first.expand.conv.kernel.shape == (1, 1, 24, 144)
  assert first.dwconv.conv.kernel.shape == (3, 3, 1, 144)
  assert first.se.reduce.kernel.shape == (1, 1, 144, 6) and first.drop is None
  assert model.head.out.kernel.shape == (1536, 1000)


def test_bad_options_are_named():
  with pytest.raises(ValueError, match="model.name=mlp"):
    build_model(_cfg(CHEAP), 2, (30,), jax.random.key(0))
  with pytest.raises(ValueError, match="width_multiplier=1.0"):
    build_model(_cfg(CHEAP, width_multiplier=0.0), 2, (32, 32, 3), jax.random.key(0))
  with pytest.raises(ValueError, match="drop_connect_rate=0.2"):
    build_model(_cfg(CHEAP, drop_connect_rate=1.0), 2, (32, 32, 3), jax.random.key(0))


def test_stochastic_depth_drops_whole_samples():
  """Keras's Dropout(noise_shape=(None, 1, 1, 1)): a sample's residual branch is kept or not."""
  kw = dict(kernel_size=3, strides=1, expand_ratio=1)
  dropping = efficientnet.MBConv(8, 8, drop_rate=0.5, rngs=nnx.Rngs(0), **kw)
  keeping = efficientnet.MBConv(8, 8, drop_rate=0.0, rngs=nnx.Rngs(0), **kw)
  x = jax.random.normal(jax.random.key(1), (32, 4, 4, 8))
  out, full = nnx.jit(lambda a, b, x: (a(x, train=True, key=jax.random.key(2)),
                                       b(x, train=True, key=None)))(dropping, keeping, x)
  branch, dropped = np.asarray(full - x), np.asarray(out - x)
  kept = np.abs(dropped).reshape(32, -1).max(axis=1) > 0
  assert 0 < kept.sum() < 32
  np.testing.assert_allclose(dropped[kept], 2 * branch[kept], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(dropped[~kept], 0)


def test_bfloat16_computes_in_bfloat16_with_float32_params(tiny_b0):
  model = build_model(_cfg(CHEAP, dtype="bfloat16", **TINY), 3, (32, 32, 3), jax.random.key(0))
  params = nnx.state(model, nnx.Param)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  jax.tree.map(np.testing.assert_array_equal, params, nnx.state(tiny_b0, nnx.Param))
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  logits = nnx.jit(lambda m, x: m(x))
  low, full = logits(model, x), logits(tiny_b0, x)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), full, rtol=0.05,
                             atol=0.05 * float(np.abs(full).max()))


# --- parameter counts -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b3", *_slow(
    [n for n in OTHERS if n != "efficientnet_b3"])])
def test_parameter_count_equals_keras(name):
  model = nnx.merge(*_abstract(name))
  assert _size(nnx.state(model, (nnx.Param, nnx.BatchStat))) + NORMALIZATION_WEIGHTS == \
      KERAS_PARAMS[name]


# --- Keras weight conversion ------------------------------------------------------------------


def _without_initial_draws(build):
  """Builds a Keras application without drawing its initial kernels.

  Keras draws each with one XLA compilation per shape (minutes for a whole network on a
  shared CPU); the tests replace them anyway.
  """
  k = keras_import.keras()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(k.initializers.VarianceScaling, "__call__",
                  lambda self, shape, dtype=None: np.zeros(shape, "float32"))
    return build()


def _keras_twin(name):
  """Keras's model (with its top) with every weight random but its activations well scaled."""
  k = keras_import.keras()
  model = _without_initial_draws(
      lambda: keras_import.build_keras_twin(name, SHAPE, num_classes=1000))
  for layer in model.layers:
    if layer.weights:
      layer.set_weights(_random_weights(layer, k))
    if isinstance(layer, k.layers.Normalization):
      layer.finalize_state()   # it computes with copies of its weights, made when they are set
  _calibrate(model, k)
  return model


def _keras_backbone(twin, name):
  """Keras's model built with include_top=False, holding `twin`'s weights."""
  k = keras_import.keras()
  constructor = getattr(k.applications, keras_import.KERAS_APPS[name].constructor)
  model = _without_initial_draws(lambda: constructor(weights=None, include_top=False,
                                                     pooling="avg", input_shape=SHAPE))
  model.set_weights(twin.get_weights()[:len(model.weights)])   # the top's weights come last
  for layer in model.layers:
    if isinstance(layer, k.layers.Normalization):
      layer.finalize_state()
  return model


def _random_weights(layer, k) -> list[np.ndarray]:
  """Non-trivial values, biases included: fresh ones (0 and 1) would hide a wrong mapping."""
  rng = np.random.default_rng(zlib.crc32(layer.name.encode()))
  shapes = [tuple(w.shape) for w in layer.weights]
  if isinstance(layer, k.layers.BatchNormalization):   # moving statistics: see _calibrate
    return [rng.uniform(0.5, 1.5, shapes[0]), rng.normal(0, 0.2, shapes[1]),
            np.zeros(shapes[2]), np.ones(shapes[3])]
  if isinstance(layer, k.layers.Normalization):        # mean, variance, count of [0, 1] pixels
    return [rng.uniform(0.3, 0.6, shapes[0]), rng.uniform(0.03, 0.1, shapes[1]),
            np.ones(shapes[2])]
  kernel, *bias = shapes
  fan_in = math.prod(kernel[:2]) if isinstance(layer, k.layers.DepthwiseConv2D) else (
      math.prod(kernel[:-1]))
  return [rng.normal(0, (2 / fan_in) ** 0.5, kernel)] + [rng.normal(0, 0.2, s) for s in bias]


def _calibrate(model, k):
  """Sets every BatchNorm's moving statistics to those of the test images (variance + floor).

  Random statistics blow activations up or fade them out within a few dozen blocks, and a
  channel that barely varies would be amplified up to 1/sqrt(epsilon): either way float32
  rounding, not the mapping, would decide the comparison. The floor bounds that gain; the
  calibration pass uses it too (as extra epsilon), so the statistics fit the activations.
  """
  floor = VARIANCE_FLOOR
  norms = [layer for layer in model.layers if isinstance(layer, k.layers.BatchNormalization)]
  with pytest.MonkeyPatch.context() as patch:
    for layer in norms:
      patch.setattr(layer, "momentum", 0.0)
      patch.setattr(layer, "epsilon", layer.epsilon + floor)
    for layer in model.layers:
      if isinstance(layer, k.layers.Dropout):
        patch.setattr(layer, "rate", 0.0)
    stats = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=True)[1])(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables], _pixels() * 255.0)
  for variable, value in zip(model.non_trainable_variables, stats):
    variable.assign(value)
  for layer in norms:
    layer.moving_variance.assign(layer.moving_variance + floor)


def _keras_outputs(keras_model):
  """Keras's pooled features and logits for `_pixels()`, which Keras takes as 0-255 values."""
  k = keras_import.keras()
  both = k.Model(keras_model.input, [keras_model.get_layer("avg_pool").output,
                                     keras_model.output])
  return both.predict(_pixels() * 255.0, verbose=0)


@pytest.fixture(scope="module")
def twin():
  return _keras_twin(CHEAP)


@pytest.fixture(scope="module")
def twin_outputs(twin):
  return _keras_outputs(twin)


def _materialise(graphdef, abstract_state, seed):
  """A concrete model with arbitrary (NumPy) values: conversion overwrites what it maps."""
  rng = np.random.default_rng(seed)
  return nnx.merge(graphdef, jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), abstract_state))


def _pixels(n=8):
  """Images of different colours with noise (pure noise would pool to the same features)."""
  rng = np.random.default_rng(0)
  colour = rng.uniform(0, 1, (n, 1, 1, 3))
  p = np.clip(colour + rng.uniform(-0.2, 0.2, (n, *SHAPE)), 0, 1)
  return np.round(p * 255).astype(np.float32) / 255.0


_jimb_outputs = nnx.jit(lambda m, x: (m.embed(x), m(x)))


def _converted_outputs(name, keras_model, seed=0):
  """jimb's model after conversion, with its features and logits for `_pixels()`."""
  model = _materialise(*_abstract(name), seed=seed)
  mean, std = keras_import.convert(model, name, keras_model)
  return model, _jimb_outputs(model, jnp.asarray((_pixels() - mean) / std))


def _check_conversion(name, keras_model, keras_outputs):
  model, (features, logits) = _converted_outputs(name, keras_model)
  assert model.head.drop.rate == keras_model.get_layer("top_dropout").rate   # member's default
  keras_features, keras_logits = keras_outputs
  # The images' differences reach the pooled features (100x the tolerance), so a wrong input
  # path could not pass.
  assert np.ptp(keras_features, axis=0).max() > 0.01
  np.testing.assert_allclose(features, keras_features, rtol=0, atol=1e-4)
  np.testing.assert_allclose(logits, keras_logits, rtol=0, atol=1e-4)


def test_conversion_reproduces_keras(twin, twin_outputs):
  _check_conversion(CHEAP, twin, twin_outputs)


@pytest.mark.parametrize("name", _slow(OTHERS))
def test_conversion_reproduces_keras_every_member(name):
  model = _keras_twin(name)
  _check_conversion(name, model, _keras_outputs(model))


def test_backbone_only_conversion_leaves_the_head(twin, twin_outputs):
  backbone = _keras_backbone(twin, CHEAP)
  assert "predictions" not in [layer.name for layer in backbone.layers]
  before = _materialise(*_abstract(CHEAP), seed=1).head
  model, (features, _) = _converted_outputs(CHEAP, backbone, seed=1)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model.head), nnx.state(before))
  np.testing.assert_allclose(features, twin_outputs[0], rtol=0, atol=1e-4)


def test_stochastic_depth_rates_are_keras(twin):
  model = nnx.merge(*_abstract(CHEAP))
  jimb = {f"block{i + 1}{chr(ord('a') + j)}_drop": block.drop.rate
          for i, stage in enumerate(model.stages) for j, block in enumerate(stage)
          if block.drop is not None and block.drop.rate > 0}
  keras = {layer.name: layer.rate for layer in twin.layers if layer.name.endswith("_drop")}
  assert jimb.keys() == keras.keys()
  np.testing.assert_allclose([jimb[n] for n in keras], list(keras.values()), rtol=1e-12)


def test_input_statistics_fold_imagenet_rescaling():
  """Keras's EfficientNet with ImageNet weights: /255, Normalization, then 1/sqrt(stddev)."""
  k = keras_import.keras()
  mean, stddev = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  front = k.Sequential([
      k.Input((2, 2, 3)), k.layers.Rescaling(1 / 255), k.layers.Normalization(
          mean=mean, variance=stddev ** 2), k.layers.Rescaling(list(1 / np.sqrt(stddev))),
      k.layers.ZeroPadding2D(0, name="stem_conv_pad")])
  got_mean, got_std = efficientnet.input_statistics(front)
  p = _pixels(2)[:, :2, :2]
  np.testing.assert_allclose((p - got_mean) / got_std, front(p * 255.0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_std, stddev * np.sqrt(stddev), rtol=1e-6)


@pytest.mark.slow
def test_conversion_refuses_another_member():
  with pytest.raises(ValueError, match="lacks.*block1b"):
    _converted_outputs(CHEAP, _keras_twin("efficientnet_b1"))
