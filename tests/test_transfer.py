"""Transfer-learning schedules: frozen parameters stay bit-identical, warm-ups gate the body,
learning-rate groups scale exactly, frozen BatchNorm keeps its statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jimb import losses
from jimb.config import base_config
from jimb.models import build_model
from jimb import mesh as mesh_lib
from jimb.fitting import step as step_lib
from jimb.fitting import transfer

MODEL = ml_collections.ConfigDict(dict(name="small_cnn", widths=(4, 8, 8), dense=16, dropout=0.0))


def _transfer(**kw):
  t = base_config().transfer
  t.update(kw)
  return t


def _optim(name="sgd", lr=0.1, momentum=0.0):
  o = base_config().optim
  o.update(dict(name=name, learning_rate=lr, momentum=momentum))
  return o


def _run(transfer_cfg, optim_cfg, steps, steps_per_epoch=2):
  """`steps` training steps of the small CNN; returns (initial, final) (params, batch stats)."""
  mesh = mesh_lib.make_mesh()
  tx = transfer.build_optimizer(optim_cfg, transfer_cfg, total_steps=20,
                                steps_per_epoch=steps_per_epoch)
  build = lambda k: transfer.freeze_batch_norm(build_model(MODEL, 3, (8, 8, 1), k), transfer_cfg)
  graphdef, state = step_lib.create_state(build, tx, jax.random.key(0), mesh)
  first = jax.device_get((state.params, state.rest))
  loss = losses.build_loss(ml_collections.ConfigDict(dict(name="cross_entropy")), np.ones(3))
  step = step_lib.make_train_step(graphdef, tx, loss, None, mesh)
  mean, std = mesh_lib.replicate((np.zeros(1, np.float32), np.ones(1, np.float32)), mesh)
  rng = np.random.default_rng(0)
  for _ in range(steps):
    batch = {"x": rng.random((16, 8, 8, 1), dtype=np.float32), "y": rng.integers(0, 3, 16)}
    state, _ = step(state, mesh_lib.local_batch_to_global(batch, mesh), jax.random.key(1), mean, std)
  return first, jax.device_get((state.params, state.rest))


def _flat(tree):
  out = {}
  jax.tree_util.tree_map_with_path(lambda p, v: out.__setitem__(transfer.path_name(p), v), tree)
  return out


def test_frozen_parameters_and_their_batch_norm_stay_bit_identical():
  cfg = _transfer(freeze="^(convs|norms)/(0|1)/")
  (p0, r0), (p1, r1) = _run(cfg, _optim("adam", 1e-2), steps=3)
  p0, p1, r0, r1 = map(_flat, (p0, p1, r0, r1))
  for name in p0:
    frozen = name.startswith(("convs/0", "convs/1", "norms/0", "norms/1"))
    assert np.array_equal(p0[name], p1[name]) == frozen, name
  for name in r0:  # running statistics: frozen layers keep theirs, the others move
    assert np.array_equal(r0[name], r1[name]) == name.startswith(("norms/0", "norms/1")), name


def test_batch_norm_statistics_move_when_not_frozen_by_config():
  cfg = _transfer(freeze="^(convs|norms)/0/", freeze_batch_norm=False)
  (_, r0), (_, r1) = _run(cfg, _optim(), steps=1)
  assert not np.array_equal(_flat(r0)["norms/0/mean"], _flat(r1)["norms/0/mean"])


def test_head_only_warmup_then_everything():
  cfg = _transfer(warmup_epochs=1, head="^(dense|out)/")
  (p0, _), (p2, _) = _run(cfg, _optim(), steps=2, steps_per_epoch=2)  # exactly the warm-up
  p0, p2 = _flat(p0), _flat(p2)
  for name in p0:
    assert np.array_equal(p0[name], p2[name]) != name.startswith(("dense", "out")), name
  (_, _), (p3, _) = _run(cfg, _optim(), steps=3, steps_per_epoch=2)  # one step after it
  assert not np.array_equal(p0["convs/0/kernel"], _flat(p3)["convs/0/kernel"])


def test_learning_rate_groups_scale_sgd_updates_exactly():
  cfg = _transfer(lr_multipliers="^convs/:0.25;^out/:4")
  params = {"convs": {"k": jnp.ones(3)}, "out": {"k": jnp.ones(2)}, "dense": {"k": jnp.ones(2)}}
  tx = transfer.build_optimizer(_optim(lr=0.1), cfg, total_steps=10, steps_per_epoch=5)
  grads = jax.tree.map(lambda v: jnp.full_like(v, 2.0), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["convs"]["k"], -0.1 * 0.25 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(updates["out"]["k"], -0.1 * 4 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(updates["dense"]["k"], -0.1 * 2.0, rtol=1e-6)


def test_no_transfer_settings_is_the_plain_optimizer():
  params = {"w": jnp.arange(3.0)}
  tx = transfer.build_optimizer(_optim(), _transfer(), total_steps=10, steps_per_epoch=5)
  updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * np.ones(3), rtol=1e-6)


@pytest.mark.parametrize("kw, match", [
    (dict(freeze="^encoder/"), "freeze pattern '\\^encoder/' matches no parameter"),
    (dict(warmup_epochs=1), "head pattern"),
    (dict(freeze="("), "not a regular expression"),
    (dict(lr_multipliers="^convs/"), "not 'regex:factor'"),
])
def test_bad_patterns_are_named(kw, match):
  params = {"convs": {"k": jnp.ones(3)}, "out": {"k": jnp.ones(2)}}
  with pytest.raises(ValueError, match=match):
    tx = transfer.build_optimizer(_optim(), _transfer(**kw), total_steps=10, steps_per_epoch=5)
    tx.init(params)
