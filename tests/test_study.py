"""The resampling study: method names, Table II ranks by hand, and a tiny study end to end."""

from __future__ import annotations

import json

import pytest

import configs.study_001
from jimb import study


def test_parse_method():
  assert study.parse_method("baseline") == ("", "")
  assert study.parse_method("IS_SMOTE") == ("SMOTE", "")
  assert study.parse_method("FS_RUS") == ("", "RandomUnderSampler")
  assert study.parse_method("TS_SMOTE+RUS") == ("SMOTE", "RandomUnderSampler")
  for bad in ("IS_SMOTE+RUS", "XS_RUS", "FS_NearMiss"):
    with pytest.raises(ValueError, match="study"):
      study.parse_method(bad)


def test_table_means_and_average_ranks_by_hand():
  rows = []
  # Two partitionings; A beats B in the first, they tie in the second.
  for fold, (a, b) in enumerate([(0.9, 0.8), (0.7, 0.7)]):
    for method, value in (("A", a), ("B", b)):
      rows.append({"scenario": "linear", "ir": 2.0, "fold": fold, "method": method,
                   "AvAcc": value, "CBA": value, "MAvG": value})
  summary = study.table(rows, ["A", "B"])
  assert summary["A"]["AvAcc"] == pytest.approx((0.8, 1.25))   # ranks 1 and 1.5
  assert summary["B"]["AvAcc"] == pytest.approx((0.75, 1.75))  # ranks 2 and 1.5
  assert "**0.8000 (1.25)**" in study.markdown(summary, ["A", "B"])


def test_tiny_study(tmp_path):
  study.run_study(configs.study_001.get_config("tiny"), tmp_path, log=lambda s: None)
  out = json.loads((tmp_path / "study.json").read_text())
  methods = ["baseline", "IS_SMOTE", "FS_RUS", "TS_SMOTE+RUS"]
  assert sorted(out["summary"]) == sorted(methods)
  assert len(out["rows"]) == 2 * len(methods)                  # 1 scenario x 1 IR x 2 folds
  cell = tmp_path / "linear_ir5"
  # Stage 1 is trained once per image-space resampler; FS and TS re-use it.
  assert sorted(p.name for p in cell.iterdir()) == ["SMOTE", "none"]
  assert (cell / "none" / "eval_FS_RUS.json").exists()
  assert (cell / "SMOTE" / "eval_TS_SMOTE+RUS.json").exists()
  assert "| TS_SMOTE+RUS |" in (tmp_path / "study.md").read_text()
