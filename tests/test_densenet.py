"""DenseNet: the Keras layout and parameter counts, Keras weight conversion, and the remat variant.

Compiling a full-depth DenseNet's gradient takes minutes on a small CPU, so the default run
trains a two-block DenseNet (the same classes and code paths) and converts only DenseNet-121's
forward pass; every registered depth's train step and conversion run with `-m slow`.
"""

from __future__ import annotations

import functools
import re

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jimb.models import build_model, densenet, keras_import
from jimb import compiler
from jimb import mesh as mesh_lib
from jimb.fitting import step as step_lib

# `keras.applications.DenseNet{121,169,201}(weights=None).count_params()` (Keras 3.15.1).
KERAS_PARAMS = {121: 8_062_504, 169: 14_307_880, 201: 20_242_984}
FREEZE_FIRST_TWO_BLOCKS = r"^(stem|blocks/0|blocks/1|transitions/0|transitions/1)/"
SMALL = (32, 32, 3)       # Keras's smallest DenseNet input
TINY_BLOCKS = (1, 2)      # two blocks and a transition: every code path, compiled in seconds
# Each program here compiles once; a lower XLA optimisation level halves compile time on CPU.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _cfg(name, **options):
  return ml_collections.ConfigDict(dict(name=name, **options))


def _tiny(**options) -> densenet.DenseNet:
  return densenet.DenseNet(num_classes=3, input_shape=SMALL, rngs=nnx.Rngs(params=0),
                           blocks=TINY_BLOCKS, growth_rate=4, **options)


def _images(n=2, shape=SMALL, seed=0):
  """Random 8-bit pixels in [0, 1]."""
  return np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.float32) / 255.0


def _count_by_formula(blocks, num_classes=1000, growth=32, channels=3) -> int:
  """Keras's DenseNet parameters layer by layer (BatchNorm: gamma, beta and both moving stats)."""
  width = 2 * growth
  total = 7 * 7 * channels * width + 4 * width
  for b, n in enumerate(blocks):
    for _ in range(n):
      total += 4 * width + width * 4 * growth + 4 * 4 * growth + 9 * 4 * growth * growth
      width += growth
    if b < len(blocks) - 1:
      total += 4 * width + width * (width // 2)
      width //= 2
  return total + 4 * width + width * num_classes + num_classes


@functools.cache
def _abstract(name):
  """`name` at 1000 classes and 224x224x3, shapes only (no weights materialised)."""
  return nnx.eval_shape(lambda: build_model(_cfg(name), 1000, (224, 224, 3), jax.random.key(0)))


def _num_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat)))


