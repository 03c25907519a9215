"""Convolutions that XLA:CPU runs slowly, rewritten as work it runs fast; `Conv` builds the
zoo's (and the DCGAN critic's) convolution layers with them.

Measured per layer shape on a 2-core CPU (forward + backward, docs/benchmarks.md):
  * depthwise (one channel per group: MobileNet's and EfficientNet's 3x3 / 5x5) ran at
    0.1-0.2 GFLOP/s. As kh * kw strided slices of the padded input, each times its tap's
    per-channel weights, summed, it is elementwise work XLA fuses: forward + backward 2-93x
    faster at every depthwise shape of MobileNetV2 at 64x64 and EfficientNet-B0 measured.
  * a 1x1 kernel, a stride above 1, an output of at most 2x2 positions or an input of at most
    4 channels as an im2col matmul: the patches (strided slices, concatenated) times the
    reshaped kernel; its gradients are a matmul and padded adds. XLA's kernels were slowest
    there: a 3x3 conv on 2x2 inputs at batch 64 (ResNet's last stages on small images) took
    12-49 ms forward + backward, 8-27x the matmul's; a stem's weight gradient on raw images ran
    at 2-7 GFLOP/s; the weight gradient of the DCGAN critic's 4x4/2 conv took 58 ms of a 157 ms
    GAN step (the step ran 4.7x faster rewritten). A few of these layers alone run 0.6-0.8x as
    fast rewritten (a stem, a strided 1x1), but every training step that has them ran faster.
    Mid-sized stride-1 layers (14x14 or 8x8 with 32-128 channels) ran 0.2-1.2x as fast as
    matmuls and keep XLA's convolution.
Both are exact rewrites of the convolution: values and gradients equal XLA's to float32
rounding, the products being summed in another order (tests/test_conv.py). GPU and TPU keep
XLA's convolution, as do eager calls (outside jit each slice would be a program of its own) and
anything else (bfloat16 compute, dilation, other layouts, grouped convolutions with several
channels per group).
"""

from __future__ import annotations

from typing import Any, Sequence

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp

# The im2col form takes outputs of at most this many positions, or inputs of at most this
# many channels (besides every 1x1 kernel and every strided convolution).
_TINY_OUTPUT = 4
_FEW_CHANNELS = 4


def Conv(*args, **kwargs) -> nnx.Conv:  # noqa: N802  (a layer constructor, as nnx.Conv)
  """`nnx.Conv(...)` computing with `conv_general_dilated`: same parameters, checkpoints and
  weight imports as the plain layer."""
  return nnx.Conv(*args, conv_general_dilated=conv_general_dilated, **kwargs)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         **kwargs: Any) -> jax.Array:
  """`lax.conv_general_dilated`, with the CPU rewrites above for plain 2-D NHWC x HWIO
  convolutions without dilation."""
  form = _form(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count, kwargs)
  if form is None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count, **kwargs)
  return form(lhs, rhs, tuple(window_strides), _pads(lhs, rhs, window_strides, padding))


def _pads(lhs, rhs, strides, padding) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    return lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], tuple(strides), padding)
  return [tuple(p) for p in padding]


def _form(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, groups,
          kwargs):
  """The rewrite for this convolution on this backend, or None for XLA's."""
  if jax.default_backend() != "cpu" or lhs.ndim != 4 or rhs.ndim != 4:
    return None
  # Only inside a traced program: run eagerly, each slice would be a program of its own, and a
  # long process (the test suite) accumulated thousands of them until XLA:CPU crashed.
  if not isinstance(lhs, jax.core.Tracer):
    return None
  if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:   # measured in float32 only
    return None
  if any(d != 1 for d in (*(lhs_dilation or (1, 1)), *(rhs_dilation or (1, 1)))):
    return None
  if kwargs.get("preferred_element_type") is not None or kwargs.get("out_sharding") is not None:
    return None
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc:
    return None
  channels = lhs.shape[-1]
  out = _output_size(lhs, rhs, strides, _pads(lhs, rhs, strides, padding))
  if min(out) < 1:
    return None
  if groups > 1:
    return _depthwise if groups == channels and rhs.shape[2:] == (1, channels) else None
  if (rhs.shape[:2] == (1, 1) or max(strides) > 1 or out[0] * out[1] <= _TINY_OUTPUT
      or channels <= _FEW_CHANNELS):
    return _im2col
  return None


def _output_size(x, kernel, strides, pads) -> tuple[int, int]:
  return tuple((x.shape[d + 1] + lo + hi - kernel.shape[d]) // strides[d] + 1
               for d, (lo, hi) in enumerate(pads))


def _taps(x, kernel, strides, pads):
  """Each kernel tap's strided slice of the padded input, row-major: (i, j, slice)."""
  xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads),
                                           (0, 0, 0)])
  out = _output_size(x, kernel, strides, pads)
  for i in range(kernel.shape[0]):
    for j in range(kernel.shape[1]):
      limit = (xp.shape[0], i + strides[0] * (out[0] - 1) + 1,
               j + strides[1] * (out[1] - 1) + 1, xp.shape[3])
      yield i, j, lax.slice(xp, (0, i, j, 0), limit, (1, *strides, 1))


def _depthwise(x, kernel, strides, pads):
  """sum over taps (i, j) of the tap's slice * kernel[i, j, 0] (per channel)."""
  total = None
  for i, j, window in _taps(x, kernel, strides, pads):
    term = window * kernel[i, j, 0]
    total = term if total is None else total + term
  return total


def _im2col(x, kernel, strides, pads):
  """[slices of every tap, channels last] @ kernel.reshape(kh * kw * C_in, C_out)."""
  windows = [window for _, _, window in _taps(x, kernel, strides, pads)]
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  kh, kw, c_in, c_out = kernel.shape
  return jnp.einsum("nhwk,ko->nhwo", patches, kernel.reshape(kh * kw * c_in, c_out))
