"""The complete description of a run: every key lives here, so a misspelt one is an error.

Experiment configs (`configs/*.py`) start from `base_config()` and set values; the result is
locked, so assigning or overriding (`--config.a.b=v`) a key that does not exist fails and names
it. Model, loss and optimizer blocks hold the options of the chosen factory, which rejects
options it does not take (see `jimb.registry`).
"""

from __future__ import annotations

import copy
from typing import Any

import ml_collections

from jimb import calibration, metrics

_OPTION_BLOCKS = ("loss", "model", "resample.image", "resample.feature")
PROGRESS = ("auto", "on", "off")   # report.progress

# Keys that choose what to run, show or store, never what a stage computes, by stage: a resumed
# run may change them (jimb.workdir), and the synthesis cache is not keyed on its own.
FREE_KEYS = (
    # the fold loop: which folds run, how often it logs and checkpoints (resumes are exact)
    "split.only_folds", "train.log_every_epochs", "train.checkpoint_every_steps",
    "checkpoint.min_interval_secs",
    # the data: duplicates warn or refuse; grouping them changes the folds, which their stored
    # indices guard
    "data.duplicates",
    # synthesis (jimb.balance.synthesis): where its cache lives, how often its generators log and
    # checkpoint (resumes are exact), below how many real rows it warns
    "synth.cache_dir", "synth.log_every", "synth.checkpoint_every", "synth.min_real_rows",
    # how a run is watched: progress bars and TensorBoard event files
    "report.progress", "report.tensorboard",
)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Where the examples come from (jimb.data.sources).
  c.data = ml_collections.ConfigDict(dict(
      source="sklearn",      # sklearn | npz | image_folder | csv | csv_images | tfds
      name="digits",         # sklearn: digits|breast_cancer|wine|iris; tfds: builder name
      path="",               # npz file, image folder, csv file (csv_images: the csv listing the images)
      split="train",         # tfds split; image_folder with train/ test/ sub-folders: the training one
      npz_split=-1,          # npz: keep rows whose `split` equals this (-1: all rows)
      test_split="",         # split.mode=holdout: the fixed test set (tfds split, npz split value, image_folder sub-folder)
      val_split="",          # split.mode=holdout: a fixed validation set, likewise ("" = carved from the training split)
      data_dir="",           # tfds data_dir ("" = the tfds default)
      download=False,        # tfds: allowed to download and prepare when missing
      image_key="image",     # tfds feature / npz array holding the inputs; csv_images: column with each image's path or id
      image_dir="",          # csv_images: folder searched (recursively) for the listed images ("" = the csv's folder)
      label_key="label",     # tfds feature / npz array / csv column holding the labels
      group_key="",          # npz array / csv column / tfds feature with patient or lesion ids
      group_pattern="",      # image_folder: regex whose first group, in a file name, is the file's group id
      group_csv="",          # image_folder: csv mapping images (image_key column) to groups (group_key column)
      image_size=0,          # resize images to this square size, any source (0: keep)
      feature_columns="",    # csv: comma-separated feature columns ("" = all other columns)
      categorical="error",   # csv non-numeric feature columns: error | drop | onehot
      impute="",             # tables with NaN: "" (error) | mean | median | most_frequent
      normalize="dataset",   # images: dataset | imagenet | none; tables: dataset (standard) | minmax | none
      duplicates="warn",     # exact and near-duplicate inputs within and across parts: warn | error | group | off
      near_distance=4,       # near duplicates: largest Hamming distance of 64-bit image hashes (-1: exact only)
  ))

  # Making a balanced source imbalanced for study: exp / step thin the whole source
  # (jimb.data.imbalance); seed 001's scenarios thin each fold's training part after the folds
  # are drawn and leave its test part balanced (jimb.data.scenarios).
  c.imbalance = ml_collections.ConfigDict(dict(
      profile="none",        # none | exp | step | linear | single_majority | single_minority | half_minority
      ratio=10.0,            # imbalance ratio n_max / n_min
      max_per_class=0,       # n_max (0: the smallest class count of the source)
      shuffle_classes=False,  # which class is the head: False keeps class 0 as the head
  ))

  # Stratified (grouped) k-fold with a validation part, or the source's own fixed test set
  # (holdout: CIFAR-LT style, the imbalance profile applied to the training split only).
  # Validation: scikit-learn's stratified (grouped) split of each training part, unless it would
  # leave out a class; then per class, max(1, round(val_fraction * n)) (at most n - 1) of its n
  # training members (distinct groups when grouped), drawn with seed + fold. A class with a single
  # training member (e.g. a class of 2 with folds=2) stays in training only, with a warning.
  c.split = ml_collections.ConfigDict(dict(
      mode="kfold",          # kfold | holdout (needs data.test_split)
      folds=5,
      val_fraction=0.15,     # carved from each training part, stratified (and grouped)
      small_classes="error",  # a class with fewer members than folds: error | drop
      only_folds="",         # comma-separated fold indices to run ("" = all)
  ))

  # Which training examples each batch holds (jimb.data.sampler).
  # active: TLC's F1-driven quotas, n_k = (1 - F1_k) / sum_j (1 - F1_j) * batch, from the F1 on a
  # contrast part carved from the training part (jimb.data.active).
  c.sampler = ml_collections.ConfigDict(dict(
      name="instance",       # instance | class_balanced | power | active
      q=0.5,                 # power: class c drawn with probability proportional to n_c ** q
      contrast_fraction=0.1,  # active: share of the training part held out to measure F1
      update_every_steps=0,  # active: recompute quotas every this many steps (0: every epoch)
      floor=1,               # active: at least this many examples of every class per batch
  ))

  # Training-time augmentation of images (jimb.data.augment); never applied to evaluation.
  c.augment = ml_collections.ConfigDict(dict(
      enabled=False,
      hflip=True,
      vflip=True,
      rotation=20.0,         # degrees, uniform in [-rotation, rotation]
      brightness=0.2,        # factors uniform in [1 - v, 1 + v]
      contrast=0.2,
      saturation=0.2,        # colour images only
      hue=0.2,               # shift uniform in [-v, v] turns of the hue circle (torchvision convention)
  ))

  # Plain keys apply to any model; a sub-block named after a model holds that model's own options
  # (e.g. model.small_cnn.widths), so --config.model.name=<other> falls back to its defaults.
  c.model = ml_collections.ConfigDict(dict(
      name="small_cnn",
      dtype="float32",       # compute dtype: float32 | bfloat16 (parameters and loss stay float32)
      pretrained="",         # "" | imagenet | a Keras weights file: convert Keras weights (needs keras)
  ))
  # The named loss (jimb.losses) with its own options added by configs (c.loss.update(...)),
  # plus the class re-weighting every loss takes.
  c.loss = ml_collections.ConfigDict(dict(
      name="cross_entropy",
      class_weights="",      # "" | balanced | effective_number | "w0,w1,..."
      beta=0.9999,           # effective_number
      drw_epoch=0,           # class weights apply from this epoch on (0: from the start)
      instance_weights="none",  # none | icost: per-example weights by instance complexity
      # (jimb.resampling.complexity), fitted on each fold's real training rows
      icost=ml_collections.ConfigDict(dict(
          k=5,                   # neighbours for k-disagreeing neighbours (kDN)
          space="inputs",        # inputs: flattened, standardised with the training part's statistics
                                 # | judge: the synthesis judge's features (synth.judge_epochs)
                                 # | backbone: the pretrained model's features (model.pretrained)
          groups="icost",        # icost (the reference's pure/safe/border/outlier) | napierala
                                 # (safe/borderline/rare/outlier)
          costs="",              # "" (the scheme's defaults) | four numbers "c0,c1,c2,c3", one per group
          scale_by_ir=True,      # multiply a minority class's costs by n_max / n_c
      )),
  ))
  c.optim = ml_collections.ConfigDict(dict(
      name="adam",           # adam | adamw | sgd | rmsprop
      learning_rate=1e-3,
      schedule="constant",   # constant | cosine | warmup_cosine
      warmup_epochs=0,
      momentum=0.9,          # sgd, rmsprop
      weight_decay=0.0,
      grad_clip=0.0,         # global-norm clip (0: off)
  ))

  # Transfer learning (jimb.fitting.transfer); regexes over parameter paths such as
  # "blocks/0/conv1/kernel" or "head/out/kernel" (each model's docstring names its parts).
  c.transfer = ml_collections.ConfigDict(dict(
      freeze="",             # parameters never updated, e.g. "^(stem|blocks/0|blocks/1)/"
      freeze_batch_norm=True,  # BatchNorm layers in frozen parts keep their statistics (inference mode)
      warmup_epochs=0,       # the first epochs train only the head; then all but `freeze`
      head="^head/",         # the head's parameters (trained during the warm-up)
      lr_multipliers="",     # "regex:factor;regex:factor" per-group learning-rate factors (first match)
  ))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=32,         # global batch, split across all devices
      eval_batch_size=256,
      epochs=20,
      patience=0,            # early stopping after this many epochs without improvement (0: off)
      select_metric="macro_f1",  # validation metric that picks the best epoch
      log_every_epochs=1,
      checkpoint_every_steps=0,  # also checkpoint inside an epoch every this many steps (0: epochs only)
  ))

  # Resampling (jimb.resampling): `image` resamples the training part's inputs before training
  # (IS; selection is kept as indices, synthetic rows are marked), `feature` the frozen
  # backbone's features of the training part for stage2.method=feature_resample (FS; both: TS).
  # Each block holds `name` (an imbalanced-learn sampler such as SMOTE or RandomUnderSampler,
  # JaxSMOTE, or DuplicateToMax / DuplicateToMinimum / DuplicateCeilMultiple) and that
  # resampler's own options, added by configs (e.g. c.resample.image.k_neighbors = 5).
  c.resample = ml_collections.ConfigDict(dict(
      image=ml_collections.ConfigDict(dict(name="")),
      feature=ml_collections.ConfigDict(dict(name="")),
      small_classes="error",  # a class too small for k_neighbors: error | reduce_k | ros
  ))

  # Synthesis of minority-class samples by generative models (jimb.generative), trained inside
  # each fold on its training part only; synthetic rows are marked and only ever train. Plain keys
  # apply to any method; the block named after a method holds all its generators' options at
  # their defaults (synth.dcgan.steps; the command line sets keys but cannot add them), checked
  # by the method's registry entry (jimb.balance.synthesis). Trained generators, the judge and
  # the samples are cached per (data, split, seed, fold, these keys) under cache_dir, so resumed
  # and repeated runs reuse them.
  gan = dict(                # every GAN's options, at DCGAN's defaults where its block keeps them
      arch="auto",           # auto (conv for images, mlp for tables) | conv | mlp
      latent_dim=100,
      widths="64,32",        # conv: generator channels per stage, smallest stage first
      hidden="256,256",      # mlp: hidden layer sizes
      steps=2000,            # generator updates
      batch_size=64,
      learning_rate=2e-4,    # Adam, DCGAN's settings
      beta1=0.5,
      beta2=0.999,
  )
  c.synth = ml_collections.ConfigDict(dict(
      method="none",         # none | dcgan | lsgan | cgan | wgan_gp | cyclegan | ddpm
      budget="majority",     # majority | min_count | ceil_multiple (seed 000's S_i) | counts
      min_count=800,         # budget=min_count
      counts="",             # budget=counts: "class:total,..." target totals per class
      classes="",            # comma-separated classes that may receive samples ("" = all)
      min_real_rows=10,      # warn for a class to receive samples with fewer real training rows (its generator mostly copies them)
      stack="auto",          # train the per-class models as one vmapped stack: auto (not conv on CPU) | always | never
      # quality: a judge classifier (model block) trained on the real training part
      filter="none",         # none | classifier | knn | both: reject synthetic rows
      filter_k=5,            # knn filter: k of the class's k-NN manifold
      max_rounds=3,          # generate again for rejected rows at most this many times
      judge_epochs=5,        # 0: no judge; scores and filter then use the raw inputs
      judge_batch_size=64,
      score_k=3,             # k-NN precision/recall
      checkpoint_every=500,
      log_every=100,
      cache_dir="",          # "" = <workdir>/synthesis
      dcgan=dict(gan),       # transposed-conv generator, BCE
      lsgan=dict(gan, arch="mlp"),   # least squares; fully connected, as in seed 004
      cgan=dict(gan, embed_dim=50),  # one conditional model; embed_dim: label embedding size
      # Gulrajani et al.'s Algorithm 1: n_critic critic updates per generator update
      wgan_gp=dict(gan, learning_rate=1e-4, beta1=0.0, beta2=0.9, n_critic=5, gp_weight=10.0),
      # the reference implementation's names and defaults (junyanz/pytorch-CycleGAN-and-pix2pix)
      cyclegan=dict(
          source_class="majority",   # domain A, translated from: majority | a class name or index
          arch="conv",               # conv (images: the reference's nets) | mlp (table rows)
          hidden="128,128",          # mlp: hidden sizes of generators and discriminators
          ngf=64, ndf=64, n_blocks=9, n_layers_D=3,       # conv
          lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5, pool_size=50,
          gan_mode="lsgan",          # lsgan | vanilla
          no_flip=False,             # True: no random horizontal flips of either domain
          n_epochs=100, n_epochs_decay=100,   # an epoch: one pass over the source class
          batch_size=1,
          learning_rate=2e-4,        # Adam, beta2 0.999
          beta1=0.5,
      ),
      # one class-conditional DDPM (jimb.generative.ddpm), sized for 28x28 on a CPU: cosine
      # schedule, epsilon prediction, DDIM sampling; Ho et al.'s Adam 2e-4, clip 1, dropout 0.1
      ddpm=dict(
          widths="32,64",            # U-Net channels per level (full resolution first)
          res_blocks=1,              # residual blocks per level
          embed_dim=128,             # time + class embedding size
          dropout=0.1,
          timesteps=1000,            # T
          sample_steps=50,           # DDIM steps
          eta=1.0,                   # DDIM: 0 deterministic, 1 the DDPM's noise (see ddpm.py)
          steps=2000, batch_size=64,
          learning_rate=2e-4, warmup_steps=100, grad_clip=1.0,
          ema_decay=0.999,           # samples come from this moving average of the weights
      ),
  ))

  # Decoupled stage 2 after training (jimb.training.head): crt re-trains the classifier on frozen
  # features with a class-balanced sampler; tau_norm rescales each class's classifier weights;
  # logit_adjust subtracts tau * log(training prior) from the logits; feature_resample fine-tunes
  # the classifier on the training part's features resampled by resample.feature. Stage-1 test
  # metrics are kept beside the stage-2 ones.
  c.stage2 = ml_collections.ConfigDict(dict(
      method="none",         # none | crt | tau_norm | logit_adjust | feature_resample
      tau=1.0,               # tau_norm and logit_adjust
      epochs=10,             # crt, feature_resample
      batch_size=128,        # crt, feature_resample
      learning_rate=1e-2,    # crt, feature_resample (Adam, cosine to 0)
      layers="classifier",   # crt, feature_resample: classifier (final FC) | head (+ the head's hidden FC)
  ))

  # How `python main.py --mode=sweep` tabulates the cells of a config file's sweep(arg)
  # (jimb.sweep.tables); never part of what a cell computes.
  c.sweep = ml_collections.ConfigDict(dict(
      metrics="macro_f1,balanced_accuracy",  # ranked and tested, as test metrics of every fold
      control="",            # Wilcoxon-Holm control method ("" = the sweep's first method)
      alpha=0.05,            # significance level of the Nemenyi and Holm-corrected tests
      per_class=False,       # add each cell's pooled per-class precision / recall / F1
  ))

  # Post-hoc steps fitted on each fold's validation part and applied to its test part
  # (jimb.calibration); the record's "test" stays the argmax of the uncalibrated probabilities,
  # and eval mode may switch them on a trained workdir. `temperature`: temperature scaling (one
  # T > 0 of minimal validation NLL). `decision.rule`: argmax (off) | balanced_accuracy | youden
  # | sensitivity (the highest threshold on p(positive_class) whose validation sensitivity
  # reaches target_sensitivity). `positive_class` (a class name or index): the class a threshold
  # scores against the rest; "" = none for more than two classes (per-class thresholds), the
  # class with fewer training examples for two.
  c.calibration = ml_collections.ConfigDict(dict(temperature=False))
  c.decision = ml_collections.ConfigDict(dict(
      rule="argmax", positive_class="", target_sensitivity=0.95))

  # Per-class accuracy grouped by training-set size, as in long-tailed recognition papers:
  # many-shot (> many_shot examples), medium, few-shot (< few_shot). `bootstrap`: stratified
  # bootstrap resamples for the pooled metrics' 95 % intervals (0: none). `figures`: draw
  # workdir/figures/ and workdir/report.html from the saved results when the run ends.
  c.report = ml_collections.ConfigDict(dict(many_shot=100, few_shot=20, bootstrap=1000,
                                            figures=True))
  # While a run runs (jimb.tracking): `progress` bars on stderr, auto (at a terminal) | on |
  # off; `tensorboard`: event files under workdir/tb/ (`tensorboard --logdir workdir/tb`).
  c.report.progress = "auto"
  c.report.tensorboard = True

  # Epoch checkpoints: at most one every `min_interval_secs` (a new best in between is held and
  # written before the next; the fold's end is always written), so quick epochs are not
  # dominated by saving and a resume replays at most that long. Every epoch when 0, or when
  # train.checkpoint_every_steps saves inside epochs.
  c.checkpoint = ml_collections.ConfigDict(dict(
      keep_latest=1,
      keep_best=1,
      min_interval_secs=60.0,
  ))
  return c


