"""Loads a labelled dataset into memory from the source named by the `data` config block.

Every source returns a `Dataset`; all decoding, label indexing and row selection happens here so
later stages only ever see integer labels in [0, K) and NHWC images or (N, F) float32 tables.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import io
import math
import os
import pathlib
import re
from typing import Any, Iterator, Sequence
import zipfile
import zlib

import numpy as np
from PIL import Image

from jimb import files
from jimb.data.dataset import Dataset
from jimb.registry import Registry

SOURCES = Registry("data source")

_MISSING_CELLS = frozenset({"", "na", "nan"})
_GRAY_MODES = frozenset({"1", "L"})
# Keys read by one source only: set for another source they would be silently ignored.
_OWN_KEYS = {"image_dir": "csv_images", "group_pattern": "image_folder",
             "group_csv": "image_folder"}
_SIZE_HINT = "set --config.data.image_size=N to resize all of them to N x N"


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
    else:
      raise ValueError(f"--config.data.source={data_cfg.source} has no fixed {part} split; use "
                       "--config.split.mode=kfold, or the npz, tfds or image_folder source")
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


def _existing_path(data_cfg) -> pathlib.Path:
  if not data_cfg.path:
    raise FileNotFoundError(
        f"data source {data_cfg.source!r} reads a file or folder: set --config.data.path=<path>")
  path = pathlib.Path(data_cfg.path).expanduser()
  if not path.exists():
    raise FileNotFoundError(
        f"{path} does not exist; fix --config.data.path (source {data_cfg.source!r})")
  return path


def _default_class_names(labels: np.ndarray) -> tuple[str, ...]:
  return tuple(str(k) for k in range(int(labels.max(initial=-1)) + 1))


def _integer_labels(values: np.ndarray, what: str, fix: str) -> np.ndarray:
  """`values` as int64 class indices, checked before the cast.

  A cast truncates 1.6 to 1 and turns NaN into a large negative number: such labels are
  regression targets or damaged data, and training on them would succeed silently.
  """
  values = np.asarray(values)
  if values.ndim != 1:
    raise ValueError(f"{what} has shape {values.shape}, but labels are one class index per "
                     f"example (for one-hot labels store their argmax); {fix}")
  if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
    return values.astype(np.int64)
  if not np.issubdtype(values.dtype, np.floating):
    raise ValueError(f"{what} holds {values.dtype} values, not class indices; {fix}")
  finite = np.isfinite(values)
  bad = np.flatnonzero(~finite | (values != np.where(finite, np.round(values), 0)))
  if len(bad):
    raise ValueError(
        f"{what} holds {len(bad)} non-integral or non-finite value(s), e.g. "
        f"{values[bad[:3]].tolist()} at row(s) {bad[:3].tolist()}, so they are not class "
        f"indices 0, 1, ...; {fix}")
  return values.astype(np.int64)


def _examples(items: Sequence[Any], k: int = 3) -> str:
  """The first few of `items`, for messages about many."""
  return ", ".join(repr(str(i)) for i in items[:k]) + (", ..." if len(items) > k else "")


# ----------------------------------------------------------------------------- sklearn


@SOURCES.register("sklearn")
def _load_sklearn(data_cfg) -> Dataset:
  """Small bundled datasets that need no file and no network: smoke tests and examples."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  loaders = dict(digits=datasets.load_digits, breast_cancer=datasets.load_breast_cancer,
                 wine=datasets.load_wine, iris=datasets.load_iris)
  if data_cfg.name not in loaders:
    raise ValueError(
        f"unknown sklearn dataset {data_cfg.name!r}; set --config.data.name to one of "
        f"{sorted(loaders)}")
  bunch = loaders[data_cfg.name]()
  y = bunch.target.astype(np.int64)
  if data_cfg.name == "digits":
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    return Dataset(x, y, _default_class_names(y), name=data_cfg.name)
  return Dataset(
      bunch.data.astype(np.float32), y, tuple(str(c) for c in bunch.target_names),
      feature_names=tuple(str(f) for f in bunch.feature_names), name=data_cfg.name)


