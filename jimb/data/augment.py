"""Training-time image augmentation as one pure, jit-able JAX function of (key, images).

Runs on the device inside the training step, so the host only gathers batches. Each image
draws its own flips, rotation and colour jitter (the source paper's recipe: flips, rotation
within +/-20 degrees, colour jitter within +/-20 %). Evaluation never calls this.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# ITU-R BT.601 luma, shared by the grey level (contrast, saturation) and YIQ (hue).
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)

Augment = Callable[[jax.Array, jax.Array], jax.Array]


def grey(image: jax.Array) -> jax.Array:
  """(..., H, W, 1) luma for RGB, channel mean otherwise."""
  if image.shape[-1] == 3:
    return jnp.tensordot(image, jnp.asarray(_RGB_TO_YIQ[0], image.dtype), axes=1)[..., None]
  return image.mean(axis=-1, keepdims=True)


def rotate(image: jax.Array, angle_degrees: jax.Array | float) -> jax.Array:
  """Rotates an (H, W, C) image counter-clockwise about its centre, keeping its shape.

  Bilinear, edge pixels repeated outside: matches
  `scipy.ndimage.rotate(image, angle, order=1, reshape=False, mode="nearest")`.
  """
  h, w = image.shape[:2]
  theta = jnp.deg2rad(jnp.asarray(angle_degrees, jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  dr, dc = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2,
                        indexing="ij")
  rows = cos * dr + sin * dc + (h - 1) / 2
  cols = -sin * dr + cos * dc + (w - 1) / 2
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, [rows, cols], order=1, mode="nearest")
  return jax.vmap(sample, in_axes=2, out_axes=2)(image)


def adjust_contrast(image: jax.Array, factor: jax.Array | float) -> jax.Array:
  """Blends with the image's mean grey level (torchvision's definition)."""
  mean = grey(image).mean()
  return jnp.clip(mean + factor * (image - mean), 0.0, 1.0)


def adjust_saturation(image: jax.Array, factor: jax.Array | float) -> jax.Array:
  """Blends an RGB image with its grey version."""
  g = grey(image)
  return jnp.clip(g + factor * (image - g), 0.0, 1.0)


def adjust_hue(image: jax.Array, turns: jax.Array | float) -> jax.Array:
  """Shifts the hue of an RGB image by `turns` of the hue circle.

  Rotates the chroma plane (I, Q) of YIQ space instead of going through HSV: one 3x3 matrix
  per image, exact for the luma and a close approximation of an HSV hue shift. Positive turns
  move red towards green, as torchvision's `adjust_hue`.
  """
  theta = -2 * jnp.pi * turns  # red -> green -> blue runs clockwise in the (I, Q) plane.
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rotation = jnp.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
  matrix = jnp.asarray(_YIQ_TO_RGB, jnp.float32) @ rotation @ jnp.asarray(
      _RGB_TO_YIQ, jnp.float32)
  return jnp.clip(image @ matrix.T, 0.0, 1.0)


def _check(aug_cfg) -> None:
  limits = dict(rotation=180.0, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.5)
  for name, limit in limits.items():
    value = aug_cfg[name]
    if not (math.isfinite(value) and 0 <= value <= limit):
      raise ValueError(f"augment.{name}={value} is outside [0, {limit}]; set "
                       f"--config.augment.{name} within it (0 disables it)")


def make_augment(aug_cfg, channels: int) -> Augment | None:
  """The augmentation of the `augment` config block, or None when it is disabled.

  Returns `fn(key, images)` for float32 (B, H, W, C) images in [0, 1]; the result has the same
  shape and dtype and stays in [0, 1] (each colour transform clips, as torchvision's do;
  flips and bilinear rotation cannot leave the range). Colour transforms run in a fixed
  order (brightness, contrast, saturation, hue); saturation and hue apply to RGB (C=3) only.
  """
  if not aug_cfg.enabled:
    return None
  _check(aug_cfg)
  colour = channels == 3

  def one(key: jax.Array, image: jax.Array) -> jax.Array:
    # A fixed key per transform: switching one on or off leaves the others' draws unchanged.
    k_h, k_v, k_r, k_b, k_c, k_s, k_u = jax.random.split(key, 7)
    uniform = lambda k, v: jax.random.uniform(k, (), jnp.float32, -v, v)
    if aug_cfg.hflip:
      image = jnp.where(jax.random.bernoulli(k_h), image[:, ::-1], image)
    if aug_cfg.vflip:
      image = jnp.where(jax.random.bernoulli(k_v), image[::-1], image)
    if aug_cfg.rotation:
      image = rotate(image, uniform(k_r, aug_cfg.rotation))
    if aug_cfg.brightness:
      image = jnp.clip(image * (1 + uniform(k_b, aug_cfg.brightness)), 0.0, 1.0)
    if aug_cfg.contrast:
      image = adjust_contrast(image, 1 + uniform(k_c, aug_cfg.contrast))
    if colour and aug_cfg.saturation:
      image = adjust_saturation(image, 1 + uniform(k_s, aug_cfg.saturation))
    if colour and aug_cfg.hue:
      image = adjust_hue(image, uniform(k_u, aug_cfg.hue))
    return image

  def augment(key: jax.Array, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != channels or images.dtype != jnp.float32:
      raise ValueError(
          f"augmentation takes float32 (B, H, W, {channels}) images in [0, 1], got "
          f"{images.dtype} of shape {images.shape}; convert with Preprocessor.host first")
    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)

  return augment
