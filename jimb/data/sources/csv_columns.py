"""Reading a csv file as named columns of cells, and the label and group columns it may hold:
the csv table, csv_images and image_folder's group csv all check them the same way.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np


def _encode_labels(values: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
  """Index labels by their sorted unique values (numerically when all are integers)."""
  unique = set(values)
  try:
    names = sorted(unique, key=int)
  except ValueError:
    names = sorted(unique)
  index = {name: i for i, name in enumerate(names)}
  return np.asarray([index[v] for v in values], np.int64), tuple(names)


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
