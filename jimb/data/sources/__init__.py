"""Loads a labelled dataset into memory from the source named by the `data` config block.

Every source returns a `Dataset`; all decoding, label indexing and row selection happens here so
later stages only ever see integer labels in [0, K) and NHWC images or (N, F) float32 tables.
Each source is a module of this package; importing the package registers them all.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jimb.data.dataset import Dataset
from jimb.data.sources.base import SOURCES
from jimb.data.sources.images import _check_split_folder
from jimb.data.sources import csv_images as _csv_images  # noqa: F401  (registers)
from jimb.data.sources import npz as _npz  # noqa: F401  (registers)
from jimb.data.sources import tables as _tables  # noqa: F401  (registers)
from jimb.data.sources import tfds as _tfds  # noqa: F401  (registers)

# Keys read by one source only: set for another source they would be silently ignored.
_OWN_KEYS = {"image_dir": "csv_images", "group_pattern": "image_folder",
             "group_csv": "image_folder"}


def load_source(data_cfg) -> Dataset:
  """Loads the dataset described by `data_cfg` (the config's `data` block).

  Images are brought to `data_cfg.image_size` squared when it is set, whatever the source, so a
  model that needs a minimum resolution can run on small images (e.g. digits at 32x32).
  """
  if data_cfg.source not in SOURCES.names():
    raise ValueError(f"unknown --config.data.source={data_cfg.source!r}; choose one of "
                     f"{SOURCES.names()}")
  for key, owner in _OWN_KEYS.items():
    if data_cfg[key] and data_cfg.source != owner:
      raise ValueError(f"--config.data.{key} is read by source {owner!r} only, and the source is "
                       f"{data_cfg.source!r}; unset it, or set --config.data.source={owner}")
  ds = SOURCES.get(data_cfg.source)(data_cfg)
  size = data_cfg.image_size
  if ds.is_image and size > 0 and ds.x.shape[1:3] != (size, size):
    ds = dataclasses.replace(ds, x=resize_images(ds.x, size))
  return ds


def load_test_source(data_cfg, key: str = "test_split") -> Dataset:
  """The source's fixed split named by `data_cfg.<key>`: the test split, or with
  key="val_split" a fixed validation split. A tfds split name, an npz `split` value or an
  image_folder sub-folder; one that is the training split itself is refused (a leak).
  """
  value = str(data_cfg[key])
  part = key.split("_")[0]
  if data_cfg.source not in ("tfds", "image_folder", "npz"):
    raise ValueError(f"--config.data.source={data_cfg.source} has no fixed {part} split; use "
                     "--config.split.mode=kfold, or the npz, tfds or image_folder source")
  if not value:
    raise ValueError(f"--config.split.mode=holdout takes the source's own {part} split; set "
                     f"--config.data.{key} (e.g. {part} for tfds, 1 for an npz split value, the "
                     f"{part} sub-folder of an image folder)")
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    if data_cfg.source in ("tfds", "image_folder"):
      train = str(data_cfg.split)
      if data_cfg.source == "image_folder":
        _check_split_folder(data_cfg, key)
      cfg.split = value
    elif data_cfg.source == "npz":
      train = str(data_cfg.npz_split)
      try:
        cfg.npz_split = int(value)
      except ValueError as e:
        raise ValueError(f"--config.data.{key}={value!r} must be the integer value of the npz "
                         f"file's `split` array for the {part} rows (e.g. 1)") from e
      if data_cfg.npz_split < 0:
        raise ValueError(f"--config.data.npz_split=-1 trains on every row of the npz file, the "
                         f"{part} rows included; set it to the training rows' `split` value")
  if value == train or (key == "val_split" and value == str(data_cfg.test_split)):
    same = "the training split" if value == train else "--config.data.test_split"
    raise ValueError(f"--config.data.{key}={value!r} names the same examples as {same}; a fixed "
                     f"{part} split must hold other examples")
  return load_source(cfg)


def resize_images(x: np.ndarray, size: int, chunk: int = 1024) -> np.ndarray:
  """Bilinear (antialiased when shrinking) resize of NHWC images, keeping the dtype."""
  import jax  # pylint: disable=g-import-not-at-top

  out = []
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk].astype(np.float32)
    shape = (len(part), size, size, x.shape[-1])
    out.append(np.asarray(jax.image.resize(part, shape, "bilinear")))
  y = np.concatenate(out) if out else np.zeros((0, size, size, x.shape[-1]), np.float32)
  if x.dtype == np.uint8:
    return np.clip(np.round(y), 0, 255).astype(np.uint8)
  return np.clip(y, 0.0, 1.0).astype(np.float32)


__all__ = ["SOURCES", "load_source", "load_test_source", "resize_images"]
