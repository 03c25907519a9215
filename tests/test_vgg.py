"""VGG-16/19 and the BatchNorm variants: training, parameter counts, Keras conversion, bfloat16."""

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
from tests.helpers import (assert_bfloat16_close, keras_or_skip, random_keras_twin,
                           randomise_weights)


def _build(name, num_classes, shape, **options):
  return build_model(ml_collections.ConfigDict(dict(name=name, **options)), num_classes, shape,
                     jax.random.key(0))


TINY = dict(num_classes=3, shape=(32, 40, 3), width=4, fc_units=16)  # shared: XLA compiles once


def _tiny(name, **options):
  return _build(name, TINY["num_classes"], TINY["shape"], width=TINY["width"],
                fc_units=TINY["fc_units"], **options)


def _tiny_input():
  return jax.random.uniform(jax.random.key(1), (2, *TINY["shape"]))


@pytest.mark.parametrize("name, include_top", [("vgg16", True), ("vgg19", True),
                                               ("vgg16_bn", True), ("vgg19_bn", False)])
def test_train_step_at_tiny_width(name, include_top):
  model = _tiny(name, include_top=include_top, dropout=0.5, head_hidden=8)
  x, y = _tiny_input(), jnp.array([0, 2])

  def loss(m):
    logits = m(x, train=True, key=jax.random.key(2))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  grads = nnx.grad(loss)(model)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert any(np.any(g != 0) for g in leaves)
  assert model.embed(x).shape == (2, TINY["fc_units"] if include_top else 8 * TINY["width"])


def _count(name, **options):
  """Parameters + BatchNorm statistics at 1000 classes and 224x224x3, without allocating them."""
  model = nnx.eval_shape(lambda: _build(name, 1000, (224, 224, 3), **options))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat)))


# From keras.applications.VGG16/VGG19(weights=None).count_params() and
# VGG16(weights=None, include_top=False).count_params() = 14,714,688 plus jimb's 512 -> 1000 head
# (Keras 3.15.1).
@pytest.mark.parametrize("name, options, keras_count", [
    ("vgg16", {}, 138_357_544), ("vgg19", {}, 143_667_240),
    ("vgg16", {"include_top": False}, 14_714_688 + 512 * 1000 + 1000)])
def test_parameter_counts_equal_keras(name, options, keras_count):
  assert _count(name, **options) == keras_count


def _table_count(convs_per_block, batch_norm: bool) -> int:
  """VGG counted from its layer table: 3x3 convs (bias, or BN with 4 numbers per channel)."""
  total, cin = 0, 3
  for n, cout in zip(convs_per_block, (64, 128, 256, 512, 512)):
    for _ in range(n):
      total += 9 * cin * cout + (4 * cout if batch_norm else cout)
      cin = cout
  return total + (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)


@pytest.mark.parametrize("name, convs", [("vgg16", (2, 2, 3, 3, 3)), ("vgg19", (2, 2, 4, 4, 4))])
def test_batch_norm_variant_parameter_counts(name, convs):
  assert _count(name) == _table_count(convs, batch_norm=False)  # the table agrees with Keras
  assert _count(f"{name}_bn") == _table_count(convs, batch_norm=True)


def test_input_size_errors():
  with pytest.raises(ValueError, match="at least 32x32"):
    _build("vgg16", 2, (28, 40, 3))
  with pytest.raises(ValueError, match="model.name=mlp"):
    _build("vgg16", 2, (30,))
  model = _tiny("vgg16")
  with pytest.raises(ValueError, match="include_top=False"):
    model(jnp.zeros((1, 64, 40, 3)))


def test_bfloat16_logits_close_to_float32():
  x = _tiny_input()
  ref = _tiny("vgg16_bn")(x)
  model = _tiny("vgg16_bn", dtype="bfloat16")
  logits = model(x)
  assert_bfloat16_close(model, logits, ref)


# Keras conversion: at 32x32 with the top (fc1 sees 1x1x512); without it at a non-square size.
SHAPE = (32, 32, 3)
NO_TOP_SHAPE = (64, 48, 3)


@pytest.fixture(scope="module")
def keras_vgg16():
  return random_keras_twin("vgg16", SHAPE, 5)


@pytest.fixture(scope="module")
def keras_vgg16_no_top():
  keras_model = keras_or_skip().applications.VGG16(weights=None, include_top=False, pooling="avg",
                                            input_shape=NO_TOP_SHAPE)
  randomise_weights(keras_model, seed=1)
  return keras_model


def _pixels(shape, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (2, *shape)) / 255.0).astype(np.float32)


def _keras_outputs(keras_model, pixels, features_layer=None):
  """Keras's (features, output) on `pixels` in [0, 1], preprocessed by Keras itself; without
  `features_layer` the features are the output (a model without its top)."""
  keras = keras_or_skip()
  x = keras.applications.vgg16.preprocess_input(pixels * 255.0)
  features = keras_model.get_layer(features_layer).output if features_layer else keras_model.output
  both = keras.Model(keras_model.inputs, [features, keras_model.output])
  return [np.asarray(y) for y in both.predict(x, verbose=0)]


def _check_conversion(name, keras_model, num_classes):
  model = _build(name, num_classes, SHAPE)
  mean, std = keras_import.convert(model, name, keras_model)
  pixels = _pixels(SHAPE)
  features, logits = _keras_outputs(keras_model, pixels, "fc2")
  x = (pixels - mean) / std
  np.testing.assert_allclose(model.embed(x), features, rtol=0, atol=1e-4)
  np.testing.assert_allclose(model(x), logits, rtol=0, atol=1e-4)


def test_vgg16_converts_from_keras(keras_vgg16):
  _check_conversion("vgg16", keras_vgg16, 5)


@pytest.mark.slow
def test_vgg19_converts_from_keras():
  _check_conversion("vgg19", random_keras_twin("vgg19", SHAPE, 4), 4)


def test_keras_without_top_converts_the_backbone_only(keras_vgg16_no_top):
  model = _build("vgg16", 7, NO_TOP_SHAPE, include_top=False)
  head = jax.tree.map(np.array, nnx.state(model.head))
  mean, std = keras_import.convert(model, "vgg16", keras_vgg16_no_top)
  pixels = _pixels(NO_TOP_SHAPE, seed=1)
  features, _ = _keras_outputs(keras_vgg16_no_top, pixels)
  np.testing.assert_allclose(model.embed((pixels - mean) / std), features, rtol=0, atol=1e-4)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model.head), head)


def test_converter_errors_name_the_fix(keras_vgg16, keras_vgg16_no_top):
  with pytest.raises(ValueError, match="13 convs but the jimb model has 16; build the VGG"):
    keras_import.convert(_tiny("vgg19"), "vgg16", keras_vgg16)
  with pytest.raises(ValueError, match="include_top=False"):
    keras_import.convert(_build("vgg16", 2, NO_TOP_SHAPE, width=4, fc_units=16), "vgg16",
                         keras_vgg16_no_top)
