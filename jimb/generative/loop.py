"""The training loop every generative model shares: resumable, logged, guarded against divergence.

A model's step is a pure function of (state, batch, key) and `batch_fn(step)` draws the batch of
a step from its own seed, so a run resumed from its latest checkpoint continues with the same
batches and keys as one that never stopped. Losses are fetched from the device only every
`log_every` steps (fetching each step would serialise the host and the device) and kept as
their mean over those steps, so the history of a million-step run stays small; a non-finite
loss then stops the run with the step, the model and the fix, keeping the earlier checkpoints.
The fetched window's per-step values also go to the run's event files (`tracking`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from jimb import checkpointing, tracking

Log = Callable[[str], None]


def run(step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict]], state: Any,
        batch_fn: Callable[[int], Any], key: jax.Array, num_steps: int, *,
        members: Sequence[str], ckpt: checkpointing.FoldCheckpoints | None = None,
        checkpoint_every: int = 0, log_every: int = 100, what: str = "GAN",
        lr_key: str, log: Log = print,
        track: tracking.Tracking = tracking.OFF) -> tuple[Any, dict]:
  """Runs `step_fn` from the latest checkpoint (or `state`) to `num_steps`: (state, history).

  `step_fn` returns metrics as arrays of shape [len(members)] (one value per stacked model);
  `history["step"]` lists the last step of each logged window and every metric name maps to
  one list of per-member means per window (log_every=1: every step). A divergence names
  `lr_key`, the flag of the learning rate to lower. `track` draws a bar of the steps and
  writes each step's metrics per member (tag `<metric>/<member>`, steps from 1).
  """
  if num_steps < 1:
    raise ValueError(f"{what} needs at least one training step, got {num_steps}")
  history: dict[str, list] = {}
  start = ckpt.latest_epoch() if ckpt is not None else None
  if start is not None:
    state, meta = ckpt.restore(start, checkpointing.abstract_like(state))
    history = meta["history"]
    log(f"  {what}: resumed from step {start} ({ckpt.directory})")
  start = start or 0
  pending: list[dict] = []
  saved = start
  writer = track.writer(purge_step=start + 1)
  bar = track.bar(num_steps, what, initial=start)
  try:
    for step in range(start, num_steps):
      state, metrics = step_fn(state, batch_fn(step), jax.random.fold_in(key, step))
      pending.append(metrics)
      bar.update()
      done = step + 1
      save = ckpt is not None and (done == num_steps or (checkpoint_every and done % checkpoint_every == 0))
      if save or done % log_every == 0 or done == num_steps:
        fetched = jax.device_get(pending)
        _record(fetched, history, done - len(pending), members, what, lr_key, saved, ckpt)
        _write(writer, fetched, done - len(pending) + 1, members)
        pending = []
        last = {k: np.round(v[-1], 4).tolist() for k, v in history.items() if k != "step"}
        if done % log_every == 0 or done == num_steps:
          log(f"  {what} step {done}/{num_steps}: " + "  ".join(f"{k} {v}" for k, v in last.items()))
      if save:
        ckpt.save(done, state, {"history": history}, float(done))
        saved = done
  finally:
    writer.close()
    bar.close()
  if ckpt is not None:
    ckpt.wait()
  return state, history


def _write(writer: tracking.NullWriter, metrics: list[dict], first_step: int,
           members: Sequence[str]) -> None:
  """Each step's metrics of the fetched window, one scalar per member, from `first_step` on."""
  for step, values in enumerate(metrics, first_step):
    writer.scalars({f"{name}/{member}": v for name, value in values.items()
                    for member, v in zip(members, np.asarray(value).reshape(len(members)))}, step)


def _record(metrics: list[dict], history: dict, first_step: int, members: Sequence[str],
            what: str, lr_key: str, saved: int, ckpt) -> None:
  """Appends the window's mean metrics to `history`; a non-finite value stops the run."""
  for name in metrics[0]:
    values = np.stack([np.asarray(m[name], np.float64).reshape(len(members)) for m in metrics])
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
      offset, member = bad[0]
      kept = f"; checkpoints up to step {saved} are in {ckpt.directory}" if ckpt else ""
      raise FloatingPointError(
          f"{what} for {members[member]} diverged at step {first_step + offset + 1}: {name} is "
          f"{values[offset, member]}. Lower {lr_key} or the number of steps{kept}")
    history.setdefault(name, []).append(values.mean(axis=0).tolist())
  history.setdefault("step", []).append(first_step + len(metrics))
