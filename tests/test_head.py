"""Stage 2 on frozen features: tau-normalisation and classifier re-training (cRT)."""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jimb.models import Classifier, build_model, layers
from jimb.training import head
from jimb import mesh as mesh_lib
from jimb.fitting import step as step_lib
from jimb.fitting.transfer import path_name

COUNTS = (200, 20, 5)  # long-tailed training part: class 2 is the minority


class _HiddenHead(Classifier):
  """A head with a hidden FC and dropout (`layers.Head`), as the large models have."""

  def __init__(self, rngs: nnx.Rngs):
    self.body = nnx.Linear(3, 6, rngs=rngs)
    self.head = layers.Head(6, 3, hidden=4, dropout=0.5, rngs=rngs)

  def embed(self, x, *, train=False, key=None):
    return nnx.relu(self.body(x))


@functools.cache
def _small_cnn():
  """Built once as training builds it (compiled, replicated on 8 devices); no test changes it."""
  cfg = ml_collections.ConfigDict(dict(name="small_cnn", small_cnn=dict(widths=(4, 8), dense=8)))
  build = lambda key: build_model(cfg, 3, (8, 8, 1), key)
  graphdef, state = step_lib.create_state(build, optax.identity(), jax.random.key(0),
                                          mesh_lib.make_mesh())
  return graphdef, state.params, state.rest


def _hidden_head():
  return nnx.split(_HiddenHead(nnx.Rngs(params=1)), nnx.Param, ...)


def _leaves(params) -> dict[str, np.ndarray]:
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return {path_name(path): np.asarray(leaf) for path, leaf in flat}


