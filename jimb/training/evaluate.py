"""Evaluation of a fold's model: probabilities (or features) for every example of a part, in
order and unaugmented, the test record's metrics with many / medium / few-shot accuracy, and the
post-hoc temperature and decision rule, fitted on the validation part and applied to the test
part. `setup` is the fold's training.setup.FoldSetup.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jimb import calibration, metrics
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


def test_metrics(config, setup, probs: np.ndarray,
                 y_pred: np.ndarray | None = None) -> dict[str, Any]:
  """Imbalance metrics plus many/medium/few-shot accuracy by training-part class size."""
  out = metrics.classification_metrics(setup.y["test"], probs, setup.num_classes, y_pred)
  out.update(metrics.shot_accuracy(out["per_class"]["recall"], setup.sampler.class_counts(),
                                   config.report.many_shot, config.report.few_shot))
  return out


def post_hoc_parts(config) -> tuple[str, ...]:
  """The parts a fold predicts: the test part, and the validation part when a post-hoc
  temperature or decision rule is fitted on it."""
  on = config.calibration.temperature or config.decision.rule != "argmax"
  return ("val", "test") if on else ("test",)


def positive_class(config, setup, class_names) -> int | None:
  """The decision rule's positive class (calibration.positive_class) on this fold's training
  counts; raises for a rule the task cannot take, before anything is trained."""
  counts = np.bincount(setup.y["train"], minlength=setup.num_classes)
  return calibration.positive_class(config.decision.positive_class, class_names, counts,
                                    config.decision.rule)


def post_hoc(config, setup, probs: dict[str, np.ndarray],
             class_names) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """The fold record's post-hoc entries ("calibration", "decision") and the test arrays they add
  (`probs_calibrated`, `decision_pred`): the POST_HOC steps in order, each fitted on the
  validation probabilities the step before it leaves, `probs["val"]` alone."""
  if not len(setup.y["val"]):
    raise ValueError("post-hoc calibration and decision rules are fitted on the validation part, "
                     f"and fold {setup.fold.index} has none; raise --config.split.val_fraction")
  record, arrays = {}, {}
  for step in POST_HOC:
    entries, added, probs = step(config, setup, probs, class_names)
    record.update(entries)
    arrays.update(added)
  return record, arrays


def _temperature(config, setup, probs, class_names):
  """Temperature scaling; the later steps see the calibrated probabilities. A rule fitted on them
  is the same family of rules (a monotone map of p(positive); p_c / t_c becomes p_c^(1/T) /
  t_c^(1/T)): only its thresholds' scale changes, to probabilities a reader can interpret."""
  del class_names
  if not config.calibration.temperature:
    return {}, {}, probs
  y_val, y_test = setup.y["val"], setup.y["test"]
  log_val, log_test = calibration.log_probs(probs["val"]), calibration.log_probs(probs["test"])
  t = calibration.fit_temperature(log_val, y_val)
  test = calibration.apply_temperature(log_test, t)
  scores = lambda p: {"brier": metrics.brier_score(y_test, p),
                      "ece": metrics.calibration(y_test, p)[0]}
  entry = {
      "temperature": t, "val_nll_before": calibration.nll(log_val, y_val),
      "val_nll_after": calibration.nll(log_val, y_val, t),
      "test_before": scores(probs["test"]), "test_after": scores(test),
      **({"fallback": "every validation example is classified correctly: the NLL has no "
                      "minimum, T stays 1"} if calibration.separated(log_val, y_val) else {})}
  return ({"calibration": entry}, {"probs_calibrated": test},
          {"val": calibration.apply_temperature(log_val, t), "test": test})


def _decision(config, setup, probs, class_names):
  """A decision rule other than argmax, with the test metrics of its predictions."""
  if config.decision.rule == "argmax":
    return {}, {}, probs
  y_val = setup.y["val"]
  decision = calibration.fit_decision(probs["val"], y_val, config.decision.rule,
                                      positive_class(config, setup, class_names),
                                      config.decision.target_sensitivity)
  pred = decision.predict(probs["test"])
  entry = {
      **decision.record(class_names),
      "val": metrics.classification_metrics(y_val, probs["val"], setup.num_classes,
                                            decision.predict(probs["val"])),
      "test": test_metrics(config, setup, probs["test"], pred)}
  return {"decision": entry}, {"decision_pred": pred}, probs


POST_HOC = (_temperature, _decision)
