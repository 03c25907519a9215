"""CIFAR-10-LT / CIFAR-100-LT (Cao et al. 2019): the official training split thinned per class to
n_c = n_max * IR^(-c / (K - 1)) (seeded, nested across ratios), tested on the untouched, balanced
official test split. Reports per-class and many/medium/few-shot accuracy beside the imbalance
metrics. Inputs come from TFDS (`cifar10` / `cifar100`, prepared, or downloaded with
--config.data.download=True) or from an .npz with the same arrays and a `split` array.

python main.py --config=configs/cifar_lt.py --workdir=runs/c10lt100                  (tfds cifar10, IR 100)
python main.py --config=configs/cifar_lt.py:dataset=cifar100,ir=10 --workdir=runs/c100lt10
python main.py --config=configs/cifar_lt.py:npz=../shared/data/images/cifar10_jpeg_bytes.npz \
    --workdir=runs/c10lt100_npz                                                      (offline copy)
Add `tiny` for a seconds-long smoke run (a tiny CNN, 2 epochs).
"""

from jimb.config import base_config, parse_arg

N_MAX = {"cifar10": 5000, "cifar100": 500}


def set_data(c, dataset: str = "cifar10", ir: float = 100.0, npz: str = "") -> None:
  """Points `c` at CIFAR-`dataset`-LT with imbalance ratio `ir` (TFDS, or `npz` when given)."""
  if dataset not in N_MAX:
    raise ValueError(f"unknown CIFAR-LT dataset {dataset!r}; choose one of {sorted(N_MAX)}")
  if npz:   # npz rows: split 0 = train, 1 = test (as ../shared/data/images/cifar10_jpeg_bytes.npz)
    c.data.update(dict(source="npz", path=npz, npz_split=0, test_split="1"))
  else:
    c.data.update(dict(source="tfds", name=dataset, split="train", test_split="test"))
  c.imbalance.update(dict(profile="exp", ratio=ir, max_per_class=N_MAX[dataset]))
  c.split.update(dict(mode="holdout", val_fraction=0.1))
  # Liu et al. 2019's shot groups; CIFAR-100-LT at IR 100 spans 500 ... 5 per class.
  c.report.update(dict(many_shot=100, few_shot=20))


def get_config(arg=None):
  a = parse_arg(arg, dataset="cifar10", ir=100.0, npz="", tiny=False)
  c = base_config()
  set_data(c, a.dataset, a.ir, a.npz)
  c.sampler.name = "instance"
  c.augment.update(dict(enabled=True, hflip=True, vflip=False, rotation=10.0, brightness=0.2,
                        contrast=0.2, saturation=0.2, hue=0.0))
  c.model.name = "small_cnn"
  c.model.small_cnn = dict(widths=(32, 64, 128), dense=128, dropout=0.25, batch_norm=True)
  c.optim.update(dict(name="adam", learning_rate=1e-3, schedule="cosine"))
  c.train.update(dict(batch_size=128, eval_batch_size=512, epochs=30, select_metric="macro_f1"))
  if a.tiny:
    c.model.small_cnn.update(dict(widths=(4, 8), dense=16))
    c.train.update(dict(batch_size=16, epochs=2))
  return c
