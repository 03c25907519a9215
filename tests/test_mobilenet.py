"""MobileNet V1/V2: training, parameter counts, Keras weight conversion, bfloat16."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jimb.models import build_model
from jimb.models import keras_import
from tests.helpers import assert_bfloat16_close, keras_or_skip
from jimb.models import mobilenet

# Odd, non-square images: Keras's stride-2 padding differs between odd and even sides.
SHAPE = (35, 33, 3)


def _key(seed):
  # Threefry's random-number kernels take seconds each to compile on CPU, once per parameter
  # shape; RBG keys compile several times faster and build the same architecture.
  return jax.random.key(seed, impl="rbg")


def _build(name, num_classes, shape, seed=0, **options):
  return build_model(ml_collections.ConfigDict(dict(name=name, **options)), num_classes, shape,
                     _key(seed))


_forward = nnx.jit(lambda model, x: model(x))
_embed = nnx.jit(lambda model, x: model.embed(x))


def _count(name, **options):
  """Parameters + BatchNorm statistics at 1000 classes and 224x224x3, without allocating them."""
  model = nnx.eval_shape(lambda: _build(name, 1000, (224, 224, 3), **options))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat)))


# V1 at full width shares its compiled initialisers with the conversion tests below.
@pytest.mark.parametrize("name, alpha, shape, stages, blocks", [
    ("mobilenet_v1", 1.0, SHAPE, {"stem", "blocks", "head"}, 13),
    ("mobilenet_v2", 0.35, (9, 8, 3), {"stem", "blocks", "last_conv", "head"}, 17)])
def test_train_step_at_tiny_size(name, alpha, shape, stages, blocks):
  model = _build(name, 3, shape, alpha=alpha, dropout=0.5, head_hidden=8)
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  x = jax.random.uniform(_key(1), (2, *shape))
  y = jnp.array([0, 2])

  @jax.jit
  def step(params, stats):
    def loss(params):
      m = nnx.merge(graphdef, params, stats, copy=True)
      logits = m(x, train=True, key=_key(2))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), nnx.state(
          m, nnx.BatchStat)
    return jax.grad(loss, has_aux=True)(params)

  grads, new_stats = step(params, stats)
  # The stage names the module docstring promises for freeze patterns.
  assert set(grads) == stages and len(grads["blocks"]) == blocks
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert np.any(grads["stem"]["conv"]["kernel"][...] != 0)
  # Training mode moves the BatchNorm statistics (fresh: mean 0).
  assert np.any(new_stats["stem"]["norm"]["mean"][...] != 0)


# From keras.applications.MobileNet / MobileNetV2(weights=None, alpha=a).count_params()
# (Keras 3.15.1); alpha 1.4 checks V2's widened last conv.
@pytest.mark.parametrize("name, alpha, keras_count", [
    ("mobilenet_v1", 1.0, 4_253_864), ("mobilenet_v1", 0.25, 475_544),
    ("mobilenet_v2", 1.0, 3_538_984), ("mobilenet_v2", 0.35, 1_691_208),
    ("mobilenet_v2", 1.4, 6_156_712)])
def test_parameter_counts_equal_keras(name, alpha, keras_count):
  assert _count(name, alpha=alpha) == keras_count


def test_seed_head_with_1024_hidden_units():
  # The seed's MobileNet: pooled features -> FC(1024) -> ReLU -> FC(classes).
  assert _count("mobilenet_v1", head_hidden=1024) == 4_253_864 + 1024 * 1024 + 1024
  model = _build("mobilenet_v1", 5, SHAPE, head_hidden=1024)
  head = model.head
  assert head.hidden.kernel.shape == (1024, 1024) and head.out.kernel.shape == (1024, 5)
  x = jax.random.uniform(_key(1), (2, *SHAPE))
  h = jax.nn.relu(_embed(model, x) @ head.hidden.kernel[...] + head.hidden.bias[...])
  np.testing.assert_allclose(_forward(model, x), h @ head.out.kernel[...] + head.out.bias[...],
                             rtol=1e-5, atol=1e-5)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="model.name=mlp"):
    _build("mobilenet_v2", 2, (30,))
  with pytest.raises(ValueError, match="at least 31x31.*data.image_size"):
    _build("mobilenet_v1", 2, (30, 64, 3))
  with pytest.raises(ValueError, match="model.mobilenet_v1.alpha"):
    _build("mobilenet_v1", 2, (32, 32, 3), alpha=0.0)


def test_bfloat16_logits_close_to_float32():
  x = jax.random.uniform(_key(1), (2, *SHAPE))
  ref = _forward(_build("mobilenet_v1", 5, SHAPE), x)
  model = _build("mobilenet_v1", 5, SHAPE, dtype="bfloat16")
  logits = _forward(model, x)
  assert_bfloat16_close(model, logits, ref)


# Keras conversion.


@pytest.mark.parametrize("n", [7, 8])
def test_stride2_padding_is_keras_correct_pad(n):
  keras = keras_or_skip()
  # correct_pad is not exported; Keras's MobileNetV2 calls it from here.
  from keras.src.applications import imagenet_utils  # pylint: disable=g-import-not-at-top
  x = jnp.arange(n * (n + 1), dtype=jnp.float32).reshape(1, n, n + 1, 1) + 1
  pad = imagenet_utils.correct_pad(keras.KerasTensor((1, n, n + 1, 1)), 3)
  ref = keras.layers.ZeroPadding2D(pad)(np.asarray(x))
  np.testing.assert_array_equal(mobilenet._pad_for_stride2(x, odd_both_sides=True), ref)


def _pixels(seed: int = 0, n: int = 2) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, *SHAPE)) / 255.0).astype(np.float32)


def _preprocess(pixels):
  """Keras's own preprocessing ("tf", as for V2) of pixels in [0, 1]."""
  return keras_or_skip().applications.mobilenet.preprocess_input(pixels * 255.0)


