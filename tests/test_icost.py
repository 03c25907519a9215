"""Instance-complexity (iCost) weights: kDN against brute force, groups on hand-made layouts,
weights in the loss, fitted on the training part only, and absent by default."""

from __future__ import annotations

from flax import nnx
import jax
import ml_collections
import numpy as np
import optax
import pytest

from jimb import losses
from jimb import mesh as mesh_lib
from jimb.balance import judge
from jimb.balance import pool as pool_lib
from jimb.data.dataset import Dataset
from jimb.data.splits import Fold
from jimb.fitting import step as step_lib
from jimb.models import build_model
from jimb.resampling import complexity
from jimb.training import setup as setup_lib
from tests.helpers import tiny_config

QUIET = lambda *_: None


def _brute_disagreeing(x, y, k):
  d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  nearest = np.argsort(d, axis=1)[:, :k]
  return (y[nearest] != y[:, None]).sum(1)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_disagreeing_neighbours_match_brute_force(k):
  rng = np.random.default_rng(k)
  x, y = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
  np.testing.assert_array_equal(complexity.disagreeing(x, y, k), _brute_disagreeing(x, y, k))
  rows = np.array([4, 17, 59])
  np.testing.assert_array_equal(complexity.disagreeing(x, y, k, rows),
                                _brute_disagreeing(x, y, k)[rows])


def test_exact_copies_never_count_themselves():
  x = np.zeros((4, 2))     # four identical rows: each has three copies as neighbours
  y = np.array([1, 1, 0, 0])
  np.testing.assert_array_equal(complexity.disagreeing(x, y, 3), [2, 2, 2, 2])


@pytest.mark.parametrize("scheme, expected", [
    ("napierala", [0, 0, 1, 1, 2, 3]),   # safe 0-1, borderline 2-3, rare 4, outlier 5 of 5
    ("icost", [0, 1, 1, 2, 2, 3]),       # pure 0, safe 1-2, border 3-4, outlier 5 of 5
])
def test_groups_at_k5_are_the_published_ones(scheme, expected):
  np.testing.assert_array_equal(complexity.group_of(np.arange(6), 5, scheme), expected)


def test_groups_for_other_k_keep_the_shares():
  np.testing.assert_array_equal(complexity.group_of(np.arange(8), 7, "napierala"),
                                [0, 0, 0, 1, 1, 2, 2, 3])


def _star(disagree: int) -> tuple[np.ndarray, np.ndarray]:
  """A minority point at the origin whose five nearest neighbours (radii 1..5, distinct angles)
  include `disagree` of the majority class; ten majority points far away."""
  angles = np.linspace(0, 2 * np.pi, 5, endpoint=False)
  near = np.stack([np.arange(1, 6) * np.cos(angles), np.arange(1, 6) * np.sin(angles)], 1)
  far = 100 + np.arange(20).reshape(10, 2)
  x = np.concatenate([[[0.0, 0.0]], near, far])
  y = np.concatenate([[1], np.where(np.arange(5) < disagree, 0, 1), np.zeros(10, int)])
  return x, y


@pytest.mark.parametrize("disagree, group", [(0, "safe"), (1, "safe"), (2, "borderline"),
                                             (3, "borderline"), (4, "rare"), (5, "outlier")])
def test_hand_made_2d_neighbourhoods_fall_in_their_group(disagree, group):
  x, y = _star(disagree)
  count = complexity.disagreeing(x, y, 5, np.array([0]))
  assert count.tolist() == [disagree]
  names = complexity.GROUPS["napierala"][0]
  assert names[complexity.group_of(count, 5, "napierala")[0]] == group


def test_weights_are_group_cost_times_imbalance_ratio():
  # Seven minority points in a tight cluster (safe), one inside 20 majority points (outlier).
  minority = np.array([[0, 0], [.1, 0], [0, .1], [.1, .1], [.05, .05], [.2, 0], [0, .2]])
  majority = 10 + 0.1 * np.stack(np.meshgrid(np.arange(5), np.arange(4)), -1).reshape(-1, 2)
  x = np.concatenate([minority, [[10.2, 10.15]], majority])
  y = np.concatenate([np.ones(8, int), np.zeros(20, int)])
  w, report = complexity.icost_weights(x, y, 2, groups="napierala")
  ir = 20 / 8
  safe, outlier = complexity.COSTS["napierala"][0], complexity.COSTS["napierala"][3]
  np.testing.assert_allclose(w[:7], safe * ir, rtol=1e-6)
  np.testing.assert_allclose(w[7], outlier * ir, rtol=1e-6)
  np.testing.assert_array_equal(w[8:], 1.0)
  assert report["counts"] == {1: [7, 0, 0, 1]} and report["ratio"] == {1: 2.5}
  w, _ = complexity.icost_weights(x, y, 2, groups="icost", costs="1,2,3,4", scale_by_ir=False)
  np.testing.assert_array_equal(w[:8], [1, 1, 1, 1, 1, 1, 1, 4])


