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
The six rows of one column are method x loss; the four columns are dataset x ir: the whole table
is one sweep (`sweep.md` ranks the rows within each column and tests them):
  python main.py --config=configs/tlc.py --workdir=runs/tlc_table3 --mode=sweep          (GPUs)
  python main.py --config=configs/tlc.py:cpu,npz=../shared/data/images/cifar10_jpeg_bytes.npz \
      --workdir=runs/tlc_cpu_table3 --mode=sweep       (CPU: the CIFAR-10 columns)
`tiny` is the CPU variant shrunk to a smoke run (growth rate 4, 2 epochs).
"""

from configs import cifar_lt
from jimb.config import base_config, override, parse_arg

LOSSES = {"ce": {"loss.name": "cross_entropy"},
          "focal": {"loss.name": "focal", "loss.gamma": 2.0, "loss.alpha": None},
          "cot": {"loss.name": "cot"}}
FIRST_TWO_BLOCKS = "^(stem|blocks/0|blocks/1|transitions/0|transitions/1)/"
TABLE3 = (("cifar10", 10.0), ("cifar10", 100.0), ("cifar100", 10.0), ("cifar100", 100.0))


def _args(arg):
  a = parse_arg(arg, method="tlc", loss="ce", dataset="cifar10", ir=100.0, npz="", cpu=False,
                tiny=False)
  if a.method not in ("baseline", "tlc"):
    raise ValueError(f"unknown method {a.method!r}; choose baseline or tlc")
  if a.loss not in LOSSES:
    raise ValueError(f"unknown loss {a.loss!r}; choose one of {sorted(LOSSES)}")
  return a


def method(name: str, small: bool) -> dict:
  """The keys in which the baseline and TLC rows differ (the CPU variant trains both alike:
  random weights leave nothing to warm up or freeze)."""
  tlc = name == "tlc"
  out = {"model.densenet121.remat": tlc, "augment.enabled": tlc,
         "sampler.name": "active" if tlc else "instance"}
  if not small:
    out.update({"transfer.warmup_epochs": 10 if tlc else 0,
                "transfer.freeze": FIRST_TWO_BLOCKS if tlc else "",
                "optim.name": "sgd" if tlc else "adam",
                "optim.learning_rate": 6e-4 if tlc else 1e-4})
  return out


def get_config(arg=None):
  a = _args(arg)
  small = a.cpu or a.tiny
  c = base_config()
  cifar_lt.set_data(c, a.dataset, a.ir, a.npz)
  c.data.image_size = 224                       # ImageNet resolution for the pretrained features
  c.model.name, c.model.pretrained = "densenet121", "imagenet"
  c.model.densenet121 = dict(remat=False, dropout=0.0, head_hidden=0)
  c.augment.update(dict(enabled=False, hflip=True, vflip=False, rotation=15.0, brightness=0.2,
                        contrast=0.2, saturation=0.2, hue=0.0))
  c.sampler.update(dict(contrast_fraction=0.1, update_every_steps=0, floor=1))
  c.transfer.freeze_batch_norm = True
  c.optim.momentum = 0.9
  c.train.update(dict(batch_size=128, eval_batch_size=256, epochs=200, patience=0,
                      select_metric="balanced_accuracy"))
  if small:
    c.data.image_size = 0                        # native 32x32
    c.model.pretrained = ""
    c.model.densenet121.growth_rate = 8
    c.optim.update(dict(name="adam", learning_rate=1e-3, schedule="cosine"))
    c.train.update(dict(batch_size=64, eval_batch_size=500, epochs=8))
  if a.tiny:
    c.model.densenet121.growth_rate = 4
    c.train.update(dict(batch_size=16, epochs=2))
  return override(c, {**method(a.method, small), **LOSSES[a.loss]}, where="configs/tlc.py")


def sweep(arg=None):
  """Table 3: method x loss (the rows) within each dataset x IR (the columns). With npz= only
  CIFAR-10's two columns (the npz holds CIFAR-10)."""
  a = _args(arg)
  if a.loss != "ce":
    raise ValueError("the Table-3 sweep sets every cell's loss; drop loss= from the argument")
  columns = [(d, ir) for d, ir in TABLE3 if d == "cifar10" or not a.npz]
  for dataset, ir in columns:
    task = f"{dataset}_ir{ir:g}"
    data = {"imbalance.ratio": ir, "imbalance.max_per_class": cifar_lt.N_MAX[dataset]}
    if not a.npz:
      data["data.name"] = dataset
    for name in ("baseline", "tlc"):
      for loss in LOSSES:
        yield {"_name": f"{task}_{name}_{loss}", "_method": f"{name}+{loss}", "_task": task,
               **data, **method(name, a.cpu or a.tiny), **LOSSES[loss]}
