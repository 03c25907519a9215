"""CycleGAN: the reference's networks, losses, pool and schedule; K pairs in one vmapped step."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jimb import checkpointing
from jimb.generative import cycle_nets, cyclegan as cg
from jimb import mesh as mesh_lib

# One tiny spec for every test that steps, so they share one compiled program.
SPEC = cg.CycleSpec((8, 8, 1), ngf=4, ndf=4, n_blocks=1, n_layers_D=1, pool_size=4, lr=2e-3,
                    n_epochs=10, n_epochs_decay=5, batch_size=4)
NUM_SOURCE = 16   # 4 steps per epoch, 60 steps in all


def _toy(n: int, bright_top: bool, rng) -> np.ndarray:
  """Domain A: bright top half; domain B: bright bottom half (8x8, noisy)."""
  x = rng.uniform(0.0, 0.2, (n, 8, 8, 1)).astype(np.float32)
  x[:, :4] += 0.7 if bright_top else 0.0
  x[:, 4:] += 0.0 if bright_top else 0.7
  return x


def _data():
  rng = np.random.default_rng(0)
  return _toy(NUM_SOURCE, True, rng), [_toy(8, False, rng), _toy(6, False, rng)]


@pytest.fixture(scope="module")
def toy_run():
  source, targets = _data()
  trained = cg.train(SPEC, source, targets, jax.random.key(0), log_every=5, log=lambda m: None)
  return trained, source


def _count(build) -> int:
  _, params = nnx.split(nnx.eval_shape(build), nnx.Param)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def test_networks_have_the_reference_sizes_and_shapes():
  # The reference prints 11.378 M parameters for resnet_9blocks and 2.765 M for the basic D (RGB).
  assert _count(lambda: cycle_nets.ResnetGenerator(3, rngs=nnx.Rngs(0))) == 11_378_179
  assert _count(lambda: cycle_nets.NLayerDiscriminator(3, rngs=nnx.Rngs(0))) == 2_764_737
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3)) * 2 - 1
  g = cycle_nets.ResnetGenerator(3, ngf=4, n_blocks=1, rngs=nnx.Rngs(0))
  y = g(x)
  assert y.shape == x.shape and float(jnp.abs(y).max()) < 1
  for n_layers, size in ((1, 6), (2, 2)):
    d = cycle_nets.NLayerDiscriminator(3, ndf=4, n_layers_D=n_layers, rngs=nnx.Rngs(0))
    assert d(x).shape == (2, size, size, 1)
    assert cycle_nets.patch_shape((16, 16, 3), n_layers) == (size, size)
  assert cycle_nets.patch_shape((256, 256, 3), 3) == (30, 30)   # the 70x70 PatchGAN's map


def test_instance_norm_matches_numpy():
  x = np.random.default_rng(0).normal(2.0, 3.0, (2, 5, 6, 3)).astype(np.float32)
  mean = x.mean(axis=(1, 2), keepdims=True)
  want = (x - mean) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
  np.testing.assert_allclose(cycle_nets.instance_norm(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)


def test_bad_options_name_the_fix():
  with pytest.raises(ValueError, match="multiple of 4.*--config.data.image_size"):
    cg.CycleSpec((10, 10, 3))
  with pytest.raises(ValueError, match="--config.synth.cyclegan.n_layers_D"):
    cg.CycleSpec((8, 8, 1), n_layers_D=2)
  with pytest.raises(ValueError, match="--config.synth.cyclegan.gan_mode"):
    cg.CycleSpec((8, 8, 1), n_layers_D=1, gan_mode="wgangp")
  source, targets = _data()
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    cg.train(SPEC, source * 255, targets, jax.random.key(0))
  with pytest.raises(ValueError,
                     match="--config.synth.cyclegan.batch_size=3 must be a multiple of the 2"):
    cg.train(cg.CycleSpec((8, 8, 1), n_layers_D=1, batch_size=3), source, targets,
             jax.random.key(0), mesh=mesh_lib.make_mesh(jax.devices()[:2]))


def test_spec_from_config():
  cfg = ml_collections.ConfigDict(dict(source_class="majority", batch_size=2, ngf=8, n_epochs=5,
                                       lambda_identity=0.0))
  spec = cg.spec_from_config(cfg, (32, 32, 3))
  assert (spec.lr, spec.batch_size, spec.ngf, spec.n_epochs, spec.lambda_identity) == (
      2e-4, 2, 8, 5, 0.0)
  assert (spec.ndf, spec.n_blocks, spec.pool_size, spec.n_epochs_decay) == (64, 9, 50, 100)
  cfg.learning_rate = 1e-3
  assert cg.spec_from_config(cfg, (32, 32, 3)).lr == 1e-3
  cfg.num_per_class = 7
  with pytest.raises(ValueError, match=r"synth.cyclegan has no option\(s\) \['num_per_class'\]"):
    cg.spec_from_config(cfg, (32, 32, 3))


def test_image_pool_follows_the_reference():
  """Replays the reference's list-based ImagePool on every answer of the array pool."""
  size = 3
  query = jax.jit(cg.query_pool)
  pool = cg.empty_pool(size, (1, 1, 1))
  stored: list[float] = []    # the reference's self.images
  swaps, full_queries, slots = 0, 0, []
  for q in range(150):
    images = np.arange(2 * q + 1, 2 * q + 3, dtype=np.float32).reshape(2, 1, 1, 1)
    pool, out = query(pool, jnp.asarray(images), jax.random.fold_in(jax.random.key(0), q))
    for image, got in zip(images.ravel(), np.asarray(out).ravel()):
      if len(stored) < size:      # not full: store and return the image
        assert got == image
        stored.append(image)
        continue
      full_queries += 1
      if got != image:            # returned a stored image, replaced by the new one
        slot = stored.index(got)
        stored[slot] = image
        swaps += 1
        slots.append(slot)
    assert int(pool.count) == len(stored)
    np.testing.assert_array_equal(np.asarray(pool.images).ravel()[:len(stored)], stored)
  # Probability 0.5 of answering from the pool, slots drawn uniformly (4-sigma bounds).
  assert abs(swaps - full_queries / 2) < 4 * np.sqrt(full_queries / 4)
  assert np.bincount(slots, minlength=size).min() > len(slots) / size - 4 * np.sqrt(len(slots) / 4)
  x = jnp.ones((2, 1, 1, 1))
  pool, out = cg.query_pool(cg.empty_pool(0, (1, 1, 1)), x, jax.random.key(0))
  assert pool is None and out is x   # pool_size 0: no pool, as the reference's