def _randomise(keras_model, seed: int = 0) -> None:
  """Random affine BatchNorm parameters and biases, statistics near the real activations'.

  Fresh layers have zero biases and 0/1 statistics, which would hide a wrong mapping; random
  statistics far from the activations' would let the signal vanish, hiding wrong kernels. So
  the moving statistics become a calibration batch's (momentum 0 for one training-mode call),
  then everything is perturbed.
  """
  keras = keras_or_skip()
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = 0.0
  calibration = _preprocess(_pixels(seed=100 + seed, n=8))
  train_call = jax.jit(lambda t, n, x: keras_model.stateless_call(t, n, x, training=True))
  _, stats = train_call([v.value for v in keras_model.trainable_variables],
                        [v.value for v in keras_model.non_trainable_variables], calibration)
  for v, value in zip(keras_model.non_trainable_variables, stats):
    v.assign(value)
  for v in keras_model.weights:
    leaf, value = v.path.split("/")[-1], np.asarray(v.value)
    if leaf in ("bias", "beta"):
      v.assign(rng.normal(0.0, 0.2, v.shape).astype(np.float32))
    elif leaf == "gamma":
      v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    elif leaf == "moving_mean":
      v.assign(value + rng.normal(0.0, 0.2, v.shape).astype(np.float32))
    elif leaf == "moving_variance":
      v.assign(value * rng.uniform(0.5, 1.5, v.shape).astype(np.float32))


@pytest.fixture(scope="module", params=[
    "mobilenet_v1", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def twin(request):
  """(name, Keras twin with 5 classes and randomised weights), built once per module."""
  keras_or_skip()
  keras_model = keras_import.build_keras_twin(request.param, SHAPE, num_classes=5)
  _randomise(keras_model)
  return request.param, keras_model


def _keras_outputs(keras_model, pixels):
  """Keras's (pooled features, output) on `pixels` in [0, 1]."""
  keras = keras_or_skip()
  x = _preprocess(pixels)
  pool = next(layer for layer in keras_model.layers
              if isinstance(layer, keras.layers.GlobalAveragePooling2D))
  both = keras.Model(keras_model.inputs, [pool.output, keras_model.output])
  features, out = both.predict(x, verbose=0)
  return np.asarray(features).reshape(len(x), -1), np.asarray(out)


def _convert(name, keras_model, **options):
  """A fresh jimb model with `keras_model`'s weights, and the input it gets for `_pixels()`."""
  model = _build(name, 5, SHAPE, seed=3, **options)
  mean, std = keras_import.convert(model, name, keras_model)
  return model, (_pixels() - mean) / std


def test_conversion_reproduces_keras(twin):
  name, keras_model = twin
  model, x = _convert(name, keras_model)
  features, logits = _keras_outputs(keras_model, _pixels())
  assert np.abs(features[0] - features[1]).max() > 0.1  # the images still differ at the top
  assert np.abs(_embed(model, x) - features).max() <= 1e-4
  assert np.abs(_forward(model, x) - logits).max() <= 1e-4


def test_conversion_leaves_a_hidden_head_alone(twin):
  # With head_hidden the Keras classifier no longer means the same (for V1 its 1024 x 5 kernel
  # would even fit `head.out`): only the backbone is copied.
  name, keras_model = twin
  fresh = _build(name, 5, SHAPE, seed=3, head_hidden=1024)
  model, x = _convert(name, keras_model, head_hidden=1024)
  features, _ = _keras_outputs(keras_model, _pixels())
  assert np.abs(_embed(model, x) - features).max() <= 1e-4
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model.head), nnx.state(fresh.head))


def test_backbone_only_keras_model_converts_the_backbone():
  keras = keras_or_skip()
  keras_model = keras.applications.MobileNet(weights=None, include_top=False, pooling="avg",
                                             input_shape=SHAPE)
  _randomise(keras_model, seed=1)
  fresh = _build("mobilenet_v1", 5, SHAPE, seed=3)
  model, x = _convert("mobilenet_v1", keras_model)
  features, _ = _keras_outputs(keras_model, _pixels())
  assert np.abs(_embed(model, x) - features).max() <= 1e-4
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model.head), nnx.state(fresh.head))
