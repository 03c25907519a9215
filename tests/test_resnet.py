"""ResNet-18/34/50/101: training, parameter counts, Keras weight conversion, bfloat16."""

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


def _count(name, **options):
  """Parameters + BatchNorm statistics at 1000 classes and 224x224x3, without allocating them."""
  model = nnx.eval_shape(lambda: _build(name, 1000, (224, 224, 3), **options))
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat)))


TINY = dict(num_classes=3, shape=(20, 28, 3), width=4)  # shared by the tests: XLA compiles once


def _tiny(name, **options):
  return _build(name, TINY["num_classes"], TINY["shape"], width=TINY["width"], **options)


def _tiny_input():
  return jax.random.uniform(jax.random.key(1), (2, *TINY["shape"]))


@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet34", marks=pytest.mark.slow),
                                  "resnet50", pytest.param("resnet101", marks=pytest.mark.slow)])
def test_train_step_at_tiny_width(name):
  model = _tiny(name, dropout=0.5, head_hidden=8)
  x, y = _tiny_input(), jnp.array([0, 2])

  def loss(m):
    logits = m(x, train=True, key=jax.random.key(2))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  grads = nnx.grad(loss)(model)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert any(np.any(g != 0) for g in leaves)
  expansion = 4 if name in ("resnet50", "resnet101") else 1
  assert model.embed(x).shape == (2, 8 * TINY["width"] * expansion)


def _basic_block_count(stage_sizes, conv_bias: bool, running_stats: bool) -> int:
  """A basic-block ResNet counted from its layer table (torchvision's resnet18/34 layout)."""
  convs, norms = [(7, 3, 64)], [64]
  cin = 64
  for s, n in enumerate(stage_sizes):
    cout = 64 * 2**s
    for _ in range(n):
      convs += [(3, cin, cout), (3, cout, cout)]
      norms += [cout, cout]
      if cin != cout:  # the downsampling shortcut: 1x1 conv + BN
        convs.append((1, cin, cout))
        norms.append(cout)
      cin = cout
  total = sum(k * k * i * o + (o if conv_bias else 0) for k, i, o in convs)
  total += sum((4 if running_stats else 2) * c for c in norms)
  return total + 512 * 1000 + 1000


@pytest.mark.parametrize("name, stages, torchvision", [("resnet18", (2, 2, 2, 2), 11_689_512),
                                                       ("resnet34", (3, 4, 6, 3), 21_797_672)])
def test_basic_block_parameter_counts(name, stages, torchvision):
  # The table reproduces torchvision's counts (no conv biases, no running statistics); jimb's
  # Keras-style model adds a bias to every conv and counts BatchNorm's moving mean/variance.
  assert _basic_block_count(stages, conv_bias=False, running_stats=False) == torchvision
  assert _count(name) == _basic_block_count(stages, conv_bias=True, running_stats=True)


# From keras.applications.ResNet50/ResNet101(weights=None).count_params() (Keras 3.15.1).
@pytest.mark.parametrize("name, keras_count", [("resnet50", 25_636_712),
                                               ("resnet101", 44_707_176)])
def test_parameter_counts_equal_keras(name, keras_count):
  assert _count(name) == keras_count


def test_rejects_tables():
  with pytest.raises(ValueError, match="model.name=mlp"):
    _build("resnet18", 2, (30,))


def test_bfloat16_logits_close_to_float32():
  x = _tiny_input()
  ref = _tiny("resnet18")(x)
  model = _tiny("resnet18", dtype="bfloat16")
  logits = model(x)
  assert_bfloat16_close(model, logits, ref)


# Keras conversion. Shapes are odd and non-square so padding and strides are checked too.
SHAPE = (35, 45, 3)


@pytest.fixture(scope="module")
def keras_resnet50():
  return random_keras_twin("resnet50", SHAPE, 5)


@pytest.fixture(scope="module")
def resnet50():
  """Built once: eager initialisation compiles per layer shape, which is slow on CPU."""
  return _build("resnet50", 5, SHAPE)


def _pixels(seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (2, *SHAPE)) / 255.0).astype(np.float32)


def _keras_outputs(keras_model, pixels, features_layer=None):
  """Keras's (features, output) on `pixels` in [0, 1], preprocessed by Keras itself; without
  `features_layer` the features are the output (a model without its top)."""
  keras = keras_or_skip()
  x = keras.applications.resnet.preprocess_input(pixels * 255.0)
  features = keras_model.get_layer(features_layer).output if features_layer else keras_model.output
  both = keras.Model(keras_model.inputs, [features, keras_model.output])
  return [np.asarray(y) for y in both.predict(x, verbose=0)]


@nnx.jit
def _embed_and_head(model, x):
  """One compiled forward: eager op-by-op compiles of a full-width ResNet cost more on CPU."""
  features = model.embed(x)
  return features, model.head(features)


def _check_conversion(model, name, keras_model):
  mean, std = keras_import.convert(model, name, keras_model)
  pixels = _pixels()
  features, logits = _keras_outputs(keras_model, pixels, "avg_pool")
  jimb_features, jimb_logits = _embed_and_head(model, (pixels - mean) / std)
  np.testing.assert_allclose(jimb_features, features, rtol=0, atol=1e-4)
  np.testing.assert_allclose(jimb_logits, logits, rtol=0, atol=1e-4)


def test_resnet50_converts_from_keras(resnet50, keras_resnet50):
  _check_conversion(resnet50, "resnet50", keras_resnet50)


@pytest.mark.slow
def test_resnet101_converts_from_keras():
  _check_conversion(_build("resnet101", 3, SHAPE), "resnet101",
                    random_keras_twin("resnet101", SHAPE, 3))


def test_keras_without_top_converts_the_backbone_only(resnet50):
  keras = keras_or_skip()
  keras_model = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                            input_shape=SHAPE)
  randomise_weights(keras_model, seed=1)
  head = jax.tree.map(np.array, nnx.state(resnet50.head))
  mean, std = keras_import.convert(resnet50, "resnet50", keras_model)
  pixels = _pixels(seed=1)
  features, _ = _keras_outputs(keras_model, pixels)
  jimb_features, _ = _embed_and_head(resnet50, (pixels - mean) / std)
  np.testing.assert_allclose(jimb_features, features, rtol=0, atol=1e-4)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(resnet50.head), head)


def test_converter_rejects_another_depth(keras_resnet50):
  with pytest.raises(ValueError, match="16 bottleneck blocks.*8 blocks of 2 convs"):
    keras_import.convert(_tiny("resnet18"), "resnet50", keras_resnet50)
