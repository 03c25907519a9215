"""Result files on local or remote paths (etils epath: local, gs://, ...), written so a kill never
leaves half of one: the content goes to a temporary name first and is then renamed over the
target (atomic on local filesystems; object stores have no partial objects either).
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, Iterator

from etils import epath
import numpy as np


def as_path(path: str | os.PathLike) -> epath.Path:
  """An absolute epath.Path for str, pathlib or epath arguments, with `~` expanded (orbax
  takes absolute paths only; `absolute()` would mangle gs://...)."""
  path = epath.Path(path).expanduser()
  return path if path.is_absolute() else path.absolute()


@contextlib.contextmanager
def replacing(path: epath.Path) -> Iterator[IO[bytes]]:
  """A binary file to write `path`'s new content to; it replaces `path` when the block ends."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("wb") as f:
    yield f
  tmp.replace(path)


def write_text(path: epath.Path, text: str) -> None:
  with replacing(path) as f:
    f.write(text.encode())


def write_npz(path: epath.Path, **arrays: np.ndarray) -> None:
  with replacing(path) as f:
    np.savez(f, **arrays)


def read_npz(path: epath.Path) -> dict[str, np.ndarray]:
  with path.open("rb") as f, np.load(f) as arrays:
    return dict(arrays)
