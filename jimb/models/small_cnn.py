"""The small CNN of the GAN-balancing seed: three conv + max-pool blocks, two dense layers."""

from __future__ import annotations

from typing import Sequence

from flax import nnx

from jimb import conv as conv_lib
from jimb.models import layers
from jimb.models import pooling
from jimb.models.base import MODELS, Classifier, dropout


@MODELS.register("small_cnn")
class SmallCNN(Classifier):
  """conv3x3 (+BatchNorm) + ReLU + 2x2 max-pool, three times; dense + ReLU + dropout; dense.

  Pooling uses SAME padding so tiny inputs (8x8 digits) still pass three blocks.
  """

  def __init__(self, *, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
               widths: Sequence[int] = (32, 64, 128), dense: int = 128,
               dropout: float = 0.25, batch_norm: bool = True, dtype: str = "float32"):
    if len(input_shape) != 3:
      raise ValueError(f"small_cnn takes images (H, W, C); got input shape {tuple(input_shape)}. "
                       "Use --config.model.name=mlp for tables.")
    h, w, c = input_shape
    dt = layers.compute_dtype(dtype)
    self.convs = nnx.List()
    self.norms = nnx.List()
    for width in widths:
      self.convs.append(conv_lib.Conv(c, width, (3, 3), padding="SAME", use_bias=not batch_norm,
                                 dtype=dt, rngs=rngs))
      self.norms.append(nnx.BatchNorm(width, momentum=0.9, dtype=dt, rngs=rngs)
                        if batch_norm else None)
      c = width
      h, w = -(-h // 2), -(-w // 2)
    self.dense = nnx.Linear(h * w * c, dense, dtype=dt, rngs=rngs)
    self.drop = nnx.Dropout(dropout)
    self.out = nnx.Linear(dense, num_classes, dtype=dt, rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    for conv, norm in zip(self.convs, self.norms):
      x = conv(x)
      if norm is not None:
        x = layers.batch_norm(norm, x, train)
      x = pooling.max_pool(nnx.relu(x), (2, 2), (2, 2), "SAME")
    return nnx.relu(self.dense(x.reshape(x.shape[0], -1)))

  def head(self, features, *, train=False, key=None):
    return self.out(dropout(self.drop, features, train, key))
