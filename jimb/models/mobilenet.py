"""MobileNet V1 and V2, layer for layer as `keras.applications.MobileNet` / `MobileNetV2`.

Both take `alpha`, the width multiplier (Keras's ImageNet weights exist for V1 alpha in
{0.25, 0.5, 0.75, 1.0} and V2 alpha in {0.35, 0.5, 0.75, 1.0, 1.3, 1.4}). Parameter paths, for
freeze patterns:

  mobilenet_v1: `stem` (Keras conv1), `blocks/0` ... `blocks/12` (Keras block_id 1 ... 13, each
    `dw` depthwise 3x3 and `pw` pointwise 1x1), `head`.
  mobilenet_v2: `stem` (Keras Conv1), `blocks/0` ... `blocks/16` (Keras block_id 0 ... 16, each
    `expand` (absent in block 0), `dw`, `project`), `last_conv` (Keras Conv_1), `head`.

Every layer is conv -> BatchNorm (epsilon 1e-3, Keras's momentum: 0.99 in V1, 0.999 in V2) ->
ReLU6 (none after a V2 projection). Stride-2 depthwise convs pad as Keras does: V1 one zero row
and column at the bottom/right, V2 `correct_pad` (also one at the top/left of odd-sized axes).
Keras's V1 classifier is a 1x1 conv on the pooled features after Dropout(1e-3); here it is
`head.out` after the same dropout. Inputs are Keras's "tf" preprocessing, pixels in [-1, 1].
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jimb import conv as conv_lib
from jimb.models import keras_import
from jimb.models import layers
from jimb.models.base import MODELS, Classifier

# V1: (pointwise filters, depthwise stride) of Keras's 13 depthwise-separable blocks.
_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# V2: (expansion, filters, repeats, first stride) of Keras's 17 inverted residual blocks.
_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))


class _ConvBN(nnx.Module):
  """Conv without bias -> BatchNorm [-> ReLU6]: every MobileNet layer is one of these."""

  def __init__(self, in_features: int, out_features: int, kernel: int, *, rngs: nnx.Rngs,
               stride: int = 1, padding: str = "SAME", depthwise: bool = False,
               relu: bool = True, momentum: float, dtype):
    self.conv = conv_lib.Conv(in_features, out_features, (kernel, kernel), strides=stride,
                         padding=padding, feature_group_count=in_features if depthwise else 1,
                         use_bias=False, dtype=dtype, rngs=rngs)
    self.norm = nnx.BatchNorm(out_features, epsilon=1e-3, momentum=momentum, dtype=dtype,
                              rngs=rngs)
    self.relu = relu

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.batch_norm(self.norm, self.conv(x), train)
    return nnx.relu6(x) if self.relu else x


def _depthwise(channels: int, stride: int, *, rngs, momentum, dtype) -> _ConvBN:
  """3x3 depthwise conv: SAME at stride 1, VALID after explicit padding at stride 2 (Keras)."""
  return _ConvBN(channels, channels, 3, stride=stride, padding="SAME" if stride == 1 else "VALID",
                depthwise=True, momentum=momentum, dtype=dtype, rngs=rngs)


def _pad_for_stride2(x: jax.Array, odd_both_sides: bool) -> jax.Array:
  """Keras's zero padding before a stride-2 3x3 depthwise conv.

  V1 pads (0, 1) per axis; V2's `imagenet_utils.correct_pad` pads (1, 1) on odd-sized axes,
  which keeps the output at ceil(n / 2) there.
  """
  pads = [(n % 2 if odd_both_sides else 0, 1) for n in x.shape[1:3]]
  return jnp.pad(x, ((0, 0), *pads, (0, 0)))


def _check(name: str, input_shape: Sequence[int], alpha: float) -> int:
  """The input channels, once the input is an image and the width multiplier positive."""
  if len(input_shape) != 3:
    raise ValueError(f"{name} takes images (H, W, C); got input shape {tuple(input_shape)}. "
                     "Use --config.model.name=mlp for tables.")
  if alpha <= 0:
    raise ValueError(f"{name} needs a positive width multiplier; got alpha={alpha}. Set "
                     f"--config.model.{name}.alpha=1.0 (or e.g. 0.5 for half the width).")
  return input_shape[2]


def _global_average_pool(x: jax.Array) -> jax.Array:
  return jnp.mean(x, axis=(1, 2))


class _SeparableBlock(nnx.Module):
  """V1 block: depthwise 3x3 -> BN -> ReLU6 -> pointwise 1x1 -> BN -> ReLU6."""

  def __init__(self, in_features: int, out_features: int, stride: int, *, rngs, dtype):
    self.stride = stride
    self.dw = _depthwise(in_features, stride, momentum=0.99, dtype=dtype, rngs=rngs)
    self.pw = _ConvBN(in_features, out_features, 1, momentum=0.99, dtype=dtype, rngs=rngs)

  def __call__(self, x, train):
    if self.stride == 2:
      x = _pad_for_stride2(x, odd_both_sides=False)
    return self.pw(self.dw(x, train), train)


@MODELS.register("mobilenet_v1")
class MobileNetV1(Classifier):
  """Keras's MobileNet (depth_multiplier 1); `dropout` is Keras's 1e-3 before the classifier."""

  def __init__(self, *, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
               alpha: float = 1.0, dropout: float = 1e-3, head_hidden: int = 0,
               dtype: str = "float32"):
    c = _check("mobilenet_v1", input_shape, alpha)
    # The stem gives ceil(n / 2), then four pad-(0, 1) valid stride-2 convs floor(m / 2) each.
    if min(input_shape[:2]) < 31:
      raise ValueError(f"mobilenet_v1 needs images of at least 31x31 pixels; got "
                       f"{tuple(input_shape)}. Resize them (e.g. --config.data.image_size=224) "
                       "or use --config.model.name=mobilenet_v2, which takes any size.")
    dt = layers.compute_dtype(dtype)
    width = int(32 * alpha)
    self.stem = _ConvBN(c, width, 3, stride=2, momentum=0.99, dtype=dt, rngs=rngs)
    self.blocks = nnx.List()
    for filters, stride in _V1_BLOCKS:
      self.blocks.append(_SeparableBlock(width, int(filters * alpha), stride, dtype=dt,
                                         rngs=rngs))
      width = int(filters * alpha)
    self.head = layers.Head(width, num_classes, hidden=head_hidden, dropout=dropout, dtype=dt,
                            rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    x = self.stem(x, train)
    for block in self.blocks:
      x = block(x, train)
    return _global_average_pool(x)


def _make_divisible(v: float, divisor: int = 8) -> int:
  """Keras's `_make_divisible`: the nearest multiple of `divisor`, at most 10% below `v`."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


