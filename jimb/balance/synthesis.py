"""The synthesis stage of a fold: generators trained on its training part top up minority classes.

Everything here sees only the fold's real training rows (the caller passes nothing else), so no
generator, judge or filter can learn from validation or test rows, and the synthetic rows it
returns go only into the training pool (jimb.balance.pool), after the real ones. Methods are
entries of METHODS, each built from its own config block (synth.<method>) and knowing how its
generators train and sample; the plain synth keys (budget, filter, judge) apply to all.

cache_dir/fold_<k>/
  generator_<hash>/checkpoints/    the trained generators (resumable while training), keyed by
                                   the data, split, seed, fold, the generator's options and classes
  judge_<hash>/                    the judge classifier (jimb.generative.judge)
  samples_<hash>/samples.npz       the kept synthetic rows; report.json; grid.png (real vs synthetic)
A repeated or resumed run with the same keys loads these instead of training again; a run
that changes only the budget, the filter or the sampler (e.g. the DDPM's eta) reuses the
generators and the judge.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Callable

import jax
import numpy as np

from jimb import checkpointing, files, multihost, tracking
from jimb import config as config_lib
from jimb.balance import judge
from jimb.generative import budget, cyclegan, ddpm, gan, grid, quality_filter, scores
from jimb.registry import Registry

_JUDGE_KEYS = ("judge_epochs", "judge_batch_size")
# The synth keys that never change what it computes (jimb.config.FREE_KEYS): not in its cache keys.
_FREE = tuple(k.split(".", 1)[1] for k in config_lib.FREE_KEYS if k.startswith("synth."))

Log = Callable[[str], None]
# draw(member, class, n, key) -> n rows of `class` from the trained group's model `member`
Draw = Callable[[int, int, int, jax.Array], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Synthesis:
  x: np.ndarray      # synthetic rows, in the runner's host form (images in [0, 1])
  y: np.ndarray
  report: dict


@dataclasses.dataclass(frozen=True)
class _GANs:
  """dcgan, lsgan, wgan_gp: one GAN per class to top up; cgan: one conditional GAN for all."""
  spec: gan.GANSpec
  sampling_options = ()

  @classmethod
  def build(cls, kind: str, block: dict, sample_shape: tuple, num_classes: int) -> _GANs:
    return cls(gan.spec_from_config(kind, block, sample_shape, num_classes))

  @property
  def conv(self) -> bool:
    return self.spec.arch == "conv"

  @property
  def one_model(self) -> bool:
    return self.spec.kind == "cgan"

  def source(self, counts: np.ndarray, names: list) -> None:
    return None

  def train(self, x, y, group, source, names, key, keys, **common) -> tuple[dict, Draw]:
    if self.one_model:
      trained = gan.train(self.spec, [x], key, labels=[y], members=["all classes"], **common)
      return trained.history, lambda member, c, n, k: gan.sample(trained, 0, n, k, label=c)
    trained = gan.train(self.spec, [x[y == c] for c in group], keys,
                        members=[f"class {names[c]}" for c in group], **common)
    return trained.history, lambda member, c, n, k: gan.sample(trained, member, n, k)


@dataclasses.dataclass(frozen=True)
class _CycleGANs:
  """cyclegan: one CycleGAN from the source class (domain A) to each class to top up."""
  spec: cyclegan.CycleSpec
  source_class: str
  one_model = False
  sampling_options = ()

  @classmethod
  def build(cls, block: dict, sample_shape: tuple, num_classes: int) -> _CycleGANs:
    # arch conv refuses table rows, naming arch=mlp (jimb.generative.cyclegan.CycleSpec)
    return cls(cyclegan.spec_from_config(block, sample_shape), block["source_class"])

  @property
  def conv(self) -> bool:
    return self.spec.arch == "conv"

  def source(self, counts: np.ndarray, names: list) -> int:
    """The majority class, or the class `source_class` names (by name, else by index)."""
    if self.source_class == "majority":
      return int(counts.argmax())
    names = [str(n) for n in names]
    option = self.source_class
    source = names.index(option) if option in names else int(option) if option.isdigit() else -1
    if not 0 <= source < len(counts) or counts[source] == 0:
      raise ValueError(f"--config.synth.cyclegan.source_class={option!r} names no class with "
                       f"training rows (classes {names}, training rows {counts.tolist()}); use "
                       "majority, a class name or a class index")
    return source

  def train(self, x, y, group, source, names, key, keys, **common) -> tuple[dict, Draw]:
    pool = x[y == source]
    trained = cyclegan.train(self.spec, pool, [x[y == c] for c in group], keys[0],
                             members=[f"{names[source]} -> {names[c]}" for c in group],
                             standardise_with=None if self.conv else x, **common)

    def draw(member, c, n, k):
      rng = np.random.default_rng(np.asarray(jax.random.key_data(k)).ravel())
      rows = rng.choice(len(pool), size=n, replace=n > len(pool))
      return cyclegan.translate(trained, member, pool[rows])

    return trained.history, draw


@dataclasses.dataclass(frozen=True)
class _DDPM:
  """ddpm: one class-conditional diffusion model for every class (images only)."""
  spec: ddpm.DDPMSpec
  conv = True
  one_model = True
  sampling_options = ddpm.SAMPLING_OPTIONS

  @classmethod
  def build(cls, block: dict, sample_shape: tuple, num_classes: int) -> _DDPM:
    return cls(ddpm.spec_from_config(block, sample_shape, num_classes))

  def source(self, counts: np.ndarray, names: list) -> None:
    return None

  def train(self, x, y, group, source, names, key, keys, **common) -> tuple[dict, Draw]:
    trained = ddpm.train(self.spec, x, y, key, **common)
    return trained.history, lambda member, c, n, k: ddpm.sample(trained, c, n, k)


# Each entry builds the method's generators from its block synth.<method> (its defaults are in
# jimb/config.py), refusing options it does not take. The generators tell whether their nets are
# `conv`, whether they are `one_model` for every class, which of their options only change the
# sampler (`sampling_options`: not in the trained models' cache key), the class they translate
# `source`s from, and `train(x, y, group, source, names, key, keys, **loop options)` -> (loss
# history, draw), where `key` is the fold's generator key and `keys` hold one per class of `group`.
METHODS = Registry("synthesis method", {
    **{kind: functools.partial(_GANs.build, kind) for kind in gan.KINDS},
    "cyclegan": _CycleGANs.build,
    "ddpm": _DDPM.build,
})


def build(config, sample_shape, num_classes: int):
  """The generators of `synth.method`, from its block `synth.<method>`; a key of `synth` that
  is no plain key (an option outside its method's block) is an error naming it."""
  s = config.synth
  factory = METHODS.get(s.method, "synth.method")
  stray = sorted(set(s) - set(config_lib.base_config().synth))
  if stray:
    raise ValueError(f"--config.synth has no key(s) {stray}: a method's own options live in its "
                     f"block, e.g. --config.synth.{s.method}.{stray[0]} (see jimb/config.py)")
  return factory(s[s.method].to_dict(), tuple(sample_shape), num_classes)


def _digest(*parts) -> str:
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _classes(text: str) -> list[int] | None:
  try:
    return [int(c) for c in str(text).split(",") if c.strip()] or None
  except ValueError as e:
    raise ValueError(f"--config.synth.classes={text!r} must be comma-separated class indices, "
                     "e.g. '0,3'") from e


def plan(config, generators, y: np.ndarray, names) -> tuple[dict[int, int], int | None]:
  """Synthetic rows per class under the budget, and the source class the generators translate
  from (None for GANs), which receives none."""
  s = config.synth
  add = budget.synthesis_counts(
      y, s.budget, min_count=s.min_count,
      counts=budget.parse_counts(s.counts) if s.budget == "counts" else None,
      classes=_classes(s.classes))
  source = generators.source(np.bincount(y, minlength=len(names)), names)
  if source is not None:
    add[source] = 0
  return {c: n for c, n in add.items() if n > 0}, source


def stacked(config, generators) -> bool:
  """Whether the per-class models train as one vmapped stack (`synth.stack`).

  auto stacks except conv models on CPU: XLA:CPU turns vmapped convolutions into grouped ones,
  which ran slower than the same models one after another (benchmarks/gan_stacked.py).
  """
  s = config.synth
  if s.stack not in ("auto", "always", "never"):
    raise ValueError(f"unknown --config.synth.stack={s.stack!r}; choose auto, always or never")
  if s.stack != "auto":
    return s.stack == "always"
  if generators.one_model:   # nothing to stack
    return True
  return not (generators.conv and jax.default_backend() == "cpu")


def _train_generators(config, generators, x, y, classes, source, names, key, mesh, directory,
                      log, track):
  """Trains (or restores) the generators of `classes`: (make(c, n, key) -> rows, histories).

  Per-class models train stacked, or one group of one class after another (`stacked`); each
  group's loss history comes with the names of its models, and its event files go to the
  generator folder's name under `track` (with `_class_<c>` per group).
  """
  s = config.synth
  groups = [classes] if generators.one_model or stacked(config, generators) else [
      [c] for c in classes]
  keys = jax.random.split(key, len(classes))   # one per class, however they are grouped
  at = lambda group: keys[np.asarray([classes.index(c) for c in group])]
  draws, histories = {}, []
  for group in groups:
    ckpt = checkpointing.FoldCheckpoints(
        directory / ("checkpoints" if len(groups) == 1 else f"checkpoints_{group[0]}"))
    try:
      history, draw = generators.train(
          x, y, group, source, names, key, at(group), mesh=mesh, ckpt=ckpt,
          checkpoint_every=s.checkpoint_every, log_every=s.log_every, log=log,
          track=track.sub(directory.name + ("" if len(groups) == 1 else f"_class_{group[0]}")))
    finally:
      ckpt.close()
    draws.update({c: (draw, i) for i, c in enumerate(group)})
    histories.append({"models": [names[c] for c in group], **history})

  def make(c, n, k):
    draw, member = draws[c]
    return draw(member, c, n, k)

  return make, histories


def _final(histories: list[dict]) -> dict:
  """The last logged value of every loss: {name: one value per model, groups in order}."""
  names = [k for k in histories[0] if k not in ("models", "step")]
  return {name: [v for h in histories for v in h[name][-1]] for name in names}


def synthesise(config, x: np.ndarray, y: np.ndarray, class_names, fold_index: int,
               mean: jax.Array, std: jax.Array, mesh: jax.sharding.Mesh,
               cache_root: str | os.PathLike, log: Log = print,
               track: tracking.Tracking = tracking.OFF) -> Synthesis:
  """Synthetic training rows for the fold whose real training part is (x, y); see the module.

  `cache_root` may be local or remote. With several processes each computes the same rows and
  process 0 writes them; whether they are cached already is process 0's view.
  """
  s = config.synth
  names = list(class_names)
  generators = build(config, x.shape[1:], len(names))
  add, source = plan(config, generators, y, names)
  classes = sorted(add)
  if not classes:
    log(f"  synthesis: the {s.budget} budget asks for no samples")
    return Synthesis(x[:0], y[:0], {"method": s.method, "requested": {}})
  fold_dir = files.as_path(cache_root) / f"fold_{fold_index}"
  base = _base(config, fold_index)
  own = s[s.method].to_dict()
  synth = {k: v for k, v in s.to_dict().items() if not isinstance(v, dict) and k not in _FREE}
  out_dir = fold_dir / f"samples_{_digest(base, synth, own, config.model.to_dict())}"
  if multihost.agree((out_dir / "samples.npz").exists):
    samples = files.read_npz(out_dir / "samples.npz")
    report = json.loads((out_dir / "report.json").read_text())
    log(f"  synthesis: {len(samples['y'])} rows loaded from {out_dir}")
    return Synthesis(samples["x"], samples["y"], report)

  trained_by = {k: v for k, v in own.items() if k not in generators.sampling_options}
  generator = {"method": s.method, **trained_by, "stacked": stacked(config, generators)}
  key = jax.random.fold_in(jax.random.key(config.seed), fold_index)
  gen_key, sample_key = jax.random.split(key)
  _log_request(s, names, np.bincount(y, minlength=len(names)), add, log)
  make, histories = _train_generators(
      config, generators, x, y, classes, source, names, gen_key, mesh,
      fold_dir / f"generator_{_digest(base, generator, classes)}", log,
      track.sub(f"fold_{fold_index}"))
  seed = config.seed * 1000 + fold_index
  space = feature_space(config, x, y, len(names), (mean, std, mesh), cache_root, fold_index, log)
  real_features = space(x)
  draw = lambda c, n, r: make(c, n, jax.random.fold_in(sample_key, r * len(names) + c)).astype(
      x.dtype)
  x_syn, y_syn, kept_features, rounds = _filtered_rows(s, draw, add, space, real_features, y, seed)
  per_class = scores.per_class_scores(real_features, y, kept_features, y_syn, k=s.score_k)
  generated = sum(f["overall"]["generated"] for f in rounds)
  report = {
      "method": s.method, "budget": s.budget,
      "requested": {names[c]: n for c, n in add.items()},
      "kept": {names[c]: int((y_syn == c).sum()) for c in classes},
      "filter": {"method": s.filter, "rounds": rounds,
                 "rejection_rate": (generated - len(y_syn)) / max(generated, 1)},
      "scores_space": "judge features" if s.judge_epochs else "inputs",
      "scores": {names[c]: v for c, v in per_class.items() if c in add},
      "final_losses": _final(histories),
      "directory": str(out_dir),
  }
  if multihost.is_writer():
    _save(out_dir, (x, y), (x_syn, y_syn), classes, names, histories, report)
  log(f"  synthesis: kept {len(y_syn)} of {generated} rows (rejection rate "
      f"{report['filter']['rejection_rate']:.3f}); grid and scores in {out_dir}")
  return Synthesis(x_syn, y_syn, report)


def _log_request(s, names, real: np.ndarray, add: dict[int, int], log: Log) -> None:
  """What is asked of each class, and a warning where too few real rows back it."""
  log(f"  synthesis: {s.method} ({s.budget} budget) for " + ", ".join(
      f"{names[c]} ({real[c]} real rows, {add[c]} synthetic requested)" for c in sorted(add)))
  few = [f"{names[c]!r} (#{c}: {real[c]})" for c in sorted(add) if real[c] < s.min_real_rows]
  if few:
    log(f"  synthesis warning: {', '.join(few)} {'has' if len(few) == 1 else 'have'} fewer "
        f"real training rows than --config.synth.min_real_rows={s.min_real_rows}; their "
        "generators mostly reproduce them (name only the other classes in "
        "--config.synth.classes to leave them out)")


def _base(config, fold_index: int) -> dict:
  """What every cached artefact of a fold depends on: its data, split, seed and index."""
  base = {k: config[k].to_dict() for k in ("data", "imbalance", "split")}
  base.update(seed=config.seed, fold=fold_index)
  return base


def feature_space(config, x, y, num_classes, placement, cache_root, fold_index: int,
                  log: Log = print) -> Callable[[np.ndarray], np.ndarray]:
  """rows -> the vectors the filter and the scores compare: the judge's features when
  synth.judge_epochs (a classifier trained on the real rows (x, y), or restored from
  cache_root/fold_<k>/judge_<hash>; None: not cached), else the pixels. iCost's `space=judge`
  uses it too."""
  s = config.synth
  if not s.judge_epochs:
    return lambda rows: rows.reshape(len(rows), -1).astype(np.float32)
  mean, std, mesh = placement
  judge_cfg = {k: s[k] for k in _JUDGE_KEYS}
  ckpt = None if cache_root is None else checkpointing.FoldCheckpoints(
      files.as_path(cache_root) / f"fold_{fold_index}"
      / f"judge_{_digest(_base(config, fold_index), judge_cfg, config.model.to_dict())}")
  try:
    return judge.train(config.model, x, y, num_classes, mean, std, mesh,
                       epochs=s.judge_epochs, batch_size=s.judge_batch_size, learning_rate=1e-3,
                       seed=config.seed * 1000 + fold_index, ckpt=ckpt, log=log).features
  finally:
    if ckpt is not None:
      ckpt.close()


def _filtered_rows(s, draw, add: dict[int, int], space, real_features, y, seed):
  """Rows drawn (`draw(c, n, round)`) and filtered until every class has what `add` asks or
  synth.max_rounds is spent: (rows, labels, their features, each round's filter report)."""
  kept_x, kept_y, kept_features, rounds = [], [], [], []
  for r in range(max(s.max_rounds, 1) if s.filter != "none" else 1):
    have = np.bincount(np.concatenate(kept_y) if kept_y else np.zeros(0, int),
                       minlength=max(add) + 1)
    need = {c: add[c] - int(have[c]) for c in sorted(add) if add[c] > have[c]}
    if not need:
      break
    new_x = np.concatenate([draw(c, n, r) for c, n in need.items()])
    new_y = np.concatenate([np.full(n, c, y.dtype) for c, n in need.items()])
    new_features = space(new_x)
    mask, filtered = quality_filter.keep_mask(real_features, y, new_features, new_y, s.filter,
                                              k=s.filter_k, seed=seed)
    rounds.append(filtered)
    kept_x.append(new_x[mask])
    kept_y.append(new_y[mask])
    kept_features.append(new_features[mask])
  return (np.concatenate(kept_x), np.concatenate(kept_y), np.concatenate(kept_features), rounds)


def _save(out_dir, real, synthetic, classes, names, histories, report) -> None:
  """The grid, loss histories, report and rows; the rows last, as they mark the folder done."""
  (x, y), (x_syn, y_syn) = real, synthetic
  if x.ndim == 4:
    grid.save_grid(out_dir / "grid.png", {c: x[y == c] for c in classes},
                   {c: x_syn[y_syn == c] for c in classes}, names)
  files.write_text(out_dir / "losses.json", json.dumps(histories))
  files.write_text(out_dir / "report.json", json.dumps(report, indent=1, allow_nan=True))
  files.write_npz(out_dir / "samples.npz", x=x_syn, y=y_syn)
