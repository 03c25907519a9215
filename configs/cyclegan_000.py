"""Seed 000's ORG vs GAN on HAM10000: CycleGANs translate the majority class (nv) into each
minority class inside every training fold, topping classes up by the seed's S_i =
ceil((N_max - N_i) / N_i) * N_i; EfficientNet with focal loss and flip / rotation / colour
augmentation classifies; stratified 5-fold CV grouped by lesion (images of one lesion never
straddle a split).

python main.py --config=configs/cyclegan_000.py:npz=../shared/data/images/ham10000_28x28_rgb.npz \
    --workdir=runs/cyclegan000 --mode=sweep        (CPU variant: 28x28, small CNN, fold 0)
python main.py --config=configs/cyclegan_000.py:npz=<ham10000 at full size>,full \
    --workdir=runs/cyclegan000_full --mode=sweep   (GPU: ORG vs GAN for each of the seed's
    EfficientNet-B3, ResNet-50, VGG-19 and MobileNet from ImageNet weights at 224x224
    (image_size), the reference CycleGAN sizes, all five folds; add
    --config.synth.cache_dir=runs/cyclegan000_full/synthesis to train the CycleGANs once for
    all four models, with --executor=inline or one model at a time)
python main.py --config=configs/cyclegan_000.py:nafld --workdir=runs/cyclegan000_nafld --mode=sweep
    (seed 000's Table 5 on ../shared/data/tabular/nafld_fibrosis_livefbr.npz, or npz=<path>: an
    MLP CycleGAN translates F0-2 rows into F3-4 rows up to the majority's count, as the seed
    balances NAFLD; the seed's three-layer LeakyReLU MLP with dropout and focal loss classifies
    z-scored features; stratified 5-fold CV, all folds, CPU-sized. The table holds one row per
    patient and no patient ids, so folds are not grouped; its cohorts are too few to group by)
"""

from jimb.config import arms, base_config, parse_arg

ARMS = {"ORG": {}, "GAN": {"synth.method": "cyclegan"}}
FULL_MODELS = ("efficientnet_b3", "resnet50", "vgg19", "mobilenet_v1")
NAFLD = "../shared/data/tabular/nafld_fibrosis_livefbr.npz"


def _args(arg):
  return parse_arg(arg, npz="", tiny=False, full=False, nafld=False)


def _nafld(c, a):
  """The tabular protocol: the seed's MLP on standardised rows, the MLP CycleGAN to balance."""
  c.data.update(dict(source="npz", path=a.npz or NAFLD, normalize="dataset"))
  c.split.update(dict(folds=5, val_fraction=0.15))
  c.model.name = "mlp"
  c.model.mlp = dict(hidden=(128, 64), dropout=0.1, negative_slope=0.01)
  c.loss.update(dict(name="focal", gamma=2.0, alpha=0.25))
  c.optim.update(dict(name="adam", learning_rate=1e-3))
  c.train.update(dict(batch_size=32, epochs=40, patience=10, select_metric="macro_f1"))
  c.synth.update(dict(budget="majority", filter="none", judge_epochs=5, judge_batch_size=32,
                      log_every=200))
  c.synth.cyclegan.update(dict(source_class="majority", arch="mlp", hidden="128,128",
                               batch_size=32, n_epochs=100, n_epochs_decay=100))
  c.sweep.update(dict(control="ORG", per_class=True))
  if a.tiny:
    c.model.mlp.hidden = (8, 8)
    c.split.update(dict(folds=3, only_folds="0"))
    c.train.update(dict(epochs=2, patience=0))
    c.synth.judge_epochs = 1
    c.synth.cyclegan.update(dict(hidden="8", batch_size=8, n_epochs=1, n_epochs_decay=0))
  return c


def get_config(arg=None):
  a = _args(arg)
  c = base_config()
  if a.nafld:
    return _nafld(c, a)
  c.data.update(dict(source="npz", path=a.npz, group_key="lesion_id"))
  c.split.update(dict(folds=5, val_fraction=0.1, only_folds="0"))
  c.augment.update(dict(enabled=True, hflip=True, vflip=True, rotation=20.0, brightness=0.2,
                        contrast=0.2, saturation=0.2, hue=0.2))
  c.loss.update(dict(name="focal", gamma=2.0, alpha=0.25))
  c.model.name = "small_cnn"
  c.model.small_cnn = dict(widths=(32, 64, 128), dense=128, dropout=0.25, batch_norm=True)
  c.optim.update(dict(name="adam", learning_rate=1e-3))
  c.train.update(dict(batch_size=64, epochs=10, select_metric="macro_f1"))
  c.synth.update(dict(budget="ceil_multiple", filter="none", judge_epochs=3, judge_batch_size=64,
                      log_every=50))
  c.synth.cyclegan.update(dict(source_class="majority", ngf=8, ndf=8, n_blocks=2, n_layers_D=2,
                               batch_size=16, n_epochs=1, n_epochs_decay=1))
  c.sweep.update(dict(control="ORG", per_class=True))
  if a.full:
    c.data.image_size = 224
    c.split.only_folds = ""
    c.model.update(dict(name="efficientnet_b3", pretrained="imagenet"))
    c.train.update(dict(batch_size=32, epochs=30))
    c.synth.judge_batch_size = 32
    c.synth.cyclegan.update(dict(ngf=64, ndf=64, n_blocks=9, n_layers_D=3, batch_size=1,
                                 n_epochs=100, n_epochs_decay=100))
  if a.tiny:
    c.model.small_cnn.update(dict(widths=(4, 8), dense=16))
    c.train.epochs = 1
    c.synth.update(dict(judge_epochs=1, log_every=50))
    c.synth.cyclegan.update(dict(ngf=4, ndf=4, n_blocks=1, n_layers_D=1, batch_size=8, n_epochs=1,
                                 n_epochs_decay=0))
  return c


def sweep(arg=None):
  """ORG vs CycleGAN balancing side by side (sweep.md's per-class table); `full`: per model."""
  a = _args(arg)
  if a.nafld or not a.full:
    yield from arms(ARMS)
    return
  for model in FULL_MODELS:
    for arm, overrides in ARMS.items():
      yield {"_name": f"{model}_{arm}", "_method": arm, "_task": model, "model.name": model,
             **overrides}
