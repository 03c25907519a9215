"""Starting a fold from converted Keras ImageNet weights (`--config.model.pretrained`)."""

from __future__ import annotations

import functools
import json
from typing import Any

from flax import nnx
import numpy as np

from jimb import multihost
from jimb.models import keras_import, model_options


@functools.lru_cache(maxsize=2)
def _keras_model(name: str, input_shape: tuple, num_classes: int, weights: str, options: str):
  """Built once per run, not once per fold: building a Keras application takes tens of seconds."""
  try:
    return keras_import.build_keras_twin(name, input_shape, num_classes, weights=weights,
                                         options=json.loads(options))
  except (OSError, ValueError, ConnectionError) as e:
    if weights != "imagenet":
      raise ValueError(f"--config.model.pretrained={weights!r}: Keras could not load this weights "
                       f"file for {name}: {e}") from e
    raise RuntimeError(
        f"Keras could not fetch ImageNet weights for {name} ({type(e).__name__}: {e}). Without "
        "network access, download the Keras weights file elsewhere and set "
        "--config.model.pretrained=/path/to/weights.h5") from e


def load(model_cfg, graphdef: nnx.GraphDef, params: Any, rest: Any, input_shape, num_classes: int):
  """Replaces the backbone (and the head when shapes allow) with converted Keras weights.

  Returns (params, rest, mean, std): the input statistics the converted weights expect, which
  replace the fold's own normalisation.
  """
  if input_shape[-1] != 3:
    raise ValueError(f"ImageNet weights take RGB images; the data has {input_shape[-1]} channel(s). "
                     "Use an RGB dataset or leave --config.model.pretrained empty")
  model = nnx.merge(graphdef, params, rest, copy=True)
  options = json.dumps(model_options(model_cfg), sort_keys=True)  # hashable for the cache
  keras_model = multihost.writer_first(
      lambda: _keras_model(model_cfg.name, tuple(input_shape), num_classes,
                           model_cfg.pretrained, options), "keras weights fetched")
  mean, std = keras_import.convert(model, model_cfg.name, keras_model)
  _, params, rest = nnx.split(model, nnx.Param, ...)
  return params, rest, np.asarray(mean, np.float32), np.asarray(std, np.float32)
