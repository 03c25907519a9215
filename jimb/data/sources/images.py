"""Decoding images into one NHWC array, and the image_folder source: one sub-folder per class,
optionally inside train/ test/ (val/) split folders, with group ids from file names or a csv.
"""

from __future__ import annotations

import io
import pathlib
import re
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jimb.data.dataset import Dataset
from jimb.data.sources.base import SOURCES, _examples, _existing_path
from jimb.data.sources.csv_columns import _group_column, _read_csv, _require_column

_GRAY_MODES = frozenset({"1", "L"})
_SIZE_HINT = "set --config.data.image_size=N to resize all of them to N x N"


def _read_images(items: Sequence[tuple[str, Any]], image_size: int, size_hint: str) -> np.ndarray:
  """Decodes images (paths or encoded bytes) into one uint8 NHWC array.

  All-grayscale inputs stay single-channel; any colour input makes every image RGB, so one
  array can hold them. Headers are read first so a size mismatch fails before decoding.
  """
  def open_image(source):
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)

  modes, sizes = [], []
  for desc, source in items:
    try:
      with open_image(source) as im:
        modes.append(im.mode)
        sizes.append(im.size)
    except (OSError, ValueError) as e:
      raise ValueError(f"cannot read image {desc}: {e}") from e
  gray = all(m in _GRAY_MODES for m in modes)
  if image_size > 0:
    width = height = image_size
  else:
    distinct = sorted(set(sizes))
    if len(distinct) > 1:
      examples = [items[sizes.index(s)][0] for s in distinct[:2]]
      raise ValueError(
          f"images have {len(distinct)} different sizes (e.g. {distinct[0]} for {examples[0]}, "
          f"{distinct[1]} for {examples[1]}); {size_hint}")
    width, height = distinct[0]
  out = np.empty((len(items), height, width, 1 if gray else 3), np.uint8)
  for i, (desc, source) in enumerate(items):
    try:
      with open_image(source) as im:
        im = im.convert("L" if gray else "RGB")
        if im.size != (width, height):
          im = im.resize((width, height), Image.Resampling.BILINEAR)
        out[i] = np.asarray(im).reshape(out.shape[1:])
    except (OSError, ValueError) as e:
      raise ValueError(f"cannot read image {desc}: {e}") from e
  return out


def _image_extensions() -> set[str]:
  return set(Image.registered_extensions())


def _class_dirs(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
  extensions = _image_extensions()
  return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                and p.suffix.lower() in extensions)


def _class_root(root: pathlib.Path, split: str) -> pathlib.Path:
  """Where the class folders are: root/<split> when that holds folders (a train/ test/ layout),
  else root itself (one sub-folder per class)."""
  folder = root / split if split else root
  return folder if folder != root and folder.is_dir() and _class_dirs(folder) else root


def _check_split_folder(data_cfg, key: str) -> None:
  """A fixed split of an image folder (data.<key>) is a sub-folder with the training split's
  class folders; a missing or different class would shift the labels of every later class."""
  root = _existing_path(data_cfg)
  folder = root / str(data_cfg[key])
  train = _class_root(root, data_cfg.split)
  if not (folder.is_dir() and _class_dirs(folder)):
    raise ValueError(
        f"--config.data.{key}={data_cfg[key]!r}: {folder} is not a folder of class folders; the "
        f"sub-folders of {root} are {[p.name for p in _class_dirs(root)]}")
  if train == root:
    raise ValueError(
        f"--config.data.{key}={data_cfg[key]!r} names a sub-folder of {root}, but the training "
        f"images are not in one: --config.data.split={data_cfg.split!r} is not a folder of class "
        "folders there. Set --config.data.split to the training sub-folder (e.g. train)")
  ours, theirs = ({p.name for p in _class_dirs(f)} for f in (train, folder))
  if ours != theirs:
    raise ValueError(
        f"the class folders of {train} and {folder} differ (only in {train.name}: "
        f"{sorted(ours - theirs)}, only in {folder.name}: {sorted(theirs - ours)}); every split "
        "folder needs the same class folders, or labels would mean different classes")


def _pattern_groups(pattern: str, paths: Sequence[pathlib.Path]) -> np.ndarray:
  """Group ids from file names: the first group of `pattern` (e.g. a patient id prefix)."""
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise ValueError(f"--config.data.group_pattern={pattern!r} is not a valid regular "
                     f"expression ({e}); fix it") from None
  if not regex.groups:
    raise ValueError(f"--config.data.group_pattern={pattern!r} has no group; put the group id's "
                     r"part in parentheses, e.g. '^(P\d+)_' for P017_2.png")
  matches = [regex.search(p.name) for p in paths]
  ids = [m.group(1) if m else None for m in matches]
  unmatched = [p.name for p, i in zip(paths, ids) if not i]
  if unmatched:
    raise ValueError(
        f"{len(unmatched)} of {len(paths)} file names give no group id with "
        f"--config.data.group_pattern={pattern!r} (e.g. {_examples(unmatched)}); fix the pattern "
        "so that its first group captures every file's group id")
  return np.asarray(ids)


