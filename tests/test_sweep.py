"""Sweep cells (names, overrides, shared stage 1) and the sweep's tables, against hand cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

import configs.default
from jimb import config as config_lib
from jimb import metrics, stats
from jimb.sweep import cells as cells_lib
from jimb.sweep import tables

SWEEP_CONFIGS = ["configs/study_001.py", "configs/study_001.py:tiny", "configs/study_001.py:full",
                 "configs/gan_004.py:npz=x.npz", "configs/cyclegan_000.py:npz=x.npz",
                 "configs/cyclegan_000.py:npz=x.npz,full", "configs/tlc.py",
                 "configs/tlc.py:cpu,npz=x.npz", "configs/cyclegan_000.py:nafld",
                 "configs/focal_000.py:npz=x.npz", "configs/focal_000.py:npz=x.npz,full"]


def _base():
  c = configs.default.get_config("tiny")
  c.lock()
  return c


def test_default_names_are_readable_stable_and_unambiguous():
  name = cells_lib.default_name
  assert name({"imbalance.ratio": 10, "loss.name": "focal"}) == "ratio=10,name=focal"
  # Two keys ending in "name" keep enough of their path to tell them apart.
  assert name({"resample.image.name": "SMOTE", "resample.feature.name": "RUS", "seed": 1}) == (
      "image.name=SMOTE,feature.name=RUS,seed=1")
  assert name({"optim.learning_rate": 0.001, "model.small_cnn.widths": (4, 8)}) == (
      "learning_rate=0.001,widths=4-8")
  assert name({}) == "base"
  assert cells_lib.safe_name("a/b c") == "a_b_c"
  long = cells_lib.safe_name("x" * 300)
  assert len(long) == 100 and long != cells_lib.safe_name("x" * 301)


def test_expand_names_labels_and_configs():
  items = [{"_name": "focal", "_method": "F", "_task": "t", "loss.gamma": 1.0},
           {"optim.learning_rate": 0.01}]
  cells = cells_lib.expand(_base(), items)
  assert [c.name for c in cells] == ["focal", "learning_rate=0.01"]
  assert (cells[0].method, cells[0].task) == ("F", "t")
  assert (cells[1].method, cells[1].task) == ("learning_rate=0.01", "")
  assert cells[0].config.loss.gamma == 1.0 and cells[1].config.optim.learning_rate == 0.01
  assert cells[0].overrides == {"loss.gamma": 1.0}
  base = _base()
  assert base.loss.gamma == 2.0 and base.optim.learning_rate == 3e-3   # the base is untouched


@pytest.mark.parametrize("items, message", [
    ([{"train.epoch": 3}], r"cell 'epoch=3'.*train has no key 'epoch'"),
    ([{"train.epochs": "many"}], r"cannot set train.epochs='many'"),
    ([{"_nmae": "x"}], r"unknown label"),
    ([{"seed": 1}, {"_name": "seed=1", "seed": 2}], r"both named 'seed=1'"),
    (["seed=1"], r"yield dicts"),
])
def test_expand_errors_name_the_cell_and_the_fix(items, message):
  with pytest.raises(ValueError, match=message):
    cells_lib.expand(_base(), items)


def test_option_blocks_take_new_keys_that_their_registry_checks():
  c = config_lib.override(_base(), {"loss.label_smoothing": 0.1, "model.densenet121.remat": True,
                                    "resample.image.k_neighbors": 3}, where="test")
  assert c.loss.label_smoothing == 0.1 and c.model.densenet121.remat
  assert c.resample.image.k_neighbors == 3
  with pytest.raises(ValueError, match="augment has no key 'flip'"):
    config_lib.override(_base(), {"augment.flip": True}, where="test")


def test_cells_that_differ_in_post_hoc_keys_share_one_stage_1():
  base = _base()
  items = [{"_name": "plain"},
           {"_name": "crt", "stage2.method": "crt"},
           {"_name": "smote", "resample.image.name": "SMOTE"},
           {"_name": "smote_crt", "resample.image.name": "SMOTE", "stage2.method": "crt"},
           {"_name": "ros_tau", "resample.image.name": "RandomOverSampler",
            "stage2.method": "tau_norm"}]
  jobs = cells_lib.jobs(cells_lib.expand(base, items), base)
  assert [(j.name, [c.name for c in j.cells]) for j in jobs] == [
      ("plain", ["plain", "crt"]), ("smote", ["smote", "smote_crt"]),
      ("stage1-ros_tau", ["ros_tau"])]
  # A group with no cell that trains gets a stage 1 with the base's post-hoc keys.
  assert jobs[2].stage1.stage2.method == "none"
  assert jobs[2].stage1.resample.image.name == "RandomOverSampler"
  assert cells_lib.trains(jobs[0], jobs[0].cells[0]) and not cells_lib.trains(jobs[0], jobs[0].cells[1])


def test_study_sweep_is_seed_001s_grid():
  cells = cells_lib.expand(_study_base(""), cells_lib.load_sweep("configs/study_001.py"))
  assert len(cells) == 4 * 3 * 9
  jobs = cells_lib.jobs(cells, _study_base(""))
  # Stage 1 is trained once per (scenario, IR, image-space resampler): baseline, RUS, ROS, SMOTE.
  assert len(jobs) == 4 * 3 * 4
  by_name = {c.name: c for c in cells}
  ts = by_name["half_minority_ir10_TS_SMOTE+RUS"].config
  assert (ts.imbalance.profile, ts.imbalance.ratio) == ("half_minority", 10.0)
  assert (ts.resample.image.name, ts.resample.feature.name, ts.stage2.method) == (
      "SMOTE", "RandomUnderSampler", "feature_resample")
  smote_job = next(j for j in jobs if j.name == "half_minority_ir10_IS_SMOTE")
  assert [c.method for c in smote_job.cells] == ["IS_SMOTE", "TS_SMOTE+SMOTE", "TS_SMOTE+RUS"]


def _study_base(arg):
  import configs.study_001
  c = configs.study_001.get_config(arg or None)
  c.lock()
  return c


@pytest.mark.parametrize("config_file", SWEEP_CONFIGS)
def test_every_seed_grid_expands_on_its_config(config_file):
  """Every override key of every seed sweep exists in its config (no typo reaches a run)."""
  import importlib.util
  path, _, arg = config_file.partition(":")
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config(arg or None)
  base.lock()
  cells = cells_lib.expand(base, cells_lib.load_sweep(config_file))
  assert len({c.name for c in cells}) == len(cells) > 1


def test_tlc_sweep_is_table_3():
  cells = cells_lib.expand(configs_tlc(), cells_lib.load_sweep("configs/tlc.py"))
  assert len(cells) == 24
  assert {c.task for c in cells} == {"cifar10_ir10", "cifar10_ir100", "cifar100_ir10",
                                     "cifar100_ir100"}
  cell = next(c for c in cells if c.name == "cifar100_ir10_tlc_focal").config
  assert (cell.data.name, cell.imbalance.ratio, cell.imbalance.max_per_class) == (
      "cifar100", 10.0, 500)
  assert (cell.sampler.name, cell.optim.name, cell.model.densenet121.remat) == ("active", "sgd", True)
  assert (cell.loss.name, cell.loss.gamma) == ("focal", 2.0)
  base = next(c for c in cells if c.name == "cifar10_ir100_baseline_ce").config
  assert (base.sampler.name, base.optim.name, base.transfer.freeze) == ("instance", "adam", "")


def configs_tlc():
  import configs.tlc
  c = configs.tlc.get_config()
  c.lock()
  return c


def test_load_sweep_without_a_sweep_names_the_fix():
  with pytest.raises(ValueError, match="defines no sweep"):
    cells_lib.load_sweep("configs/default.py")


# -- tables -----------------------------------------------------------------------------------


def _entries(table: dict[tuple[str, str], list[float]]):
  """Fake finished cells: {(method, task): per-fold values of every metric} -> collect()'s."""
  out = []
  for (method, task), values in table.items():
    folds = [{"index": i, "test": dict.fromkeys(metrics.METRIC_NAMES, v)}
             for i, v in enumerate(values)]
    summary = {"pooled": {**dict.fromkeys(metrics.METRIC_NAMES, float(np.mean(values))),
                          "per_class": {}},
               "mean_std": {m: {"mean": float(np.mean(values)), "std": float(np.std(values))}
                            for m in metrics.METRIC_NAMES}}
    out.append({"name": f"{task}_{method}", "method": method, "task": task, "overrides": {},
                "workdir": "", "results": {"folds": folds, "data": {"class_names": ["a"]},
                                           "summary": summary}})
  return out


