"""DDPM: the cosine schedule and q(x_t | x_0) against NumPy, DDIM exact with the ideal denoiser
and deterministic given its key, training lowers the loss, the mesh and resumed runs equal one
plain run, synthesis through the registry meets its budget with a grid and scores, and another
sampler reuses the trained model."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from jimb import checkpointing
from jimb import config as config_lib
from jimb import experiment
from jimb import mesh as mesh_lib
from jimb.generative import ddpm, unet

IMAGE = (8, 8, 1)
TINY = dict(widths=(8, 16), res_blocks=1, embed_dim=16, timesteps=100, sample_steps=5,
            batch_size=8, warmup_steps=0)
QUIET = lambda s: None


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def toy(n=24, seed=0):
  """Two classes of images: dark ones and bright ones, with a little noise."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 2
  x = np.clip(0.2 + 0.6 * y[:, None, None, None] + rng.normal(0, 0.05, (n, *IMAGE)), 0, 1)
  return x.astype(np.float32), y


def test_cosine_alpha_bar_follows_the_formula():
  T, s = 1000, 0.008
  f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
  want = np.array([f(t + 1) / f(0) for t in range(T)])
  got = ddpm.cosine_alpha_bar(T)
  # betas reach the 0.999 clip only in the last steps, where alpha-bar is already ~0
  np.testing.assert_allclose(got[:-5], want[:-5], rtol=1e-10)
  assert np.all(np.diff(got) < 0) and got[-1] < 1e-6 and got[0] > 0.9999
  betas = 1 - got / np.concatenate([[1.0], got[:-1]])
  assert betas.max() <= 0.999 + 1e-12


def test_forward_noising_has_the_right_mean_and_variance():
  alpha_bar = ddpm.cosine_alpha_bar(1000)
  x0 = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6)
  n = 200_000
  for t in (0, 300, 700, 999):
    noise = np.random.default_rng(t).normal(size=(n, 6)).astype(np.float32)
    xt = np.asarray(ddpm.q_sample(jnp.asarray(alpha_bar, jnp.float32), jnp.broadcast_to(x0, (n, 6)),
                                  jnp.full((n,), t), jnp.asarray(noise)))
    np.testing.assert_allclose(xt.mean(0), np.sqrt(alpha_bar[t]) * x0[0], atol=0.01)
    np.testing.assert_allclose(xt.var(0), 1 - alpha_bar[t], atol=0.01, rtol=0.02)


def test_ddim_with_the_ideal_denoiser_returns_the_data_point():
  # For data that is one point x*, eps(x_t) = (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t) exactly.
  spec = ddpm.DDPMSpec(IMAGE, 2, **{**TINY, "sample_steps": 7})
  alpha_bar = jnp.asarray(ddpm.cosine_alpha_bar(spec.timesteps), jnp.float32)
  target = jnp.linspace(-0.9, 0.9, 64).reshape(1, *IMAGE)

  def eps_fn(x, t, y):
    a = alpha_bar[t][:, None, None, None]
    return (x - jnp.sqrt(a) * target) / jnp.sqrt(1 - a)

  for eta in (0.0, 1.0):
    spec = ddpm.DDPMSpec(IMAGE, 2, **{**TINY, "sample_steps": 7, "eta": eta})
    x = ddpm.ddim_sample(spec, eps_fn, jnp.zeros(3, jnp.int32), jax.random.key(0))
    np.testing.assert_allclose(np.asarray(x), np.broadcast_to(target, x.shape), atol=1e-4)
  steps = ddpm.ddim_timesteps(spec)
  np.testing.assert_array_equal(steps, [84, 70, 56, 42, 28, 14, 0])   # stride 100 // 7


@pytest.fixture(scope="module")
def trained():
  x, y = toy()
  spec = ddpm.DDPMSpec(IMAGE, 2, steps=60, learning_rate=2e-3, **{**TINY, "batch_size": 16})
  return ddpm.train(spec, x, y, jax.random.key(0), log_every=10, log=QUIET)


