"""Seed 000's Table 1: the focal-loss ablation (alpha, gamma) against plain cross-entropy on
HAM10000, with stratified 5-fold CV grouped by lesion and no balancing beyond the loss.

The seed reports (alpha, gamma) = (0.25, 1.0), (0.25, 2.0) and (0.5, 2.0) and names (0.25, 2.0)
best (macro-F1 0.9685); its protocol balanced the whole set before splitting by image (see
docs/reproductions.md, leak demonstration), so its numbers are not comparable with these.

python main.py --config=configs/focal_000.py:npz=../shared/data/images/ham10000_28x28_rgb.npz \
    --workdir=runs/focal000 --mode=sweep      (CPU variant: 28x28, small CNN, all five folds)
python main.py --config=configs/focal_000.py:npz=<ham10000 at full size>,full \
    --workdir=runs/focal000_full --mode=sweep (GPU: EfficientNet-B3 from ImageNet weights at
    224x224, the seed's learning rate 1e-4 and batch 32)
"""

from jimb.config import arms, base_config, parse_arg

ARMS = {
    "cross_entropy": {},
    "focal_a0.25_g1": {"loss.name": "focal", "loss.alpha": 0.25, "loss.gamma": 1.0},
    "focal_a0.25_g2": {"loss.name": "focal", "loss.alpha": 0.25, "loss.gamma": 2.0},
    "focal_a0.5_g2": {"loss.name": "focal", "loss.alpha": 0.5, "loss.gamma": 2.0},
}


def get_config(arg=None):
  a = parse_arg(arg, npz="", tiny=False, full=False)
  c = base_config()
  c.data.update(dict(source="npz", path=a.npz, group_key="lesion_id"))
  c.split.update(dict(folds=5, val_fraction=0.1))
  c.augment.update(dict(enabled=True, hflip=True, vflip=True, rotation=20.0, brightness=0.2,
                        contrast=0.2, saturation=0.2, hue=0.2))
  c.loss.name = "cross_entropy"   # the arms add focal loss and its options
  c.model.name = "small_cnn"
  c.model.small_cnn = dict(widths=(32, 64), dense=64, dropout=0.25, batch_norm=True)
  c.optim.update(dict(name="adam", learning_rate=1e-3))
  c.train.update(dict(batch_size=64, epochs=10, select_metric="macro_f1"))
  c.sweep.update(dict(control="focal_a0.25_g2", per_class=True))
  if a.full:
    c.data.image_size = 224
    c.model.update(dict(name="efficientnet_b3", pretrained="imagenet"))
    c.optim.learning_rate = 1e-4
    c.train.update(dict(batch_size=32, epochs=30))
  if a.tiny:
    c.model.small_cnn.update(dict(widths=(4, 8), dense=16))
    c.split.update(dict(folds=3, only_folds="0"))
    c.train.epochs = 1
  return c


def sweep(arg=None):
  """Cross-entropy and the seed's three (alpha, gamma) pairs, side by side."""
  del arg   # the arms are the same at every size
  return arms(ARMS)