def test_bad_options_name_the_key():
  x, y = _star(2)
  with pytest.raises(ValueError, match="loss.icost.costs"):
    complexity.icost_weights(x, y, 2, costs="1,2")
  with pytest.raises(ValueError, match="loss.icost.groups"):
    complexity.icost_weights(x, y, 2, groups="kmeans")
  with pytest.raises(ValueError, match="loss.icost.space"):
    complexity.check_space("pixels")
  with pytest.raises(ValueError, match="loss.icost.k"):
    complexity.icost_weights(x, y, 2, k=len(y))
  with pytest.raises(ValueError, match="loss.instance_weights"):
    losses.build_loss(ml_collections.ConfigDict(dict(name="cross_entropy",
                                                     instance_weights="hard")), np.ones(2))


def _step_and_state(loss):
  mesh = mesh_lib.make_mesh()
  cfg = ml_collections.ConfigDict(dict(name="mlp", hidden=(8,), dropout=0.0))
  graphdef, state = step_lib.create_state(lambda k: build_model(cfg, 3, (4,), k), optax.sgd(0.1),
                                          jax.random.key(0), mesh)
  step = step_lib.make_train_step(graphdef, optax.sgd(0.1), loss.fn, None, mesh)
  return mesh, graphdef, state, step


def test_a_batch_loss_is_the_hand_weighted_mean():
  loss = losses.build_loss(ml_collections.ConfigDict(dict(name="cross_entropy")), np.ones(3))
  mesh, graphdef, state, step = _step_and_state(loss)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 4)).astype(np.float32)
  y = rng.integers(0, 3, 16).astype(np.int32)
  w = rng.uniform(0.1, 3.0, 16).astype(np.float32)
  model = nnx.merge(graphdef, *jax.device_get((state.params, state.rest)))
  z = np.asarray(model(x, train=False), np.float64)
  nll = np.log(np.exp(z).sum(1)) - z[np.arange(16), y]
  mean, std = mesh_lib.replicate((np.zeros(4, np.float32), np.ones(4, np.float32)), mesh)
  key = mesh_lib.replicate(jax.random.key(1), mesh)
  class_w = mesh_lib.replicate(np.array([1.0, 2.0, 0.5], np.float32), mesh)
  run = lambda batch, *cw: float(step(jax.tree.map(lambda a: a.copy(), state),
                                      mesh_lib.local_batch_to_global(batch, mesh), key, mean, std,
                                      *cw)[1]["loss"])
  np.testing.assert_allclose(run({"x": x, "y": y, "w": w}), np.mean(w * nll), rtol=1e-5)
  np.testing.assert_allclose(run({"x": x, "y": y, "w": w}, class_w),
                             np.mean(w * np.array([1.0, 2.0, 0.5])[y] * nll), rtol=1e-5)
  np.testing.assert_allclose(run({"x": x, "y": y, "w": np.ones(16, np.float32)}),
                             run({"x": x, "y": y}), rtol=1e-6)


def _table(seed: int = 0) -> tuple[Dataset, Fold]:
  rng = np.random.default_rng(seed)
  y = np.concatenate([np.zeros(60, int), np.ones(20, int)])
  x = (rng.normal(size=(80, 3)) + y[:, None]).astype(np.float32)
  perm = rng.permutation(80)
  x, y = x[perm], y[perm]
  fold = Fold(0, np.arange(48), np.arange(48, 60), np.arange(60, 80))
  return Dataset(x, y, ("a", "b")), fold


def _config(**overrides):
  return tiny_config(**{"data.source": "sklearn", "data.name": "breast_cancer",
                        "data.normalize": "dataset", "model.name": "mlp", "train.batch_size": 8,
                        "sampler.name": "instance", "augment.rotation": 0.0,
                        "model.mlp": dict(hidden=(4,), dropout=0.0), **overrides})


