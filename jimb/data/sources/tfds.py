"""The tfds source: a prepared TensorFlow Datasets dataset, read through its ArrayRecord data
source without TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jimb.data.dataset import Dataset
from jimb.data.sources.base import SOURCES, _default_class_names, _integer_labels


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