class _InvertedResidual(nnx.Module):
  """V2 block: [expand 1x1] -> depthwise 3x3 -> linear project 1x1 (+ input if shapes allow).

  Keras adds the input only at stride 1 with equal widths, and block 0 has no expansion.
  """

  def __init__(self, in_features: int, out_features: int, expansion: int, stride: int, *,
               rngs, dtype):
    hidden = in_features * expansion
    self.stride = stride
    self.residual = stride == 1 and in_features == out_features
    self.expand = (_ConvBN(in_features, hidden, 1, momentum=0.999, dtype=dtype, rngs=rngs)
                   if expansion != 1 else None)
    self.dw = _depthwise(hidden, stride, momentum=0.999, dtype=dtype, rngs=rngs)
    self.project = _ConvBN(hidden, out_features, 1, relu=False, momentum=0.999, dtype=dtype,
                          rngs=rngs)

  def __call__(self, x, train):
    y = x if self.expand is None else self.expand(x, train)
    if self.stride == 2:
      y = _pad_for_stride2(y, odd_both_sides=True)
    y = self.project(self.dw(y, train), train)
    return x + y if self.residual else y


@MODELS.register("mobilenet_v2")
class MobileNetV2(Classifier):
  """Keras's MobileNetV2; Keras puts no dropout before its classifier (`dropout` 0)."""

  def __init__(self, *, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
               alpha: float = 1.0, dropout: float = 0.0, head_hidden: int = 0,
               dtype: str = "float32"):
    c = _check("mobilenet_v2", input_shape, alpha)
    dt = layers.compute_dtype(dtype)
    width = _make_divisible(32 * alpha)
    self.stem = _ConvBN(c, width, 3, stride=2, momentum=0.999, dtype=dt, rngs=rngs)
    self.blocks = nnx.List()
    for expansion, filters, repeats, first_stride in _V2_STAGES:
      out = _make_divisible(int(filters * alpha))
      for i in range(repeats):
        self.blocks.append(_InvertedResidual(width, out, expansion, first_stride if i == 0 else 1,
                                             dtype=dt, rngs=rngs))
        width = out
    last = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    self.last_conv = _ConvBN(width, last, 1, momentum=0.999, dtype=dt, rngs=rngs)
    self.head = layers.Head(last, num_classes, hidden=head_hidden, dropout=dropout, dtype=dt,
                            rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    x = self.stem(x, train)
    for block in self.blocks:
      x = block(x, train)
    return _global_average_pool(self.last_conv(x, train))


def _copy_conv_bn(unit: _ConvBN, keras_model, conv: str, norm: str) -> None:
  layer = keras_model.get_layer(conv)
  if unit.conv.feature_group_count > 1:
    keras_import.set_depthwise(unit.conv, layer)
  else:
    keras_import.set_conv(unit.conv, layer)
  keras_import.set_batch_norm(unit.norm, keras_model.get_layer(norm))


def _copy_classifier(head: layers.Head, keras_model, name: str) -> None:
  """Keras's classifier becomes `head.out` only where it exists (include_top) and fits.

  A head with a hidden layer, or for another class count, keeps its fresh initialisation.
  """
  if head.hidden is not None or name not in {layer.name for layer in keras_model.layers}:
    return
  layer = keras_model.get_layer(name)
  if layer.get_weights()[0].shape[-2:] == head.out.kernel[...].shape:
    keras_import.set_dense(head.out, layer)


@keras_import.register_keras_app("mobilenet_v1", "MobileNet", "tf")
def _from_keras_v1(model: MobileNetV1, keras_model) -> None:
  _copy_conv_bn(model.stem, keras_model, "conv1", "conv1_bn")
  for i, block in enumerate(model.blocks, start=1):
    _copy_conv_bn(block.dw, keras_model, f"conv_dw_{i}", f"conv_dw_{i}_bn")
    _copy_conv_bn(block.pw, keras_model, f"conv_pw_{i}", f"conv_pw_{i}_bn")
  _copy_classifier(model.head, keras_model, "conv_preds")


@keras_import.register_keras_app("mobilenet_v2", "MobileNetV2", "tf")
def _from_keras_v2(model: MobileNetV2, keras_model) -> None:
  _copy_conv_bn(model.stem, keras_model, "Conv1", "bn_Conv1")
  for i, block in enumerate(model.blocks):
    prefix = f"block_{i}_" if i else "expanded_conv_"
    if block.expand is not None:
      _copy_conv_bn(block.expand, keras_model, prefix + "expand", prefix + "expand_BN")
    _copy_conv_bn(block.dw, keras_model, prefix + "depthwise", prefix + "depthwise_BN")
    _copy_conv_bn(block.project, keras_model, prefix + "project", prefix + "project_BN")
  _copy_conv_bn(model.last_conv, keras_model, "Conv_1", "Conv_1_bn")
  _copy_classifier(model.head, keras_model, "predictions")
