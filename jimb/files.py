"""Result files on local or remote paths (etils epath: local, gs://, ...), written so a kill never
leaves half of one: the content goes to a temporary name first and is then renamed over the
target (atomic on local filesystems; object stores have no partial objects either). Reading one
back that is damaged names the file and what to do, never a bare decoder error.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Iterator
import zipfile

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


class CorruptFile(ValueError):
  """A file that exists but cannot be read; the message names it and what to do."""


def read_json(path: epath.Path, fix: str) -> Any:
  """`path`'s JSON, or CorruptFile naming the file and `fix` (what to do about it)."""
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
    raise CorruptFile(f"{path} is corrupt ({type(e).__name__}: {str(e)[:120]}); {fix}") from None


def read_npz(path: epath.Path, fix: str = "delete it to have it made again") -> dict[str, np.ndarray]:
  """`path`'s arrays (numeric only, never pickles), or CorruptFile naming the file and `fix`."""
  try:
    with path.open("rb") as f, np.load(f, allow_pickle=False) as arrays:
      return dict(arrays)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise CorruptFile(f"{path} is not a readable npz file ({type(e).__name__}); {fix}") from None