def test_group_norm_groups_hold_several_channels():
  """One channel per group would be instance norm, blind to an image's brightness."""
  for c in range(4, 513):
    groups = unet.group_count(c)
    assert c % groups == 0 and groups <= 32 and c // groups >= 4, c
  assert [unet.group_count(c) for c in (8, 32, 64, 96, 128, 256)] == [2, 8, 16, 24, 32, 32]


def test_training_lowers_the_loss(trained):
  losses = np.asarray(trained.history["loss"])[:, 0]
  assert trained.history["step"] == list(range(10, 61, 10))
  assert losses[-1] < 0.6 * losses[0], losses


def test_sampling_is_deterministic_given_the_key(trained):
  a = ddpm.sample(trained, 1, 5, jax.random.key(3))
  b = ddpm.sample(trained, 1, 5, jax.random.key(3))
  c = ddpm.sample(trained, 1, 5, jax.random.key(4))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (5, *IMAGE) and a.min() >= 0 and a.max() <= 1
  assert not np.allclose(a, c)
  assert ddpm.sample(trained, 0, 0, jax.random.key(3)).shape == (0, *IMAGE)


def test_mesh_training_matches_one_device():
  x, y = toy(12)
  spec = ddpm.DDPMSpec(IMAGE, 2, steps=2, dropout=0.0, **TINY)
  mesh = mesh_lib.make_mesh()
  sharded = ddpm.train(spec, x, y, jax.random.key(1), mesh=mesh, log=QUIET)
  single = ddpm.train(spec, x, y, jax.random.key(1), log=QUIET)
  for a, b in zip(leaves(sharded.state), leaves(single.state), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="--config.synth.ddpm.batch_size=6"):
    ddpm.train(ddpm.DDPMSpec(IMAGE, 2, **{**TINY, "batch_size": 6}), x, y, jax.random.key(1),
               mesh=mesh, log=QUIET)