def _loss_fn(model):
  """Loss of one training forward as a pure function, with the logits and new statistics."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params, rest, x, y):
    m = nnx.merge(graphdef, params, rest, copy=True)
    logits = m(x, train=True, key=jax.random.key(0))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce, (logits, nnx.state(m, nnx.BatchStat))

  return loss, params, rest


def _train_step(model, x, y):
  """Logits, loss gradients wrt parameters, and BatchNorm statistics after one training forward."""
  loss, params, rest = _loss_fn(model)
  step = jax.jit(jax.grad(loss, has_aux=True),
                 compiler_options=FAST_COMPILE | (compiler.backward_options() or {}))
  grads, (logits, stats) = step(params, rest, x, y)
  return logits, grads, stats


def _residual_bytes(model, x, y) -> int:
  """What the forward pass keeps for the backward pass (the arrays `jax.vjp` closes over)."""
  loss, params, rest = _loss_fn(model)
  pullback = lambda p, *args: jax.vjp(lambda p: loss(p, *args), p, has_aux=True)[1]
  return sum(leaf.size * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(jax.eval_shape(pullback, params, rest, x, y)))


# ---- layout and parameter counts ----

def test_formula_reproduces_keras_counts():
  for depth, count in KERAS_PARAMS.items():
    assert _count_by_formula(densenet.DEPTHS[depth]) == count


@pytest.mark.parametrize("depth", [121, pytest.param(169, marks=pytest.mark.slow),
                                   pytest.param(201, marks=pytest.mark.slow),
                                   pytest.param(264, marks=pytest.mark.slow)])
def test_parameter_count_matches_keras(depth):
  model = _abstract(f"densenet{depth}")
  assert _num_params(model) == _count_by_formula(densenet.DEPTHS[depth])
  if depth in KERAS_PARAMS:
    assert _num_params(model) == KERAS_PARAMS[depth]


def _stage(path: str) -> str:
  """"blocks/0/3/conv1/kernel" -> "blocks/0"; "stem/conv/kernel" -> "stem"."""
  parts = path.split("/")
  return "/".join(parts[:2]) if parts[0] in ("blocks", "transitions") else parts[0]


def test_freeze_pattern_covers_stem_first_two_blocks_and_transitions():
  assert FREEZE_FIRST_TWO_BLOCKS in densenet.__doc__
  paths = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(_abstract("densenet121")))]
  frozen = {_stage(p) for p in paths if re.match(FREEZE_FIRST_TWO_BLOCKS, p)}
  trained = {_stage(p) for p in paths if not re.match(FREEZE_FIRST_TWO_BLOCKS, p)}
  assert frozen == {"stem", "blocks/0", "blocks/1", "transitions/0", "transitions/1"}
  assert trained == {"blocks/2", "blocks/3", "transitions/2", "norm", "head"}


def test_bad_inputs_name_the_fix():
  with pytest.raises(ValueError, match="image_size=32"):
    build_model(_cfg("densenet121"), 2, (16, 16, 3), jax.random.key(0))
  with pytest.raises(ValueError, match="model.name=mlp"):
    build_model(_cfg("densenet121"), 2, (30,), jax.random.key(0))
  with pytest.raises(ValueError, match="no option.*growht_rate"):
    build_model(_cfg("densenet121", growht_rate=4), 2, SMALL, jax.random.key(0))


# ---- training, remat, dtypes ----

def test_remat_gives_the_same_step():
  x, y = jnp.asarray(_images(4)), jnp.array([0, 1, 2, 1])
  plain = _train_step(_tiny(), x, y)
  remat = _train_step(_tiny(remat=True), x, y)
  np.testing.assert_allclose(remat[0], plain[0], rtol=1e-5, atol=1e-6)
  # Gradients of biases that BatchNorm cancels are float noise (~1e-6) in either program.
  for g_remat, g_plain in zip(jax.tree.leaves(remat[1]), jax.tree.leaves(plain[1]), strict=True):
    assert np.all(np.isfinite(g_plain))
    np.testing.assert_allclose(g_remat, g_plain, rtol=1e-5, atol=1e-6)
  before = jax.tree.leaves(nnx.state(_tiny(), nnx.BatchStat))
  for s_remat, s_plain, s0 in zip(jax.tree.leaves(remat[2]), jax.tree.leaves(plain[2]), before,
                                  strict=True):
    assert not np.allclose(s_plain, s0)          # training moved the statistics
    np.testing.assert_allclose(s_remat, s_plain, rtol=1e-6, atol=1e-7)


def test_remat_keeps_fewer_activations_for_the_backward_pass():
  """The concatenations, BatchNorms and ReLUs are recomputed, not kept: residuals shrink.

  (What XLA then allocates is backend-specific; see docs/benchmarks.md.)
  """
  x = jax.ShapeDtypeStruct((8, 64, 64, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((8,), jnp.int32)
  model = nnx.eval_shape(lambda: densenet.DenseNet(
      num_classes=3, input_shape=(64, 64, 3), rngs=nnx.Rngs(params=0), blocks=(6, 2),
      growth_rate=8))
  plain = _residual_bytes(model, x, y)
  model.remat = True
  assert _residual_bytes(model, x, y) < 0.5 * plain


def test_remat_lowers_the_compiled_train_step_memory():
  """jimb's train step keeps the recomputation apart on every backend, so XLA allocates less."""
  batch = {"x": jax.ShapeDtypeStruct((8, 64, 64, 3), jnp.float32),
           "y": jax.ShapeDtypeStruct((8,), jnp.int32)}
  stats = jax.ShapeDtypeStruct((3,), jnp.float32)
  tx = optax.sgd(0.1)
  temp = {}
  for remat in (False, True):
    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: densenet.DenseNet(
        num_classes=3, input_shape=(64, 64, 3), rngs=nnx.Rngs(params=0), blocks=(12, 2),
        growth_rate=8, remat=remat)), nnx.Param, ...)
    state = step_lib.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                                rest=rest, opt_state=jax.eval_shape(tx.init, params))
    step = step_lib.make_train_step(
        graphdef, tx, optax.softmax_cross_entropy_with_integer_labels, None,
        mesh_lib.make_mesh(jax.devices()[:1]))
    key = jax.eval_shape(lambda: jax.random.key(0))
    compiled = step.lower(state, batch, key, stats, stats).compile()
    temp[remat] = compiled.memory_analysis().temp_size_in_bytes
  assert temp[True] < 0.6 * temp[False], temp   # about 1.0 when XLA merges the recomputation


