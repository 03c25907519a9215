"""Seed 001's study: resampling in image space (IS), feature space (FS) and both (TS) over
imbalance scenarios, summarised as its Table II (mean AvAcc, CBA, MAvG and average ranks).

workdir/<scenario>_ir<IR>/<stage-1 resampler>/   one k-fold experiment per stage 1
workdir/<scenario>_ir<IR>/<...>/eval_<method>.json  FS / TS: stage 2 on that stage 1's checkpoints
workdir/study.json, workdir/study.md             every (scenario, IR, fold, method) row; the table

Methods that share stage 1 share its training: FS methods re-use the baseline's checkpoints and
TS methods those of their image-space resampler, and only the head is re-trained per method.
Every experiment is resumable, so a killed study continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Callable

import numpy as np
from scipy import stats

from jimb import experiment

Log = Callable[[str], None]
SHORT = {"RUS": "RandomUnderSampler", "ROS": "RandomOverSampler", "SMOTE": "SMOTE"}
METRICS = {"AvAcc": "balanced_accuracy", "CBA": "cba", "MAvG": "mavg"}


def parse_method(method: str) -> tuple[str, str]:
  """"IS_SMOTE" -> ("SMOTE", ""), "FS_RUS" -> ("", "RandomUnderSampler"),
  "TS_SMOTE+RUS" -> ("SMOTE", "RandomUnderSampler"), "baseline" -> ("", "")."""
  if method == "baseline":
    return "", ""
  space, _, names = method.partition("_")
  parts = names.split("+")
  try:
    resamplers = [SHORT[p] for p in parts]
  except KeyError as e:
    raise ValueError(f"unknown resampler {e} in study method {method!r}; use {sorted(SHORT)}") from e
  if space == "IS" and len(parts) == 1:
    return resamplers[0], ""
  if space == "FS" and len(parts) == 1:
    return "", resamplers[0]
  if space == "TS" and len(parts) == 2:
    return resamplers[0], resamplers[1]
  raise ValueError(f"unknown study method {method!r}; write baseline, IS_<r>, FS_<r> or "
                   f"TS_<r>+<r> with r in {sorted(SHORT)} (--config.study.methods)")


def _cell_config(config, scenario: str, ratio: float, image: str, feature: str):
  c = copy.deepcopy(config)
  c.imbalance.profile, c.imbalance.ratio = scenario, ratio
  c.resample.image.name = image
  c.resample.feature.name = feature
  c.stage2.method = "feature_resample" if feature else "none"
  return c


def run_study(config, workdir: str | pathlib.Path, log: Log = print) -> dict:
  """Runs (or resumes) every cell of `config.study` and writes the Table II summary."""
  workdir = pathlib.Path(workdir)
  s = config.study
  methods = [m.strip() for m in s.methods.split(",") if m.strip()]
  plans = {m: parse_method(m) for m in methods}
  rows = []
  for scenario in [x.strip() for x in s.scenarios.split(",") if x.strip()]:
    for ratio in [float(r) for r in str(s.ratios).split(",")]:
      for image in dict.fromkeys(image for image, _ in plans.values()):
        cell = workdir / f"{scenario}_ir{ratio:g}" / (image or "none")
        log(f"study: {scenario}, IR {ratio:g}, stage 1 with {image or 'no resampling'}")
        stage1 = experiment.train_and_evaluate(
            _cell_config(config, scenario, ratio, image, ""), cell, log=log)
        for method, (m_image, feature) in plans.items():
          if m_image != image:
            continue
          results = stage1 if not feature else experiment.evaluate(
              _cell_config(config, scenario, ratio, image, feature), cell, log=log,
              output=f"eval_{method}.json")
          for record in results["folds"]:
            rows.append({"scenario": scenario, "ir": ratio, "fold": record["index"],
                         "method": method,
                         **{name: record["test"][key] for name, key in METRICS.items()}})
  summary = table(rows, methods)
  (workdir / "study.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
  text = markdown(summary, methods)
  (workdir / "study.md").write_text(text + "\n")
  log(text)
  return {"rows": rows, "summary": summary}


def table(rows: list[dict], methods: list[str]) -> dict:
  """{method: {metric: (mean, average rank)}}: ranks within each (scenario, IR, fold), 1 best,
  ties sharing the mean rank, then averaged over those partitionings as in the seed."""
  out = {m: {} for m in methods}
  partitions = sorted({(r["scenario"], r["ir"], r["fold"]) for r in rows})
  by_key = {(r["scenario"], r["ir"], r["fold"], r["method"]): r for r in rows}
  for name in METRICS:
    values = np.asarray([[by_key[(*p, m)][name] for m in methods] for p in partitions])
    ranks = np.vstack([stats.rankdata(-v) for v in values])
    for j, m in enumerate(methods):
      out[m][name] = (float(values[:, j].mean()), float(ranks[:, j].mean()))
  return out


def markdown(summary: dict, methods: list[str]) -> str:
  best = {name: max(summary[m][name][0] for m in methods) for name in METRICS}
  lines = ["| Approach | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
  for m in methods:
    cells = [f"{summary[m][n][0]:.4f} ({summary[m][n][1]:.2f})" for n in METRICS]
    cells = [f"**{c}**" if summary[m][n][0] == best[n] else c for c, n in zip(cells, METRICS)]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
