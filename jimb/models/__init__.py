"""Classifiers by name. Importing this package registers every model module."""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax

from jimb.models.base import MODELS, Classifier
from jimb.models import mlp as _mlp  # noqa: F401  (registers)
from jimb.models import small_cnn as _small_cnn  # noqa: F401  (registers)
from jimb.models import resnet as _resnet  # noqa: F401  (registers)
from jimb.models import vgg as _vgg  # noqa: F401  (registers)
from jimb.models import mobilenet as _mobilenet  # noqa: F401  (registers)
from jimb.models import efficientnet as _efficientnet  # noqa: F401  (registers)
from jimb.models import densenet as _densenet  # noqa: F401  (registers)


# Keys of the model block that the runner reads; every other key is a model option.
RUNNER_KEYS = ("name", "pretrained")


def model_options(model_cfg) -> dict:
  """The options for `model_cfg.name`: the block's plain keys plus its sub-block of that name.

  A config keeps each model's own options in a sub-block named after it (`model.small_cnn.widths`),
  so `--config.model.name=<other>` switches models without the old model's options getting in
  the way; plain keys (`dropout`, `dtype`) apply to whichever model is chosen.
  """
  options = {}
  for key, value in model_cfg.items():
    if key in RUNNER_KEYS or key in MODELS.names():
      continue
    options[key] = value
  own = model_cfg.get(model_cfg.name)
  if own is not None:
    options.update(own.to_dict() if hasattr(own, "to_dict") else dict(own))
  return options


def build_model(model_cfg, num_classes: int, input_shape: Sequence[int],
                key: jax.Array) -> Classifier:
  """Builds `model_cfg.name` for inputs of `input_shape` (no batch axis)."""
  return MODELS.build(model_cfg.name, model_options(model_cfg), num_classes=num_classes,
                      input_shape=tuple(input_shape), rngs=nnx.Rngs(params=key))


__all__ = ["MODELS", "Classifier", "build_model", "model_options"]
