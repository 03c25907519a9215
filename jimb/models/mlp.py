"""The tabular MLP of the CycleGAN seed: three fully connected layers, LeakyReLU, dropout."""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax

from jimb.models import layers
from jimb.models.base import MODELS, Classifier, dropout


@MODELS.register("mlp")
class MLP(Classifier):
  """Hidden dense layers with LeakyReLU and dropout, then the output layer.

  With the default two hidden layers the network has three fully connected layers; images are
  flattened, so the MLP also serves as a baseline on small images.
  """

  def __init__(self, *, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
               hidden: Sequence[int] = (128, 64), dropout: float = 0.1,
               negative_slope: float = 0.01, dtype: str = "float32"):
    size = 1
    for d in input_shape:
      size *= d
    dt = layers.compute_dtype(dtype)
    self.layers = nnx.List()
    for width in hidden:
      self.layers.append(nnx.Linear(size, width, dtype=dt, rngs=rngs))
      size = width
    self.drop = nnx.Dropout(dropout)
    self.negative_slope = negative_slope
    self.out = nnx.Linear(size, num_classes, dtype=dt, rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    x = x.reshape(x.shape[0], -1)
    keys = [None] * len(self.layers) if key is None else list(jax.random.split(key, len(self.layers)))
    for i, layer in enumerate(self.layers):
      x = nnx.leaky_relu(layer(x), self.negative_slope)
      if i < len(self.layers) - 1:
        x = dropout(self.drop, x, train, keys[i])
    return x

  def head(self, features, *, train=False, key=None):
    return self.out(dropout(self.drop, features, train, key))
