"""Seed 004's comparison on a real chest X-ray set: the original imbalanced training set vs a
flips-and-rotations augmentation baseline vs balancing by a vanilla (DCGAN) GAN, an LSGAN
(fully connected, MSE) and a conditional GAN (fully connected, label embeddings), each GAN
trained on the training part only; per-class precision / recall / F1 side by side (its Table 1).

PneumoniaMNIST (28x28 grayscale, normal 1583 / pneumonia 4273), official split: the train split
trains (a validation part carved from it picks the epoch), the official test split evaluates.

python main.py --config=configs/gan_004.py:npz=../shared/data/images/pneumoniamnist_28x28.npz \
    --workdir=runs/gan004 --mode=sweep            (CPU: about half an hour)
python main.py --config=configs/gan_004.py:npz=...,tiny --workdir=/tmp/g --mode=sweep
python main.py --config=configs/gan_004.py:npz=...,full --workdir=runs/gan004_64 --mode=sweep
    (GPU: the seed's 64x64 images, widths and 10 epochs of GAN training)
"""

from jimb.config import arms, base_config, parse_arg

ARMS = {
    "original": {},
    "augment": {"augment.enabled": True},
    "vanilla_gan": {"synth.method": "dcgan"},
    "lsgan": {"synth.method": "lsgan", "synth.lsgan.arch": "mlp"},
    "cgan": {"synth.method": "cgan", "synth.cgan.arch": "mlp"},
}
GANS = ("dcgan", "lsgan", "cgan")   # the arms' GANs, sized alike


def get_config(arg=None):
  a = parse_arg(arg, npz="", tiny=False, full=False)
  c = base_config()
  c.data.update(dict(source="npz", path=a.npz, npz_split=0, test_split="2"))
  c.split.update(dict(mode="holdout", val_fraction=0.1))
  # Flips and rotations only (no colour changes): the baseline GAN balancing must beat.
  c.augment.update(dict(enabled=False, hflip=True, vflip=False, rotation=10.0, brightness=0.0,
                        contrast=0.0, saturation=0.0, hue=0.0))
  c.model.name = "small_cnn"   # the seed's CNN: three conv + pool blocks, two dense layers
  c.model.small_cnn = dict(widths=(32, 64, 128), dense=128, dropout=0.25, batch_norm=True)
  c.optim.update(dict(name="adam", learning_rate=1e-3))
  c.train.update(dict(batch_size=32, epochs=10, select_metric="macro_f1"))
  c.synth.update(dict(budget="majority", filter="none", judge_epochs=3, log_every=250))
  # Adam 2e-4, betas 0.5 / 0.999 (the GANs' defaults), latent 100, batch 32: the seed's settings.
  for gan in GANS:
    c.synth[gan].update(dict(latent_dim=100, widths="64,32", hidden="256,512", steps=1500,
                             batch_size=32))
  c.sweep.update(dict(control="original", per_class=True))
  if a.full:
    c.data.image_size = 64
    for gan in GANS:
      c.synth[gan].update(dict(widths="512,256,128,64", hidden="256,512,1024", steps=4000))
  if a.tiny:
    c.model.small_cnn.update(dict(widths=(4, 8), dense=16))
    c.train.epochs = 1
    c.synth.update(dict(judge_epochs=1, judge_batch_size=32, log_every=2))
    for gan in GANS:
      c.synth[gan].update(dict(latent_dim=8, widths="8,4", hidden="16", steps=4, batch_size=8))
  return c


def sweep(arg=None):
  """The arms of the seed's Table 1, side by side (sweep.md's per-class table)."""
  del arg   # the arms are the same at every size
  return arms(ARMS)
