"""Balancing a fold's training part: the one stage between the data and the trainer.

Given a fold's real training rows it returns the training pool (pool.py): the real rows, the
resampled row indices and any synthetic rows after them, each with its provenance. It owns the
two ways to balance, image-space resampling (jimb.resampling) and synthesis by generative models
(synthesis.py, over the jimb.generative library), and the rule that a run uses one of them. It
only ever sees the training part, so nothing it makes can reach evaluation.

It also registers GANOverSampler as a resampler by name, so that the resampling library needs
no generative models of its own.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import numpy as np

from jimb import tracking
from jimb.balance import pool as pool_lib
from jimb.balance import synthesis as synthesis_lib
from jimb.generative.oversampler import GANOverSampler
from jimb.resampling import samplers

samplers.SAMPLERS.register("GANOverSampler")(GANOverSampler)

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Balanced:
  pool: pool_lib.TrainingPool
  synthesis: dict | None        # the synthesis stage's report (requested / kept rows, scores)


def balance(config, x: np.ndarray, y: np.ndarray, class_names, fold_index: int,
            mean: jax.Array, std: jax.Array, mesh: jax.sharding.Mesh,
            cache_root: str | os.PathLike, log: Log = print,
            track: tracking.Tracking = tracking.OFF) -> Balanced:
  """The training pool of fold `fold_index`, whose real training part is (x, y).

  `mean` / `std` normalise inputs for the synthesis judge; `cache_root` holds the synthesis
  stage's generators and samples (config.synth.cache_dir or the workdir); `track` shows and
  records the generators' training.
  """
  if config.synth.method == "none":
    return Balanced(pool_lib.training_pool(x, y, config.resample, config.seed * 1000 + fold_index,
                                           fold_index), None)
  if config.resample.image.name:
    raise ValueError("choose one balancing stage of the training part: "
                     "--config.synth.method or --config.resample.image.name")
  made = synthesis_lib.synthesise(config, x, y, class_names, fold_index, mean, std, mesh,
                                  cache_root, log, track)
  return Balanced(pool_lib.with_synthetic(x, y, made.x, made.y), made.report)
