"""ResNet-50/101 as `keras.applications` (v1) and ResNet-18/34 with basic blocks in the same style.

Layer for layer the Keras applications (so ImageNet weights convert): ZeroPadding2D(3) + 7x7/2
conv with bias, BN, ReLU, ZeroPadding2D(1) + 3x3/2 max-pool; four stages of bottleneck blocks
conv1x1(f, stride)-BN-ReLU-conv3x3(f)-BN-ReLU-conv1x1(4f)-BN added to the shortcut (a 1x1 conv
with bias + BN in each stage's first block), then ReLU; a global average pool. Every conv has a
bias, as in Keras; BatchNorm epsilon is 1.001e-5. ResNet-18/34 (no Keras twin) use basic blocks
conv3x3(f, stride)-BN-ReLU-conv3x3(f)-BN with symmetric padding of 1, as torchvision does, and
the same stem, biases and epsilon. Any input size works. Keras puts no dropout before its
classifier: `dropout` defaults to 0. `width` (64 in Keras) sets the first stage's channels;
stage i has width * 2**i.

Parameter paths: `stem/{conv,norm}`, `stages/<s>/<b>/{convs,norms}/<k>` (stage s is Keras's
"conv{s+2}", block b its "block{b+1}", conv k its "_{k+1}_conv"), the projection shortcut
`stages/<s>/0/{shortcut,shortcut_norm}` (Keras's "_0_conv", "_0_bn"), `head/...`.
Freezing all but the last stage is the freeze pattern `^(stem|stages/0|stages/1|stages/2)/`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jimb import conv as conv_lib
from jimb.models import keras_import
from jimb.models import layers
from jimb.models import pooling
from jimb.models.base import MODELS, Classifier

EPSILON = 1.001e-5  # Keras's ResNet BatchNorm epsilon

# name -> (blocks per stage, bottleneck blocks)
DEPTHS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
}


def _conv(cin: int, cout: int, size: int, stride: int, dtype, rngs: nnx.Rngs) -> nnx.Conv:
  """A conv with bias and symmetric padding of size // 2.

  That is Keras's "same" at stride 1, the stem's ZeroPadding2D(3) + "valid", no padding for the
  strided 1x1 convs, and torchvision's padding for the strided 3x3 convs of basic blocks.
  """
  pad = size // 2
  return conv_lib.Conv(cin, cout, (size, size), strides=stride, padding=((pad, pad), (pad, pad)),
                  dtype=dtype, rngs=rngs)


def _norm(features: int, dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(features, epsilon=EPSILON, momentum=0.99, dtype=dtype, rngs=rngs)


class Stem(nnx.Module):
  """ZeroPadding2D(3) + 7x7/2 conv, BN, ReLU, ZeroPadding2D(1) + 3x3/2 max-pool."""

  def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
    self.conv = _conv(cin, cout, 7, 2, dtype, rngs)
    self.norm = _norm(cout, dtype, rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nnx.relu(layers.batch_norm(self.norm, self.conv(x), train))
    # Zero padding (not -inf) as Keras does; after the ReLU it never wins the max anyway.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return pooling.max_pool(x, (3, 3), (2, 2), "VALID")


class Block(nnx.Module):
  """conv-BN (ReLU between) per `kernels` entry (size, channels), plus the shortcut, then ReLU.

  The first conv takes the stride: the 1x1 conv in a bottleneck, as Keras's ResNet v1 does. The
  shortcut is a strided 1x1 conv + BN where the shape changes, the identity elsewhere.
  """

  def __init__(self, cin: int, kernels: Sequence[tuple[int, int]], stride: int, *, dtype,
               rngs: nnx.Rngs):
    self.convs = nnx.List()
    self.norms = nnx.List()
    c = cin
    for k, (size, cout) in enumerate(kernels):
      self.convs.append(_conv(c, cout, size, stride if k == 0 else 1, dtype, rngs))
      self.norms.append(_norm(cout, dtype, rngs))
      c = cout
    project = stride != 1 or cin != c
    self.shortcut = _conv(cin, c, 1, stride, dtype, rngs) if project else None
    self.shortcut_norm = _norm(c, dtype, rngs) if project else None

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    shortcut = x
    if self.shortcut is not None:
      shortcut = layers.batch_norm(self.shortcut_norm, self.shortcut(x), train)
    for k, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = layers.batch_norm(norm, conv(x), train)
      if k < len(self.convs) - 1:
        x = nnx.relu(x)
    return nnx.relu(x + shortcut)


def _kernels(width: int, bottleneck: bool) -> tuple[tuple[int, int], ...]:
  return ((1, width), (3, width), (1, 4 * width)) if bottleneck else ((3, width), (3, width))


class ResNet(Classifier):
  """ResNet v1 for any stage layout, with bottleneck or basic blocks."""

  def __init__(self, *, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
               stage_sizes: Sequence[int], bottleneck: bool, width: int = 64,
               dropout: float = 0.0, head_hidden: int = 0, dtype: str = "float32"):
    if len(input_shape) != 3:
      raise ValueError(f"ResNet takes images (H, W, C); got input shape {tuple(input_shape)}. "
                       "Use --config.model.name=mlp for tables.")
    cdtype = layers.compute_dtype(dtype)
    self.stem = Stem(input_shape[-1], width, dtype=cdtype, rngs=rngs)
    self.stages = nnx.List()
    c = width
    for s, n in enumerate(stage_sizes):
      kernels = _kernels(width * 2**s, bottleneck)
      stage = nnx.List()
      for b in range(n):
        stage.append(Block(c, kernels, 2 if s > 0 and b == 0 else 1, dtype=cdtype, rngs=rngs))
        c = kernels[-1][1]
      self.stages.append(stage)
    self.head = layers.Head(c, num_classes, hidden=head_hidden, dropout=dropout, dtype=cdtype,
                            rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    x = self.stem(x, train)
    for stage in self.stages:
      for block in stage:
        x = block(x, train)
    return jnp.mean(x, axis=(1, 2))


def _member(stage_sizes: Sequence[int], bottleneck: bool) -> Callable[..., ResNet]:
  """The factory of one registered depth: ResNet's options without the layout."""

  def build(*, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs, width: int = 64,
            dropout: float = 0.0, head_hidden: int = 0, dtype: str = "float32") -> ResNet:
    return ResNet(num_classes=num_classes, input_shape=input_shape, rngs=rngs,
                  stage_sizes=stage_sizes, bottleneck=bottleneck, width=width, dropout=dropout,
                  head_hidden=head_hidden, dtype=dtype)

  return build


