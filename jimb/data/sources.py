"""Loads a labelled dataset into memory from the source named by the `data` config block.

Every source returns a `Dataset`; all decoding, label indexing and row selection happens here so
later stages only ever see integer labels in [0, K) and NHWC images or (N, F) float32 tables.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jimb.data.dataset import Dataset
from jimb.registry import Registry

SOURCES = Registry("data source")

_MISSING_CELLS = frozenset({"", "na", "nan"})
_GRAY_MODES = frozenset({"1", "L"})


def load_source(data_cfg) -> Dataset:
  """Loads the dataset described by `data_cfg` (the config's `data` block).

  Images are brought to `data_cfg.image_size` squared when it is set, whatever the source, so a
  model that needs a minimum resolution can run on small images (e.g. digits at 32x32).
  """
  if data_cfg.source not in SOURCES.names():
    raise ValueError(f"unknown --config.data.source={data_cfg.source!r}; choose one of "
                     f"{SOURCES.names()}")
  ds = SOURCES.get(data_cfg.source)(data_cfg)
  size = data_cfg.image_size
  if ds.is_image and size > 0 and ds.x.shape[1:3] != (size, size):
    ds = dataclasses.replace(ds, x=resize_images(ds.x, size))
  return ds


def load_test_source(data_cfg) -> Dataset:
  """The source's fixed test split, `data_cfg.test_split`: a tfds split name or an npz split value."""
  test_split = str(data_cfg.test_split)
  if not test_split:
    raise ValueError("--config.split.mode=holdout tests on the source's own test split; set "
                     "--config.data.test_split (e.g. test for tfds, 1 for an npz split value)")
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    if data_cfg.source == "tfds":
      cfg.split = test_split
    elif data_cfg.source == "npz":
      try:
        cfg.npz_split = int(test_split)
      except ValueError as e:
        raise ValueError(f"--config.data.test_split={test_split!r} must be the integer value of "
                         "the npz file's `split` array for the test rows (e.g. 1)") from e
    else:
      raise ValueError(f"--config.data.source={data_cfg.source} has no fixed test split; use "
                       "--config.split.mode=kfold, or the npz or tfds source")
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


@SOURCES.register("image_folder")
def _load_image_folder(data_cfg) -> Dataset:
  """One sub-folder per class, the layout most medical image collections ship in."""
  root = _existing_path(data_cfg)
  if not root.is_dir():
    raise ValueError(f"{root} is not a folder; --config.data.path must be a folder of class "
                     "folders for source 'image_folder'")
  class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
  if len(class_dirs) < 2:
    raise ValueError(
        f"{root} holds {len(class_dirs)} class folder(s); image_folder needs one sub-folder per "
        "class and at least 2 classes (fix --config.data.path)")
  extensions = set(Image.registered_extensions())
  items, labels = [], []
  for label, class_dir in enumerate(class_dirs):
    files = sorted(p for p in class_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in extensions)
    if not files:
      raise ValueError(f"class folder {class_dir} holds no image files; add images or remove it")
    items += [(str(p), p) for p in files]
    labels += [label] * len(files)
  x = _read_images(
      items, data_cfg.image_size,
      "set --config.data.image_size=N to resize all of them to N x N")
  return Dataset(x, np.asarray(labels, np.int64), tuple(p.name for p in class_dirs),
                 name=root.name)


# ----------------------------------------------------------------------------- npz


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
  with np.load(path, allow_pickle=False) as f:
    label_key = data_cfg.label_key if data_cfg.label_key in f.files else "labels"
    y_all = _npz_array(f, label_key, "labels", "label_key").astype(np.int64)
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
      x = _read_images(items, data_cfg.image_size,
                       "set --config.data.image_size=N to resize all of them to N x N")
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


@SOURCES.register("csv")
def _load_csv(data_cfg) -> Dataset:
  """A clinical table: one row per example, a header, a label column and optional ids."""
  path = _existing_path(data_cfg)
  if data_cfg.categorical not in ("error", "drop", "onehot"):
    raise ValueError(f"unknown --config.data.categorical={data_cfg.categorical!r}; "
                     "choose error, drop or onehot")
  with open(path, newline="", encoding="utf-8-sig") as fh:
    reader = csv.reader(fh)
    header = [h.strip() for h in next(reader, [])]
    rows = [r for r in reader if any(c.strip() for c in r)]
  for i, r in enumerate(rows):
    if len(r) != len(header):
      raise ValueError(f"{path} data row {i}: {len(r)} fields, but the header has {len(header)}")
  columns = {h: [r[i] for r in rows] for i, h in enumerate(header)}

  def require(key: str, what: str, config_key: str):
    if key not in columns:
      raise ValueError(f"{what} column {key!r} is not in {path}; its columns are {header}. "
                       f"Set --config.data.{config_key} to one of them")

  require(data_cfg.label_key, "label", "label_key")
  labels = [c.strip() for c in columns[data_cfg.label_key]]
  if "" in labels:
    raise ValueError(f"{path} data row {labels.index('')}: empty label in column "
                     f"{data_cfg.label_key!r}; every row needs a label")
  y, class_names = _encode_labels(labels)
  groups = None
  if data_cfg.group_key:
    require(data_cfg.group_key, "group", "group_key")
    groups = np.asarray([c.strip() for c in columns[data_cfg.group_key]])
  if data_cfg.feature_columns:
    names = [c.strip() for c in data_cfg.feature_columns.split(",") if c.strip()]
    for name in names:
      require(name, "feature", "feature_columns")
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
  y = np.asarray([int(np.asarray(ex[data_cfg.label_key])) for ex in examples], np.int64)
  label_feature = source.dataset_info.features[data_cfg.label_key]
  names = getattr(label_feature, "names", None)
  class_names = tuple(str(n) for n in names) if names else _default_class_names(y)
  groups = _as_ids([ex[data_cfg.group_key] for ex in examples]) if data_cfg.group_key else None
  return Dataset(x, y, class_names, groups=groups, name=name)
