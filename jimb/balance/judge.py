"""A classifier trained on the real training part only, whose features judge synthetic samples.

The quality filter and the distribution scores (Frechet distance, k-NN precision/recall) need
a feature space in which real and synthetic samples of a class can be compared; pixels are a
poor one. The judge is the experiment's own model trained briefly on the fold's real training
rows (never on synthetic ones, never on validation or test rows); its penultimate features
are that space. It is saved once trained, so resumed and repeated runs reuse it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
import optax

from jimb import checkpointing, losses
from jimb import mesh as mesh_lib
from jimb.data.sampler import ClassAwareSampler
from jimb.fitting import loop
from jimb.fitting import step as step_lib
from jimb.models import build_model

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Judge:
  graphdef: Any
  state: step_lib.TrainState
  mean: jax.Array
  std: jax.Array
  mesh: jax.sharding.Mesh

  def features(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Penultimate features of every row of `x` (inputs in the runner's host form)."""
    fn = step_lib.make_features(self.graphdef, self.mesh)
    return step_lib.apply_batched(fn, self.state, x, self.mean, self.std, self.mesh, batch_size)


def train(model_cfg, x: np.ndarray, y: np.ndarray, num_classes: int, mean: jax.Array,
          std: jax.Array, mesh: jax.sharding.Mesh, *, epochs: int, batch_size: int,
          learning_rate: float, seed: int, ckpt: checkpointing.FoldCheckpoints | None = None,
          log: Log = print) -> Judge:
  """The model of `model_cfg` trained `epochs` epochs on (x, y) with Adam and cross-entropy
  (restored from `ckpt` when it was trained before)."""
  if epochs < 1:
    raise ValueError(f"the judge needs at least one epoch, got {epochs}; set "
                     "--config.synth.judge_epochs=5 (or --config.synth.filter=none)")
  mesh_lib.check_batch_size(batch_size, mesh, "--config.synth.judge_batch_size")
  tx = optax.adam(learning_rate)
  build = lambda key: build_model(model_cfg, num_classes, x.shape[1:], key)
  init_key, train_key = jax.random.split(jax.random.key(seed))
  graphdef, state = step_lib.create_state(build, tx, init_key, mesh)
  if ckpt is not None and ckpt.latest_epoch() == epochs:
    state, _ = ckpt.restore(epochs, checkpointing.abstract_like(state))
    return Judge(graphdef, state, mean, std, mesh)
  loss = losses.build_loss({"name": "cross_entropy"}, np.bincount(y, minlength=num_classes))
  step = step_lib.make_train_step(graphdef, tx, loss.fn, None, mesh)
  sampler = ClassAwareSampler(y, num_classes, mode="instance", q=1.0,
                              global_batch_size=batch_size, seed=seed,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  train_key = mesh_lib.replicate(train_key, mesh)
  for epoch in range(epochs):
    state, step_losses = loop.fit_batches(step, state, x, y, sampler.epoch_indices(epoch), mesh,
                                          (train_key, mean, std))
  log(f"  judge: {model_cfg.name} trained {epochs} epochs on {len(y)} real training rows, "
      f"last loss {float(step_losses[-1]):.4f}")
  if ckpt is not None:
    ckpt.save(epochs, state, {}, 0.0)
    ckpt.wait()
  return Judge(graphdef, state, mean, std, mesh)
