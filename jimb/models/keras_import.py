"""Keras ImageNet weights -> jimb Flax parameters.

A researcher with a network gets ImageNet weights from `keras.applications` (Keras 3, an
optional extra: `pip install -e '.[keras]'`). Each model family registers a converter that copies
a Keras model's layers into the matching jimb model, layer by layer, with the helpers below; the
backbone is kept and the head is replaced when the class count differs. Converted models expect
the inputs Keras's own preprocessing produces, so each converter also says which mean/std (in
[0, 1] pixel units) that is; the runner applies it instead of `data.normalize`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Callable

from flax import nnx
import numpy as np

from jimb.registry import Registry

# model name -> fn(model, keras_model) copying every layer present in the Keras model.
CONVERTERS = Registry("Keras converter")

# Keras `preprocess_input` modes as (x - mean) / std on RGB pixels in [0, 1]. "caffe" also
# expects BGR channel order: converters fold that into the first convolution (flip_input_channels).
PREPROCESSING = {
    "torch": (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])),
    "tf": (np.full(3, 0.5), np.full(3, 0.5)),
    "caffe": (np.array([123.68, 116.779, 103.939]) / 255.0, np.full(3, 1.0 / 255.0)),
}


@dataclasses.dataclass(frozen=True)
class KerasApp:
  """How to build the Keras twin of a jimb model and what input it expects."""

  constructor: str                 # keras.applications attribute, e.g. "EfficientNetB3"
  preprocessing: str               # a PREPROCESSING key, or "model" (normalisation inside the model)


KERAS_APPS: dict[str, KerasApp] = {}


def register_keras_app(name: str, constructor: str, preprocessing: str) -> Callable:
  """Declares a Keras twin for model `name` and registers its converter."""
  def decorator(fn):
    KERAS_APPS[name] = KerasApp(constructor, preprocessing)
    return CONVERTERS.register(name)(fn)
  return decorator


def keras():
  """Imports Keras on the JAX backend, or says how to install it."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  try:
    import keras as keras_lib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("converting Keras weights needs Keras 3: pip install -e '.[keras]'") from e
  return keras_lib


def _weights(layer) -> list[np.ndarray]:
  return [np.asarray(w) for w in layer.get_weights()]


def _assign(variable: nnx.Variable, value: np.ndarray, where: str) -> None:
  if variable[...].shape != value.shape:
    raise ValueError(f"{where}: Keras weight of shape {value.shape} does not fit the jimb "
                     f"parameter of shape {variable[...].shape}; the architectures differ")
  variable[...] = value.astype(variable[...].dtype)


def set_conv(conv: nnx.Conv, layer, flip_input_channels: bool = False) -> None:
  """Conv2D (kernel HWIO, optional bias), both frameworks in the same layout."""
  w = _weights(layer)
  kernel = w[0][:, :, ::-1, :] if flip_input_channels else w[0]
  _assign(conv.kernel, kernel, layer.name)
  if conv.bias is not None:
    if len(w) < 2:
      raise ValueError(f"{layer.name}: the Keras layer has no bias but the jimb conv does")
    _assign(conv.bias, w[1], layer.name)
  elif len(w) > 1:
    raise ValueError(f"{layer.name}: the Keras layer has a bias but the jimb conv does not")


def set_depthwise(conv: nnx.Conv, layer) -> None:
  """DepthwiseConv2D (H, W, C, multiplier) -> grouped conv (H, W, 1, C * multiplier)."""
  w = _weights(layer)
  h, k, c, m = w[0].shape
  _assign(conv.kernel, w[0].reshape(h, k, 1, c * m), layer.name)
  if conv.bias is not None:
    _assign(conv.bias, w[1], layer.name)


def set_dense(linear: nnx.Linear, layer) -> None:
  """Dense, or a 1x1 Conv2D used as a classifier (as in Keras's MobileNet V1)."""
  w = _weights(layer)
  _assign(linear.kernel, w[0].reshape(linear.kernel[...].shape), layer.name)
  if linear.bias is not None:
    _assign(linear.bias, w[1].reshape(-1), layer.name)


def set_batch_norm(norm: nnx.BatchNorm, layer) -> None:
  """BatchNormalization: gamma, beta, moving mean, moving variance (and the same epsilon)."""
  if not np.isclose(norm.epsilon, layer.epsilon):
    raise ValueError(f"{layer.name}: Keras epsilon {layer.epsilon} but jimb uses {norm.epsilon}")
  weights = dict(zip([v.path.split("/")[-1] for v in layer.weights], _weights(layer)))
  targets = {"gamma": norm.scale, "beta": norm.bias, "moving_mean": norm.mean,
             "moving_variance": norm.var}
  for name, value in weights.items():
    if targets.get(name) is not None:
      _assign(targets[name], value, layer.name)


# Keras constructor arguments the runner decides; model options never override them.
_RESERVED = ("weights", "input_shape", "include_top", "classes", "pooling", "input_tensor",
             "classifier_activation", "name")


def build_keras_twin(name: str, input_shape, num_classes: int, weights: str | None = None,
                     options: dict | None = None):
  """The Keras model that `name` mirrors: `weights=None` (random) or "imagenet" or a file.

  `options` are the jimb model's options; those the Keras constructor also takes (e.g. MobileNet's
  `alpha`) are passed on so both have the same architecture. With pretrained weights and another
  class count the top is left out (`include_top=False`) and only the backbone is converted.
  """
  app = KERAS_APPS.get(name)
  if app is None:
    raise ValueError(f"model {name!r} has no Keras twin; pretrained weights exist for "
                     f"{sorted(KERAS_APPS)}")
  k = keras()
  constructor = getattr(k.applications, app.constructor)
  accepted = inspect.signature(constructor).parameters
  kwargs = {key: value for key, value in (options or {}).items()
            if key in accepted and key not in _RESERVED}
  top = weights is None or num_classes == 1000
  kwargs.update(weights=weights, input_shape=tuple(input_shape), include_top=top)
  if top:
    kwargs.update(classes=num_classes, classifier_activation=None)  # logits, as jimb's heads give
  else:
    kwargs["pooling"] = "avg"
  return constructor(**kwargs)


def convert(model: nnx.Module, name: str, keras_model) -> tuple[np.ndarray, np.ndarray]:
  """Copies `keras_model`'s weights into `model` (in place); returns the input mean/std it needs."""
  CONVERTERS.get(name)(model, keras_model)
  return input_statistics(name, keras_model)


def input_statistics(name: str, keras_model) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) over RGB pixels in [0, 1] that reproduce Keras's preprocessing for `name`."""
  app = KERAS_APPS[name]
  if app.preprocessing != "model":
    mean, std = PREPROCESSING[app.preprocessing]
    return mean.astype(np.float32), std.astype(np.float32)
  return MODEL_STATISTICS[name](keras_model)


# model name -> fn(keras_model) -> (mean, std): for models that normalise inside themselves.
MODEL_STATISTICS: dict[str, Callable] = {}
