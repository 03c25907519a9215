"""The synthesis stage inside the runner: generators and the judge see only a fold's training
part, synthetic rows only train, the budget is met, and trained generators are cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
from imblearn.pipeline import Pipeline
from sklearn.linear_model import LogisticRegression

from helpers import assert_same_metrics, tiny_config
from jimb import config as config_lib
from jimb import experiment
from jimb.data import sources, splits
from jimb.data.dataset import Dataset
from jimb.balance import judge, synthesis
from jimb.generative import cyclegan, gan
from jimb.generative.oversampler import GANOverSampler
from jimb.sweep import cells, executors, job, tables
from jimb.training import evaluate

QUIET = lambda s: None
COUNTS = (60, 24, 12)
TINY_GAN = {"hidden": "8", "latent_dim": 4, "steps": 3, "batch_size": 8}


def _id_dataset(counts=COUNTS):
  """A table whose first feature is the example's index, so every use can be traced."""
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(len(counts)), counts)
  x = np.column_stack([np.arange(len(y)), rng.normal(size=(len(y), 3)) + 2 * y[:, None]])
  return Dataset(x=x.astype(np.float32), y=y, class_names=tuple("abc"), name="ids")


def _gan(method, **options):
  """Tiny options for `method`'s block."""
  return {f"synth.{method}.{k}": v for k, v in {**TINY_GAN, **options}.items()}


def _config(**overrides):
  return tiny_config(**{
      "model.name": "mlp", "model.mlp": {"hidden": (8,), "dropout": 0.0}, "train.epochs": 1,
      "train.batch_size": 16, "split.folds": 3, "split.only_folds": "0",
      "augment.enabled": False, "imbalance.profile": "none", "sampler.name": "instance",
      "data.normalize": "none", "synth.method": "lsgan", **_gan("lsgan"),
      "synth.judge_epochs": 1, "synth.judge_batch_size": 16, "synth.filter": "none",
      "synth.log_every": 1, **overrides})


def _fold0(config, ds):
  return splits.make_folds(ds, config.split.folds, config.split.val_fraction, seed=config.seed)[0]


