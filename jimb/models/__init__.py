"""Classifiers by name. Importing this package registers every model module."""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax

from jimb.models.base import MODELS, Classifier
from jimb.models import mlp as _mlp  # noqa: F401  (registers)
from jimb.models import small_cnn as _small_cnn  # noqa: F401  (registers)


def build_model(model_cfg, num_classes: int, input_shape: Sequence[int],
                key: jax.Array) -> Classifier:
  """Builds `model_cfg.name` for inputs of `input_shape` (no batch axis)."""
  options = {k: v for k, v in model_cfg.items() if k != "name"}
  return MODELS.build(model_cfg.name, options, num_classes=num_classes,
                      input_shape=tuple(input_shape), rngs=nnx.Rngs(params=key))


__all__ = ["MODELS", "Classifier", "build_model"]
