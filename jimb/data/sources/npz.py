"""The npz source, our benchmark files: images, JPEG bytes or a table with labels and optional
group ids and split values, read without pickles and with damaged files named.
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Iterator
import zipfile
import zlib

import numpy as np

from jimb import files
from jimb.data.dataset import Dataset
from jimb.data.sources.base import SOURCES, _default_class_names, _existing_path, _integer_labels
from jimb.data.sources.images import _SIZE_HINT, _read_images


_NPZ_FIX = ("write it with numpy.savez(path, images=..., labels=...) from plain (non-object) "
            "arrays, or fix --config.data.path")


class _Npz:
  """An open npz data file whose failed reads name the file, the array and the fix, never
  numpy's advice to allow pickles (loading one runs code from the file)."""

  def __init__(self, archive, path: pathlib.Path):
    self._archive, self.path, self.files = archive, path, archive.files

  def __getitem__(self, key: str) -> np.ndarray:
    try:
      return self._archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      if isinstance(e, ValueError) and "pickle" in str(e):
        raise files.CorruptFile(
            f"array {key!r} of {self.path} holds Python objects, which a data file may not; save "
            "it as a plain array (e.g. numpy.asarray(names, dtype=str))") from None
      raise files.CorruptFile(f"array {key!r} of {self.path} cannot be read "
                              f"({type(e).__name__}); the file is damaged: {_NPZ_FIX}") from None


@contextlib.contextmanager
def _open_npz(path: pathlib.Path) -> Iterator[_Npz]:
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    what = ("it is empty" if isinstance(e, EOFError)
            else "it is neither an npz (zip) archive nor a .npy array" if "pickle" in str(e)
            else type(e).__name__)
    raise files.CorruptFile(f"{path} is not a readable npz file ({what}); {_NPZ_FIX}") from None
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise files.CorruptFile(f"{path} holds one bare array (.npy), not an npz archive of named "
                            f"arrays; {_NPZ_FIX}")
  with archive:
    yield _Npz(archive, path)


def _npz_array(f, key: str, what: str, config_key: str) -> np.ndarray:
  if key not in f.files:
    raise ValueError(
        f"{what}: array {key!r} is not in the npz file, which holds {sorted(f.files)}; "
        f"set --config.data.{config_key} to one of them")
  return f[key]


@SOURCES.register("npz")
def _load_npz(data_cfg) -> Dataset:
  """Our benchmark files: images, JPEG bytes or a table, with labels and optional ids/splits."""
  path = _existing_path(data_cfg)
  with _open_npz(path) as f:
    label_key = data_cfg.label_key if data_cfg.label_key in f.files else "labels"
    y_all = _integer_labels(
        _npz_array(f, label_key, "labels", "label_key"), f"array {label_key!r} of {path}",
        "store class indices there (their names in 'class_names'), or set "
        "--config.data.label_key to the array holding them")
    if not len(y_all):
      raise ValueError(f"{path} holds no examples (array {label_key!r} has no rows); fix "
                       "--config.data.path")
    rows = np.arange(len(y_all))
    if data_cfg.npz_split >= 0:
      if "split" not in f.files:
        raise ValueError(
            f"--config.data.npz_split={data_cfg.npz_split} selects rows by the array 'split', "
            f"but {path} has none (arrays: {sorted(f.files)}); set --config.data.npz_split=-1")
      rows = np.flatnonzero(f["split"] == data_cfg.npz_split)
      if not len(rows):
        raise ValueError(
            f"no rows of {path} have split == {data_cfg.npz_split} (values present: "
            f"{np.unique(f['split']).tolist()}); fix --config.data.npz_split")
    class_names = (tuple(str(c) for c in f["class_names"]) if "class_names" in f.files
                   else _default_class_names(y_all))
    groups = None
    if data_cfg.group_key:
      groups = _npz_array(f, data_cfg.group_key, "group ids", "group_key")[rows]
    feature_names = None
    image_key = data_cfg.image_key if data_cfg.image_key in f.files else "images"
    if image_key in f.files:
      x = f[image_key][rows]
      if x.ndim == 3:
        x = x[..., None]
    elif "jpeg_data" in f.files and "jpeg_offsets" in f.files:
      data, offsets = f["jpeg_data"], f["jpeg_offsets"]
      items = [(f"{i} of {path}", data[offsets[i]:offsets[i + 1]].tobytes()) for i in rows]
      x = _read_images(items, data_cfg.image_size, _SIZE_HINT)
    elif "features" in f.files:
      x = f["features"][rows].astype(np.float32)
      if "feature_names" in f.files:
        feature_names = tuple(str(n) for n in f["feature_names"])
    else:
      raise ValueError(
          f"{path} holds no inputs: expected array {data_cfg.image_key!r} or 'images', "
          f"'jpeg_data' + 'jpeg_offsets', or 'features'; it holds {sorted(f.files)}. "
          "Set --config.data.image_key to the array holding the images")
  return Dataset(x, y_all[rows], class_names, groups=groups, feature_names=feature_names,
                 name=path.stem)