# Numeric keys and their ranges: (low, high), None for no bound, both inclusive; "(" makes the
# low bound exclusive. Checked once a config is resolved, before any data is read.
RANGES = {
    "data.image_size": (0, None), "data.npz_split": (-1, None), "data.near_distance": (-1, 64),
    "imbalance.ratio": (1, None), "imbalance.max_per_class": (0, None),
    "split.folds": (2, None), "split.val_fraction": (0, 0.95),
    "sampler.update_every_steps": (0, None), "sampler.floor": (0, None),
    "augment.rotation": (0, 180), "augment.brightness": (0, 1), "augment.contrast": (0, 1),
    "augment.saturation": (0, 1), "augment.hue": (0, 0.5),
    "loss.beta": (0, 1), "loss.drw_epoch": (0, None), "loss.icost.k": (1, None),
    "optim.learning_rate": ("(", 0, None), "optim.warmup_epochs": (0, None),
    "optim.momentum": (0, 1), "optim.weight_decay": (0, None), "optim.grad_clip": (0, None),
    "transfer.warmup_epochs": (0, None),
    "train.batch_size": (1, None), "train.eval_batch_size": (1, None), "train.epochs": (1, None),
    "train.patience": (0, None), "train.log_every_epochs": (1, None),
    "train.checkpoint_every_steps": (0, None),
    "synth.min_count": (0, None), "synth.filter_k": (1, None), "synth.max_rounds": (1, None),
    "synth.judge_epochs": (0, None), "synth.judge_batch_size": (1, None),
    "synth.score_k": (1, None), "synth.checkpoint_every": (0, None), "synth.log_every": (1, None),
    "synth.min_real_rows": (1, None),
    **{f"synth.{method}.{key}": bound for method in ("dcgan", "lsgan", "cgan", "wgan_gp")
       for key, bound in (("latent_dim", (1, None)), ("steps", (1, None)),
                          ("batch_size", (1, None)), ("learning_rate", ("(", 0, None)),
                          ("beta1", (0, 1)), ("beta2", (0, 1)))},
    "synth.cgan.embed_dim": (1, None), "synth.wgan_gp.n_critic": (1, None),
    "synth.wgan_gp.gp_weight": (0, None),
    **{f"synth.cyclegan.{key}": bound for key, bound in (
        ("ngf", (1, None)), ("ndf", (1, None)), ("n_blocks", (0, None)), ("n_layers_D", (0, None)),
        ("lambda_A", (0, None)), ("lambda_B", (0, None)), ("lambda_identity", (0, None)),
        ("pool_size", (0, None)), ("n_epochs", (0, None)), ("n_epochs_decay", (0, None)),
        ("batch_size", (1, None)), ("learning_rate", ("(", 0, None)), ("beta1", (0, 1)))},
    **{f"synth.ddpm.{key}": bound for key, bound in (
        ("res_blocks", (1, None)), ("embed_dim", (1, None)), ("dropout", (0, 0.99)),
        ("timesteps", (1, None)), ("sample_steps", (1, None)), ("eta", (0, 1)),
        ("steps", (1, None)), ("batch_size", (1, None)), ("learning_rate", ("(", 0, None)),
        ("warmup_steps", (0, None)), ("grad_clip", ("(", 0, None)), ("ema_decay", (0, 1)))},
    "stage2.epochs": (1, None), "stage2.batch_size": (1, None),
    "stage2.learning_rate": ("(", 0, None),
    "sweep.alpha": ("(", 0, 1), "report.many_shot": (0, None), "report.few_shot": (0, None),
    "report.bootstrap": (0, None), "decision.target_sensitivity": ("(", 0, 1),
    "checkpoint.keep_latest": (1, None), "checkpoint.keep_best": (1, None),
    "checkpoint.min_interval_secs": (0, None),
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses a numeric key outside its range (RANGES), naming the key, the value and the range,
  an unknown validation metric or decision rule, and post-hoc steps without a validation part."""
  if config.train.select_metric not in metrics.METRIC_NAMES:
    raise ValueError(f"unknown --config.train.select_metric={config.train.select_metric!r}; "
                     f"choose one of {metrics.METRIC_NAMES}")
  flat = flatten(config.to_dict())
  for key, spec in RANGES.items():
    if key not in flat:
      continue
    exclusive = spec[0] == "("
    low, high = spec[1:] if exclusive else spec
    value = flat[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"--config.{key}={value!r} must be a number")
    if (low is not None and (value <= low if exclusive else value < low)) or (
        high is not None and value > high):
      bound = (f"> {low}" if exclusive else f">= {low}") if low is not None else ""
      bound = " and ".join(b for b in (bound, f"<= {high}" if high is not None else "") if b)
      raise ValueError(f"--config.{key}={value} is out of range: it must be {bound}")
  if config.report.progress not in PROGRESS:
    raise ValueError(f"unknown --config.report.progress={config.report.progress!r}; choose one "
                     f"of {PROGRESS}")
  if config.decision.rule not in calibration.RULES:
    raise ValueError(f"unknown --config.decision.rule={config.decision.rule!r}; choose one of "
                     f"{calibration.RULES}")
  fixed_val = config.split.mode == "holdout" and config.data.val_split
  if ((config.calibration.temperature or config.decision.rule != "argmax")
      and not config.split.val_fraction and not fixed_val):
    raise ValueError("--config.calibration.temperature and --config.decision.rule are fitted on "
                     "the validation part, and --config.split.val_fraction=0 leaves none: set "
                     "it > 0 (e.g. 0.15), or switch them off")
  if flat["report.few_shot"] > flat["report.many_shot"]:
    raise ValueError(f"--config.report.few_shot={flat['report.few_shot']} must not exceed "
                     f"--config.report.many_shot={flat['report.many_shot']}")


def parse_arg(arg: str | None, **defaults):
  """Parses `configs/x.py:key=value,flag` into a ConfigDict of typed values.

  A bare name sets a boolean flag; values take the type of the default. An unknown key is an
  error listing the known ones.
  """
  out = ml_collections.ConfigDict(dict(defaults))
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    out[key] = typed(defaults[key], value) if sep else True
  return out


def override(base: ml_collections.ConfigDict, overrides: dict[str, Any],
             where: str) -> ml_collections.ConfigDict:
  """A copy of `base` with dotted `overrides` ({"loss.name": "focal"}) set.

  A key that does not exist is an error naming it, except in the option blocks whose keys a
  registry checks when it builds (a loss's gamma, a model's own sub-block, a resampler's
  k_neighbors), where a cell may add keys as configs do with c.loss.update(...).
  """
  config = copy.deepcopy(base)
  for key, value in overrides.items():
    *path, last = key.split(".")
    node = config
    try:
      for depth, p in enumerate(path):
        if path[:depth] == ["model"] and p not in node:   # a model's own sub-block
          with node.unlocked():
            node[p] = ml_collections.ConfigDict()
        node = node[p]
      if last in node:
        node[last] = value
      elif ".".join(path) in _OPTION_BLOCKS or path[:1] == ["model"]:
        with node.unlocked():
          node[last] = value
      else:
        raise KeyError(f"{'.'.join(path) or 'the config'} has no key {last!r}")
    except (KeyError, AttributeError, TypeError, ValueError) as e:
      raise ValueError(f"{where}: cannot set {key}={value!r} ({e}); the keys and their meaning "
                       "are in jimb/config.py") from None
  return config


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}: resolved configs compared key by key."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def arms(named: dict):
  """Sweep cells named after their arms: {"original": {}, "gan": {"synth.method": "dcgan"}}."""
  for name, overrides in named.items():
    yield {"_name": name, **overrides}


def typed(default, value: str):
  """`value` (text) as the type of `default`; booleans read 1/true/yes and 0/false/no."""
  if isinstance(default, bool):
    if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
      raise ValueError(f"expected true or false, got {value!r}")
    return value.lower() in ("1", "true", "yes")
  return type(default)(value) if default is not None else value
