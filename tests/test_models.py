"""The first members of the model zoo and the interface every model shares."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jimb.models import MODELS, build_model, model_options


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


@pytest.mark.parametrize("name, shape", [("small_cnn", (8, 8, 1)), ("small_cnn", (13, 11, 3)),
                                         ("mlp", (30,)), ("mlp", (8, 8, 1))])
def test_logits_and_features(name, shape):
  model = build_model(_cfg(name=name), 4, shape, jax.random.key(0))
  x = jnp.ones((2, *shape))
  logits = model(x)
  assert logits.shape == (2, 4)
  feats = model.embed(x)
  np.testing.assert_allclose(model.head(feats), logits, rtol=1e-6)
  train_logits = model(x, train=True, key=jax.random.key(1))
  assert train_logits.shape == (2, 4) and np.all(np.isfinite(train_logits))


def test_small_cnn_layout_matches_the_seed():
  model = build_model(_cfg(name="small_cnn", widths=(4, 8, 16), dense=32), 3, (8, 8, 1),
                      jax.random.key(0))
  assert [c.kernel.shape for c in model.convs] == [(3, 3, 1, 4), (3, 3, 4, 8), (3, 3, 8, 16)]
  assert model.dense.kernel.shape == (1 * 1 * 16, 32) and model.out.kernel.shape == (32, 3)


def test_mlp_has_three_dense_layers_with_leaky_relu():
  model = build_model(_cfg(name="mlp", hidden=(5, 4), dropout=0.0, negative_slope=0.1), 2, (3,),
                      jax.random.key(0))
  x = jnp.array([[1.0, -2.0, 0.5]])
  h = x
  for layer in model.layers:
    z = h @ layer.kernel[...] + layer.bias[...]
    h = jnp.where(z > 0, z, 0.1 * z)
  np.testing.assert_allclose(model(x), h @ model.out.kernel[...] + model.out.bias[...], rtol=1e-6)


def test_dropout_needs_a_key_in_training():
  model = build_model(_cfg(name="mlp", dropout=0.5), 2, (3,), jax.random.key(0))
  with pytest.raises(ValueError, match="PRNG key"):
    model(jnp.ones((1, 3)), train=True)


def test_bad_model_config_is_named():
  with pytest.raises(ValueError, match="no option.*widht"):
    build_model(_cfg(name="small_cnn", widht=3), 2, (8, 8, 1), jax.random.key(0))
  with pytest.raises(ValueError, match="unknown model 'resnet9'"):
    build_model(_cfg(name="resnet9"), 2, (8, 8, 1), jax.random.key(0))
  with pytest.raises(ValueError, match="model.name=mlp"):
    build_model(_cfg(name="small_cnn"), 2, (30,), jax.random.key(0))
  assert {"small_cnn", "mlp"} <= set(MODELS.names())


@pytest.mark.parametrize("name, shape", [("small_cnn", (8, 8, 3)), ("mlp", (12,))])
def test_bfloat16_compute_keeps_float32_parameters(name, shape):
  f32 = build_model(_cfg(name=name), 3, shape, jax.random.key(0))
  bf16 = build_model(_cfg(name=name, dtype="bfloat16"), 3, shape, jax.random.key(0))
  x = jax.random.uniform(jax.random.key(2), (4, *shape))
  assert bf16(x).dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  np.testing.assert_allclose(np.asarray(bf16(x), np.float32), f32(x), atol=0.05, rtol=0.05)
  with pytest.raises(ValueError, match="model.dtype"):
    build_model(_cfg(name=name, dtype="float16"), 3, shape, jax.random.key(0))


def test_model_options_come_from_the_chosen_models_block():
  cfg = _cfg(name="small_cnn", dtype="float32", pretrained="",
             small_cnn=dict(widths=(4, 4, 4), dense=8), mlp=dict(hidden=(3,)))
  assert model_options(cfg) == {"dtype": "float32", "widths": (4, 4, 4), "dense": 8}
  cfg.name = "mlp"  # switching models leaves the small CNN's options behind
  assert model_options(cfg) == {"dtype": "float32", "hidden": (3,)}
  cfg.smal_cnn = dict(widths=(1,))  # a misspelt block is an option no model takes
  cfg.name = "small_cnn"
  with pytest.raises(ValueError, match="smal_cnn"):
    build_model(cfg, 2, (8, 8, 1), jax.random.key(0))
