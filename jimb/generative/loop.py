"""The training loop every generative model shares: resumable, logged, guarded against divergence.

A model's step is a pure function of (state, batch, key) and `batch_fn(step)` draws the batch of
a step from its own seed, so a run resumed from its latest checkpoint continues with the same
batches and keys as one that never stopped. Losses are fetched from the device only every
`log_every` steps (fetching each step would serialise the host and the device) and kept as
their mean over those steps, so the history of a million-step run stays small; a non-finite
loss then stops the run with the step, the model and the fix, keeping the earlier checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from jimb import checkpointing

Log = Callable[[str], None]


def run(step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict]], state: Any,
        batch_fn: Callable[[int], Any], key: jax.Array, num_steps: int, *,
        members: Sequence[str], ckpt: checkpointing.FoldCheckpoints | None = None,
        checkpoint_every: int = 0, log_every: int = 100, what: str = "GAN",
        lr_key: str, log: Log = print) -> tuple[Any, dict]:
  """Runs `step_fn` from the latest checkpoint (or `state`) to `num_steps`: (state, history).

  `step_fn` returns metrics as arrays of shape [len(members)] (one value per stacked model);
  `history["step"]` lists the last step of each logged window and every metric name maps to
  one list of per-member means per window (log_every=1: every step). A divergence names
  `lr_key`, the flag of the learning rate to lower.
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
  for step in range(start, num_steps):
    state, metrics = step_fn(state, batch_fn(step), jax.random.fold_in(key, step))
    pending.append(metrics)
    done = step + 1
    save = ckpt is not None and (done == num_steps or (checkpoint_every and done % checkpoint_every == 0))
    if save or done % log_every == 0 or done == num_steps:
      _record(jax.device_get(pending), history, done - len(pending), members, what, lr_key, saved,
              ckpt)
      pending = []
      last = {k: np.round(v[-1], 4).tolist() for k, v in history.items() if k != "step"}
      if done % log_every == 0 or done == num_steps:
        log(f"  {what} step {done}/{num_steps}: " + "  ".join(f"{k} {v}" for k, v in last.items()))
    if save:
      ckpt.save(done, state, {"history": history}, float(done))
      saved = done
  if ckpt is not None:
    ckpt.wait()
  return state, history


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
