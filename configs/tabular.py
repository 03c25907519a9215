"""Clinical-table default: the three-layer LeakyReLU MLP with focal loss on scikit-learn's
breast cancer table (212 malignant / 357 benign), standard scaling fitted per training fold.

python main.py --config=configs/tabular.py --workdir=runs/tabular
Other tables: --config.data.source=npz --config.data.path=../shared/data/tabular/liver_pbc_stage.npz
  --config.data.impute=median   (NaN = missing; the imputer is fitted on each training fold only)
"""

from jimb.config import base_config, parse_arg


def get_config(arg=None):
  a = parse_arg(arg, tiny=False)
  c = base_config()
  c.data.source, c.data.name = "sklearn", "breast_cancer"
  c.data.normalize = "dataset"
  c.split.folds, c.split.val_fraction = 5, 0.15
  c.sampler.name = "instance"
  c.model.name = "mlp"
  c.model.mlp = dict(hidden=(128, 64), dropout=0.1, negative_slope=0.01)
  c.loss.update(dict(name="focal", gamma=2.0, alpha=0.25))
  c.optim.update(dict(name="adam", learning_rate=1e-3))
  c.train.update(dict(batch_size=32, epochs=40, patience=10, select_metric="macro_f1"))
  if a.tiny:
    c.model.mlp.hidden = (8, 8)
    c.split.folds = 3
    c.train.epochs, c.train.patience = 2, 0
  return c
