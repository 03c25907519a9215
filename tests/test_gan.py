"""GANs: losses and gradient penalty against NumPy, every kind trains, stacked training equals
one-at-a-time training, exact resume, divergence and input errors, and a 1-D GAN that learns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats

from jimb import checkpointing
from jimb.generative import gan
from jimb import mesh as mesh_lib

IMAGE = (8, 8, 1)
TINY = dict(latent_dim=8, widths=(8, 4), hidden=(16,), batch_size=8, n_critic=2)


def quiet(_):
  pass


def images(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.uniform(0, 1, (n, *IMAGE)).astype(np.float32) for n in sizes]


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_losses_match_numpy():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(0, 2, 16).astype(np.float32), rng.normal(0, 2, 16).astype(np.float32)
  log_sigmoid = lambda x: -np.log1p(np.exp(-x.astype(np.float64)))
  bce_d = -log_sigmoid(real).mean() - np.log1p(-np.exp(log_sigmoid(fake))).mean()
  expected = {
      "dcgan": (bce_d, -log_sigmoid(fake).mean()),
      "cgan": (bce_d, -log_sigmoid(fake).mean()),
      "lsgan": (0.5 * (((real - 1) ** 2).mean() + (fake ** 2).mean()), ((fake - 1) ** 2).mean()),
      "wgan_gp": (fake.mean() - real.mean(), -fake.mean()),
  }
  for kind, (d, g) in expected.items():
    np.testing.assert_allclose(gan.discriminator_loss(kind, real, fake), d, rtol=1e-5, err_msg=kind)
    np.testing.assert_allclose(gan.generator_loss(kind, fake), g, rtol=1e-5, err_msg=kind)


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm():
  rng = np.random.default_rng(1)
  real, fake = rng.normal(size=(2, 6, 2, 2, 1)).astype(np.float32)
  w = rng.normal(size=(2, 2, 1)).astype(np.float32)  # ||w|| != 1
  critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
  penalty = gan.gradient_penalty(critic, real, fake, jnp.asarray(rng.uniform(size=6)))
  np.testing.assert_allclose(penalty, (np.linalg.norm(w) - 1) ** 2, rtol=1e-5)


def test_gradient_penalty_of_a_quadratic_critic():
  # D(x) = ||x||^2 / 2 has gradient x: the penalty is mean((||x_hat|| - 1)^2).
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(2, 5, 3)).astype(np.float32)
  eps = rng.uniform(size=5).astype(np.float32)
  x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
  penalty = gan.gradient_penalty(lambda x: 0.5 * jnp.sum(x ** 2, axis=1), real, fake, eps)
  np.testing.assert_allclose(penalty, np.mean((np.linalg.norm(x_hat, axis=1) - 1) ** 2), rtol=1e-5)


@pytest.mark.parametrize("kind,arch,shape", [
    ("lsgan", "auto", IMAGE), ("cgan", "conv", IMAGE), ("wgan_gp", "conv", IMAGE),
    ("cgan", "mlp", (3,))])
def test_kind_trains_and_samples(kind, arch, shape):
  rng = np.random.default_rng(3)
  spec = gan.GANSpec(kind, shape, arch=arch, num_classes=3 if kind == "cgan" else 0, steps=2,
                     **TINY)
  assert spec.arch == ("mlp" if arch == "auto" else arch)
  if len(shape) == 1:
    data = [rng.normal(5, 2, (20, *shape)).astype(np.float32)]
  else:
    data = images([20] if kind == "cgan" else [20, 6])
  labels = [rng.integers(0, 3, 20)] if kind == "cgan" else None
  trained = gan.train(spec, data, jax.random.key(0), labels=labels, log_every=1, log=quiet)
  for name in ("d_loss", "g_loss"):
    values = np.asarray(trained.history[name])
    assert values.shape == (2, len(data)) and np.isfinite(values).all()
  member = len(data) - 1
  label = 2 if kind == "cgan" else None
  x = gan.sample(trained, member, 5, jax.random.key(1), label=label)
  assert x.shape == (5, *shape) and np.isfinite(x).all()
  if len(shape) == 3:
    assert 0 <= x.min() and x.max() <= 1
  if kind == "cgan":
    other = gan.sample(trained, 0, 5, jax.random.key(1), label=0)
    assert not np.allclose(x, other)  # the label reaches the generator
    with pytest.raises(ValueError, match="need a label"):
      gan.sample(trained, 0, 5, jax.random.key(1))


def test_stacked_training_equals_one_at_a_time():
  spec = gan.GANSpec("dcgan", IMAGE, steps=3, **TINY)
  data = images([5, 12, 20])  # 5 < batch: drawn with replacement
  keys = jax.random.split(jax.random.key(4), 3)
  stacked = gan.train(spec, data, keys, log=quiet)
  for i in range(3):
    alone = gan.train(spec, data[i:i + 1], keys[i:i + 1], log=quiet)
    for a, b in zip(leaves(stacked.state), leaves(alone.state), strict=True):
      np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(stacked.history["g_loss"])[:, i],
                               np.asarray(alone.history["g_loss"])[:, 0], rtol=1e-5)
    np.testing.assert_allclose(gan.sample(stacked, i, 4, jax.random.key(5)),
                               gan.sample(alone, 0, 4, jax.random.key(5)), atol=1e-5)


def test_mesh_training_matches_one_device():
  spec = gan.GANSpec("dcgan", IMAGE, steps=3, **TINY)
  data = images([5, 12, 20])
  keys = jax.random.split(jax.random.key(4), 3)
  mesh = mesh_lib.make_mesh()
  assert mesh.devices.size == 8
  sharded = gan.train(spec, data, keys, mesh=mesh, log=quiet)
  single = gan.train(spec, data, keys, log=quiet)
  for a, b in zip(leaves(sharded.state), leaves(single.state), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="--config.synth.dcgan.batch_size=6"):
    gan.train(gan.GANSpec("dcgan", IMAGE, steps=3, **{**TINY, "batch_size": 6}), data, keys,
              mesh=mesh, log=quiet)


def test_resumed_run_equals_uninterrupted(tmp_path):
  data = images([12])
  spec = gan.GANSpec("dcgan", IMAGE, steps=4, **TINY)
  key = jax.random.split(jax.random.key(4), 3)[1:2]
  whole = gan.train(spec, data, key, log_every=1, log=quiet)
  ckpt = checkpointing.FoldCheckpoints(tmp_path / "gan")
  gan.train(gan.GANSpec("dcgan", IMAGE, steps=2, **TINY), data, key, ckpt=ckpt, log_every=1,
            log=quiet)
  lines = []
  resumed = gan.train(spec, data, key, ckpt=ckpt, log_every=1, log=lines.append)
  ckpt.close()
  assert any("resumed from step 2" in line for line in lines)
  for a, b in zip(leaves(resumed.state), leaves(whole.state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert resumed.history == whole.history


def table_members(seed=5):
  rng = np.random.default_rng(seed)
  return [rng.normal(3, 0.5, (200, 1)).astype(np.float32),
          rng.exponential(1.0, (200, 1)).astype(np.float32)]


TABLE = dict(latent_dim=4, hidden=(16, 16), batch_size=32, learning_rate=1e-3)


def test_a_table_gan_learns_its_distribution():
  data = table_members()

  def distances(steps):
    trained = gan.train(gan.GANSpec("dcgan", (1,), steps=steps, **TABLE), data,
                        jax.random.key(6), log=quiet, log_every=1000)
    x = [gan.sample(trained, m, 2000, jax.random.key(7))[:, 0] for m in range(2)]
    return x, [scipy.stats.wasserstein_distance(x[m], data[m][:, 0]) for m in range(2)]

  _, before = distances(1)
  x, after = distances(300)
  assert after[0] < before[0] / 2 and after[1] < before[1] / 2, (before, after)
  assert abs(x[0].mean() - 3) < 0.15 and abs(x[0].std() - 0.5) < 0.15
  assert scipy.stats.skew(x[1]) > 0.5  # the exponential member's skew is learnt (true: 2)


def test_divergence_names_the_member(monkeypatch):
  init_state = gan.init_state

  def poisoned(*args, **kwargs):
    graphs, state = init_state(*args, **kwargs)
    return graphs, state.replace(d_params=jax.tree.map(lambda p: p.at[1].set(jnp.nan),
                                                       state.d_params))

  monkeypatch.setattr(gan, "init_state", poisoned)
  with pytest.raises(FloatingPointError, match="for class b diverged at step 1.*learning_rate"):
    gan.train(gan.GANSpec("dcgan", (1,), steps=3, **TABLE), table_members(), jax.random.key(0),
              members=["class a", "class b"], log=quiet)


def test_bad_inputs_name_the_fix():
  with pytest.raises(ValueError,
                     match=r"\(8, 8, 1\).*divisible by 16.*--config.synth.dcgan.widths=8,4"):
    gan.GANSpec("dcgan", IMAGE, widths=(8, 4, 4, 4))
  with pytest.raises(ValueError, match="--config.synth.dcgan.arch=mlp"):
    gan.GANSpec("dcgan", (5,), arch="conv")
  with pytest.raises(ValueError, match="--config.synth.method='vae'.*dcgan"):
    gan.GANSpec("vae", IMAGE)
  with pytest.raises(ValueError, match="cgan conditions"):
    gan.GANSpec("cgan", IMAGE)
  spec = gan.GANSpec("dcgan", IMAGE, steps=1, **TINY)
  with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
    gan.train(spec, [255 * images([4])[0]], jax.random.key(0), log=quiet)
  with pytest.raises(ValueError, match="non-finite"):
    gan.train(spec, [np.full((4, *IMAGE), np.nan, np.float32)], jax.random.key(0), log=quiet)


def test_spec_from_config():
  cfg = ml_collections.ConfigDict(dict(
      arch="auto", latent_dim=16, widths="16,8", hidden="256,256", steps=10, batch_size=8,
      learning_rate=1e-4, beta1=0.0, beta2=0.9, n_critic=3, gp_weight=5.0))
  spec = gan.spec_from_config("wgan_gp", cfg, (28, 28, 3), num_classes=4)
  assert (spec.arch, spec.widths, spec.hidden, spec.num_classes) == ("conv", (16, 8), (256, 256), 0)
  assert (spec.learning_rate, spec.beta1, spec.beta2, spec.n_critic) == (1e-4, 0.0, 0.9, 3)
  with pytest.raises(ValueError, match=r"--config.synth.cgan has no option\(s\) "
                     r"\['gp_weight', 'n_critic'\]"):
    gan.spec_from_config("cgan", cfg, (28, 28, 3), num_classes=4)
  del cfg["n_critic"], cfg["gp_weight"]
  cfg.update(dict(learning_rate=1e-3, beta2=0.99))
  spec = gan.spec_from_config("cgan", cfg, (28, 28, 3), num_classes=4)
  assert (spec.num_classes, spec.learning_rate, spec.beta1, spec.beta2) == (4, 1e-3, 0.0, 0.99)
  with pytest.raises(ValueError, match="--config.synth.method"):
    gan.spec_from_config("smote", cfg, (28, 28, 3), num_classes=4)
  cfg.widths = "64;32"
  with pytest.raises(ValueError, match="--config.synth.dcgan.widths"):
    gan.spec_from_config("dcgan", cfg, (28, 28, 3), num_classes=4)
