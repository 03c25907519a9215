"""Image augmentation against NumPy/SciPy references and hand-computed colour transforms."""

from __future__ import annotations

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, optimize

from jimb.config import base_config
from jimb.data import augment

OFF = dict(hflip=False, vflip=False, rotation=0.0, brightness=0.0, contrast=0.0,
           saturation=0.0, hue=0.0)


def config(**values):
  cfg = base_config().augment
  cfg.enabled = True
  cfg.update(values)
  return cfg


def images(b=16, h=8, w=10, c=3, seed=0):
  return np.random.default_rng(seed).uniform(size=(b, h, w, c)).astype(np.float32)


def test_disabled_gives_none():
  cfg = base_config().augment
  cfg.enabled = False
  assert augment.make_augment(cfg, 3) is None


def test_full_recipe_under_jit_keeps_shape_dtype_range_and_is_deterministic():
  fn = jax.jit(augment.make_augment(config(), 3))
  x = images()
  a = fn(jax.random.key(0), x)
  assert a.shape == x.shape and a.dtype == jnp.float32
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(a, fn(jax.random.key(0), x))
  assert not np.allclose(a, fn(jax.random.key(1), x))
  assert not np.allclose(a, x)


def test_flips_only_give_one_of_four_numpy_flips_per_image():
  fn = augment.make_augment(config(**{**OFF, "hflip": True, "vflip": True}), 3)
  x = images(b=32)
  out = np.asarray(fn(jax.random.key(3), x))
  seen = set()
  for img, res in zip(x, out):
    variants = [img, img[:, ::-1], img[::-1], img[::-1, ::-1]]
    matches = [i for i, v in enumerate(variants) if np.array_equal(res, v)]
    assert len(matches) == 1
    seen.add(matches[0])
  assert seen == {0, 1, 2, 3}  # every combination happens among 32 images


def test_rotate_matches_scipy():
  img = images(b=1, h=9, w=12)[0]
  for angle in (7.0, -13.5):
    expected = ndimage.rotate(img.astype(np.float64), angle, order=1, reshape=False,
                              mode="nearest")
    np.testing.assert_allclose(augment.rotate(jnp.asarray(img), angle), expected, atol=1e-5)


def test_rotation_angles_are_drawn_per_image_within_range():
  # Each output is scipy's rotation by some angle in [-20, 20]; recover it by a 1-D search.
  x = images(b=3, h=12, w=12)
  out = np.asarray(augment.make_augment(config(**{**OFF, "rotation": 20.0}), 3)(
      jax.random.key(5), x))
  angles = []
  for img, res in zip(x, out):
    error = lambda a, img=img, res=res: np.abs(
        ndimage.rotate(img, a, order=1, reshape=False, mode="nearest") - res).max()
    fit = optimize.minimize_scalar(error, bounds=(-20, 20), method="bounded",
                                   options=dict(xatol=1e-6))
    assert fit.fun < 1e-4
    angles.append(fit.x)
  assert np.ptp(angles) > 1.0  # drawn per image, not once per batch


def test_brightness_scales_each_image_by_one_factor_in_range():
  fn = augment.make_augment(config(**{**OFF, "brightness": 0.2}), 3)
  x = images() * 0.5 + 0.1  # no clipping at factors <= 1.2
  out = np.asarray(fn(jax.random.key(2), x))
  ratio = out / x
  factors = ratio.reshape(len(x), -1)
  np.testing.assert_allclose(factors, factors[:, :1].repeat(factors.shape[1], 1), rtol=1e-5)
  assert np.all((factors >= 0.8 - 1e-6) & (factors <= 1.2 + 1e-6))
  assert len(np.unique(factors[:, 0].round(5))) == len(x)


def test_colour_transforms_at_neutral_factors_are_identity():
  x = jnp.asarray(images(b=1)[0])
  np.testing.assert_allclose(augment.adjust_contrast(x, 1.0), x, atol=1e-6)
  np.testing.assert_allclose(augment.adjust_saturation(x, 1.0), x, atol=1e-6)
  np.testing.assert_allclose(augment.adjust_hue(x, 0.0), x, atol=1e-5)


def test_colour_transforms_against_numpy():
  x = images(b=1)[0]
  luma = x @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(augment.adjust_saturation(jnp.asarray(x), 0.0),
                             np.repeat(luma[..., None], 3, -1), atol=1e-6)
  np.testing.assert_allclose(augment.adjust_contrast(jnp.asarray(x), 0.0),
                             np.full_like(x, luma.mean()), atol=1e-6)
  np.testing.assert_allclose(augment.adjust_contrast(jnp.asarray(x), 1.5),
                             np.clip(luma.mean() + 1.5 * (x - luma.mean()), 0, 1), atol=1e-6)


def test_hue_shift_keeps_luma_and_greys_and_turns_red_towards_green():
  colours = np.array([[[0.8, 0.3, 0.3], [0.4, 0.4, 0.4], [0.3, 0.3, 0.7]]], np.float32)
  out = np.asarray(augment.adjust_hue(jnp.asarray(colours), 0.05))
  luma = np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(out @ luma, colours @ luma, atol=1e-5)
  np.testing.assert_allclose(out[0, 1], colours[0, 1], atol=1e-5)
  for before, after in ((colours[0, 0], out[0, 0]), (colours[0, 2], out[0, 2])):
    shift = colorsys.rgb_to_hsv(*after)[0] - colorsys.rgb_to_hsv(*before)[0]
    assert 0.02 < (shift + 0.5) % 1 - 0.5 < 0.08


def test_grayscale_with_colour_jitter_configured():
  fn = jax.jit(augment.make_augment(config(), 1))
  x = images(c=1)
  out = fn(jax.random.key(0), x)
  assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_bad_inputs_and_settings_raise():
  fn = augment.make_augment(config(), 3)
  with pytest.raises(ValueError, match="float32"):
    fn(jax.random.key(0), (images() * 255).astype(np.uint8))
  with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
    fn(jax.random.key(0), images(c=1))
  with pytest.raises(ValueError, match="--config.augment.hue"):
    augment.make_augment(config(hue=0.7), 3)
