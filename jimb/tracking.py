"""Live progress bars and TensorBoard event files: how a run is watched while it runs.

A `Tracking` value says whether bars are drawn and where event files go; it is passed down
explicitly (fitting and generative code hold no global writer), and `OFF` draws and writes
nothing. Bars go to stderr only at a terminal ("auto"), so logs and files keep one line per
epoch; only process 0 draws or writes. Writers log values the loops already hold on the host
(no device sync of their own) and are opened with `purge_step`, so a resumed run replaces, in
TensorBoard's view, the steps it trains again instead of showing them twice.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from typing import Any, Callable, Iterable, Mapping

from jimb import multihost
from jimb.config import PROGRESS

_NOT_IN_TAG = re.compile(r"[^-/\w.]+")   # what TensorBoard's tag names may not hold


class NullBar:
  """A progress bar that draws nothing (tracking off, not a terminal, not process 0)."""

  def update(self, n: int = 1) -> None:
    pass

  def reset(self, total: int | None = None) -> None:
    pass

  def close(self) -> None:
    pass


class NullWriter:
  """A TensorBoard writer that writes nothing."""

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    pass

  def series(self, tag: str, values: Iterable[float], first_step: int) -> None:
    pass

  def close(self) -> None:
    pass


def _tensorboardx():
  """tensorboardX, imported only where event files are written, and without PyTorch:
  tensorboardX imports torch whenever it is installed (to accept torch tensors, which jimb never
  passes), which costs seconds and would make every run import it."""
  if "torch" in sys.modules:
    import tensorboardX
    return tensorboardX
  sys.modules["torch"] = None   # `import torch` now raises ImportError, which tensorboardX expects
  try:
    import tensorboardX
  finally:
    del sys.modules["torch"]
  return tensorboardX


class Writer(NullWriter):
  """Scalars to the event files of one folder (tensorboardX: no TensorFlow needed).

  The scalars of one step go out as one event: a sixth of the time of one event per value
  (tensorboardX's add_scalar), which matters for stacked GANs' many members.
  """

  def __init__(self, directory: str, purge_step: int | None = None):
    tensorboardX = _tensorboardx()
    from tensorboardX.proto import summary_pb2
    self._summary = summary_pb2.Summary
    # A suffix in nanoseconds keeps two writers opened in one second from sharing a file name
    # (the second would truncate the first's file); names still sort by opening time.
    self._writer = tensorboardX.SummaryWriter(directory, purge_step=purge_step, flush_secs=30,
                                              filename_suffix=f".{time.time_ns()}")

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    """`{tag: value}` at `step`."""
    summary = self._summary(value=[
        self._summary.Value(tag=_NOT_IN_TAG.sub("_", tag), simple_value=float(value))
        for tag, value in values.items()])
    self._writer.file_writer.add_summary(summary, int(step))

  def series(self, tag: str, values: Iterable[float], first_step: int) -> None:
    """`values` of consecutive steps, the first at `first_step`."""
    for i, value in enumerate(values):
      self.scalars({tag: value}, first_step + i)

  def close(self) -> None:
    self._writer.close()


def progress_enabled(mode: str, stream: Any = None) -> bool:
  """Whether this process draws bars: "on", or "auto" when `stream` (stderr) is a terminal."""
  if mode not in PROGRESS:
    raise ValueError(f"unknown --config.report.progress={mode!r}; choose one of {PROGRESS}")
  stream = sys.stderr if stream is None else stream
  tty = getattr(stream, "isatty", lambda: False)()
  return multihost.is_writer() and (mode == "on" or (mode == "auto" and tty))


@dataclasses.dataclass(frozen=True)
class Tracking:
  """Whether bars are drawn, and the folder of this scope's event files (None: none)."""

  progress: bool = False
  tensorboard: str | None = None

  def sub(self, name: str) -> Tracking:
    """The same tracking with event files in the sub-folder `name` (e.g. "fold_0")."""
    if self.tensorboard is None:
      return self
    return dataclasses.replace(self, tensorboard=os.path.join(self.tensorboard, name))

  def bar(self, total: int, desc: str, initial: int = 0, unit: str = "step",
          leave: bool = False):
    """A bar to stderr, or a NullBar. tqdm redraws at most every half second, whatever the
    number of `update` calls, so a loop may update it each step."""
    if not self.progress:
      return NullBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                mininterval=0.5, dynamic_ncols=True, file=sys.stderr)

  def writer(self, purge_step: int | None = None) -> NullWriter:
    """A writer to this scope's folder, dropping earlier events at steps >= `purge_step`."""
    if self.tensorboard is None:
      return NullWriter()
    return Writer(self.tensorboard, purge_step)

  def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` that clears the bars while it prints and redraws them after, so a line never
    lands inside a bar; `log` itself when no bars are drawn."""
    if not self.progress:
      return log
    from tqdm import tqdm

    def write(text: str) -> None:
      with tqdm.external_write_mode(file=sys.stderr):
        log(text)
    return write


OFF = Tracking()


def from_config(report: Mapping[str, Any], tensorboard_dir: str | os.PathLike) -> Tracking:
  """The tracking `report.progress` and `report.tensorboard` ask for, event files under
  `tensorboard_dir`; process 0's only."""
  writes = bool(report["tensorboard"]) and multihost.is_writer()
  return Tracking(progress=progress_enabled(report["progress"]),
                  tensorboard=str(tensorboard_dir) if writes else None)
