"""EfficientNet B0-B7 (Tan & Le, 2019), layer for layer as `keras.applications.EfficientNetB0..B7`.

Registered as `efficientnet_b0` .. `efficientnet_b7` (compound scaling of one base network by a
width and a depth coefficient). Parameter paths, for freeze patterns:

  stem/...            3x3/2 conv + BatchNorm (Keras `stem_conv`, `stem_bn`)
  stages/<i>/<j>/...  MBConv block j of stage i; every member has stages 0..6 (Keras
                      `block{i+1}{a, b, ...}_*`), only the number of blocks per stage differs
  top/...             1x1 conv to round_filters(1280) + BatchNorm (Keras `top_conv`, `top_bn`)
  head/...            dropout + classifier (Keras `top_dropout`, `predictions`)

so "^(stem|stages/[0-3])/" freezes the stem and the first four stages of any member.

Keras's EfficientNet normalises pixels inside the model (Rescaling and Normalization layers);
jimb's model does not: it takes normalised input like every jimb model, and for converted
weights `keras_import.MODEL_STATISTICS` gives the mean/std those layers amount to. Keras's
`count_params()` therefore exceeds jimb's by the Normalization layer's mean, variance and count
(7 numbers for RGB input).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jimb import conv as conv_lib
from jimb.models import keras_import
from jimb.models import layers
from jimb.models.base import MODELS, Classifier, dropout as apply_dropout

# Keras's DEFAULT_BLOCKS_ARGS, one row per stage: (kernel_size, repeats, filters_in,
# filters_out, expand_ratio, strides). Every block has squeeze-and-excitation and an identity
# skip wherever the shapes allow one.
BASE_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
SE_RATIO = 0.25
BN_EPSILON = 1e-3  # Keras's BatchNormalization default, which its EfficientNet keeps

# member -> (width coefficient, depth coefficient, top dropout), as Keras. Keras pretrains B0..B7
# at 224, 240, 260, 300, 380, 456, 528, 600 pixels; any resolution runs.
MEMBERS = {
    "b0": (1.0, 1.0, 0.2),
    "b1": (1.0, 1.1, 0.2),
    "b2": (1.1, 1.2, 0.3),
    "b3": (1.2, 1.4, 0.3),
    "b4": (1.4, 1.8, 0.4),
    "b5": (1.6, 2.2, 0.4),
    "b6": (1.8, 2.6, 0.5),
    "b7": (2.0, 3.1, 0.5),
}

# Keras's CONV_KERNEL_INITIALIZER, so training from scratch starts where Keras's does.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
# Keras's depthwise kernel is (k, k, C, 1), so its fan-out is k * k; jimb's grouped kernel is
# (k, k, 1, C): swapping the axes gives the same fan-out.
_DEPTHWISE_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "truncated_normal",
                                                    in_axis=-1, out_axis=-2)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Channels scaled by `width`, rounded to a multiple of 8 but never down by more than 10%."""
  filters *= width
  new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
  if new_filters < 0.9 * filters:
    new_filters += divisor
  return int(new_filters)