def _blobs(counts, dim: int, seed: int):
  """Overlapping Gaussian classes around 2 * e_k: the prior decides the boundary."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(len(counts)), counts)
  features = 2.0 * np.eye(dim)[labels] + rng.normal(size=(len(labels), dim))
  return features.astype(np.float32), labels


def _retrain(model, features, labels, **kwargs):
  graphdef, params, rest = model
  options = dict(num_classes=3, epochs=30, batch_size=32, learning_rate=0.02, seed=0)
  return head.retrain_head(graphdef, params, rest, features, labels, **(options | kwargs))


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_tau_normalize_scales_class_columns_and_drops_the_bias(tau):
  _, params, _ = _small_cnn()
  before = _leaves(params)
  after = _leaves(head.tau_normalize(params, tau))
  kernel = before["out/kernel"].astype(np.float64)
  expected = kernel / np.linalg.norm(kernel, axis=0) ** tau
  np.testing.assert_allclose(after["out/kernel"], expected, rtol=1e-6)
  np.testing.assert_array_equal(after["out/bias"], 0.0)
  if tau == 0.0:
    np.testing.assert_array_equal(after["out/kernel"], before["out/kernel"])
  if tau == 1.0:
    np.testing.assert_allclose(np.linalg.norm(after["out/kernel"], axis=0), 1.0, rtol=1e-6)
  for name in set(before) - {"out/kernel", "out/bias"}:
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_tau_normalize_keeps_an_all_zero_class_at_zero_and_finds_a_head_module():
  _, params, _ = _hidden_head()
  kernel = params["head"]["out"]["kernel"]
  kernel[...] = kernel[...].at[:, 1].set(0.0)
  after = _leaves(head.tau_normalize(params, 1.0))
  np.testing.assert_array_equal(after["head/out/kernel"][:, 1], 0.0)
  np.testing.assert_allclose(np.linalg.norm(after["head/out/kernel"][:, [0, 2]], axis=0), 1.0,
                             rtol=1e-6)
  np.testing.assert_array_equal(after["head/hidden/kernel"], _leaves(params)["head/hidden/kernel"])


@pytest.mark.parametrize("build, width, layers, trained", [
    (_small_cnn, 8, "classifier", ("out/",)),
    (_small_cnn, 8, "head", ("out/",)),          # no hidden FC in its head
    (_hidden_head, 6, "classifier", ("head/out/",)),
    (_hidden_head, 6, "head", ("head/out/", "head/hidden/"))])
@pytest.mark.parametrize("reinit", [True, False])
def test_retrain_head_changes_the_chosen_layers_only(build, width, layers, trained, reinit):
  model = build()
  features, labels = _blobs(COUNTS, width, seed=0)
  before = _leaves(model[1])
  new = _retrain(model, features, labels, reinit=reinit, epochs=2, layers=layers)
  after = _leaves(new)
  assert jax.tree.structure(new) == jax.tree.structure(model[1])
  for name in before:
    if name.startswith(trained):
      assert not np.array_equal(after[name], before[name]), name
    else:  # the backbone and, unless trained, the head's hidden FC: bit-identical
      np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_retrain_head_is_deterministic_given_the_seed():
  model = _hidden_head()  # dropout 0.5 in the head: the keys come from the seed
  features, labels = _blobs(COUNTS, 6, seed=0)
  a, b = (_leaves(_retrain(model, features, labels, epochs=3)) for _ in range(2))
  c = _leaves(_retrain(model, features, labels, epochs=3, seed=1))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert not np.array_equal(a["head/out/kernel"], c["head/out/kernel"])


def test_crt_and_tau_norm_recover_the_minority_class():
  model = _small_cnn()
  graphdef, _, rest = model
  test_x, test_y = _blobs((300, 300, 300), 8, seed=100)

  def recall(params):
    logits = nnx.merge(graphdef, params, rest).head(jnp.asarray(test_x))
    predicted = np.asarray(logits).argmax(axis=1)
    return np.array([np.mean(predicted[test_y == k] == k) for k in range(3)])

  for seed in range(2):
    features, labels = _blobs(COUNTS, 8, seed=seed)
    stage1 = _retrain(model, features, labels, sampler="instance", seed=seed)
    crt = _retrain((graphdef, stage1, rest), features, labels, seed=seed)
    base = recall(stage1)
    assert base[0] > 0.95 and base[2] < 0.35, base  # the instance-trained head favours class 0
    assert recall(crt)[2] > base[2] + 0.3, (base, recall(crt))
    assert recall(head.tau_normalize(stage1, 1.0))[2] > base[2] + 0.25


def test_retrained_params_drive_the_whole_model():
  """The new params fit the graphdef: predictions are softmax(features @ W + b) in NumPy."""
  graphdef, params, rest = _small_cnn()
  mesh = mesh_lib.make_mesh()
  x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
  mean, std = np.full(1, 0.5, np.float32), np.full(1, 0.25, np.float32)
  features = np.asarray(step_lib.make_features(graphdef, mesh)(params, rest, x, mean, std))
  labels = np.arange(40) % 3
  new = head.retrain_head(graphdef, params, rest, features, labels, num_classes=3, epochs=2,
                          batch_size=8, learning_rate=0.1)
  probs = np.asarray(step_lib.make_predict(graphdef, mesh)(new, rest, x, mean, std))
  w = _leaves(new)
  logits = features.astype(np.float64) @ w["out/kernel"] + w["out/bias"]
  expected = np.exp(logits - logits.max(axis=1, keepdims=True))
  expected /= expected.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(probs, expected, atol=1e-5)
  assert np.abs(w["out/kernel"] - _leaves(params)["out/kernel"]).max() > 0.1


def test_fine_tuning_continues_from_the_stage1_classifier():
  model = _small_cnn()
  features, labels = _blobs(COUNTS, 8, seed=0)
  stage1 = _leaves(model[1])["out/kernel"]
  kept = _leaves(_retrain(model, features, labels, reinit=False, learning_rate=1e-7))
  fresh = _leaves(_retrain(model, features, labels, reinit=True, learning_rate=1e-7))
  np.testing.assert_allclose(kept["out/kernel"], stage1, atol=1e-4)
  assert np.abs(fresh["out/kernel"] - stage1).max() > 0.1


def test_params_replicated_on_eight_devices_train_as_host_params_do():
  graphdef, params, rest = _small_cnn()
  features, labels = _blobs(COUNTS, 8, seed=0)
  host = _leaves(_retrain((graphdef, *jax.device_get((params, rest))), features, labels, epochs=2))
  replicated = _retrain((graphdef, params, rest), features, labels, epochs=2)
  for name, value in _leaves(replicated).items():
    np.testing.assert_allclose(value, host[name], rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("change, match", [
    (dict(labels=np.zeros(10, np.int64)), "one row per example"),
    (dict(features=np.zeros((225, 5), np.float32)), "make_features"),
    (dict(epochs=0), "stage2.epochs"),
    (dict(learning_rate=0.0), "stage2.learning_rate"),
    (dict(batch_size=1000), "stage2.batch_size"),
    (dict(num_classes=4), "number of classes"),
    (dict(layers="backbone"), "stage2.layers"),
])
def test_bad_inputs_fail_with_a_fix(change, match):
  graphdef, params, rest = _small_cnn()
  features, labels = _blobs(COUNTS, 8, seed=0)
  args = dict(features=features, labels=labels, num_classes=3, epochs=1, batch_size=32,
              learning_rate=0.01) | change
  with pytest.raises(ValueError, match=match):
    head.retrain_head(graphdef, params, rest, **args)


def test_tau_normalize_needs_a_finite_tau_and_a_classifier():
  _, params, _ = _small_cnn()
  with pytest.raises(ValueError, match="stage2.tau"):
    head.tau_normalize(params, float("nan"))
  with pytest.raises(ValueError, match="stage2.method=none"):
    head.tau_normalize(nnx.split(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Param)[1], 1.0)
