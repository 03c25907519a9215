"""`--config.model.pretrained=<Keras weights file>`: a fold starts from the converted backbone,
with the Keras model's own input preprocessing, and the head sized for the task."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jimb.data import folds as folds_lib
from jimb.data import sources
from jimb.data.dataset import Dataset
from jimb.models import keras_import
from jimb.fitting import step as step_lib
from jimb.resampling import complexity
from jimb.training import setup as setup_lib
from jimb import mesh as mesh_lib
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  """A Keras MobileNet without top, with random (non-trivial) weights, saved as researchers do."""
  keras = keras_import.keras()
  model = keras.applications.MobileNet(
      weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3), alpha=0.25)
  rng = np.random.default_rng(0)
  for layer in model.layers:  # fresh BatchNorm statistics (0 / 1) would hide a wrong mapping
    if isinstance(layer, keras.layers.BatchNormalization):
      gamma, beta, mean, var = layer.get_weights()
      layer.set_weights([gamma, beta, rng.normal(0, 0.1, mean.shape).astype(np.float32),
                         rng.uniform(0.5, 1.5, var.shape).astype(np.float32)])
  path = tmp_path_factory.mktemp("keras") / "mobilenet_notop.weights.h5"
  model.save_weights(path)
  return path, model


def test_fold_starts_from_converted_weights(weights_file, monkeypatch):
  path, keras_model = weights_file
  rng = np.random.default_rng(1)
  ds = Dataset(x=rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8),
               y=np.repeat(np.arange(5), 24), class_names=tuple("abcde"), name="rgb")
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  c = tiny_config(**{"model.name": "mobilenet_v1", "model.pretrained": str(path),
                     "model.mobilenet_v1": {"alpha": 0.25}, "imbalance.profile": "none"})
  data, folds, _ = folds_lib.load_data(c, lambda s: None)
  setup = setup_lib.setup_fold(c, data, folds[0], mesh_lib.make_mesh())
  # Keras's "tf" preprocessing replaces the fold's own statistics.
  np.testing.assert_allclose(jax.device_get(setup.mean), 0.5)
  np.testing.assert_allclose(jax.device_get(setup.std), 0.5)
  stem = jax.device_get(setup.init_state.params["stem"]["conv"]["kernel"])
  np.testing.assert_array_equal(stem, keras_model.get_layer("conv1").get_weights()[0])
  assert setup.init_state.params["head"]["out"]["kernel"].shape[-1] == 5
  # The converted network computes Keras's features on Keras-preprocessed input.
  x = rng.random((8, 32, 32, 3), dtype=np.float32)
  mesh = setup.mesh
  feats = step_lib.make_features(setup.graphdef, mesh)(
      setup.init_state.params, setup.init_state.rest,
      mesh_lib.full_batch_to_global({"x": x}, mesh)["x"], setup.mean, setup.std)
  np.testing.assert_allclose(np.asarray(feats), keras_model.predict(x * 2 - 1, verbose=0),
                             atol=1e-4, rtol=1e-4)


def test_missing_weights_file_and_grayscale_are_clear(monkeypatch, tmp_path):
  rgb = Dataset(x=np.zeros((80, 32, 32, 3), np.uint8), y=np.repeat(np.arange(2), 40),
                class_names=("a", "b"), name="rgb")
  monkeypatch.setattr(sources, "load_source", lambda cfg: rgb)
  c = tiny_config(**{"model.name": "mobilenet_v1", "model.pretrained": str(tmp_path / "no.h5"),
                     "model.mobilenet_v1": {"alpha": 0.25}, "imbalance.profile": "none"})
  data, folds, _ = folds_lib.load_data(c, lambda s: None)
  with pytest.raises(ValueError, match="could not load this weights file"):
    setup_lib.setup_fold(c, data, folds[0], mesh_lib.make_mesh())

  ds = Dataset(x=np.zeros((80, 32, 32, 1), np.uint8), y=np.repeat(np.arange(2), 40),
               class_names=("a", "b"), name="grey")
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  c = tiny_config(**{"model.name": "mobilenet_v1", "model.pretrained": "imagenet",
                     "imbalance.profile": "none"})
  data, folds, _ = folds_lib.load_data(c, lambda s: None)
  with pytest.raises(ValueError, match="RGB"):
    setup_lib.setup_fold(c, data, folds[0], mesh_lib.make_mesh())


def test_icost_backbone_space_is_the_pretrained_features(weights_file, monkeypatch):
  """space=backbone: neighbours among the pretrained network's features (Keras's own, as the
  reference) of the fold's training rows, before any fine-tuning."""
  path, keras_model = weights_file
  rng = np.random.default_rng(3)
  ds = Dataset(x=rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8),
               y=np.repeat(np.arange(4), [48, 32, 24, 16]), class_names=tuple("abcd"), name="rgb")
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  c = tiny_config(**{"model.name": "mobilenet_v1", "model.pretrained": str(path),
                     "model.mobilenet_v1": {"alpha": 0.25}, "imbalance.profile": "none",
                     "loss.instance_weights": "icost", "loss.icost.space": "backbone"})
  data, folds, _ = folds_lib.load_data(c, lambda s: None)
  setup = setup_lib.setup_fold(c, data, folds[0], mesh_lib.make_mesh())
  features = keras_model.predict(setup.x["train"] * 2 - 1, verbose=0)
  expected, _ = complexity.icost_weights(features, setup.y["train"], 4)
  np.testing.assert_array_equal(setup.weights, expected)
  inputs, _ = complexity.icost_weights(setup.x["train"], setup.y["train"], 4)
  assert not np.array_equal(inputs, expected)
