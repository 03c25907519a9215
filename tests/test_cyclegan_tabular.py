"""CycleGAN on table rows (arch mlp): MLP pairs, standardisation, and the synthesis path."""

from __future__ import annotations

import json

from flax import nnx
import jax
import numpy as np
import pytest

from helpers import tiny_config
from jimb import experiment
from jimb import mesh as mesh_lib
from jimb.balance import synthesis
from jimb.data import sources, splits
from jimb.data.dataset import Dataset
from jimb.generative import cycle_nets, cyclegan as cg

QUIET = lambda s: None
FEATURES = 4
# One tiny spec for the direct tests (one compiled program); batch 8 fills the 8 test devices.
SPEC = cg.CycleSpec((FEATURES,), arch="mlp", hidden=(16, 16), pool_size=8, lr=5e-3, n_epochs=10,
                    n_epochs_decay=5, batch_size=8)
# Features on very different scales and offsets, so a missed standardisation shows.
SCALE = np.array([1.0, 100.0, 0.01, 5.0], np.float32)
OFFSET = np.array([0.0, 500.0, -3.0, 40.0], np.float32)


def _assert_close_rows(a, b, tol):
  """Rows equal to `tol` in each feature's own scale."""
  np.testing.assert_allclose(np.asarray(a) / SCALE, np.asarray(b) / SCALE, rtol=tol, atol=tol)


def _gaussians(counts, rng) -> tuple[np.ndarray, np.ndarray]:
  """Class c: N(mean_c, 1) in standard units, mean_0 = -2, mean_1 = +2, then scaled."""
  y = np.repeat(np.arange(len(counts)), counts)
  z = rng.normal(size=(len(y), FEATURES)) + np.where(y == 0, -2.0, 2.0)[:, None]
  return (z * SCALE + OFFSET).astype(np.float32), y


@pytest.fixture(scope="module")
def toy_run():
  x, y = _gaussians((32, 12), np.random.default_rng(0))
  trained = cg.train(SPEC, x[y == 0], [x[y == 1]], jax.random.key(0), standardise_with=x,
                     log_every=4, log=QUIET)
  return trained, x, y


def test_mlp_nets_shapes_and_bad_options_name_the_fix():
  x = jax.random.normal(jax.random.key(0), (3, FEATURES))
  g = cycle_nets.MLPGenerator(FEATURES, hidden=(8, 6), rngs=nnx.Rngs(0))
  d = cycle_nets.MLPDiscriminator(FEATURES, hidden=(8, 6), rngs=nnx.Rngs(0))
  assert g(x).shape == (3, FEATURES) and d(x).shape == (3, 1)
  with pytest.raises(ValueError, match="translates images.*--config.synth.cyclegan.arch=mlp"):
    cg.CycleSpec((FEATURES,))
  with pytest.raises(ValueError, match="--config.synth.cyclegan.arch=conv for images"):
    cg.CycleSpec((8, 8, 1), arch="mlp")
  with pytest.raises(ValueError, match="--config.synth.cyclegan.hidden"):
    cg.spec_from_config({"arch": "mlp", "hidden": "16,x"}, (FEATURES,))
  assert cg.spec_from_config({"arch": "mlp", "hidden": "16,8"}, (FEATURES,)).hidden == (16, 8)
  rows = np.ones((4, FEATURES), np.float32)
  rows[0, 1] = np.nan
  with pytest.raises(ValueError, match="NaN.*--config.data.impute"):
    cg.train(SPEC, rows, [rows], jax.random.key(0))


def test_cycle_loss_falls_on_two_gaussians(toy_run):
  trained, _, _ = toy_run
  cycle = np.asarray(trained.history["cycle_A"])[:, 0]   # 4 steps per epoch, 15 epochs
  assert trained.history["step"] == list(range(4, 61, 4))
  assert cycle[-3:].mean() < 0.5 * cycle[0]
  assert set(trained.history) >= {"G_A", "D_A", "cycle_B", "idt_A"}


def test_translations_are_finite_rows_in_the_original_units(toy_run):
  trained, x, y = toy_run
  mean, std = x.mean(0), x.std(0)
  np.testing.assert_allclose(trained.scale[0], mean, rtol=1e-5)
  np.testing.assert_allclose(trained.scale[1], std, rtol=1e-5)
  out = cg.translate(trained, 0, x[y == 0], batch_size=5)
  assert out.shape == (32, FEATURES) and out.dtype == np.float32 and np.isfinite(out).all()
  # By hand: G_A in standard units, mapped back with the training rows' NumPy statistics.
  g = nnx.merge(trained.graphdefs[0], jax.tree.map(lambda a: a[0], trained.state.g_params["G_A"]))
  want = np.asarray(g((x[y == 0] - mean) / std)) * std + mean
  _assert_close_rows(out, want, 1e-4)
  # Translated majority rows move towards the minority class in every feature's own units.
  source, target = x[y == 0].mean(0), x[y == 1].mean(0)
  assert np.all(np.abs(out.mean(0) - target) < np.abs(source - target))