def test_resumed_run_equals_uninterrupted(tmp_path):
  x, y = toy(12)
  spec = ddpm.DDPMSpec(IMAGE, 2, steps=4, **TINY)
  whole = ddpm.train(spec, x, y, jax.random.key(2), log_every=1, log=QUIET)
  ckpt = checkpointing.FoldCheckpoints(tmp_path / "ddpm")
  ddpm.train(ddpm.DDPMSpec(IMAGE, 2, steps=2, **TINY), x, y, jax.random.key(2), ckpt=ckpt,
             log_every=1, log=QUIET)
  lines = []
  resumed = ddpm.train(spec, x, y, jax.random.key(2), ckpt=ckpt, log_every=1, log=lines.append)
  ckpt.close()
  assert any("resumed from step 2" in line for line in lines)
  for a, b in zip(leaves(resumed.state), leaves(whole.state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert resumed.history == whole.history


def test_config_block_and_bad_options_name_the_fix():
  block = config_lib.base_config().synth.ddpm
  assert set(block) == set(ddpm.OPTIONS)
  assert ddpm.spec_from_config(block, (28, 28, 1), 2) == ddpm.DDPMSpec((28, 28, 1), 2)
  with pytest.raises(ValueError, match=r"synth.ddpm has no option\(s\) \['latent_dim'\]"):
    ddpm.spec_from_config({"latent_dim": 8}, IMAGE, 2)
  with pytest.raises(ValueError, match="use a GAN"):
    ddpm.spec_from_config({}, (5,), 2)
  with pytest.raises(ValueError, match="widths to at most 2 levels"):
    ddpm.spec_from_config({"widths": "8,8,8"}, (6, 6, 1), 2)
  with pytest.raises(ValueError, match="sample_steps=50 exceeds timesteps=10"):
    ddpm.spec_from_config({"timesteps": 10}, IMAGE, 2)
  x, y = toy(4)
  with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
    ddpm.train(ddpm.DDPMSpec(IMAGE, 2, **TINY), x * 255, y, jax.random.key(0), log=QUIET)


def test_synthesis_through_the_registry_meets_the_budget_and_a_new_sampler_reuses_the_model(
    tmp_path):
  c = tiny_config(**{"split.folds": 2, "split.only_folds": "0", "train.epochs": 1,
                     "synth.cache_dir": str(tmp_path / "cache"),
                     "synth.method": "ddpm", "synth.ddpm.widths": "8,16",
                     "synth.ddpm.embed_dim": 16, "synth.ddpm.steps": 3,
                     "synth.ddpm.batch_size": 16, "synth.ddpm.sample_steps": 4,
                     "synth.budget": "min_count", "synth.min_count": 90,
                     "synth.classes": "7,8,9", "synth.judge_epochs": 1,
                     "synth.judge_batch_size": 32, "synth.log_every": 50})
  results = experiment.train_and_evaluate(c, tmp_path / "run", log=QUIET)
  record = results["folds"][0]
  report = record["synthesis"]
  assert report["method"] == "ddpm" and report["requested"]
  assert set(report["requested"]) <= {"7", "8", "9"}
  assert report["kept"] == report["requested"]
  synthetic = record["class_counts"]["train_synthetic"]      # digits' classes are named 0 .. 9
  assert {k: synthetic[int(k)] for k in report["requested"]} == report["requested"]
  assert sum(synthetic) == sum(report["requested"].values())
  assert set(report["scores"]) == set(report["requested"])
  for scores in report["scores"].values():
    assert {"fid", "precision", "recall"} <= set(scores)
  directory = tmp_path / "cache" / "fold_0"
  [grid] = directory.glob("samples_*/grid.png")
  assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  [losses] = json.loads(next(directory.glob("samples_*/losses.json")).read_text())
  assert losses["models"] == ["7", "8", "9"][:len(losses["models"])] and losses["loss"]

  # Another eta samples again from the same trained model; more steps train a new one.
  lines = []
  c.synth.ddpm.eta = 0.0
  again = experiment.train_and_evaluate(c, tmp_path / "run_eta0", log=lines.append)
  assert len(list(directory.glob("generator_*"))) == 1
  assert len(list(directory.glob("samples_*"))) == 2
  assert any("ddpm: resumed from step 3" in line for line in lines)
  assert not any("ddpm step" in line for line in lines)
  assert again["folds"][0]["synthesis"]["requested"] == report["requested"]
  c.synth.ddpm.steps = 4
  experiment.train_and_evaluate(c, tmp_path / "run_steps4", log=QUIET)
  assert len(list(directory.glob("generator_*"))) == 2


def test_ema_warms_up_then_decays_at_ema_decay():
  """The EMA after each update is the recursion e = d_t e + (1 - d_t) p with
  d_t = min(ema_decay, (1 + t) / (10 + t)), computed here in NumPy from the weights."""
  spec = ddpm.DDPMSpec(IMAGE, 2, steps=1, ema_decay=0.5, **TINY)
  np.testing.assert_allclose([float(ddpm.ema_decay(spec, t)) for t in (0, 1, 8, 9, 100)],
                             [0.1, 2 / 11, 0.5, 0.5, 0.5], rtol=1e-6)
  x, y = toy(16)
  graph, state = ddpm.init_state(spec, jax.random.key(0))
  step = jax.jit(ddpm.train_step, static_argnums=(0, 1))
  expected = leaves(state.ema)
  for t in range(12):
    state, _ = step(spec, graph, state, jnp.asarray(x), jnp.asarray(y),
                    jnp.arange(8) + t % 2 * 8, jax.random.key(t))
    d = min(0.5, (1 + t) / (10 + t))
    expected = [d * e + (1 - d) * p for e, p in zip(expected, leaves(state.params))]
  for a, b in zip(leaves(state.ema), expected, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
