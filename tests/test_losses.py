"""Losses against an independent float64 NumPy implementation and optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jimb import losses

COUNTS = np.array([50, 20, 5])


def _numpy_focal(logits, labels, gamma, alpha):
  z = np.asarray(logits, np.float64)
  z = z - z.max(1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  p_t = p[np.arange(len(labels)), labels]
  alpha_t = np.broadcast_to(np.asarray(alpha, np.float64), (p.shape[1],))[labels]
  return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


def _case(seed, k=3, b=16):
  rng = np.random.default_rng(seed)
  return (rng.normal(scale=3.0, size=(b, k)).astype(np.float32),
          rng.integers(0, k, b).astype(np.int32))


def _build(**cfg):
  return losses.build_loss(ml_collections.ConfigDict(cfg), COUNTS)


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.5, 1.0), (1.0, (0.2, 0.3, 0.5))])
@pytest.mark.parametrize("seed", [0, 1])
def test_focal_matches_numpy(seed, gamma, alpha):
  logits, labels = _case(seed)
  out = _build(name="focal", gamma=gamma, alpha=alpha)(logits, labels)
  assert out.shape == (16,) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, _numpy_focal(logits, labels, gamma, alpha), rtol=1e-5,
                             atol=1e-6)


def test_focal_default_is_gamma_2_alpha_quarter():
  logits, labels = _case(2)
  np.testing.assert_allclose(_build(name="focal")(logits, labels),
                             _numpy_focal(logits, labels, 2.0, 0.25), rtol=1e-5, atol=1e-6)


def test_focal_gamma_zero_alpha_none_is_cross_entropy():
  logits, labels = _case(3)
  focal = _build(name="focal", gamma=0.0, alpha=None)(logits, labels)
  ce = _build(name="cross_entropy")(logits, labels)
  np.testing.assert_allclose(focal, ce, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      ce, _numpy_focal(logits, labels, 0.0, 1.0), rtol=1e-5, atol=1e-6)


def test_focal_per_class_alpha_weights_by_true_class():
  logits, labels = _case(4)
  alpha = [0.1, 1.0, 3.0]
  weighted = _build(name="focal", gamma=2.0, alpha=alpha)(logits, labels)
  plain = _build(name="focal", gamma=2.0, alpha=None)(logits, labels)
  np.testing.assert_allclose(weighted, np.asarray(alpha)[labels] * plain, rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_optax(smoothing):
  logits, labels = _case(5, k=4)
  out = losses.build_loss(
      ml_collections.ConfigDict(dict(name="cross_entropy", label_smoothing=smoothing)),
      np.ones(4))(logits, labels)
  target = optax.smooth_labels(jax.nn.one_hot(labels, 4), smoothing)
  np.testing.assert_allclose(out, optax.softmax_cross_entropy(logits, target), rtol=1e-5)


@pytest.mark.parametrize("cfg", [
    dict(name="cross_entropy"), dict(name="cross_entropy", label_smoothing=0.1),
    dict(name="focal", gamma=2.0), dict(name="focal", gamma=0.5), dict(name="focal", gamma=0.0),
])
def test_extreme_logits_give_finite_values_and_gradients(cfg):
  # Rows: true class far ahead (p_t == 1 exactly), far behind, and a near tie.
  logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [50.0, 0.0, -50.0],
                      [0.0, 0.0, 1e-3]], jnp.float32)
  labels = jnp.array([0, 0, 0, 2])
  fn = _build(**cfg)
  values = fn(logits, labels)
  grads = jax.grad(lambda z: fn(z, labels).sum())(logits)
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
  assert float(values[1]) > 1e3  # a confidently wrong example still costs a lot


def test_focal_gradient_matches_finite_difference():
  logits, labels = _case(6, b=4)
  logits = logits.astype(np.float64)
  fn = _build(name="focal", gamma=0.5, alpha=(0.2, 0.3, 0.5))
  grad = jax.grad(lambda z: fn(z, labels).sum())(jnp.asarray(logits, jnp.float32))
  eps = 1e-4
  numeric = np.zeros_like(logits)
  for i, j in np.ndindex(*logits.shape):
    up, down = logits.copy(), logits.copy()
    up[i, j] += eps
    down[i, j] -= eps
    numeric[i, j] = (_numpy_focal(up, labels, 0.5, (0.2, 0.3, 0.5)).sum()
                     - _numpy_focal(down, labels, 0.5, (0.2, 0.3, 0.5)).sum()) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


def test_jit_and_bfloat16_give_float32():
  logits, labels = _case(7)
  fn = _build(name="focal", gamma=2.0)
  eager = fn(logits, labels)
  np.testing.assert_allclose(jax.jit(fn)(logits, labels), eager, rtol=1e-6)
  low = jax.jit(fn)(jnp.asarray(logits, jnp.bfloat16), labels)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, eager, rtol=0.1, atol=0.02)
  assert _build(name="cross_entropy")(jnp.asarray(logits, jnp.bfloat16), labels).dtype == (
      jnp.float32)


@pytest.mark.parametrize("cfg, match", [
    (dict(name="focal", gama=2.0), "gama"),
    (dict(name="cross_entropy", gamma=2.0), "gamma"),
    (dict(name="focal", gamma=-1.0), "loss.gamma"),
    (dict(name="focal", alpha=[0.5, 0.5]), "one weight per class"),
    (dict(name="focal", alpha=-0.25), "loss.alpha"),
    (dict(name="cross_entropy", label_smoothing=1.0), "label_smoothing"),
    (dict(name="hinge"), "unknown loss"),
])
def test_bad_options_raise(cfg, match):
  with pytest.raises(ValueError, match=match):
    _build(**cfg)
