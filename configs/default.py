"""The embedded default: scikit-learn's digits made long-tailed, small CNN, focal loss,
class-balanced sampling, 5-fold stratified CV. Runs offline on a laptop CPU.

python main.py --config=configs/default.py --workdir=runs/default
python main.py --config=configs/default.py:tiny --workdir=/tmp/t   (smoke test, seconds)
"""

from jimb.config import base_config, parse_arg


def get_config(arg=None):
  a = parse_arg(arg, tiny=False)
  c = base_config()
  c.seed = 0
  c.data.source, c.data.name = "sklearn", "digits"   # 1797 real 8x8 digit images
  c.imbalance.profile, c.imbalance.ratio = "exp", 10.0  # long tail: 180 ... 18 per class
  c.split.folds, c.split.val_fraction = 5, 0.15
  c.sampler.name = "class_balanced"
  # Rotation and brightness/contrast only: flipping digits would turn a 6 into a 9.
  c.augment.update(dict(enabled=True, hflip=False, vflip=False, rotation=15.0,
                        brightness=0.2, contrast=0.2, saturation=0.0, hue=0.0))
  c.model.name = "small_cnn"
  c.model.small_cnn = dict(widths=(32, 64, 128), dense=128, dropout=0.25, batch_norm=True)
  c.loss.update(dict(name="focal", gamma=2.0, alpha=0.25))
  c.optim.update(dict(name="adam", learning_rate=3e-3, schedule="cosine"))
  c.train.update(dict(batch_size=32, epochs=30, patience=10, select_metric="macro_f1"))
  if a.tiny:
    c.model.small_cnn.widths, c.model.small_cnn.dense = (4, 8, 8), 16
    c.split.folds = 3
    c.train.epochs, c.train.patience = 2, 0
  return c
