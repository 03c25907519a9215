"""The interface every classifier shares: features for feature-space methods, logits for training."""

from __future__ import annotations

from flax import nnx
import jax

from jimb.registry import Registry

MODELS = Registry("model")


class Classifier(nnx.Module):
  """`embed` gives the penultimate (pooled) features, `head` maps them to logits.

  Dropout takes its key at call time (`key`), so a model's state is parameters and batch
  statistics only: the training step derives a fresh key per step and stays a pure function.
  """

  def embed(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None) -> jax.Array:
    raise NotImplementedError

  def head(self, features: jax.Array, *, train: bool = False,
           key: jax.Array | None = None) -> jax.Array:
    raise NotImplementedError

  def __call__(self, x: jax.Array, *, train: bool = False,
               key: jax.Array | None = None) -> jax.Array:
    if key is None:
      k_embed = k_head = None
    else:
      k_embed, k_head = jax.random.split(key)
    return self.head(self.embed(x, train=train, key=k_embed), train=train, key=k_head)


def dropout(layer: nnx.Dropout, x: jax.Array, train: bool, key: jax.Array | None) -> jax.Array:
  """Applies `layer` in training only; a training call without a key is a bug, so it fails."""
  if not train or layer.rate == 0:
    return x
  if key is None:
    raise ValueError("a training call with dropout needs a PRNG key (pass key=...)")
  return layer(x, deterministic=False, rngs=key)