def _csv_groups(data_cfg, paths: Sequence[pathlib.Path]) -> np.ndarray:
  """Group ids from a csv mapping images (by file name or stem) to groups."""
  path = pathlib.Path(data_cfg.group_csv).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"{path} is not a file; fix --config.data.group_csv")
  if not data_cfg.group_key:
    raise ValueError(f"--config.data.group_csv={data_cfg.group_csv!r} needs "
                     "--config.data.group_key, the column holding the group ids")
  header, columns = _read_csv(path, "group_csv")
  _require_column(path, header, data_cfg.image_key, "image", "image_key")
  groups = _group_column(path, header, columns, data_cfg.group_key)
  mapping, conflicts = {}, []
  for image, group in zip(columns[data_cfg.image_key], groups):
    name = pathlib.PurePath(image.strip().replace("\\", "/")).name
    if mapping.setdefault(name, group) != group:
      conflicts.append(name)
  if conflicts:
    raise ValueError(f"{path} gives {len(conflicts)} image(s) two different groups (e.g. "
                     f"{_examples(conflicts)}); each image belongs to one group")
  found = [mapping.get(p.name, mapping.get(p.stem)) for p in paths]
  missing = [p.name for p, g in zip(paths, found) if g is None]
  if missing:
    raise ValueError(
        f"{len(missing)} of {len(paths)} images are not in column {data_cfg.image_key!r} of "
        f"{path}, by file name or stem (e.g. {_examples(missing)}); add them, or fix "
        "--config.data.image_key")
  return np.asarray(found)


def _folder_groups(data_cfg, paths: Sequence[pathlib.Path]) -> np.ndarray | None:
  """An image folder's group ids, from file names or a mapping csv (None without either)."""
  if data_cfg.group_pattern and data_cfg.group_csv:
    raise ValueError("--config.data.group_pattern and --config.data.group_csv both give group "
                     "ids; set one of them")
  if data_cfg.group_pattern:
    return _pattern_groups(data_cfg.group_pattern, paths)
  if data_cfg.group_csv:
    return _csv_groups(data_cfg, paths)
  if data_cfg.group_key:
    raise ValueError(
        f"--config.data.group_key={data_cfg.group_key!r} is a column of --config.data.group_csv, "
        "which is not set: image_folder takes group ids from a csv (group_csv, with image_key "
        "and group_key its columns) or from file names (group_pattern)")
  return None


@SOURCES.register("image_folder")
def _load_image_folder(data_cfg) -> Dataset:
  """One sub-folder per class, the layout most medical image collections ship in; with fixed
  splits, train/ test/ (val/) sub-folders that each hold the class folders."""
  root = _existing_path(data_cfg)
  if not root.is_dir():
    raise ValueError(f"{root} is not a folder; --config.data.path must be a folder of class "
                     "folders for source 'image_folder'")
  folder = _class_root(root, data_cfg.split)
  class_dirs = _class_dirs(folder)
  if len(class_dirs) < 2:
    loose = (" It holds image files itself: put them into class folders, or list them with "
             "their labels in a csv for source 'csv_images'." if _image_files(folder) else "")
    raise ValueError(
        f"{folder} holds {len(class_dirs)} class folder(s); image_folder needs one sub-folder per "
        f"class and at least 2 classes (fix --config.data.path).{loose}")
  items, labels = [], []
  for label, class_dir in enumerate(class_dirs):
    images = _image_files(class_dir)
    if not images:
      nested = [p.name for p in _class_dirs(class_dir)]
      fix = (f"its sub-folders {nested} look like class folders, so {folder} holds splits: set "
             "--config.data.split to the training sub-folder" if nested
             else "add images or remove it")
      raise ValueError(f"class folder {class_dir} holds no image files; {fix}")
    items += [(str(p), p) for p in images]
    labels += [label] * len(images)
  groups = _folder_groups(data_cfg, [p for _, p in items])
  x = _read_images(items, data_cfg.image_size, _SIZE_HINT)
  return Dataset(x, np.asarray(labels, np.int64), tuple(p.name for p in class_dirs),
                 groups=groups, name=root.name)
