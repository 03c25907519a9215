"""Max-pooling whose gradient XLA:CPU runs fast: strided slices forward, padded adds backward.

XLA:CPU lowers the gradient of `nnx.max_pool` (a select-and-scatter) to a generic scatter, which
took most of the small CNN's backward pass. `max_pool` here computes the same forward values
from the window's strided slices and keeps, per output, the position of the first maximum in
row-major window order, the position XLA's select-and-scatter routes the gradient to; its
backward pass puts each cotangent back with interior padding (`lax.pad`) and adds, all
elementwise, so XLA fuses it. Values and gradients equal `nnx.max_pool`'s (tests/test_maxpool.py).
On XLA:CPU forward + backward ran 7-58x faster at every pooling shape of the zoo (2x2/2 SAME
and VALID, 3x3/2 VALID; docs/benchmarks.md), so it is used there; GPU and TPU keep XLA's op.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: str | Sequence[tuple[int, int]] = "VALID") -> jax.Array:
  """`nnx.max_pool(x, window, strides, padding)` over [batch, *spatial, channels] inputs."""
  window, strides = tuple(window), tuple(strides)
  if jax.default_backend() != "cpu" or x.ndim != len(window) + 2:
    return nnx.max_pool(x, window, strides=strides, padding=padding)
  spatial = x.shape[1:-1]
  pads = (lax.padtype_to_pads(spatial, window, strides, padding) if isinstance(padding, str)
          else tuple(tuple(p) for p in padding))
  return _slice_pool(x, window, strides, tuple(map(tuple, pads)))


def _offsets(window):
  """Window positions in row-major order: the order select-and-scatter breaks ties in."""
  return list(itertools.product(*(range(w) for w in window)))


def _pad_inputs(x, pads):
  config = [(0, 0)] + list(pads) + [(0, 0)]
  if not any(lo or hi for lo, hi in pads):
    return x
  return jnp.pad(x, config, constant_values=-jnp.inf)


def _windows(xp, window, strides, out):
  """The strided slice of `xp` that each window position sees, in `_offsets` order."""
  for offset in _offsets(window):
    start = (0, *offset, 0)
    limit = (xp.shape[0], *(o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, out)),
             xp.shape[-1])
    yield lax.slice(xp, start, limit, (1, *strides, 1))


def _forward(x, window, strides, pads):
  """(max over each window, index of its first maximum)."""
  xp = _pad_inputs(x, pads)
  out = tuple((n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], window, strides))
  best = index = None
  for k, part in enumerate(_windows(xp, window, strides, out)):
    if best is None:
      best, index = part, jnp.zeros(part.shape, jnp.int8 if len(_offsets(window)) < 128
                                    else jnp.int32)
    else:
      wins = part > best    # strictly greater: the earliest maximum keeps the gradient
      best = jnp.where(wins, part, best)
      index = jnp.where(wins, jnp.asarray(k, index.dtype), index)
  return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _slice_pool(x, window, strides, pads):
  return _forward(x, window, strides, pads)[0]


def _slice_pool_fwd(x, window, strides, pads):
  y, index = _forward(x, window, strides, pads)
  return y, (index, x.shape)


def _slice_pool_bwd(window, strides, pads, residuals, g):
  index, shape = residuals
  padded = [n + lo + hi for n, (lo, hi) in zip(shape[1:-1], pads)]
  grad = None
  for k, offset in enumerate(_offsets(window)):
    part = jnp.where(index == k, g, jnp.zeros((), g.dtype))
    # Output i of this window position came from padded input offset + stride * i.
    config = [(0, 0, 0)] + [
        (o, n - o - (s * (m - 1) + 1), s - 1)
        for o, n, s, m in zip(offset, padded, strides, g.shape[1:-1])] + [(0, 0, 0)]
    part = lax.pad(part, jnp.zeros((), g.dtype), config)
    grad = part if grad is None else grad + part
  crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, shape[1:-1]))
  return (grad[(slice(None), *crop, slice(None))],)


_slice_pool.defvjp(_slice_pool_fwd, _slice_pool_bwd)
