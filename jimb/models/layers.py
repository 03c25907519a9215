"""Pieces every model family shares: the classification head, BatchNorm calls, compute dtypes."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from jimb.models.base import dropout as apply_dropout

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """`model.dtype`: the dtype activations are computed in; parameters always stay float32."""
  if name not in DTYPES:
    raise ValueError(f"unknown --config.model.dtype={name!r}; choose one of {sorted(DTYPES)}")
  return DTYPES[name]


def batch_norm(norm: nnx.BatchNorm, x: jax.Array, train: bool) -> jax.Array:
  """BatchNorm that stays in inference mode when frozen (`norm.use_running_average = True`).

  Transfer learning freezes the statistics of frozen parts by setting that attribute (see
  `jimb.fitting.transfer`); a plain call would override it with `not train`.
  """
  return norm(x, use_running_average=(not train) or bool(norm.use_running_average))


class Head(nnx.Module):
  """dropout -> [hidden FC -> ReLU -> dropout] -> FC(num_classes): replaced per task.

  `hidden` > 0 adds the extra fully connected layer some transfer-learning recipes put on the
  pooled features (e.g. 1024 units).
  """

  def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs, hidden: int = 0,
               dropout: float = 0.0, dtype=jnp.float32):
    self.drop = nnx.Dropout(dropout)
    self.hidden = nnx.Linear(in_features, hidden, dtype=dtype, rngs=rngs) if hidden else None
    self.out = nnx.Linear(hidden or in_features, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None):
    k1 = k2 = None
    if key is not None:
      k1, k2 = jax.random.split(key)
    x = apply_dropout(self.drop, x, train, k1)
    if self.hidden is not None:
      x = apply_dropout(self.drop, nnx.relu(self.hidden(x)), train, k2)
    return self.out(x)