def round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def _correct_pad(x: jax.Array, kernel_size: int) -> jax.Array:
  """Keras's `ZeroPadding2D(correct_pad(x, k))` before a stride-2 'valid' convolution."""
  pads = [(kernel_size // 2 - (1 - n % 2), kernel_size // 2) for n in x.shape[1:3]]
  return jnp.pad(x, ((0, 0), *pads, (0, 0)))


class ConvBN(nnx.Module):
  """Bias-free convolution + BatchNorm (activation left to the caller: projections have none)."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int, *, rngs: nnx.Rngs,
               strides: int = 1, padding: str = "SAME", depthwise: bool = False, dtype=jnp.float32):
    self.conv = conv_lib.Conv(in_features, out_features, (kernel_size, kernel_size), strides,
                         padding=padding, feature_group_count=in_features if depthwise else 1,
                         use_bias=False, kernel_init=_DEPTHWISE_INIT if depthwise else _CONV_INIT,
                         dtype=dtype, rngs=rngs)
    self.bn = nnx.BatchNorm(out_features, momentum=0.99, epsilon=BN_EPSILON, dtype=dtype,
                            rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return layers.batch_norm(self.bn, self.conv(x), train)


class SqueezeExcite(nnx.Module):
  """Channel gates from the pooled block: 1x1 conv + swish, 1x1 conv + sigmoid (with biases)."""

  def __init__(self, features: int, squeezed: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.reduce = conv_lib.Conv(features, squeezed, (1, 1), kernel_init=_CONV_INIT, dtype=dtype,
                           rngs=rngs)
    self.expand = conv_lib.Conv(squeezed, features, (1, 1), kernel_init=_CONV_INIT, dtype=dtype,
                           rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    s = x.mean(axis=(1, 2), keepdims=True)
    return x * nnx.sigmoid(self.expand(nnx.swish(self.reduce(s))))


class MBConv(nnx.Module):
  """Inverted residual: [1x1 expand] -> depthwise kxk -> squeeze-excite -> 1x1 project [+ skip].

  Stochastic depth (Keras's per-sample `Dropout(noise_shape=(None, 1, 1, 1))`) drops the residual
  branch, so only blocks with an identity skip have it.
  """

  def __init__(self, in_features: int, out_features: int, *, kernel_size: int, strides: int,
               expand_ratio: int, drop_rate: float, rngs: nnx.Rngs, dtype=jnp.float32):
    features = in_features * expand_ratio
    self.kernel_size = kernel_size
    self.strides = strides
    self.expand = (ConvBN(in_features, features, 1, dtype=dtype, rngs=rngs)
                   if expand_ratio != 1 else None)
    self.dwconv = ConvBN(features, features, kernel_size, strides=strides,
                         padding="VALID" if strides == 2 else "SAME", depthwise=True,
                         dtype=dtype, rngs=rngs)
    self.se = SqueezeExcite(features, max(1, int(in_features * SE_RATIO)), dtype=dtype, rngs=rngs)
    self.project = ConvBN(features, out_features, 1, dtype=dtype, rngs=rngs)
    residual = strides == 1 and in_features == out_features
    self.drop = nnx.Dropout(drop_rate, broadcast_dims=(1, 2, 3)) if residual else None

  def __call__(self, x: jax.Array, *, train: bool, key: jax.Array | None) -> jax.Array:
    inputs = x
    if self.expand is not None:
      x = nnx.swish(self.expand(x, train))
    if self.strides == 2:
      x = _correct_pad(x, self.kernel_size)
    x = self.project(self.se(nnx.swish(self.dwconv(x, train))), train)
    if self.drop is None:
      return x
    return apply_dropout(self.drop, x, train, key) + inputs


class EfficientNet(Classifier):
  """The base network scaled by `width_coefficient` (channels) and `depth_coefficient` (blocks).

  `drop_connect_rate` is the stochastic-depth rate of the last block (block b of B drops with
  rate * b / B, as Keras); `width_multiplier` scales the width coefficient further for slimmer
  networks (1.0 is Keras's network, the only width Keras weights convert into).
  """

  def __init__(self, width_coefficient: float, depth_coefficient: float, *, num_classes: int,
               input_shape: Sequence[int], rngs: nnx.Rngs, dropout: float = 0.2,
               dtype: str = "float32", head_hidden: int = 0, drop_connect_rate: float = 0.2,
               width_multiplier: float = 1.0):
    if len(input_shape) != 3:
      raise ValueError(f"EfficientNet takes images (H, W, C); got input shape "
                       f"{tuple(input_shape)}. Use --config.model.name=mlp for tables.")
    if width_multiplier <= 0:
      raise ValueError(f"width_multiplier must be positive, got {width_multiplier}; set "
                       "--config.model.width_multiplier=1.0 for the Keras network")
    if not 0 <= drop_connect_rate < 1:
      raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}; set "
                       "--config.model.drop_connect_rate=0.2 (Keras's default)")
    compute = layers.compute_dtype(dtype)
    width = width_coefficient * width_multiplier
    repeats = [round_repeats(stage[1], depth_coefficient) for stage in BASE_STAGES]
    total = float(sum(repeats))
    self.stem = ConvBN(input_shape[-1], round_filters(32, width), 3, strides=2, padding="VALID",
                       dtype=compute, rngs=rngs)
    self.stages = nnx.List()
    b = 0
    for (kernel_size, _, filters_in, filters_out, expand_ratio, strides), n in zip(BASE_STAGES,
                                                                                  repeats):
      c_in, c_out = round_filters(filters_in, width), round_filters(filters_out, width)
      stage = nnx.List()
      for j in range(n):
        stage.append(MBConv(c_in if j == 0 else c_out, c_out, kernel_size=kernel_size,
                            strides=strides if j == 0 else 1, expand_ratio=expand_ratio,
                            drop_rate=drop_connect_rate * b / total, dtype=compute, rngs=rngs))
        b += 1
      self.stages.append(stage)
    features = round_filters(1280, width)
    self.top = ConvBN(c_out, features, 1, dtype=compute, rngs=rngs)
    self.head = layers.Head(features, num_classes, hidden=head_hidden, dropout=dropout,
                            dtype=compute, rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    blocks = [block for stage in self.stages for block in stage]
    keys = [None] * len(blocks) if key is None else list(jax.random.split(key, len(blocks)))
    x = nnx.swish(self.stem(_correct_pad(x, 3), train))
    for block, k in zip(blocks, keys):
      x = block(x, train=train, key=k)
    return nnx.swish(self.top(x, train)).mean(axis=(1, 2))


def _from_keras(model: EfficientNet, keras_model) -> None:
  """Copies every Keras layer with weights; the Keras classifier only if it fits `model.head`."""
  copied = set()

  def get(name):
    copied.add(name)
    return keras_model.get_layer(name)

  def set_conv_bn(module: ConvBN, conv_name: str, bn_name: str) -> None:
    if module.conv.feature_group_count > 1:
      keras_import.set_depthwise(module.conv, get(conv_name))
    else:
      keras_import.set_conv(module.conv, get(conv_name))
    keras_import.set_batch_norm(module.bn, get(bn_name))

  set_conv_bn(model.stem, "stem_conv", "stem_bn")
  for i, stage in enumerate(model.stages):
    for j, block in enumerate(stage):
      p = f"block{i + 1}{chr(ord('a') + j)}_"
      if block.expand is not None:
        set_conv_bn(block.expand, p + "expand_conv", p + "expand_bn")
      set_conv_bn(block.dwconv, p + "dwconv", p + "bn")
      keras_import.set_conv(block.se.reduce, get(p + "se_reduce"))
      keras_import.set_conv(block.se.expand, get(p + "se_expand"))
      set_conv_bn(block.project, p + "project_conv", p + "project_bn")
  set_conv_bn(model.top, "top_conv", "top_bn")

  predictions = {layer.name: layer for layer in keras_model.layers}.get("predictions")
  if predictions is not None:   # Keras's top, built for as many classes as jimb's head or not
    copied.add(predictions.name)
    if predictions.get_weights()[0].shape == model.head.out.kernel[...].shape:
      keras_import.set_dense(model.head.out, predictions)
  normalization = keras_import.keras().layers.Normalization
  missed = sorted(layer.name for layer in keras_model.layers
                  if layer.weights and layer.name not in copied
                  and not isinstance(layer, normalization))
  if missed:
    raise ValueError(f"the Keras model has layers the jimb model lacks ({', '.join(missed[:4])}"
                     f"{', ...' if len(missed) > 4 else ''}): convert a Keras EfficientNet into "
                     "the jimb member of the same name, built with width_multiplier=1.0")


def input_statistics(keras_model) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) over RGB pixels in [0, 1] equal to the Keras model's own input normalisation.

  Keras feeds 0-255 pixels through Rescaling and Normalization layers (and, with ImageNet
  weights, one more Rescaling) before `stem_conv_pad`; their composition is one affine map
  per channel, (p - mean) / std. Normalization's values are read as its `call` uses them.
  """
  k = keras_import.keras()
  channels = keras_model.input_shape[-1]
  scale, offset = np.full(channels, 255.0), np.zeros(channels)   # p in [0, 1] -> Keras input
  for layer in keras_model.layers:
    if layer.name == "stem_conv_pad":
      return (-offset / scale).astype(np.float32), (1.0 / scale).astype(np.float32)
    if isinstance(layer, k.layers.Rescaling):
      s, o = np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
      scale, offset = scale * s, offset * s + o
    elif isinstance(layer, k.layers.Normalization):
      mean = np.asarray(layer.mean, np.float64).reshape(-1)
      std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1)),
                       k.config.epsilon())
      scale, offset = scale / std, (offset - mean) / std
    elif not isinstance(layer, k.layers.InputLayer):
      raise ValueError(f"unexpected Keras layer {layer.name!r} before the stem; this converter "
                       "expects a keras.applications EfficientNet")
  raise ValueError("the Keras model has no 'stem_conv_pad' layer; this converter expects a "
                   "keras.applications EfficientNet")


def _register(member: str, width: float, depth: float, top_dropout: float) -> None:
  name = f"efficientnet_{member}"
  MODELS.register(name)(functools.partial(EfficientNet, width, depth, dropout=top_dropout))
  keras_import.register_keras_app(name, f"EfficientNet{member.upper()}", "model")(_from_keras)
  keras_import.MODEL_STATISTICS[name] = input_statistics


for _member, _coefficients in MEMBERS.items():
  _register(_member, *_coefficients)