def test_weights_come_from_the_training_part_only():
  ds, fold = _table()
  config = _config(**{"loss.instance_weights": "icost"})
  mesh = mesh_lib.make_mesh()
  setup = setup_lib.setup_fold(config, ds, fold, mesh, log=QUIET)
  expected, _ = complexity.icost_weights(setup.x["train"], setup.y["train"], 2)
  np.testing.assert_array_equal(setup.weights, expected)
  assert len(np.unique(setup.weights)) > 2        # several groups, majority at 1
  other = np.random.default_rng(1)
  x, y = ds.x.copy(), ds.y.copy()
  rest = np.concatenate([fold.val, fold.test])
  x[rest] = other.normal(size=(len(rest), 3)) * 5
  y[rest] = other.integers(0, 2, len(rest))
  changed = setup_lib.setup_fold(config, Dataset(x, y, ds.class_names), fold, mesh, log=QUIET)
  np.testing.assert_array_equal(changed.weights, setup.weights)


def test_default_is_no_weights():
  ds, fold = _table()
  config = _config()
  assert config.loss.instance_weights == "none"
  assert setup_lib.setup_fold(config, ds, fold, mesh_lib.make_mesh(), log=QUIET).weights is None


def test_resampled_copies_inherit_and_synthetic_rows_weigh_one():
  ds, fold = _table()
  config = _config(**{"loss.instance_weights": "icost"})
  x, y = ds.x[fold.train], ds.y[fold.train]
  real, _ = complexity.icost_weights(x, y, 2)
  rows = np.concatenate([np.arange(48), np.flatnonzero(y == 1)[:5], 48 + np.arange(3)])
  pool = pool_lib.TrainingPool(np.concatenate([x, x[:3]]), np.concatenate([y, [1, 1, 1]]),
                               rows, 48)
  weights = setup_lib.pool_weights(config, pool, 2, 0, QUIET)
  np.testing.assert_array_equal(weights[:48], real)
  np.testing.assert_array_equal(weights[48:], 1.0)
  drawn = weights[pool.rows]      # what batches gather: copies carry their source's weight
  np.testing.assert_array_equal(drawn[48:53], real[np.flatnonzero(y == 1)[:5]])


def test_judge_space_is_a_judge_of_the_training_part():
  """space=judge: neighbours among the features of a judge trained on the training rows alone
  (the same judge trained here by hand), whatever the validation and test rows hold."""
  ds, fold = _table()
  config = _config(**{"loss.instance_weights": "icost", "loss.icost.space": "judge",
                      "synth.judge_epochs": 2, "synth.judge_batch_size": 8})
  mesh = mesh_lib.make_mesh()
  setup = setup_lib.setup_fold(config, ds, fold, mesh, log=QUIET)
  by_hand = judge.train(config.model, setup.x["train"], setup.y["train"], 2, setup.mean,
                        setup.std, mesh, epochs=2, batch_size=8, learning_rate=1e-3,
                        seed=config.seed * 1000 + fold.index, log=QUIET)
  features = by_hand.features(setup.x["train"])
  assert features.shape == (len(setup.y["train"]), 4)    # the MLP's hidden layer
  expected, _ = complexity.icost_weights(features, setup.y["train"], 2)
  np.testing.assert_array_equal(setup.weights, expected)
  inputs = setup_lib.setup_fold(_config(**{"loss.instance_weights": "icost"}), ds, fold, mesh,
                                log=QUIET)
  assert not np.array_equal(inputs.weights, setup.weights)
  x, y = ds.x.copy(), ds.y.copy()
  rest = np.concatenate([fold.val, fold.test])
  x[rest] = np.random.default_rng(2).normal(size=(len(rest), 3)) * 5
  changed = setup_lib.setup_fold(config, Dataset(x, y, ds.class_names), fold, mesh, log=QUIET)
  np.testing.assert_array_equal(changed.weights, setup.weights)
  with pytest.raises(ValueError, match="synth.judge_epochs"):
    setup_lib.setup_fold(_config(**{"loss.instance_weights": "icost",
                                    "loss.icost.space": "judge", "synth.judge_epochs": 0}),
                         ds, fold, mesh, log=QUIET)
  with pytest.raises(ValueError, match="model.pretrained"):
    setup_lib.setup_fold(_config(**{"loss.instance_weights": "icost",
                                    "loss.icost.space": "backbone"}), ds, fold, mesh, log=QUIET)