def test_ranked_table_by_hand():
  # Two blocks; A beats B in the first, they tie in the second: ranks (1, 1.5) and (2, 1.5).
  entries = _entries({("A", "t"): [0.9, 0.7], ("B", "t"): [0.8, 0.7]})
  summary = _summary(entries, ["balanced_accuracy", "cba", "mavg"], control="A")
  assert summary["ranking"]["balanced_accuracy"]["A"] == pytest.approx(
      {"mean": 0.8, "average_rank": 1.25})
  assert summary["ranking"]["cba"]["B"] == pytest.approx({"mean": 0.75, "average_rank": 1.75})
  text = tables.ranked_table(summary)
  assert text.splitlines()[0] == "| Approach | AvAcc | CBA | MAvG |"
  assert "| A | **0.8000 (1.25)** | **0.8000 (1.25)** | **0.8000 (1.25)** |" in text
  # Two methods: no Friedman test, but the Wilcoxon comparison with the control.
  assert "skipped" in summary["friedman"]["cba"]
  assert set(summary["wilcoxon_holm"]["cba"]["comparisons"]) == {"B"}


def _summary(entries, metric_names, control=""):
  return tables.summarise(entries, {"metrics": metric_names, "control": control, "alpha": 0.05,
                                    "per_class": False})


