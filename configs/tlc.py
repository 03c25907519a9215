"""The TLC paper's Table 3 (seed 003): DenseNet-121 vs TLC, each with cross-entropy, focal loss or
COT, on CIFAR-10-LT / CIFAR-100-LT at imbalance ratio 10 or 100 (configs/cifar_lt.py data).

baseline  DenseNet-121 from ImageNet weights, fine-tuned end to end, instance sampling, no
          augmentation: the standard DenseNet121+{CE,FL,COT} rows.
tlc       TLC: the memory-efficient (rematerialised) DenseNet-121 from ImageNet weights,
          real-time augmentation, the classifier warmed up alone for 10 epochs, then the first two
          dense blocks frozen and the rest trained with active sampling (per-class batch quotas
          from the F1 on a contrast part, updated every epoch), SGD lr 6e-4, momentum 0.9.

Full size (GPU; downloads Keras ImageNet weights and, without npz=, TFDS CIFAR):
  python main.py --config=configs/tlc.py:method=tlc,loss=cot,ir=10 --workdir=runs/tlc_cot_ir10
Small CPU variant (CIFAR-10 from the npz, 32x32, a narrow DenseNet-121 from random weights, a few
epochs; there is nothing to transfer, so no warm-up or freezing):
  python main.py --config=configs/tlc.py:method=tlc,loss=ce,cpu,npz=../shared/data/images/cifar10_jpeg_bytes.npz \
      --workdir=runs/tlc_cpu
The six rows of one column are method x loss; the four columns are dataset x ir. `tiny` is the
CPU variant shrunk to a smoke run (growth rate 4, 2 epochs).
"""

from configs import cifar_lt
from jimb.config import base_config, parse_arg

LOSSES = {"ce": dict(name="cross_entropy"), "focal": dict(name="focal", gamma=2.0, alpha=None),
          "cot": dict(name="cot")}
FIRST_TWO_BLOCKS = "^(stem|blocks/0|blocks/1|transitions/0|transitions/1)/"


def get_config(arg=None):
  a = parse_arg(arg, method="tlc", loss="ce", dataset="cifar10", ir=100.0, npz="", cpu=False,
                tiny=False)
  if a.method not in ("baseline", "tlc"):
    raise ValueError(f"unknown method {a.method!r}; choose baseline or tlc")
  if a.loss not in LOSSES:
    raise ValueError(f"unknown loss {a.loss!r}; choose one of {sorted(LOSSES)}")
  tlc = a.method == "tlc"
  c = base_config()
  cifar_lt.set_data(c, a.dataset, a.ir, a.npz)
  c.data.image_size = 224                       # ImageNet resolution for the pretrained features
  c.model.name, c.model.pretrained = "densenet121", "imagenet"
  c.model.densenet121 = dict(remat=tlc, dropout=0.0, head_hidden=0)
  c.loss.update(LOSSES[a.loss])
  c.augment.update(dict(enabled=tlc, hflip=True, vflip=False, rotation=15.0, brightness=0.2,
                        contrast=0.2, saturation=0.2, hue=0.0))
  if tlc:
    c.sampler.update(dict(name="active", contrast_fraction=0.1, update_every_steps=0, floor=1))
    c.transfer.update(dict(warmup_epochs=10, freeze=FIRST_TWO_BLOCKS, freeze_batch_norm=True))
  c.optim.update(dict(name="sgd", learning_rate=6e-4, momentum=0.9) if tlc else
                 dict(name="adam", learning_rate=1e-4))
  c.train.update(dict(batch_size=128, eval_batch_size=256, epochs=200, patience=0,
                      select_metric="balanced_accuracy"))
  if a.cpu or a.tiny:
    c.data.image_size = 0                        # native 32x32
    c.model.pretrained = ""
    c.model.densenet121.growth_rate = 8
    c.transfer.update(dict(warmup_epochs=0, freeze=""))
    c.optim.update(dict(name="adam", learning_rate=1e-3, schedule="cosine"))
    c.train.update(dict(batch_size=64, eval_batch_size=500, epochs=8))
  if a.tiny:
    c.model.densenet121.growth_rate = 4
    c.train.update(dict(batch_size=16, epochs=2))
  return c