# ----------------------------------------------------------------------------- images


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


# ----------------------------------------------------------------------------- npz


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


# ----------------------------------------------------------------------------- csv


def _to_float(cell: str) -> float | None:
  """The cell as a number, NaN when missing, None when it is not numeric."""
  if cell.strip().lower() in _MISSING_CELLS:
    return math.nan
  try:
    return float(cell)
  except ValueError:
    return None


def _encode_labels(values: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
  """Index labels by their sorted unique values (numerically when all are integers)."""
  unique = set(values)
  try:
    names = sorted(unique, key=int)
  except ValueError:
    names = sorted(unique)
  index = {name: i for i, name in enumerate(names)}
  return np.asarray([index[v] for v in values], np.int64), tuple(names)


def _one_hot(name: str, cells: list[str]) -> list[tuple[str, np.ndarray]]:
  """One indicator column per category, NaN where the cell is missing (left to imputation)."""
  missing = np.asarray([c.strip().lower() in _MISSING_CELLS for c in cells])
  values = np.asarray([c.strip() for c in cells])
  return [(f"{name}={v}", np.where(missing, np.nan, values == v).astype(np.float32))
          for v in sorted(set(values[~missing]))]


def _read_csv(path: pathlib.Path, config_key: str) -> tuple[list[str], dict[str, list[str]]]:
  """A csv file's header and columns of cells; one without data rows is refused."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as fh:
      reader = csv.reader(fh)
      header = [h.strip() for h in next(reader, [])]
      rows = [r for r in reader if any(c.strip() for c in r)]
  except UnicodeDecodeError:
    raise ValueError(f"{path} is not a UTF-8 text csv file; fix "
                     f"--config.data.{config_key}") from None
  if not rows:
    raise ValueError(f"{path} holds no examples ({'only a header' if header else 'it is empty'}, "
                     f"no data rows); fix --config.data.{config_key}")
  for i, r in enumerate(rows):
    if len(r) != len(header):
      raise ValueError(f"{path} data row {i}: {len(r)} fields, but the header has {len(header)}")
  return header, {h: [r[i] for r in rows] for i, h in enumerate(header)}


def _require_column(path: pathlib.Path, header: list[str], key: str, what: str,
                    config_key: str) -> None:
  if key not in header:
    raise ValueError(f"{what} column {key!r} is not in {path}; its columns are {header}. "
                     f"Set --config.data.{config_key} to one of them")


def _label_column(path: pathlib.Path, header: list[str], columns: dict[str, list[str]],
                  key: str) -> tuple[np.ndarray, tuple[str, ...]]:
  """A label column indexed by its sorted values; every row needs a label."""
  _require_column(path, header, key, "label", "label_key")
  labels = [c.strip() for c in columns[key]]
  if "" in labels:
    raise ValueError(f"{path} data row {labels.index('')}: empty label in column {key!r}; every "
                     "row needs a label")
  return _encode_labels(labels)


def _group_column(path: pathlib.Path, header: list[str], columns: dict[str, list[str]],
                  key: str) -> np.ndarray:
  """A group-id column; an empty cell would join unrelated rows into one group."""
  _require_column(path, header, key, "group", "group_key")
  groups = [c.strip() for c in columns[key]]
  empty = [i for i, g in enumerate(groups) if not g]
  if empty:
    raise ValueError(f"{path}: {len(empty)} data row(s) have no group id in column {key!r} "
                     f"(e.g. data row {empty[0]}); fill them in, as empty ids would put all those "
                     "rows into one group")
  return np.asarray(groups)


@SOURCES.register("csv")
def _load_csv(data_cfg) -> Dataset:
  """A clinical table: one row per example, a header, a label column and optional ids."""
  path = _existing_path(data_cfg)
  if data_cfg.categorical not in ("error", "drop", "onehot"):
    raise ValueError(f"unknown --config.data.categorical={data_cfg.categorical!r}; "
                     "choose error, drop or onehot")
  header, columns = _read_csv(path, "path")
  y, class_names = _label_column(path, header, columns, data_cfg.label_key)
  groups = None
  if data_cfg.group_key:
    groups = _group_column(path, header, columns, data_cfg.group_key)
  if data_cfg.feature_columns:
    names = [c.strip() for c in data_cfg.feature_columns.split(",") if c.strip()]
    for name in names:
      _require_column(path, header, name, "feature", "feature_columns")
  else:
    names = [h for h in header if h not in (data_cfg.label_key, data_cfg.group_key)]
  numbers = {n: [_to_float(c) for c in columns[n]] for n in names}
  categorical = [n for n in names if None in numbers[n]]
  if categorical and data_cfg.categorical == "error":
    raise ValueError(
        f"{path}: non-numeric feature column(s) {categorical}; set "
        "--config.data.categorical=drop to drop them or --config.data.categorical=onehot to "
        "one-hot encode them (or choose columns with --config.data.feature_columns)")
  features = []
  for n in names:
    if n not in categorical:
      features.append((n, np.asarray(numbers[n], np.float32)))
    elif data_cfg.categorical == "onehot":
      features += _one_hot(n, columns[n])
  if not features:
    raise ValueError(f"{path}: no numeric feature columns left; check "
                     "--config.data.feature_columns and --config.data.categorical")
  x = np.stack([v for _, v in features], axis=1)
  return Dataset(x, y, class_names, groups=groups,
                 feature_names=tuple(n for n, _ in features), name=path.stem)


# ----------------------------------------------------------------------------- csv images


def _find_images(image_dir: pathlib.Path, entries: Sequence[str], where: str) -> list[pathlib.Path]:
  """Each entry's file: a path relative to `image_dir`, or a file name or id (`<id>` or
  `<id>.<image extension>`) found anywhere below it, as datasets ship their images split over
  several folders (HAM10000_images_part_1, _part_2)."""
  extensions = _image_extensions()
  by_name, by_stem = collections.defaultdict(set), collections.defaultdict(set)
  for folder, dirs, names in os.walk(image_dir, followlinks=True):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in names:
      if not name.startswith("."):
        path = pathlib.Path(folder, name)
        by_name[name].add(path)
        if path.suffix.lower() in extensions:
          by_stem[path.stem].add(path)
  found, missing, ambiguous = [], [], []
  for entry in entries:
    if "/" in entry or "\\" in entry:
      path = image_dir / entry.replace("\\", "/")
      matches = {path} if path.is_file() else set()
    else:
      matches = by_name.get(entry, set()) | by_stem.get(entry, set())
    if len(matches) == 1:
      found.append(matches.pop())
    elif matches:
      names = sorted(str(m.relative_to(image_dir)) for m in matches)
      ambiguous.append(f"{entry}: {', '.join(names)}")
    else:
      missing.append(entry)
  if missing:
    count = sum(len(paths) for paths in by_stem.values())
    raise FileNotFoundError(
        f"{len(missing)} of {len(entries)} images listed in {where} are not under {image_dir} "
        f"(e.g. {_examples(missing)}; it holds {count} image files, searched by file name and by "
        "name without extension in all its sub-folders); fix --config.data.image_dir, or "
        "--config.data.image_key if that column does not name the images")
  if ambiguous:
    raise ValueError(
        f"{len(ambiguous)} image(s) listed in {where} match several files under {image_dir} (e.g. "
        f"{'; '.join(ambiguous[:3])}); remove the extra copies, point --config.data.image_dir at "
        "one of them, or list paths relative to it")
  return found


@SOURCES.register("csv_images")
def _load_csv_images(data_cfg) -> Dataset:
  """Images listed in a csv with their labels and optional group ids, as HAM10000 ships (its
  metadata names each image by id, the images lie in two folders)."""
  path = _existing_path(data_cfg)
  if not path.is_file():
    raise ValueError(f"{path} is a folder; for source 'csv_images' --config.data.path is the csv "
                     "listing the images (source 'image_folder' reads a folder of class folders)")
  header, columns = _read_csv(path, "path")
  _require_column(path, header, data_cfg.image_key, "image", "image_key")
  y, class_names = _label_column(path, header, columns, data_cfg.label_key)
  groups = (_group_column(path, header, columns, data_cfg.group_key) if data_cfg.group_key
            else None)
  image_dir = pathlib.Path(data_cfg.image_dir).expanduser() if data_cfg.image_dir else path.parent
  if not image_dir.is_dir():
    raise FileNotFoundError(f"{image_dir} is not a folder; fix --config.data.image_dir (the "
                            "folder searched for the images; empty: the csv's folder)")
  entries = [c.strip() for c in columns[data_cfg.image_key]]
  paths = _find_images(image_dir, entries, f"column {data_cfg.image_key!r} of {path}")
  x = _read_images([(str(p), p) for p in paths], data_cfg.image_size, _SIZE_HINT)
  return Dataset(x, y, class_names, groups=groups, name=path.stem)


# ----------------------------------------------------------------------------- tfds


def _as_ids(values: list[Any]) -> np.ndarray:
  """Group ids as a flat array, with byte strings decoded so they compare like npz/csv ids."""
  items = [np.asarray(v).item() for v in values]
  return np.asarray([v.decode() if isinstance(v, bytes) else v for v in items])


@SOURCES.register("tfds")
def _load_tfds(data_cfg) -> Dataset:
  """A prepared TFDS dataset read through its ArrayRecord data source (no TensorFlow needed).

  With download off an unprepared dataset fails at once instead of waiting on network retries.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from jimb import multihost  # pylint: disable=g-import-not-at-top

  name, split = data_cfg.name, data_cfg.split
  data_dir = data_cfg.data_dir or None
  builder_kwargs = dict(file_format="array_record")
  try:
    source = multihost.writer_first(
        lambda: tfds.data_source(name, split=split, data_dir=data_dir,
                                 download=data_cfg.download, builder_kwargs=builder_kwargs),
        f"tfds {name} prepared")
  except tfds.core.DatasetNotFoundError as e:
    raise ValueError(f"tfds has no dataset {name!r}; fix --config.data.name (tfds.list_builders() "
                     "lists them)") from e
  except Exception as e:  # pylint: disable=broad-except
    # A prepared dataset failing is a real error; an unprepared one gets a message with the fix.
    if tfds.builder(name, data_dir=data_dir, **builder_kwargs).is_prepared():
      raise
    where = data_dir or "the default TFDS data_dir"
    if data_cfg.download:
      raise RuntimeError(
          f"downloading and preparing tfds dataset {name!r} into {where} failed: {e}. Check the "
          "network, or prepare it elsewhere and point --config.data.data_dir at the copy") from e
    raise FileNotFoundError(
        f"tfds dataset {name!r} (split {split!r}) is not prepared in {where}. Set "
        "--config.data.download=True on a machine with network access, or point "
        "--config.data.data_dir at a prepared copy (ArrayRecord format)") from e

  examples = list(source)
  if not examples:
    raise ValueError(f"tfds dataset {name!r} split {split!r} is empty; fix --config.data.split")
  wanted = dict(image_key=data_cfg.image_key, label_key=data_cfg.label_key)
  if data_cfg.group_key:
    wanted["group_key"] = data_cfg.group_key
  for config_key, key in wanted.items():
    if key not in examples[0]:
      raise ValueError(
          f"tfds dataset {name!r} has no feature {key!r}; its features are "
          f"{sorted(examples[0])}. Set --config.data.{config_key} to one of them")
  x = np.stack([np.asarray(ex[data_cfg.image_key], np.uint8) for ex in examples])
  if x.ndim == 3:
    x = x[..., None]
  y = _integer_labels(
      np.asarray([np.asarray(ex[data_cfg.label_key]) for ex in examples]),
      f"feature {data_cfg.label_key!r} of tfds dataset {name!r}",
      "set --config.data.label_key to the feature holding the class indices")
  label_feature = source.dataset_info.features[data_cfg.label_key]
  names = getattr(label_feature, "names", None)
  class_names = tuple(str(n) for n in names) if names else _default_class_names(y)
  groups = _as_ids([ex[data_cfg.group_key] for ex in examples]) if data_cfg.group_key else None
  return Dataset(x, y, class_names, groups=groups, name=name)
