"""The csv_images source: images listed in a csv with their labels, found by path, file name or
id anywhere below an image folder.
"""

from __future__ import annotations

import collections
import os
import pathlib
from typing import Sequence

from jimb.data.dataset import Dataset
from jimb.data.sources.base import SOURCES, _examples, _existing_path
from jimb.data.sources.csv_columns import (_group_column, _label_column, _read_csv,
                                           _require_column)
from jimb.data.sources.images import _SIZE_HINT, _image_extensions, _read_images


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
        "--config.data.image_key if that column does not name the images, or remove the rows "
        "of images that are really missing from the CSV")
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
