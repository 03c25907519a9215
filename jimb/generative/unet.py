"""The denoising U-Net of a class-conditional diffusion model: eps_theta(x_t, t, y).

The architecture of Ho et al. 2020 (hojonathanho/diffusion) without self-attention: a 3x3 conv
in, per level `res_blocks` residual blocks then a stride-2 conv down (not after the last level),
two residual blocks in the middle, per level `res_blocks + 1` residual blocks on the
concatenated skips then nearest-neighbour upsampling and a 3x3 conv, GroupNorm + SiLU + a 3x3
conv out. Residual blocks are GroupNorm, SiLU, conv, GroupNorm scaled and shifted by the projected
embedding (improved-diffusion's `use_scale_shift_norm`), SiLU, dropout, conv, and a 1x1 conv on
the skip when the width changes; their last conv and the output conv start at zero, so the net
starts as the identity on each block. GroupNorm has at most 32 groups of at least 4 channels
(`group_count`; Ho et al.'s 32 from 128 channels on). The timestep enters as the
Transformer's sinusoidal embedding (widths[0] features) through a two-layer SiLU MLP to
`embed_dim`; the class enters as a learned embedding added to it (improved-diffusion's
`label_emb`, Nichol & Dhariwal 2021). Dropout takes an explicit key, so a step is a pure
function of its inputs.
"""

from __future__ import annotations

import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

_ZERO = nnx.initializers.zeros_init()


def check_image_shape(image_shape: Sequence[int], widths: Sequence[int], prefix: str) -> None:
  """H and W must halve len(widths) - 1 times exactly; else a ValueError naming the fix."""
  if len(image_shape) != 3:
    raise ValueError(f"the diffusion U-Net takes images (H, W, C), got sample shape "
                     f"{tuple(image_shape)}; use a GAN (e.g. --config.synth.method=cgan) for tables")
  if not widths:
    raise ValueError(f"the U-Net needs at least one level; set {prefix}widths, e.g. 32,64")
  h, w, _ = image_shape
  downs = len(widths) - 1
  if h % 2**downs or w % 2**downs:
    fits = 0
    while h % 2**(fits + 1) == 0 and w % 2**(fits + 1) == 0:
      fits += 1
    raise ValueError(f"{len(widths)} U-Net levels halve the image {downs} times, so "
                     f"{tuple(image_shape)} needs height and width divisible by {2**downs}; set "
                     f"{prefix}widths to at most {fits + 1} levels")


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
  """[B] integer steps -> [B, dim] sines and cosines of t at geometric frequencies 1 .. 1/10^4."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half - 1, 1))
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def group_count(c: int) -> int:
  """GroupNorm's groups for `c` channels: at most 32 (Ho et al.'s, at 128 and more channels), of
  at least 4 channels each where c allows.

  A group of one channel is instance norm: it subtracts each image's mean of that channel, so
  no block can see how bright an image is. With 32 groups on widths 32, 64, a DDPM trained on
  PneumoniaMNIST sampled images whose mean brightness spread 5x as widely as the real ones'.
  """
  return max(g for g in range(1, 33) if c % g == 0 and (c // g >= 4 or g == 1))


def _group_norm(c: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
  return nnx.GroupNorm(c, num_groups=group_count(c), epsilon=1e-6, rngs=rngs)


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class ResBlock(nnx.Module):

  def __init__(self, c_in: int, c_out: int, embed_dim: int, dropout: float, rngs: nnx.Rngs):
    self.norm1 = _group_norm(c_in, rngs)
    self.conv1 = nnx.Conv(c_in, c_out, (3, 3), rngs=rngs)
    self.emb = nnx.Linear(embed_dim, 2 * c_out, rngs=rngs)
    self.norm2 = _group_norm(c_out, rngs)
    self.conv2 = nnx.Conv(c_out, c_out, (3, 3), kernel_init=_ZERO, rngs=rngs)
    self.skip = nnx.Conv(c_in, c_out, (1, 1), rngs=rngs) if c_in != c_out else None
    self.dropout = dropout

  def __call__(self, x, emb, key):
    h = self.conv1(nnx.silu(self.norm1(x)))
    scale, shift = jnp.split(self.emb(nnx.silu(emb))[:, None, None, :], 2, axis=-1)
    h = self.norm2(h) * (1.0 + scale) + shift
    h = self.conv2(_dropout(nnx.silu(h), self.dropout, key))
    return (x if self.skip is None else self.skip(x)) + h


class UNet(nnx.Module):
  """(x [B, H, W, C], t [B] ints, y [B] ints, key or None) -> predicted noise [B, H, W, C]."""

  def __init__(self, image_shape: Sequence[int], *, widths: Sequence[int], res_blocks: int,
               embed_dim: int, num_classes: int, dropout: float, rngs: nnx.Rngs):
    channels = image_shape[-1]
    self.time_dim = widths[0]
    self.time1 = nnx.Linear(widths[0], embed_dim, rngs=rngs)
    self.time2 = nnx.Linear(embed_dim, embed_dim, rngs=rngs)
    self.label = nnx.Embed(num_classes, embed_dim, rngs=rngs)
    self.conv_in = nnx.Conv(channels, widths[0], (3, 3), rngs=rngs)
    block = lambda a, b: ResBlock(a, b, embed_dim, dropout, rngs)
    self.down, self.downsample, skips = nnx.List(), nnx.List(), [widths[0]]
    c = widths[0]
    for level, width in enumerate(widths):
      for _ in range(res_blocks):
        self.down.append(block(c, width))
        c = width
        skips.append(c)
      if level < len(widths) - 1:
        self.downsample.append(nnx.Conv(c, c, (3, 3), strides=(2, 2), rngs=rngs))
        skips.append(c)
    self.mid = nnx.List([block(c, c), block(c, c)])
    self.up, self.upsample = nnx.List(), nnx.List()
    for level, width in reversed(list(enumerate(widths))):
      for _ in range(res_blocks + 1):
        self.up.append(block(c + skips.pop(), width))
        c = width
      if level > 0:
        self.upsample.append(nnx.Conv(c, c, (3, 3), rngs=rngs))
    self.norm_out = _group_norm(c, rngs)
    self.conv_out = nnx.Conv(c, channels, (3, 3), kernel_init=_ZERO, rngs=rngs)
    self.res_blocks, self.levels = res_blocks, len(widths)

  def __call__(self, x, t, y, key=None):
    emb = self.time2(nnx.silu(self.time1(timestep_embedding(t, self.time_dim)))) + self.label(y)
    n_blocks = len(self.down) + len(self.mid) + len(self.up)
    keys = iter([None] * n_blocks if key is None else list(jax.random.split(key, n_blocks)))
    h = self.conv_in(x)
    skips = [h]
    blocks = iter(self.down)
    for level in range(self.levels):
      for _ in range(self.res_blocks):
        h = next(blocks)(h, emb, next(keys))
        skips.append(h)
      if level < self.levels - 1:
        h = self.downsample[level](h)
        skips.append(h)
    for mid in self.mid:
      h = mid(h, emb, next(keys))
    blocks, ups = iter(self.up), iter(self.upsample)
    for level in reversed(range(self.levels)):
      for _ in range(self.res_blocks + 1):
        h = next(blocks)(jnp.concatenate([h, skips.pop()], axis=-1), emb, next(keys))
      if level > 0:
        h = next(ups)(jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))
    return self.conv_out(nnx.silu(self.norm_out(h)))