for _name, (_sizes, _bottleneck) in DEPTHS.items():
  MODELS.register(_name)(_member(_sizes, _bottleneck))


def _from_keras(model: ResNet, keras_model) -> None:
  """Copies `keras.applications.ResNet50/101` layers by their Keras names; the top only if it fits.

  Keras takes caffe-preprocessed BGR input: the stem conv's input channels are flipped so the
  converted model takes RGB.
  """
  names = {layer.name for layer in keras_model.layers}
  keras_blocks = sum(name.endswith("_add") for name in names)
  jimb_blocks = sum(len(stage) for stage in model.stages)
  convs = len(model.stages[0][0].convs)
  if keras_blocks != jimb_blocks or convs != 3:
    raise ValueError(f"the Keras model has {keras_blocks} bottleneck blocks but the jimb model has "
                     f"{jimb_blocks} blocks of {convs} convs; build the ResNet of the same depth")
  get = keras_model.get_layer
  keras_import.set_conv(model.stem.conv, get("conv1_conv"), flip_input_channels=True)
  keras_import.set_batch_norm(model.stem.norm, get("conv1_bn"))
  for s, stage in enumerate(model.stages):
    for b, block in enumerate(stage):
      prefix = f"conv{s + 2}_block{b + 1}"
      for k, (conv, norm) in enumerate(zip(block.convs, block.norms)):
        keras_import.set_conv(conv, get(f"{prefix}_{k + 1}_conv"))
        keras_import.set_batch_norm(norm, get(f"{prefix}_{k + 1}_bn"))
      if block.shortcut is not None:
        keras_import.set_conv(block.shortcut, get(f"{prefix}_0_conv"))
        keras_import.set_batch_norm(block.shortcut_norm, get(f"{prefix}_0_bn"))
  if "predictions" in names:
    top = get("predictions")
    if tuple(top.kernel.shape) == model.head.out.kernel[...].shape:
      keras_import.set_dense(model.head.out, top)


for _name, _constructor in (("resnet50", "ResNet50"), ("resnet101", "ResNet101")):
  keras_import.register_keras_app(_name, _constructor, "caffe")(_from_keras)