def test_bfloat16_computes_close_to_float32_with_float32_params():
  x = jnp.asarray(_images())
  f32, bf16 = _tiny(), _tiny(dtype="bfloat16")
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  logits = _jimb_outputs(bf16, x)[1]
  assert logits.dtype == jnp.bfloat16
  np.testing.assert_allclose(logits.astype(jnp.float32), _jimb_outputs(f32, x)[1], atol=0.1,
                             rtol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("depth", sorted(densenet.DEPTHS))
def test_every_depth_trains(depth):
  model = build_model(_cfg(f"densenet{depth}", growth_rate=4, head_hidden=8, dropout=0.5), 3,
                      SMALL, jax.random.key(0))
  logits, grads, _ = _train_step(model, jnp.asarray(_images()), jnp.array([0, 2]))
  assert logits.shape == (2, 3)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# ---- Keras conversion ----

@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _features_and_logits(graphdef, state, x):
  model = nnx.merge(graphdef, state)
  features = model.embed(x)
  return features, model.head(features)


def _jimb_outputs(model, x):
  graphdef, state = nnx.split(model)
  return _features_and_logits(graphdef, state, x)


def _randomise_batch_norms(keras_model, seed=0):
  """Fresh Keras BatchNorms are the identity (0/1 statistics), which would hide a wrong mapping."""
  keras = keras_import.keras()
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                         rng.uniform(0.5, 1.5, n)])
  return keras_model


def _keras_outputs(keras_model, x):
  """Keras's (pooled features, logits); logits are None for a model without top."""
  if "predictions" not in {layer.name for layer in keras_model.layers}:
    return keras_model.predict(x, verbose=0), None
  keras = keras_import.keras()
  both = keras.Model(keras_model.input,
                     [keras_model.get_layer("avg_pool").output, keras_model.output])
  return tuple(both.predict(x, verbose=0))


def _nan_model(name):
  """`name` (1000 classes) with every weight NaN: a weight the converter misses shows in the output.

  DenseNet's weights do not depend on the input size, so the 224x224 shapes serve any input.
  """
  graphdef, state = nnx.split(_abstract(name))
  return nnx.merge(graphdef, jax.tree.map(lambda s: jnp.asarray(np.full(s.shape, np.nan, s.dtype)),
                                          state))


def _keras_twin(name, seed=0):
  return _randomise_batch_norms(keras_import.build_keras_twin(name, SMALL, num_classes=1000), seed)


def _check_features_and_logits(model, statistics, keras_model, seed):
  """Keras on its own `preprocess_input` of 0-255 pixels vs jimb on (x - mean) / std in [0, 1]."""
  keras = keras_import.keras()
  pixels = _images(seed=seed)
  k_features, k_logits = _keras_outputs(
      keras_model, keras.applications.densenet.preprocess_input(pixels * 255.0))
  mean, std = statistics
  features, logits = _jimb_outputs(model, jnp.asarray((pixels - mean) / std))
  np.testing.assert_allclose(features, k_features, atol=1e-4, rtol=0)
  if k_logits is not None:
    np.testing.assert_allclose(logits, k_logits, atol=1e-4, rtol=0)


def _converted(name, keras_model):
  model = _nan_model(name)
  return model, keras_import.convert(model, name, keras_model)


@pytest.fixture(scope="module")
def keras_densenet121():
  return _keras_twin("densenet121")


@pytest.fixture(scope="module")
def densenet121_from_keras(keras_densenet121):
  return _converted("densenet121", keras_densenet121)


def test_densenet121_converts_from_keras(densenet121_from_keras, keras_densenet121):
  _check_features_and_logits(*densenet121_from_keras, keras_densenet121, seed=1)


def test_keras_without_top_converts_the_backbone_only(densenet121_from_keras):
  model = nnx.clone(densenet121_from_keras[0])
  head = jax.tree.map(np.asarray, nnx.state(model.head))
  notop = _randomise_batch_norms(keras_import.keras().applications.DenseNet121(
      weights=None, include_top=False, pooling="avg", input_shape=SMALL), seed=1)
  statistics = keras_import.convert(model, "densenet121", notop)
  _check_features_and_logits(model, statistics, notop, seed=2)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model.head), head)


def test_converter_rejects_another_depth(keras_densenet121):
  with pytest.raises(ValueError, match="same depth"):
    keras_import.convert(_tiny(), "densenet121", keras_densenet121)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [169, 201])
def test_deeper_densenets_convert_from_keras(depth):
  name = f"densenet{depth}"
  keras_model = _keras_twin(name)
  _check_features_and_logits(*_converted(name, keras_model), keras_model, seed=1)
