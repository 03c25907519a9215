"""Evaluation of a fold's model: probabilities (or features) for every example of a part, in
order and unaugmented, and the test record's metrics with many / medium / few-shot accuracy.
`setup` is the fold's training.setup.FoldSetup.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jimb import metrics
from jimb.fitting import step as step_lib


def batched(setup, fn, state: step_lib.TrainState, part: str,
             batch_size: int) -> np.ndarray:
  """`fn` over every example of `part`, in order."""
  return step_lib.apply_batched(fn, state, setup.x[part], setup.mean, setup.std, setup.mesh, batch_size)


def predict(setup, predict_fn, state: step_lib.TrainState, part: str,
            batch_size: int) -> np.ndarray:
  """Softmax probabilities for every example of `part`, in order; padding is masked away."""
  if not len(setup.y[part]):
    return np.zeros((0, setup.num_classes), np.float32)
  return batched(setup, predict_fn, state, part, batch_size)


def test_metrics(config, setup, probs: np.ndarray) -> dict[str, Any]:
  """Imbalance metrics plus many/medium/few-shot accuracy by training-part class size."""
  out = metrics.classification_metrics(setup.y["test"], probs, setup.num_classes)
  out.update(metrics.shot_accuracy(out["per_class"]["recall"], setup.sampler.class_counts(),
                                   config.report.many_shot, config.report.few_shot))
  return out
