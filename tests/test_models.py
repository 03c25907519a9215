"""The first members of the model zoo and the interface every model shares."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jimb.models import MODELS, build_model


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
