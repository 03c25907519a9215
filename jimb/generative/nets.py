"""GAN generators and discriminators: DCGAN conv nets and fully connected nets, maybe conditional.

The conv nets follow DCGAN (and the vanilla GAN of seed 004): the generator projects z to a
small feature map and doubles it with 4x4 stride-2 transposed convs (BatchNorm + ReLU, tanh out);
the discriminator mirrors it with 4x4 stride-2 convs and LeakyReLU 0.2. Conv weights start from
N(0, 0.02) as in DCGAN. The fully connected nets are seed 004's LSGAN and CGAN (and the tabular
GAN). `num_classes > 0` makes a net conditional (CGAN): a label embedding is concatenated to z
in the generator and to the input in the discriminator (as an extra image channel for conv
nets). Every net is called as `net(x, y, train=...)`; discriminators return one unbounded
logit per row (losses add any sigmoid), shape [B, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jimb import conv as conv_lib

_DCGAN_INIT = nnx.initializers.normal(0.02)
_SLOPE = 0.2


def conv_start(sample_shape: Sequence[int], widths: Sequence[int],
               prefix: str = "") -> tuple[int, int]:
  """Height and width of the generator's first feature map: (H, W) / 2**len(widths).

  Each of the len(widths) stages doubles the resolution, so H and W must be multiples of
  2**len(widths); anything else is a ValueError that names the fix, its options named with
  `prefix` (the flag of the config block that holds them, e.g. "--config.synth.dcgan.").
  """
  if len(sample_shape) != 3:
    raise ValueError(f"conv GAN nets take images (H, W, C); got sample shape "
                     f"{tuple(sample_shape)}. Use {prefix}arch=mlp for tables")
  h, w, _ = sample_shape
  stages = len(widths)
  if stages == 0:
    raise ValueError(f"conv GAN nets need at least one stage; set {prefix}widths, e.g. 64,32")
  if h % 2**stages or w % 2**stages:
    fits = 0
    while h % 2**(fits + 1) == 0 and w % 2**(fits + 1) == 0:
      fits += 1
    fix = (f"set {prefix}widths to at most {fits} stages, e.g. "
           f"{prefix}widths={','.join(str(x) for x in widths[:fits])}" if fits else
           f"use {prefix}arch=mlp (its height or width is odd)")
    raise ValueError(
        f"conv GAN widths {tuple(widths)} upsample {stages} times, so the sample shape "
        f"{tuple(sample_shape)} needs height and width divisible by {2**stages}; {fix}")
  return h // 2**stages, w // 2**stages


class ConvGenerator(nnx.Module):
  """z [B, latent] (+ label) -> Linear -> start map x widths[0] -> transposed convs -> tanh."""

  def __init__(self, sample_shape: Sequence[int], *, widths: Sequence[int], latent_dim: int,
               rngs: nnx.Rngs, num_classes: int = 0, embed_dim: int = 50):
    self.start = conv_start(sample_shape, widths)
    self.embed = nnx.Embed(num_classes, embed_dim, rngs=rngs) if num_classes else None
    z_dim = latent_dim + (embed_dim if num_classes else 0)
    h, w = self.start
    self.project = nnx.Linear(z_dim, h * w * widths[0], use_bias=False, kernel_init=_DCGAN_INIT,
                              rngs=rngs)
    self.norms = nnx.List([_batch_norm(widths[0], rngs)])
    self.ups = nnx.List()
    for c_in, c_out in zip(widths, tuple(widths[1:]) + (sample_shape[-1],)):
      last = len(self.ups) == len(widths) - 1
      self.ups.append(nnx.ConvTranspose(c_in, c_out, (4, 4), strides=(2, 2), padding="SAME",
                                        use_bias=last, kernel_init=_DCGAN_INIT, rngs=rngs))
      if not last:
        self.norms.append(_batch_norm(c_out, rngs))

  def __call__(self, z: jax.Array, y: jax.Array | None = None, *, train: bool = False):
    z = _with_label(self.embed, z, y)
    x = self.project(z).reshape(z.shape[0], *self.start, -1)
    x = nnx.relu(self.norms[0](x, use_running_average=not train))
    for i in range(len(self.ups) - 1):
      x = nnx.relu(self.norms[i + 1](self.ups[i](x), use_running_average=not train))
    return jnp.tanh(self.ups[-1](x))


class ConvDiscriminator(nnx.Module):
  """Image (+ label map channel) -> stride-2 convs (widths reversed) + LeakyReLU 0.2 -> one logit.

  `norm` applies to every conv but the first: "batch" (DCGAN), "layer" (per-sample, for the
  WGAN-GP critic, whose gradient penalty needs gradients of each sample alone) or "none".
  """

  def __init__(self, sample_shape: Sequence[int], *, widths: Sequence[int], rngs: nnx.Rngs,
               num_classes: int = 0, norm: str = "batch"):
    h, w = conv_start(sample_shape, widths)
    self.label_map = (nnx.Embed(num_classes, sample_shape[0] * sample_shape[1], rngs=rngs)
                      if num_classes else None)
    c = sample_shape[-1] + (1 if num_classes else 0)
    self.convs = nnx.List()
    self.norms = nnx.List()
    for i, width in enumerate(reversed(tuple(widths))):
      self.convs.append(conv_lib.Conv(c, width, (4, 4), strides=(2, 2), padding="SAME",
                                 use_bias=i == 0 or norm == "none", kernel_init=_DCGAN_INIT,
                                 rngs=rngs))
      self.norms.append(None if i == 0 else _norm(norm, width, rngs))
      c = width
    self.out = nnx.Linear(h * w * c, 1, kernel_init=_DCGAN_INIT, rngs=rngs)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *, train: bool = False):
    if self.label_map is not None:
      x = jnp.concatenate([x, self.label_map(y).reshape(*x.shape[:-1], 1)], axis=-1)
    for conv, norm in zip(self.convs, self.norms):
      x = conv(x)
      if isinstance(norm, nnx.BatchNorm):
        x = norm(x, use_running_average=not train)
      elif norm is not None:
        x = norm(x)
      x = nnx.leaky_relu(x, _SLOPE)
    return self.out(x.reshape(x.shape[0], -1))


class MLPGenerator(nnx.Module):
  """z (+ label embedding) -> Linear [+ BatchNorm] + ReLU per hidden size -> tanh or linear out."""

  def __init__(self, sample_shape: Sequence[int], *, hidden: Sequence[int], latent_dim: int,
               rngs: nnx.Rngs, num_classes: int = 0, embed_dim: int = 50,
               batch_norm: bool = True, tanh: bool = True):
    self.sample_shape = tuple(sample_shape)
    self.tanh = tanh
    self.embed = nnx.Embed(num_classes, embed_dim, rngs=rngs) if num_classes else None
    size = latent_dim + (embed_dim if num_classes else 0)
    self.layers = nnx.List()
    self.norms = nnx.List()
    for width in hidden:
      self.layers.append(nnx.Linear(size, width, use_bias=not batch_norm, rngs=rngs))
      self.norms.append(_batch_norm(width, rngs) if batch_norm else None)
      size = width
    self.out = nnx.Linear(size, math.prod(sample_shape), rngs=rngs)

  def __call__(self, z: jax.Array, y: jax.Array | None = None, *, train: bool = False):
    x = _with_label(self.embed, z, y)
    for layer, norm in zip(self.layers, self.norms):
      x = layer(x)
      if norm is not None:
        x = norm(x, use_running_average=not train)
      x = nnx.relu(x)
    x = self.out(x)
    return (jnp.tanh(x) if self.tanh else x).reshape(z.shape[0], *self.sample_shape)


class MLPDiscriminator(nnx.Module):
  """Flattened sample (+ label embedding) -> Linear + LeakyReLU 0.2 per hidden size -> one logit."""

  def __init__(self, sample_shape: Sequence[int], *, hidden: Sequence[int], rngs: nnx.Rngs,
               num_classes: int = 0, embed_dim: int = 50):
    self.embed = nnx.Embed(num_classes, embed_dim, rngs=rngs) if num_classes else None
    size = math.prod(sample_shape) + (embed_dim if num_classes else 0)
    self.layers = nnx.List()
    for width in hidden:
      self.layers.append(nnx.Linear(size, width, rngs=rngs))
      size = width
    self.out = nnx.Linear(size, 1, rngs=rngs)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *, train: bool = False):
    x = _with_label(self.embed, x.reshape(x.shape[0], -1), y)
    for layer in self.layers:
      x = nnx.leaky_relu(layer(x), _SLOPE)
    return self.out(x)


def _with_label(embed: nnx.Embed | None, x: jax.Array, y: jax.Array | None) -> jax.Array:
  """[B, D] -> [B, D + embed_dim] for a conditional net; a label is required exactly then."""
  if (embed is None) != (y is None):
    raise ValueError("a conditional GAN net needs labels y and an unconditional one takes none")
  return x if embed is None else jnp.concatenate([x, embed(y)], axis=-1)


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # PyTorch's BatchNorm momentum 0.1 is flax's 0.9; scales start at N(1, 0.02) as in DCGAN.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, scale_init=_dcgan_scale_init,
                       rngs=rngs)


def _dcgan_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + _DCGAN_INIT(key, shape, dtype)


def _norm(kind: str, features: int, rngs: nnx.Rngs):
  if kind == "batch":
    return _batch_norm(features, rngs)
  if kind == "layer":
    return nnx.LayerNorm(features, epsilon=1e-5, reduction_axes=(-3, -2, -1), rngs=rngs)
  if kind == "none":
    return None
  raise ValueError(f"unknown discriminator norm {kind!r}; choose batch, layer or none")
