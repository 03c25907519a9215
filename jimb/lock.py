"""One process at a time per workdir: an exclusive lock that names its holder.

Two runs on one workdir would race on its checkpoints and results (orbax's checkpoint deleter
fails when another process removed the directory first). The lock is an advisory `flock` on
`<workdir>/.lock`, which the operating system releases when its holder exits, however it exits,
so a killed run never leaves a stale lock. The file says who holds it (host, pid, mode, start).
Remote workdirs (gs://...) cannot be locked this way and are left unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from typing import Iterator

from etils import epath


class WorkdirInUse(RuntimeError):
  """Another live process holds the workdir; the message names it."""


def _is_local(path: epath.Path) -> bool:
  return "://" not in str(path)


@contextlib.contextmanager
def held(workdir: epath.Path, mode: str) -> Iterator[None]:
  """Holds `workdir`'s lock for the block; raises WorkdirInUse or a PermissionError naming the fix
  when it cannot (before any work is done)."""
  if not _is_local(workdir):
    yield
    return
  path = workdir / ".lock"
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise PermissionError(f"cannot write the lock file {path} ({e.strerror}); the {mode} run "
                          "writes its results in that folder: make it (and the lock file) "
                          "writable, or copy the folder somewhere writable") from e
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 1024, 0).decode(errors="replace").strip() or "another process"
      raise WorkdirInUse(f"{workdir} is in use by {holder}; wait for it to finish or stop it "
                         "(a killed run releases the lock), or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f"pid {os.getpid()} on host {socket.gethostname()} ({mode}, since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n").encode(), 0)
    yield
  finally:
    os.close(fd)   # releases the lock
