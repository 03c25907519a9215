"""results.json's calibration, per-class and bootstrap fields, and the printed summary."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from jimb import config as config_lib
from jimb import metrics, report
from jimb.sweep import tables
from tests.helpers import tiny_config


def _results(bootstrap: int, seed: int = 0) -> dict:
  """Two folds of a 3-class problem whose first fold lacks class 2, assembled like a run."""
  rng = np.random.default_rng(seed)
  labels = np.array([0] * 50 + [1] * 25 + [2] * 5)
  labels[:5] = 2
  logits = rng.normal(size=(80, 3)) + 2.0 * np.eye(3)[labels]
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  tests = [np.r_[5:30, 50:62], np.r_[0:5, 30:50, 62:80]]
  folds = [types.SimpleNamespace(index=i, test=t) for i, t in enumerate(tests)]
  records = [{"index": i, "test": metrics.classification_metrics(labels[t], probs[t], 3)}
             for i, t in enumerate(tests)]
  config = {"seed": seed, "report": {"bootstrap": bootstrap},
            "train": {"select_metric": "macro_f1"}}
  data = {"class_names": ["nevus", "melanoma", "carcinoma"]}
  return report.assemble(config, data, folds, records, labels, [probs[t] for t in tests])


def test_records_and_summary_carry_the_new_metrics():
  results = _results(bootstrap=200)
  fold0 = results["folds"][0]["test"]
  assert np.isnan(fold0["per_class"]["roc_auc"][2])  # class 2 absent from fold 0
  assert np.isnan(fold0["per_class"]["sensitivity"][2])
  summary = results["summary"]
  for name in metrics.LOWER_IS_BETTER:
    values = [f["test"][name] for f in results["folds"]]
    assert summary["mean_std"][name]["mean"] == pytest.approx(np.mean(values))
  pooled = summary["pooled"]
  assert sum(pooled["calibration_bins"]["count"]) == 80
  assert set(pooled["ci"]) == set(metrics.CI_METRICS)
  for name, (low, high) in pooled["ci"].items():
    assert low <= pooled[name] <= high, name
  assert "200 resamples" in summary["ci_note"]
  # NaN survives the round trip, as results.json writes it.
  again = json.loads(json.dumps(results, allow_nan=True))
  assert np.isnan(again["folds"][0]["test"]["per_class"]["roc_auc"][2])
  assert again["summary"]["pooled"]["ci"] == pooled["ci"]


def test_bootstrap_is_seeded_by_the_run_and_off_at_zero():
  assert _results(100)["summary"]["pooled"]["ci"] == _results(100)["summary"]["pooled"]["ci"]
  off = _results(0)
  assert "ci" not in off["summary"]["pooled"] and "ci_note" not in off["summary"]
  assert "95% CI" not in report.summary_table(off)


def test_summary_table_shows_brier_ece_and_intervals():
  results = _results(bootstrap=100)
  text = report.summary_table(results)
  lines = text.splitlines()
  header = next(line for line in lines if "macro_f1" in line and "brier" in line)
  assert header.split()[-2:] == ["brier", "ece"]
  ci_line = next(line for line in lines if line.strip().startswith("pooled 95% CI"))
  low, high = results["summary"]["pooled"]["ci"]["brier"]
  assert ci_line.endswith(f"[{low:.3f}, {high:.3f}]")  # ece has no interval
  assert ci_line.count("[") == len(metrics.CI_METRICS)
  assert "lower is better for brier and ece" in text
  assert "specificity" in text and "sensitivity" in text


def test_max_metric_diff_covers_brier_and_takes_older_records():
  new = _results(0)["folds"][0]["test"]
  moved = {**new, "brier": new["brier"] + 0.25}
  assert report.max_metric_diff(new, moved) == pytest.approx(0.25)
  old = {k: v for k, v in new.items() if k not in metrics.LOWER_IS_BETTER}
  assert report.max_metric_diff(old, new) == 0.0


@pytest.mark.parametrize("name", metrics.LOWER_IS_BETTER)
def test_lower_is_better_metrics_cannot_be_selected_or_ranked(name):
  config = tiny_config(**{"train.select_metric": name})
  with pytest.raises(ValueError, match="select_metric"):
    config_lib.validate(config)
  config = tiny_config(**{"sweep.metrics": name})
  with pytest.raises(ValueError, match="unknown metric"):
    tables.settings(config)


def test_bootstrap_count_is_checked():
  config_lib.validate(tiny_config(**{"report.bootstrap": 0}))
  with pytest.raises(ValueError, match="report.bootstrap"):
    config_lib.validate(tiny_config(**{"report.bootstrap": -1}))
