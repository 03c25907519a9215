"""Transfer learning as in the TLC seed: DenseNet-121 from ImageNet weights, the classifier warmed
up alone for 10 epochs, then the first two dense blocks frozen (their BatchNorm statistics too)
and the rest trained.

python main.py --config=configs/transfer.py --workdir=runs/transfer        (GPU; downloads weights)
python main.py --config=configs/transfer.py:cpu --workdir=runs/transfer_cpu  (HAM10000 at 32x32,
    random init: the same schedule, CPU-sized; set --config.model.pretrained=/path/weights.h5)
python main.py --config=configs/transfer.py:tiny --workdir=/tmp/t          (smoke test, offline)
Any model works by name: --config.model.name=efficientnet_b3 --config.transfer.freeze='^(stem|blocks/0)/'
"""

from jimb.config import base_config, parse_arg

HAM10000 = "../shared/data/images/ham10000_28x28_rgb.npz"


def get_config(arg=None):
  a = parse_arg(arg, cpu=False, tiny=False)
  c = base_config()
  c.data.update(dict(source="npz", path=HAM10000, group_key="lesion_id", image_size=224))
  c.split.folds, c.split.val_fraction = 5, 0.15
  c.sampler.name = "instance"
  c.augment.update(dict(enabled=True, hflip=True, vflip=True, rotation=20.0, brightness=0.2,
                        contrast=0.2, saturation=0.2, hue=0.05))
  c.model.name, c.model.pretrained = "densenet121", "imagenet"
  c.model.densenet121 = dict(remat=False, dropout=0.0, head_hidden=0)
  c.transfer.update(dict(warmup_epochs=10, freeze_batch_norm=True,
                         freeze="^(stem|blocks/0|blocks/1|transitions/0|transitions/1)/"))
  c.optim.update(dict(name="adam", learning_rate=1e-4))
  c.train.update(dict(batch_size=32, eval_batch_size=128, epochs=40, patience=10))
  if a.cpu or a.tiny:
    c.model.pretrained = ""
    c.data.image_size = 32
    c.transfer.warmup_epochs = 2
    c.train.epochs = 8
  if a.tiny:  # offline: bundled digits at 32x32, a narrow DenseNet-121
    c.data.update(dict(source="sklearn", name="digits", path="", group_key=""))
    c.augment.update(dict(hflip=False, vflip=False, saturation=0.0, hue=0.0))
    c.model.densenet121.growth_rate = 4
    c.split.folds = 2
    c.transfer.warmup_epochs = 1
    c.train.epochs, c.train.patience = 2, 0
  return c