def test_learning_rate_follows_the_reference_linear_policy():
  spec = cg.CycleSpec((8, 8, 1), n_layers_D=1, lr=0.1, n_epochs=3, n_epochs_decay=4)
  per_epoch = 5
  schedule = cg.lr_schedule(spec, per_epoch)

  def lambda_rule(epoch, epoch_count=1):  # the reference's LambdaLR factor, stepped per epoch
    return 1.0 - max(0, epoch + epoch_count - spec.n_epochs) / float(spec.n_epochs_decay + 1)

  for step in range(7 * per_epoch):
    np.testing.assert_allclose(float(schedule(step)), 0.1 * lambda_rule(step // per_epoch),
                               rtol=1e-6)
  # By hand: constant through epoch 3, then 0.08, ..., 0.02 in the last (7th) epoch.
  np.testing.assert_allclose([float(schedule(e * per_epoch)) for e in (2, 3, 6)],
                             [0.1, 0.08, 0.02], rtol=1e-6)


def _prenorm_bias(path) -> bool:
  # Biases of convolutions followed by instance norm change no output (the norm subtracts them),
  # so their gradients are float noise that Adam scales to lr-sized steps: compare outputs instead.
  names = jax.tree_util.keystr(path)
  return "bias" in names and not any(n in names for n in ("'head'", "'first'", "'last'"))


@jax.jit
def _outputs(graphdefs, state: cg.PairState, x):
  """What each network of a pair makes of `x`, and its pools."""
  g = {name: nnx.merge(graphdefs[0], p)(x) for name, p in state.g_params.items()}
  d = {name: nnx.merge(graphdefs[1], p)(x) for name, p in state.d_params.items()}
  return g, d, state.pool_A, state.pool_B


def _assert_same_pair(got: cg.PairState, want: cg.PairState, graphdefs, x) -> None:
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path((got.g_params, got.d_params)),
                          jax.tree.leaves((want.g_params, want.d_params))):
    if not _prenorm_bias(path):
      np.testing.assert_allclose(a, b, atol=5e-5, err_msg=jax.tree_util.keystr(path))
  for a, b in zip(jax.tree.leaves(_outputs(graphdefs, jax.device_get(got), x)),
                  jax.tree.leaves(_outputs(graphdefs, jax.device_get(want), x)), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_vmapped_step_equals_pairs_trained_one_by_one_and_on_a_mesh():
  per_epoch = cg.steps_per_epoch(SPEC, NUM_SOURCE)
  one, two = mesh_lib.make_mesh(jax.devices()[:1]), mesh_lib.make_mesh(jax.devices()[:2])
  graphdefs, state = cg.init_state(SPEC, jax.random.split(jax.random.key(0), 2), per_epoch, one)
  initial = jax.device_get(state)
  singles = [jax.tree.map(lambda a, k=k: a[k], initial) for k in range(2)]
  sharded = jax.device_put(initial, mesh_lib.replicated(two))
  rng = np.random.default_rng(1)
  pair_step = jax.jit(cg.make_pair_step(SPEC, graphdefs, per_epoch))
  step, step_two = (cg.make_step(SPEC, graphdefs, per_epoch, m) for m in (one, two))
  # Batches placed as `train` places them, so its run reuses this program.
  split_one, split_two = (jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec(None, "data"))
                          for m in (one, two))
  for s in range(2):   # the second step swaps images with the pools filled by the first
    batch = {n: rng.uniform(0, 1, (2, 4, 8, 8, 1)).astype(np.float32) for n in "AB"}
    keys = jax.random.split(jax.random.key(10 + s), 2)
    state, metrics = step(state, jax.device_put(batch, split_one), keys)
    sharded, metrics_two = step_two(sharded, jax.device_put(batch, split_two), keys)
    for k in range(2):
      singles[k], m = pair_step(singles[k], {n: v[k] for n, v in batch.items()}, keys[k])
      for name, value in m.items():
        np.testing.assert_allclose(metrics[name][k], value, rtol=1e-5, err_msg=name)
    for name, value in metrics.items():
      assert np.all(np.isfinite(value)), name
      np.testing.assert_allclose(metrics_two[name], value, rtol=1e-5, err_msg=name)
    if s == 0:   # Adam's first step moves each weight by about lr (epoch 1: full lr)
      stem = [st.g_params["G_A"]["stem"]["kernel"][...] for st in (state, initial)]
      np.testing.assert_allclose(float(jnp.abs(stem[0] - stem[1]).max()), SPEC.lr, rtol=1e-2)
  assert set(metrics) == {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"}
  x = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8, 1)), jnp.float32)
  for k in range(2):
    _assert_same_pair(jax.tree.map(lambda a, k=k: a[k], state), singles[k], graphdefs, x)
    _assert_same_pair(jax.tree.map(lambda a, k=k: a[k], sharded), singles[k], graphdefs, x)
  assert float(jnp.abs(state.g_params["G_A"]["head"]["kernel"][0]
                       - state.g_params["G_A"]["head"]["kernel"][1]).max()) > 1e-3


