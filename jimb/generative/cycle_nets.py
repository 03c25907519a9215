"""CycleGAN's networks: the reference's ResNet generator and PatchGAN for images, MLPs for tables.

The conv nets follow junyanz/pytorch-CycleGAN-and-pix2pix (`netG=resnet_9blocks`, `netD=basic`)
with its CycleGAN defaults: instance norm without affine parameters or running statistics (so the
convolutions keep their biases), reflect padding, no dropout, weights drawn from N(0, 0.02) and
zero biases. Widths and depths are options, so the same networks run at 8x8 in tests and at
256x256 on GPUs. Images are NHWC in [-1, 1].

Feature vectors (seed 000's NAFLD table) have no spatial axes for convolutions, and neither the
seed nor the reference gives a tabular network, so the MLP pair keeps the reference's activations
(ReLU in the generator, LeakyReLU 0.2 in the discriminator, which gives one logit per row
instead of per patch) and drops what has no vector analogue: instance norm normalises over space,
and normalising a row over its hidden units instead would discard its scale (x and 2x would look
alike), so the MLPs have no norm layers and keep Flax's default (LeCun normal) initialisation.
Rows are standardised (zero mean, unit variance per feature), so the generator's output is
linear, not tanh.
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

_INIT = nnx.initializers.normal(0.02)


def check_image_shape(image_shape: Sequence[int], n_layers_D: int) -> None:
  """Raises a ValueError naming the fix when the networks cannot take `image_shape`."""
  if len(image_shape) != 3:
    raise ValueError(f"CycleGAN with arch=conv translates images (H, W, C); got rows of shape "
                     f"{tuple(image_shape)}: set --config.synth.cyclegan.arch=mlp for tables")
  h, w, _ = image_shape
  if h % 4 or w % 4 or min(h, w) < 8:
    raise ValueError(
        f"CycleGAN's generator downsamples twice by 2, so the image size must be a multiple of 4 "
        f"and at least 8; got {h}x{w}. Set --config.data.image_size to a multiple of 4 (e.g. 64)")
  if n_layers_D < 1 or min(patch_shape(image_shape, n_layers_D)) < 1:
    raise ValueError(
        f"a PatchGAN with n_layers_D={n_layers_D} leaves no patch of a {h}x{w} image (it needs "
        f"size / 2**n_layers_D >= 3); lower --config.synth.cyclegan.n_layers_D or raise "
        "--config.data.image_size")


def patch_shape(image_shape: Sequence[int], n_layers_D: int) -> tuple[int, int]:
  """Height and width of the PatchGAN's output map (30x30 for 256x256 and n_layers_D=3)."""
  # n_layers_D stride-2 4x4 convs halve (flooring), the two stride-1 4x4 convs remove 1 each.
  return tuple(s // 2 ** n_layers_D - 2 for s in image_shape[:2])


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Per image and channel over H and W, biased variance, as torch's InstanceNorm2d."""
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def _reflect(x: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _conv(cin: int, cout: int, kernel: int, stride: int, padding, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=padding,
                  kernel_init=_INIT, rngs=rngs)


class ResnetBlock(nnx.Module):
  """x + [reflect-pad, conv3x3, norm, ReLU, reflect-pad, conv3x3, norm](x)."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.conv1 = _conv(dim, dim, 3, 1, "VALID", rngs)
    self.conv2 = _conv(dim, dim, 3, 1, "VALID", rngs)

  def __call__(self, x):
    y = nnx.relu(instance_norm(self.conv1(_reflect(x, 1))))
    return x + instance_norm(self.conv2(_reflect(y, 1)))


class ResnetGenerator(nnx.Module):
  """c7s1-ngf, d(2 ngf), d(4 ngf), n_blocks residual blocks, u(2 ngf), u(ngf), c7s1-C, tanh."""

  def __init__(self, channels: int, *, ngf: int = 64, n_blocks: int = 9, rngs: nnx.Rngs):
    self.stem = _conv(channels, ngf, 7, 1, "VALID", rngs)
    self.down = nnx.List([_conv(ngf, 2 * ngf, 3, 2, 1, rngs),
                          _conv(2 * ngf, 4 * ngf, 3, 2, 1, rngs)])
    self.blocks = nnx.List([ResnetBlock(4 * ngf, rngs=rngs) for _ in range(n_blocks)])
    # torch's ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1) pads the dilated input
    # by (k - 1 - padding, k - 1 - padding + output_padding) = (1, 2): exactly 2x the size.
    self.up = nnx.List([
        nnx.ConvTranspose(cin, cin // 2, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                          kernel_init=_INIT, rngs=rngs) for cin in (4 * ngf, 2 * ngf)])
    self.head = _conv(ngf, channels, 7, 1, "VALID", rngs)

  def __call__(self, x):
    x = nnx.relu(instance_norm(self.stem(_reflect(x, 3))))
    for conv in self.down:
      x = nnx.relu(instance_norm(conv(x)))
    for block in self.blocks:
      x = block(x)
    for conv in self.up:
      x = nnx.relu(instance_norm(conv(x)))
    return jnp.tanh(self.head(_reflect(x, 3)))


class NLayerDiscriminator(nnx.Module):
  """PatchGAN: conv4x4/2 + LeakyReLU, n_layers_D - 1 conv4x4/2 and one conv4x4/1 with norm and
  LeakyReLU (widths ndf * min(2**n, 8)), then a 1-channel conv4x4/1: one logit per patch."""

  def __init__(self, channels: int, *, ndf: int = 64, n_layers_D: int = 3, rngs: nnx.Rngs):
    widths = [ndf * min(2 ** n, 8) for n in range(n_layers_D + 1)]
    self.first = _conv(channels, widths[0], 4, 2, 1, rngs)
    self.layers = nnx.List([_conv(widths[n - 1], widths[n], 4, 2 if n < n_layers_D else 1, 1, rngs)
                            for n in range(1, n_layers_D + 1)])
    self.last = _conv(widths[-1], 1, 4, 1, 1, rngs)

  def __call__(self, x):
    x = nnx.leaky_relu(self.first(x), 0.2)
    for conv in self.layers:
      x = nnx.leaky_relu(instance_norm(conv(x)), 0.2)
    return self.last(x)


class MLPGenerator(nnx.Module):
  """[linear, ReLU] per hidden size, then a linear layer back to the F features."""

  def __init__(self, features: int, *, hidden: Sequence[int] = (128, 128), rngs: nnx.Rngs):
    sizes = [features, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.head = nnx.Linear(sizes[-1], features, rngs=rngs)

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.head(x)


class MLPDiscriminator(nnx.Module):
  """[linear, LeakyReLU 0.2] per hidden size, then one logit per row ([B, 1]): the PatchGAN's
  activations with a single patch."""

  def __init__(self, features: int, *, hidden: Sequence[int] = (128, 128), rngs: nnx.Rngs):
    sizes = [features, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.last = nnx.Linear(sizes[-1], 1, rngs=rngs)

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.leaky_relu(layer(x), 0.2)
    return self.last(x)
