"""The data-parallel step: 1 device and 8 give the same training; bad settings fail clearly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jimb import experiment, losses
from jimb.data import augment
from jimb.models import build_model
from jimb import mesh as mesh_lib
from jimb.fitting import optim
from jimb.fitting import step as step_lib
from tests.helpers import tiny_config


def _train(devices, tx, steps=4):
  """A few steps of the small CNN (BatchNorm, dropout, augmentation) on a fixed global batch."""
  mesh = mesh_lib.make_mesh(devices)
  cfg = ml_collections.ConfigDict(dict(name="small_cnn", widths=(8, 8, 8), dense=16, dropout=0.5))
  build = lambda k: build_model(cfg, 5, (8, 8, 3), k)
  graphdef, state = step_lib.create_state(build, tx, jax.random.key(0), mesh)
  aug = augment.make_augment(tiny_config().augment, 3)
  loss = losses.build_loss(ml_collections.ConfigDict(dict(name="focal")), np.ones(5))
  step = step_lib.make_train_step(graphdef, tx, loss, aug, mesh)
  mean, std = mesh_lib.replicate((np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)), mesh)
  rng = np.random.default_rng(0)
  for _ in range(steps):
    batch = {"x": rng.random((32, 8, 8, 3), dtype=np.float32), "y": rng.integers(0, 5, 32)}
    state, _ = step(state, mesh_lib.local_batch_to_global(batch, mesh), jax.random.key(1), mean, std)
  return jax.device_get((state.params, state.rest))


@pytest.mark.parametrize("tx, tol", [(optax.sgd(0.1, momentum=0.9), 1e-5), (optax.adam(1e-3), 1e-4)])
def test_one_device_and_eight_devices_train_the_same(tx, tol):
  assert len(jax.devices()) == 8
  one = _train(jax.devices()[:1], tx)
  eight = _train(jax.devices(), tx)
  # BatchNorm statistics are global-batch statistics in both runs.
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
    np.testing.assert_allclose(a, b, atol=tol, rtol=tol)


def test_params_are_replicated_and_batch_split():
  mesh = mesh_lib.make_mesh()
  batch = mesh_lib.local_batch_to_global({"x": np.zeros((16, 2), np.float32)}, mesh)["x"]
  assert len(batch.addressable_shards) == 8 and batch.addressable_shards[0].data.shape == (2, 2)
  tx = optax.adam(1e-3)
  build = lambda k: build_model(ml_collections.ConfigDict(dict(name="mlp")), 2, (4,), k)
  _, state = step_lib.create_state(build, tx, jax.random.key(0), mesh)
  kernel = state.params["out"]["kernel"]
  assert kernel.sharding.is_fully_replicated


def test_batch_size_must_divide_over_devices():
  with pytest.raises(ValueError, match="multiple of the 8 devices.*use 40"):
    mesh_lib.check_batch_size(33, mesh_lib.make_mesh())


def test_non_finite_loss_stops_with_a_clear_message(monkeypatch, tmp_path):
  nan_loss = lambda cfg, counts: losses.Loss(lambda logits, labels: jnp.full(labels.shape, jnp.nan),
                                             num_classes=len(counts))
  monkeypatch.setattr(losses, "build_loss", nan_loss)
  with pytest.raises(FloatingPointError, match="learning_rate.*grad_clip"):
    experiment.train_and_evaluate(tiny_config(), tmp_path, log=lambda s: None)


def test_optimizers_and_schedules():
  c = tiny_config().optim
  for name in ("adam", "adamw", "sgd", "rmsprop"):
    for schedule in ("constant", "cosine", "warmup_cosine"):
      c.name, c.schedule, c.warmup_epochs, c.grad_clip = name, schedule, 1, 1.0
      tx = optim.build_optimizer(c, total_steps=20, steps_per_epoch=5)
      params = {"w": jnp.ones(3)}
      updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      assert np.all(np.isfinite(updates["w"]))
  sched = optim.learning_rate_schedule(
      ml_collections.ConfigDict(dict(learning_rate=0.1, schedule="warmup_cosine", warmup_epochs=2)),
      total_steps=100, steps_per_epoch=5)
  assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 0.1) < 1e-7 and float(sched(100)) < 1e-6
  c.name = "adagrad"
  with pytest.raises(ValueError, match="optim.name"):
    optim.build_optimizer(c, 10, 1)
  c.name, c.schedule = "adam", "linear"
  with pytest.raises(ValueError, match="optim.schedule"):
    optim.build_optimizer(c, 10, 1)