def test_cycle_loss_falls_on_a_toy_translation(toy_run):
  trained, _ = toy_run
  cycle = np.asarray(trained.history["cycle_A"])   # [windows of 5 steps, pairs]
  assert cycle.shape == (12, 2) and trained.history["step"] == list(range(5, 61, 5))
  assert np.all(cycle[-2:].mean(0) < 0.5 * cycle[0])


def test_translations_are_images_in_0_1(toy_run):
  trained, source = toy_run
  out = cg.translate(trained, 1, source[:5])
  assert out.shape == source[:5].shape and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0
  np.testing.assert_allclose(cg.translate(trained, 1, source[:5], batch_size=3), out, atol=1e-6)
  assert np.abs(cg.translate(trained, 0, source[:5]) - out).max() > 1e-3


class _Stop(Exception):
  pass


def test_resume_equals_an_uninterrupted_run(toy_run, tmp_path):
  trained, _ = toy_run
  source, targets = _data()
  ckpt = checkpointing.FoldCheckpoints(tmp_path)

  def die_at_40(message):
    if "step 40/" in message:
      raise _Stop

  with pytest.raises(_Stop):
    cg.train(SPEC, source, targets, jax.random.key(0), ckpt=ckpt, checkpoint_every=20,
             log_every=5, log=die_at_40)
  ckpt.wait()
  assert ckpt.epochs() == [20]
  logs = []
  resumed = cg.train(SPEC, source, targets, jax.random.key(0), ckpt=ckpt, checkpoint_every=20,
                     log_every=5, log=logs.append)
  assert "resumed from step 20" in logs[0]
  for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(trained.state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert resumed.history == trained.history
  ckpt.close()


def test_divergence_names_the_pair():
  source, targets = _data()
  spec = cg.CycleSpec((8, 8, 1), ngf=4, ndf=4, n_blocks=1, n_layers_D=1, pool_size=4, lr=1e20,
                      n_epochs=1, n_epochs_decay=0, batch_size=4)
  with pytest.raises(FloatingPointError, match="CycleGAN for nv->mel diverged at step 2.*"
                     "--config.synth.cyclegan.learning_rate"):
    cg.train(spec, source, targets, jax.random.key(0), members=["nv->mel", "nv->df"],
             log=lambda m: None)
