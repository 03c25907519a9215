"""The CPU rewrites of jimb.models.conv against XLA's convolution (values and jax.vjp)."""

from __future__ import annotations

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from jimb import conv

NHWC = ("NHWC", "HWIO", "NHWC")
DEPTHWISE = [  # (input shape, kernel, strides, padding)
    ((2, 7, 5, 3), (3, 3), (1, 1), "SAME"),
    ((3, 9, 8, 4), (3, 3), (2, 2), "SAME"),
    ((2, 9, 8, 4), (3, 3), (2, 2), "VALID"),
    ((1, 11, 13, 6), (5, 5), (2, 2), ((1, 2), (2, 2))),     # EfficientNet's correct_pad shape
    ((2, 6, 7, 5), (5, 5), (1, 1), "SAME"),
    ((2, 8, 6, 3), (3, 2), (1, 2), ((0, 1), (1, 0))),         # uneven kernel, strides, pads
    ((4, 2, 2, 8), (3, 3), (1, 1), "SAME"),                   # tiny spatial, as in late stages
    ((1, 1, 1, 2), (3, 3), (1, 1), "SAME"),
]


# (input shape, kernel (kh, kw, C_out), strides, padding): each takes the im2col form.
IM2COL = [
    ((2, 9, 7, 6), (1, 1, 5), (1, 1), "SAME"),                 # 1x1
    ((2, 9, 7, 6), (1, 1, 4), (2, 2), "VALID"),                # 1x1, strided (a projection)
    ((3, 4, 3, 5), (3, 3, 7), (2, 2), "SAME"),                 # 2x2 output
    ((2, 2, 2, 8), (3, 3, 4), (1, 1), "SAME"),                 # 2x2 input
    ((2, 1, 1, 6), (3, 3, 5), (1, 1), "SAME"),                 # 1x1 input: only the centre tap
    ((2, 11, 9, 3), (7, 7, 4), (2, 2), ((3, 3), (3, 3))),      # a stem on RGB (ResNet's)
    ((2, 10, 7, 1), (3, 3, 4), (1, 1), "SAME"),                # one channel (the small CNN's)
    ((2, 13, 12, 3), (3, 2, 4), (2, 1), ((1, 0), (0, 2))),     # uneven everything
    ((2, 14, 14, 8), (4, 4, 6), (2, 2), "SAME"),                # the DCGAN critic's strided conv
    ((2, 9, 11, 6), (3, 3, 5), (2, 2), "VALID"),               # a strided downsampling conv
]


def _grouped(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                  feature_group_count=x.shape[-1] // w.shape[2])


def _rewritten(x, w, strides, padding):
  return conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                   feature_group_count=x.shape[-1] // w.shape[2])


def _assert_same_vjp(x, w, strides, padding, seed):
  ref, ref_vjp = jax.vjp(lambda x, w: _grouped(x, w, strides, padding), x, w)
  out, out_vjp = jax.vjp(lambda x, w: _rewritten(x, w, strides, padding), x, w)
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  g = jnp.asarray(np.random.default_rng(seed).standard_normal(ref.shape), jnp.float32)
  for a, b in zip(out_vjp(g), ref_vjp(g), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _traced_form(x, w, strides, padding, groups):
  """The form conv_general_dilated picks for (x, w) inside a traced program."""
  found = []
  jax.eval_shape(lambda x, w: found.append(
      conv._form(x, w, strides, padding, None, None, NHWC, groups, {})) or x, x, w)
  return found[0]


def _arrays(shape, kernel_shape, seed):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal(shape), jnp.float32),
          jnp.asarray(rng.standard_normal(kernel_shape), jnp.float32))


@pytest.mark.parametrize("shape, window, strides, padding", DEPTHWISE)
def test_depthwise_values_and_gradients_match_xla(shape, window, strides, padding):
  x, w = _arrays(shape, (*window, 1, shape[-1]), sum(shape))
  assert _traced_form(x, w, strides, padding, shape[-1]) is conv._depthwise
  _assert_same_vjp(x, w, strides, padding, sum(shape))


@pytest.mark.parametrize("shape, kernel, strides, padding", IM2COL)
def test_im2col_values_and_gradients_match_xla(shape, kernel, strides, padding):
  x, w = _arrays(shape, (*kernel[:2], shape[-1], kernel[2]), sum(shape) + 1)
  assert _traced_form(x, w, strides, padding, 1) is conv._im2col
  _assert_same_vjp(x, w, strides, padding, sum(shape))


def test_mid_sized_convolutions_stay_xla_s():
  """Stride 1, more than 2x2 outputs, more than 4 input channels: XLA's kernel was as fast."""
  x, w = _arrays((2, 8, 8, 16), (3, 3, 16, 8), 0)
  assert _traced_form(x, w, (1, 1), "SAME", 1) is None
  np.testing.assert_array_equal(_rewritten(x, w, (1, 1), "SAME"), _grouped(x, w, (1, 1), "SAME"))


def test_jitted_grad_of_a_loss_matches():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 10, 9, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.float32)
  loss = lambda f: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(f(x, w, (2, 2), "SAME"))),
                                    argnums=(0, 1)))
  for a, b in zip(loss(_rewritten)(x, w), loss(_grouped)(x, w), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_other_convolutions_are_xla_s():
  """A grouped (2 channels per group), a dilated or a bfloat16 convolution goes to lax."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 8)), jnp.float32)
  for w, groups, dilation in [(rng.standard_normal((3, 3, 4, 8)), 2, (1, 1)),
                              (rng.standard_normal((3, 3, 1, 8)), 8, (2, 2)),
                              (rng.standard_normal((1, 1, 8, 5)), 1, (2, 2))]:
    w = jnp.asarray(w, jnp.float32)
    kw = dict(dimension_numbers=NHWC, feature_group_count=groups, rhs_dilation=dilation)
    np.testing.assert_array_equal(conv.conv_general_dilated(x, w, (1, 1), "SAME", **kw),
                                  lax.conv_general_dilated(x, w, (1, 1), "SAME", **kw))
  x16, w16 = x.astype(jnp.bfloat16), jnp.asarray(rng.standard_normal((1, 1, 8, 5)), jnp.bfloat16)
  assert _traced_form(x16, w16, (1, 1), "SAME", 1) is None


@pytest.mark.parametrize("groups", [1, 6])
def test_conv_layer_keeps_nnx_conv_s_parameters_and_outputs(groups):
  """conv.Conv is nnx.Conv with the rewrites: same parameter tree and values, same outputs."""
  kw = dict(strides=2, feature_group_count=groups, use_bias=True)
  fast = conv.Conv(6, 6, (3, 3), rngs=nnx.Rngs(0), **kw)
  plain = nnx.Conv(6, 6, (3, 3), rngs=nnx.Rngs(0), **kw)
  assert jax.tree.structure(nnx.state(fast)) == jax.tree.structure(nnx.state(plain))
  for a, b in zip(jax.tree.leaves(nnx.state(fast)), jax.tree.leaves(nnx.state(plain))):
    np.testing.assert_array_equal(a, b)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3, 4, 6)), jnp.float32)
  np.testing.assert_allclose(jax.jit(lambda x: fast(x))(x), plain(x), rtol=1e-5, atol=1e-5)


def test_eager_calls_keep_xla_s_convolution():
  """Outside a traced program each slice would run as a program of its own: XLA's one op runs."""
  x, w = _arrays((2, 2, 2, 8), (3, 3, 8, 4), 3)
  assert conv._form(x, w, (1, 1), "SAME", None, None, NHWC, 1, {}) is None
  assert _traced_form(x, w, (1, 1), "SAME", 1) is conv._im2col
