"""jimb.models.pooling.max_pool against nnx.max_pool and its XLA gradient (select-and-scatter)."""

from __future__ import annotations

from flax import nnx
import jax
import numpy as np
import pytest

from jimb.models import pooling

CASES = [  # input shape, window, strides, padding
    ((2, 28, 28, 3), (2, 2), (2, 2), "SAME"),     # small CNN
    ((2, 7, 9, 3), (2, 2), (2, 2), "SAME"),       # odd sizes: SAME pads one row / column
    ((3, 9, 8, 2), (2, 2), (2, 2), "VALID"),      # VGG; the odd row is dropped
    ((2, 18, 18, 4), (3, 3), (2, 2), "VALID"),    # ResNet / DenseNet stem (after zero padding)
    ((1, 11, 10, 2), (3, 3), (2, 2), "VALID"),
    ((1, 10, 11, 2), (3, 2), (1, 3), "SAME"),     # overlapping rows, gaps between columns
    ((1, 7, 7, 2), (3, 3), (2, 2), ((1, 2), (0, 1))),
    ((2, 9, 3), (3,), (2,), "SAME"),              # one spatial dimension
]


def _inputs(shape, kind: str, rng) -> np.ndarray:
  if kind == "normal":
    return rng.standard_normal(shape).astype(np.float32)
  if kind == "integers":      # many ties inside windows
    return rng.integers(0, 3, shape).astype(np.float32)
  x = rng.standard_normal(shape).astype(np.float32)   # a constant region, as after a ReLU
  x[:, : shape[1] // 2] = 0.0
  return x


@pytest.mark.parametrize("kind", ["normal", "integers", "constant"])
@pytest.mark.parametrize("shape,window,strides,padding", CASES)
def test_values_and_gradients_equal_xla(shape, window, strides, padding, kind):
  rng = np.random.default_rng(0)
  x = _inputs(shape, kind, rng)
  y_ref, vjp_ref = jax.vjp(lambda v: nnx.max_pool(v, window, strides=strides, padding=padding), x)
  y, vjp = jax.vjp(lambda v: pooling.max_pool(v, window, strides, padding), x)
  np.testing.assert_array_equal(y, y_ref)
  g = rng.standard_normal(y.shape).astype(np.float32)
  # Every input gets the sum of the cotangents routed to it: exact where windows do not overlap,
  # equal up to the order of float additions where they do.
  overlap = any(w > s for w, s in zip(window, strides))
  np.testing.assert_allclose(vjp(g)[0], vjp_ref(g)[0], rtol=0, atol=1e-6 if overlap else 0)


def test_ties_go_to_the_first_position_in_the_window():
  x = np.zeros((1, 4, 4, 1), np.float32)
  x[0, 1, 0, 0] = x[0, 1, 1, 0] = 5.0        # the window's third and fourth positions tie
  grad = jax.grad(lambda v: pooling.max_pool(v, (2, 2), (2, 2), "VALID").sum())(x)
  expected = np.zeros_like(x)
  expected[0, 1, 0, 0] = 1.0                 # the earlier one, row-major
  expected[0, 0, 2, 0] = expected[0, 2, 0, 0] = expected[0, 2, 2, 0] = 1.0   # all-zero windows
  np.testing.assert_array_equal(grad, expected)


def test_value_and_grad_under_jit_match_xla():
  """Used inside jitted train steps: the custom VJP must trace under jit and value_and_grad."""
  x = np.random.default_rng(1).standard_normal((2, 9, 9, 3)).astype(np.float32)
  f = lambda pool: jax.jit(jax.value_and_grad(lambda v: (pool(v) ** 2).sum()))(x)
  value, grad = f(lambda v: pooling.max_pool(v, (3, 3), (2, 2), "VALID"))
  value_ref, grad_ref = f(lambda v: nnx.max_pool(v, (3, 3), strides=(2, 2), padding="VALID"))
  np.testing.assert_allclose(value, value_ref, rtol=1e-6)
  np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-5)