def test_blocks_are_task_fold_pairs_and_incomplete_ones_are_left_out():
  rng = np.random.default_rng(0)
  values = {(m, t): rng.uniform(size=3).round(3).tolist() for m in "ABC" for t in ("x", "y")}
  entries = _entries(values)
  entries.append({**entries[0], "name": "unfinished", "method": "D", "results": None})
  summary = _summary(entries, ["balanced_accuracy"])
  # D has no finished cell, so no block is complete for all four methods.
  assert summary["blocks"]["balanced_accuracy"] == []
  summary = _summary(entries[:-1], ["balanced_accuracy"], control="B")
  blocks = summary["blocks"]["balanced_accuracy"]
  assert blocks == [["x", 0], ["x", 1], ["x", 2], ["y", 0], ["y", 1], ["y", 2]]
  scores = np.asarray([[values[(m, t)][f] for m in "ABC"] for t, f in blocks])
  # The tests are the stats module's on exactly that matrix, with the methods named.
  assert summary["friedman"]["balanced_accuracy"]["chi2"] == stats.friedman(scores)["chi2"]
  nemenyi = stats.nemenyi(scores)
  assert summary["nemenyi"]["balanced_accuracy"]["critical_difference"] == (
      nemenyi["critical_difference"])
  assert summary["nemenyi"]["balanced_accuracy"]["p_values"]["A"]["C"] == nemenyi["p_values"][0, 2]
  wilcoxon = stats.wilcoxon_holm(scores, control=1)
  assert summary["wilcoxon_holm"]["balanced_accuracy"]["comparisons"]["C"]["p_holm"] == (
      wilcoxon["comparisons"][2]["p_holm"])
  json.dumps(summary)   # sweep.json holds it as it is
  with pytest.raises(ValueError, match="control='Z' is not a method"):
    _summary(entries[:-1], ["balanced_accuracy"], control="Z")


def test_sweep_settings_refuse_unknown_metrics():
  c = _base()
  with c.unlocked():
    c.sweep.metrics = "macro_f1,f2"
  with pytest.raises(ValueError, match=r"unknown metric\(s\) \['f2'\]"):
    tables.settings(c)