def test_a_mesh_of_eight_devices_trains_the_pairs_as_one_device_does():
  x, y = _gaussians((32, 12, 9), np.random.default_rng(1))
  runs = []
  for n in (1, 8):
    mesh = mesh_lib.make_mesh(jax.devices()[:n])
    trained = cg.train(SPEC, x[y == 0], [x[y == 1], x[y == 2]], jax.random.key(3), mesh=mesh,
                       standardise_with=x, log_every=20, log=QUIET)
    runs.append((trained.history, cg.translate(trained, 1, x[:6])))
  assert len(jax.devices()) == 8
  for name in runs[0][0]:
    np.testing.assert_allclose(runs[1][0][name], runs[0][0][name], rtol=1e-4, atol=1e-5,
                               err_msg=name)
  _assert_close_rows(runs[1][1], runs[0][1], 1e-4)


COUNTS = (40, 14)


def _table() -> Dataset:
  x, y = _gaussians(COUNTS, np.random.default_rng(2))
  return Dataset(x=x, y=y, class_names=("F0-2", "F3-4"), name="toy_nafld")


def _config(**overrides):
  return tiny_config(**{
      "model.name": "mlp", "model.mlp": {"hidden": (8,), "dropout": 0.0}, "train.epochs": 1,
      "train.batch_size": 16, "split.folds": 3, "split.only_folds": "0",
      "augment.enabled": False, "imbalance.profile": "none", "sampler.name": "instance",
      "data.normalize": "dataset", "synth.method": "cyclegan", "synth.budget": "majority",
      "synth.judge_epochs": 0, "synth.filter": "none", "synth.log_every": 2,
      "synth.checkpoint_every": 3, "synth.cyclegan.arch": "mlp", "synth.cyclegan.hidden": "8",
      "synth.cyclegan.batch_size": 8, "synth.cyclegan.pool_size": 4,
      "synth.cyclegan.n_epochs": 1, "synth.cyclegan.n_epochs_decay": 1, **overrides})


def test_the_synthesis_stage_tops_a_table_up_to_the_budget(monkeypatch, tmp_path):
  ds = _table()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  results = experiment.train_and_evaluate(_config(), tmp_path, log=QUIET)
  fold = splits.make_folds(ds, 3, _config().split.val_fraction, seed=_config().seed)[0]
  counts = np.bincount(ds.y[fold.train], minlength=2)
  assert results["folds"][0]["class_counts"]["train_synthetic"] == [0, int(counts[0] - counts[1])]
  report = results["folds"][0]["synthesis"]
  assert report["requested"] == {"F3-4": int(counts[0] - counts[1])}
  assert report["scores_space"] == "inputs" and set(report["scores"]) == {"F3-4"}
  scores = report["scores"]["F3-4"]
  assert scores["n_syn"] == counts[0] - counts[1] and np.isfinite(scores["fid"])
  assert 0 <= scores["precision"] <= 1 and 0 <= scores["recall"] <= 1
  [out] = (tmp_path / "synthesis" / "fold_0").glob("samples_*")
  assert not (out / "grid.png").exists() and json.loads((out / "losses.json").read_text())
  with np.load(out / "samples.npz") as f:
    rows = f["x"]
  assert rows.shape == (counts[0] - counts[1], FEATURES) and np.isfinite(rows).all()
  # Rows in the original units (feature 1 lives around 500 +- 200), not standardised ones.
  assert np.all(np.abs(rows.mean(0) - ds.x.mean(0)) < 3 * ds.x.std(0))
  assert abs(rows[:, 1].mean()) > 100


class _Stop(Exception):
  pass


def test_a_resumed_synthesis_gives_the_same_rows(tmp_path):
  x, y = _gaussians(COUNTS, np.random.default_rng(4))
  config = _config()
  mesh = mesh_lib.make_mesh(jax.devices())
  stats = (x.mean(0), x.std(0))

  def run(root, log=QUIET):
    return synthesis.synthesise(config, x, y, ("F0-2", "F3-4"), 0, *stats, mesh, root, log)

  whole = run(tmp_path / "whole")

  def die_at_4(message):
    if "step 4/" in message:
      raise _Stop

  with pytest.raises(_Stop):
    run(tmp_path / "cut", die_at_4)
  logs = []
  resumed = run(tmp_path / "cut", logs.append)
  assert any("resumed from step 3" in m for m in logs)
  np.testing.assert_array_equal(resumed.y, whole.y)
  _assert_close_rows(resumed.x, whole.x, 1e-6)
