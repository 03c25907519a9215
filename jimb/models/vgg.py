"""VGG-16/19 as `keras.applications`, and their BatchNorm variants `vgg16_bn`/`vgg19_bn`.

Layer for layer the Keras applications (so ImageNet weights convert): five blocks of 3x3 "same"
convs with bias and ReLU, each followed by a 2x2/2 max-pool; the top flattens the last block and
applies fc1 and fc2 (Dense + ReLU), whose output is the feature vector, before the classifier.
Inputs must be at least 32x32. The flatten fixes the input size at build time; with
`include_top=False` the features are the global average pool of the last block (Keras's
`pooling="avg"`) and any size works. `vgg16_bn`/`vgg19_bn` put a BatchNorm (Keras's default
epsilon 1e-3) between every conv, then without bias, and its ReLU; they have no Keras twin.
Keras's VGG has no dropout: `dropout` defaults to 0. `width` (64 in Keras) sets the first
block's channels, block i has width * (1, 2, 4, 8, 8)[i]; `fc_units` (4096 in Keras) sets fc1
and fc2.

Parameter paths: `blocks/<i>/convs/<k>` (Keras's "block{i+1}_conv{k+1}"), `blocks/<i>/norms/<k>`
(BatchNorm variant), `fc1`, `fc2` (with the top), `head/...`. Training only the top on
ImageNet features is the freeze pattern `^blocks/`.
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

EPSILON = 1e-3                 # Keras's default BatchNorm epsilon (the BN variant has no twin)
WIDTHS = (1, 2, 4, 8, 8)       # channels of block i, in units of `width`
DEPTHS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # convs per block


class Block(nnx.Module):
  """3x3 "same" convs (+ BN), each with ReLU, then a 2x2/2 max-pool (Keras's "block{i}")."""

  def __init__(self, cin: int, cout: int, num_convs: int, batch_norm: bool, *, dtype,
               rngs: nnx.Rngs):
    self.convs = nnx.List()
    for k in range(num_convs):
      self.convs.append(conv_lib.Conv(cin if k == 0 else cout, cout, (3, 3), padding="SAME",
                                 use_bias=not batch_norm, dtype=dtype, rngs=rngs))
    self.norms = nnx.List(
        nnx.BatchNorm(cout, epsilon=EPSILON, momentum=0.99, dtype=dtype, rngs=rngs)
        for _ in range(num_convs)) if batch_norm else None

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for k, conv in enumerate(self.convs):
      x = conv(x)
      if self.norms is not None:
        x = layers.batch_norm(self.norms[k], x, train)
      x = nnx.relu(x)
    return pooling.max_pool(x, (2, 2), (2, 2), "VALID")


class VGG(Classifier):
  """VGG with Keras's top (flatten, fc1, fc2) or global average pooling."""

  def __init__(self, *, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
               convs_per_block: Sequence[int], include_top: bool = True,
               batch_norm: bool = False, width: int = 64, fc_units: int = 4096,
               dropout: float = 0.0, head_hidden: int = 0, dtype: str = "float32"):
    if len(input_shape) != 3:
      raise ValueError(f"VGG takes images (H, W, C); got input shape {tuple(input_shape)}. "
                       "Use --config.model.name=mlp for tables.")
    h, w, c = input_shape
    if min(h, w) < 32:
      raise ValueError(f"VGG downsamples by 32; {h}x{w} images are too small. Resize them to "
                       "at least 32x32 (e.g. --config.data.image_size=32 for an image folder).")
    cdtype = layers.compute_dtype(dtype)
    self.blocks = nnx.List()
    for n, factor in zip(convs_per_block, WIDTHS):
      self.blocks.append(Block(c, width * factor, n, batch_norm, dtype=cdtype, rngs=rngs))
      c = width * factor
    self.input_size = (h, w) if include_top else None
    if include_top:
      flat = (h // 32) * (w // 32) * c
      self.fc1 = nnx.Linear(flat, fc_units, dtype=cdtype, rngs=rngs)
      self.fc2 = nnx.Linear(fc_units, fc_units, dtype=cdtype, rngs=rngs)
      c = fc_units
    else:
      self.fc1 = self.fc2 = None
    self.head = layers.Head(c, num_classes, hidden=head_hidden, dropout=dropout, dtype=cdtype,
                            rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    if self.input_size is not None and tuple(x.shape[1:3]) != self.input_size:
      h, w = self.input_size
      raise ValueError(f"this VGG was built with its top for {h}x{w} images and got "
                       f"{x.shape[1]}x{x.shape[2]}; build it for that size, or set "
                       "--config.model.include_top=False to pool over any size")
    for block in self.blocks:
      x = block(x, train)
    if self.fc1 is None:
      return jnp.mean(x, axis=(1, 2))
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    return nnx.relu(self.fc2(x))


def _member(convs_per_block: Sequence[int], batch_norm: bool) -> Callable[..., VGG]:
  """The factory of one registered name: VGG's options without the layout and `batch_norm`."""

  def build(*, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
            include_top: bool = True, width: int = 64, fc_units: int = 4096,
            dropout: float = 0.0, head_hidden: int = 0, dtype: str = "float32") -> VGG:
    return VGG(num_classes=num_classes, input_shape=input_shape, rngs=rngs,
               convs_per_block=convs_per_block, include_top=include_top,
               batch_norm=batch_norm, width=width, fc_units=fc_units, dropout=dropout,
               head_hidden=head_hidden, dtype=dtype)

  return build


for _depth, _convs in DEPTHS.items():
  MODELS.register(f"vgg{_depth}")(_member(_convs, batch_norm=False))
  MODELS.register(f"vgg{_depth}_bn")(_member(_convs, batch_norm=True))


def _from_keras(model: VGG, keras_model) -> None:
  """Copies `keras.applications.VGG16/19` layers by their Keras names; the top only if it fits.

  Keras takes caffe-preprocessed BGR input: the first conv's input channels are flipped so the
  converted model takes RGB. fc1/fc2 come from Keras's top; a jimb model with its top cannot
  take a Keras model without one (its fc layers would stay random).
  """
  names = {layer.name for layer in keras_model.layers}
  keras_convs = sum("_conv" in name for name in names)
  jimb_convs = sum(len(block.convs) for block in model.blocks)
  if keras_convs != jimb_convs:
    raise ValueError(f"the Keras model has {keras_convs} convs but the jimb model has "
                     f"{jimb_convs}; build the VGG of the same depth")
  if model.fc1 is not None and "fc1" not in names:
    raise ValueError("the Keras VGG has no top (fc1, fc2), as for ImageNet weights with another "
                     "class count; set --config.model.include_top=False to use the pooled "
                     "convolutional features")
  get = keras_model.get_layer
  for i, block in enumerate(model.blocks):
    for k, conv in enumerate(block.convs):
      keras_import.set_conv(conv, get(f"block{i + 1}_conv{k + 1}"),
                            flip_input_channels=(i == 0 and k == 0))
  if model.fc1 is not None:
    keras_import.set_dense(model.fc1, get("fc1"))
    keras_import.set_dense(model.fc2, get("fc2"))
  if "predictions" in names:
    top = get("predictions")
    if tuple(top.kernel.shape) == model.head.out.kernel[...].shape:
      keras_import.set_dense(model.head.out, top)


for _depth in DEPTHS:
  keras_import.register_keras_app(f"vgg{_depth}", f"VGG{_depth}", "caffe")(_from_keras)
