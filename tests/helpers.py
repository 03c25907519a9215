"""Small shared pieces for the runner tests."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs.default
from jimb.models import keras_import


def tiny_config(**overrides):
  """The default experiment shrunk to seconds: tiny CNN, 2 folds, 3 epochs."""
  c = configs.default.get_config("tiny")
  c.split.folds = 2
  c.train.epochs = 3
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def scalar_metrics(results: dict) -> list[dict]:
  return [{k: v for k, v in r["test"].items() if isinstance(v, float)} for r in results["folds"]]


def assert_same_metrics(a: dict, b: dict) -> None:
  for fa, fb in zip(scalar_metrics(a), scalar_metrics(b), strict=True):
    for k in fa:
      np.testing.assert_equal(fa[k], fb[k], err_msg=k)


def keras_or_skip():
  """Keras (an optional extra) for the conversion tests, or a skip when it is not installed."""
  try:
    return keras_import.keras()
  except ImportError:
    pytest.skip("Keras is not installed")


def randomise_weights(keras_model, seed: int = 0) -> None:
  """Fresh Keras layers have zero biases and 0/1 statistics, which would hide a wrong mapping.

  BatchNorm scales below 1 keep a deep random network's features O(1) (ResNet-101's reach ~200
  with scales around 1), so float32 roundoff stays well below the 1e-4 tolerance.
  """
  rng = np.random.default_rng(seed)
  for v in keras_model.weights:
    leaf = v.path.split("/")[-1]
    if leaf in ("bias", "beta", "moving_mean"):
      v.assign(rng.normal(0.0, 0.1, v.shape).astype(np.float32))
    elif leaf in ("gamma", "moving_variance"):
      high = 1.0 if leaf == "gamma" else 1.5
      v.assign(rng.uniform(0.5, high, v.shape).astype(np.float32))


def random_keras_twin(name: str, shape, num_classes: int):
  """The Keras model `name` (skipped without Keras) with `randomise_weights` applied."""
  keras_or_skip()
  keras_model = keras_import.build_keras_twin(name, shape, num_classes=num_classes)
  randomise_weights(keras_model)
  return keras_model


def assert_bfloat16_close(model, logits, reference) -> None:
  """bfloat16 compute: bf16 logits near the float32 model's, parameters still float32."""
  assert logits.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  np.testing.assert_allclose(logits.astype(jnp.float32), reference,
                             atol=0.05 * float(jnp.abs(reference).max()))