def test_generators_and_judge_see_only_the_training_part(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  seen = {"gan": [], "judge": [], "predicted": {}}
  real_train, real_judge, real_predict = gan.train, judge.train, evaluate.predict

  def spy_gan(spec, data, key, **kw):
    seen["gan"].append([d[:, 0].copy() for d in data])
    return real_train(spec, data, key, **kw)

  def spy_judge(model_cfg, x, y, *args, **kw):
    seen["judge"].append(x[:, 0].copy())
    return real_judge(model_cfg, x, y, *args, **kw)

  def spy_predict(setup, fn, state, part, batch_size):
    seen["predicted"].setdefault(part, []).append(setup.x[part][:, 0].copy())
    return real_predict(setup, fn, state, part, batch_size)

  monkeypatch.setattr(gan, "train", spy_gan)
  monkeypatch.setattr(judge, "train", spy_judge)
  monkeypatch.setattr(evaluate, "predict", spy_predict)
  config = _config(**{"synth.filter": "knn", "synth.filter_k": 3})
  results = experiment.train_and_evaluate(config, tmp_path / "run", log=QUIET)

  fold = _fold0(config, ds)
  train = set(fold.train.tolist())
  counts = np.bincount(ds.y[fold.train], minlength=3)
  [members] = seen["gan"]                          # one lsgan per minority class, stacked
  assert len(members) == 2
  for c, ids in zip((1, 2), members):
    np.testing.assert_array_equal(np.sort(ids), np.sort(fold.train[ds.y[fold.train] == c]))
  assert set(seen["judge"][0].tolist()) == train
  # Evaluation: every validation and test row exactly once, real rows only.
  for part, index in (("val", fold.val), ("test", fold.test)):
    for ids in seen["predicted"][part]:
      np.testing.assert_array_equal(ids, index.astype(np.float32))
  [record] = results["folds"]
  assert record["sizes"]["test"] == len(fold.test)
  kept = record["class_counts"]["train_synthetic"]
  report = record["synthesis"]
  assert report["requested"] == {"b": int(counts[0] - counts[1]), "c": int(counts[0] - counts[2])}
  assert kept == [0, report["kept"]["b"], report["kept"]["c"]]
  assert 0 <= report["filter"]["rejection_rate"] <= 1
  assert set(report["scores"]) == {"b", "c"}


def test_synthetic_rows_meet_the_budget_and_generators_are_reused(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  cache = str(tmp_path / "cache")
  first = experiment.train_and_evaluate(_config(**{"synth.cache_dir": cache}), tmp_path / "a",
                                        log=QUIET)
  counts = np.bincount(ds.y[_fold0(_config(), ds).train], minlength=3)
  assert first["folds"][0]["class_counts"]["train_synthetic"] == (counts.max() - counts).tolist()

  def refuse(*args, **kw):
    raise AssertionError("trained again although cached")

  monkeypatch.setattr(gan, "train", refuse)
  monkeypatch.setattr(judge, "train", refuse)
  again = experiment.train_and_evaluate(_config(**{"synth.cache_dir": cache}), tmp_path / "b",
                                        log=QUIET)
  assert_same_metrics(again, first)
  # Another budget draws new samples from the generators and judge cached at their last step.
  monkeypatch.undo()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  at_start, real_train = [], gan.train
  monkeypatch.setattr(gan, "train", lambda *a, **k: at_start.append(k["ckpt"].latest_epoch())
                      or real_train(*a, **k))
  other = experiment.train_and_evaluate(
      _config(**{"synth.cache_dir": cache, "synth.budget": "min_count", "synth.min_count": 30}),
      tmp_path / "c", log=QUIET)
  assert at_start == [3]                            # restored after its 3 steps, not retrained
  assert other["folds"][0]["class_counts"]["train_synthetic"] == np.maximum(
      30 - counts, 0).tolist()


def test_cyclegan_translates_images_and_saves_a_grid(monkeypatch, tmp_path):
  c = tiny_config(**{"split.folds": 2, "split.only_folds": "0", "train.epochs": 1,
                     "synth.method": "cyclegan", "synth.cyclegan.ngf": 4,
                     "synth.cyclegan.ndf": 4, "synth.cyclegan.n_blocks": 1,
                     "synth.cyclegan.n_layers_D": 1, "synth.cyclegan.batch_size": 8,
                     "synth.cyclegan.n_epochs": 1, "synth.cyclegan.n_epochs_decay": 0,
                     "synth.budget": "min_count",
                     "synth.min_count": 90, "synth.classes": "7,8,9", "synth.judge_epochs": 1,
                     "synth.judge_batch_size": 32, "synth.log_every": 50})
  results = experiment.train_and_evaluate(c, tmp_path / "run", log=QUIET)
  report = results["folds"][0]["synthesis"]
  assert set(report["requested"]) <= {"7", "8", "9"}
  directory = tmp_path / "run" / "synthesis" / "fold_0"
  [grid] = directory.glob("samples_*/grid.png")
  assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads(next(directory.glob("samples_*/losses.json")).read_text())


def test_bad_synthesis_settings_name_the_fix(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  with pytest.raises(ValueError, match="synth.method"):
    experiment.train_and_evaluate(_config(**{"synth.method": "vae"}), tmp_path / "a", log=QUIET)
  with pytest.raises(ValueError, match="one balancing stage"):
    experiment.train_and_evaluate(_config(**{"resample.image": {"name": "RandomOverSampler"}}),
                                  tmp_path / "b", log=QUIET)
  with pytest.raises(ValueError, match="translates images"):
    experiment.train_and_evaluate(_config(**{"synth.method": "cyclegan"}), tmp_path / "c",
                                  log=QUIET)
  misspelt = _config()
  misspelt.synth.lsgan.stepz = 3
  with pytest.raises(ValueError, match=r"synth.lsgan has no option\(s\) \['stepz'\]"):
    experiment.train_and_evaluate(misspelt, tmp_path / "d", log=QUIET)
  outside = _config()
  outside.synth.steps = 3     # a generator option outside its method's block
  with pytest.raises(ValueError, match=r"synth has no key\(s\) \['steps'\].*synth.lsgan.steps"):
    experiment.train_and_evaluate(outside, tmp_path / "e", log=QUIET)


def test_each_method_block_holds_its_options_at_the_generators_defaults():
  base = config_lib.base_config().synth
  blocks = {k for k, v in base.items() if hasattr(v, "to_dict")}
  assert blocks == set(synthesis.METHODS.names())
  for kind in gan.KINDS:
    assert set(base[kind]) == set(gan.OPTIONS[kind])
    for shape in ((28, 28, 1), (5,)):
      assert gan.spec_from_config(kind, base[kind], shape, 3) == gan.GANSpec(
          kind, shape, num_classes=3 if kind == "cgan" else 0)
  assert set(base.cyclegan) == set(cyclegan.OPTIONS)
  assert cyclegan.spec_from_config(base.cyclegan, (32, 32, 3)) == cyclegan.CycleSpec((32, 32, 3))


def test_cyclegan_source_class_is_the_majority_or_a_named_class():
  y = np.repeat(np.arange(3), (5, 9, 2))
  config = _config(**{"synth.method": "cyclegan"})
  for option, source in (("majority", 1), ("c", 2), ("0", 0)):
    config.synth.cyclegan.source_class = option
    add, got = synthesis.plan(config, synthesis.build(config, (32, 32, 3), 3), y, list("abc"))
    assert got == source and source not in add
  config.synth.cyclegan.source_class = "zebra"
  with pytest.raises(ValueError, match="source_class='zebra' names no class with training rows"):
    synthesis.plan(config, synthesis.build(config, (32, 32, 3), 3), y, list("abc"))


def test_arms_side_by_side_tabulate_per_class_and_synthesis_scores(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  config = _config(**{"synth.method": "none", "sweep.per_class": True})
  arms = config_lib.arms({"original": {}, "gan": {"synth.method": "lsgan",
                                                  "synth.lsgan.steps": 2}})
  jobs = cells.jobs(cells.expand(config, arms), config)
  assert not executors.run_inline(jobs, str(tmp_path), job.Settings(cpus=0), QUIET)
  summary = tables.write(jobs, str(tmp_path), tables.settings(config), log=QUIET)
  original, gan_cell = summary["cells"]
  assert (original["name"], gan_cell["name"]) == ("original", "gan")
  assert not original["synthesis"] and gan_cell["synthesis"]["fid"] >= 0
  results = json.loads((tmp_path / "gan" / "results.json").read_text())
  assert gan_cell["per_class"] == results["summary"]["pooled"]["per_class"]
  text = (tmp_path / "sweep.md").read_text()
  assert "| original |" in text and "| gan |" in text and "a F1" in text


@pytest.mark.parametrize("method, budget", [("lsgan", None), ("cgan", "min_count")])
def test_gan_oversampler_gives_the_requested_counts_in_a_pipeline(method, budget):
  ds = _id_dataset()
  x, y = ds.x[:, 1:], ds.y
  sampler = GANOverSampler(method=method, budget=budget, min_count=40, steps=3, batch_size=8,
                           latent_dim=4, hidden=(8,), random_state=0)
  x_out, y_out = sampler.fit_resample(x, y)
  want = [60, 60, 60] if budget is None else [60, 40, 40]
  assert np.bincount(y_out).tolist() == want
  np.testing.assert_array_equal(x_out[:len(y)], x)     # real rows first, unchanged
  assert sampler.synthetic_mask_.sum() == len(y_out) - len(y)
  again, _ = GANOverSampler(method=method, budget=budget, min_count=40, steps=3, batch_size=8,
                            latent_dim=4, hidden=(8,), random_state=0).fit_resample(x, y)
  np.testing.assert_array_equal(again, x_out)
  pipe = Pipeline([("gan", sampler), ("clf", LogisticRegression())]).fit(x, y)
  assert pipe.predict(x).shape == y.shape


def test_synthesis_options_without_synthesis_do_not_block_a_resume(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  off = {"synth.method": "none", "train.epochs": 1}
  first = experiment.train_and_evaluate(_config(**off), tmp_path, log=QUIET)
  again = experiment.train_and_evaluate(_config(**off, **{"synth.lsgan.steps": 7}), tmp_path,
                                        log=QUIET)
  assert_same_metrics(again, first)
  with pytest.raises(ValueError, match="synth.method"):
    experiment.train_and_evaluate(_config(), tmp_path, log=QUIET)


def test_stacked_and_one_at_a_time_generators_give_the_same_samples(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  samples = {}
  for stack in ("always", "never"):
    experiment.train_and_evaluate(_config(**{"synth.stack": stack}), tmp_path / stack, log=QUIET)
    [path] = (tmp_path / stack / "synthesis" / "fold_0").glob("samples_*/samples.npz")
    with np.load(path) as f:
      samples[stack] = f["x"], f["y"]
  np.testing.assert_array_equal(samples["always"][1], samples["never"][1])
  np.testing.assert_allclose(samples["always"][0], samples["never"][0], rtol=1e-4, atol=1e-4)


def test_a_conditional_gan_tops_up_every_class_from_one_model(monkeypatch, tmp_path):
  ds = _id_dataset()
  monkeypatch.setattr(sources, "load_source", lambda cfg: ds)
  results = experiment.train_and_evaluate(
      _config(**{"synth.method": "cgan", **_gan("cgan", arch="mlp"), "synth.stack": "auto"}),
      tmp_path, log=QUIET)
  counts = np.bincount(ds.y[_fold0(_config(), ds).train], minlength=3)
  assert results["folds"][0]["class_counts"]["train_synthetic"] == (counts.max() - counts).tolist()
