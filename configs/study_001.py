"""Seed 001's resampling study: baseline vs image-space (IS), feature-space (FS) and two-stage
(TS) resampling with RUS / ROS / SMOTE over the linear, single-majority, single-minority and
half-minority scenarios at IR 2, 5, 10, k-fold; its Table II (mean AvAcc, CBA, MAvG and average
ranks within each (scenario, IR, fold)) is the ranked table of sweep.md. Resamplers balance
classes fully (sampling_strategy auto), SMOTE with k = 5. FS and TS cells share the stage-1
training of the baseline and of their image-space resampler (one job each).

python main.py --config=configs/study_001.py --workdir=runs/study --mode=sweep          (CPU: digits)
python main.py --config=configs/study_001.py:full --workdir=runs/study_full --mode=sweep
    (GPU: TFDS colorectal_histology, 150x150, 8 classes, MobileNet with a 1024-unit FC from
    ImageNet weights, RMSprop 1e-4, 20 epochs, batch 32, 10 folds: the seed's setting)
"""

from jimb.config import base_config, parse_arg

SCENARIOS = ("linear", "single_majority", "single_minority", "half_minority")
RATIOS = (2.0, 5.0, 10.0)
_R = {"RUS": "RandomUnderSampler", "ROS": "RandomOverSampler", "SMOTE": "SMOTE"}


def _method(image: str = "", feature: str = "") -> dict:
  """The overrides of one approach: an image-space and / or a feature-space resampler."""
  out = {"resample.image.name": _R.get(image, "")}
  if feature:
    out.update({"resample.feature.name": _R[feature], "stage2.method": "feature_resample"})
  return out


METHODS = {
    "baseline": _method(),
    "IS_RUS": _method("RUS"), "IS_ROS": _method("ROS"), "IS_SMOTE": _method("SMOTE"),
    "FS_RUS": _method(feature="RUS"), "FS_ROS": _method(feature="ROS"),
    "FS_SMOTE": _method(feature="SMOTE"),
    "TS_SMOTE+SMOTE": _method("SMOTE", "SMOTE"), "TS_SMOTE+RUS": _method("SMOTE", "RUS"),
}
TINY_METHODS = ("baseline", "IS_SMOTE", "FS_RUS", "TS_SMOTE+RUS")


def _args(arg):
  return parse_arg(arg, full=False, tiny=False)


def get_config(arg=None):
  a = _args(arg)
  c = base_config()
  c.data.update(dict(source="sklearn", name="digits"))
  c.split.update(dict(folds=5, val_fraction=0.15))
  c.sampler.name = "instance"
  c.resample.small_classes = "reduce_k"     # a tiny minority at IR 10 still gets SMOTE
  c.model.name = "small_cnn"
  c.model.small_cnn = dict(widths=(32, 64, 128), dense=128, dropout=0.25, batch_norm=True)
  c.optim.update(dict(name="rmsprop", learning_rate=1e-3))
  c.train.update(dict(batch_size=32, epochs=15, select_metric="balanced_accuracy"))
  c.stage2.update(dict(epochs=10, batch_size=32, learning_rate=1e-3))
  c.sweep.update(dict(metrics="balanced_accuracy,cba,mavg", control="baseline"))
  if a.full:
    c.data.update(dict(source="tfds", name="colorectal_histology", image_size=150))
    c.split.folds = 10
    c.model.update(dict(name="mobilenet_v1", pretrained="imagenet"))
    c.model.mobilenet_v1 = dict(head_hidden=1024)
    c.optim.update(dict(name="rmsprop", learning_rate=1e-4))
    c.train.update(dict(batch_size=32, epochs=20))
    # FS / TS fine-tune the whole head (FC 1024 + softmax), as the seed does.
    c.stage2.update(dict(epochs=20, batch_size=32, learning_rate=1e-4, layers="head"))
  if a.tiny:
    c.model.small_cnn.update(dict(widths=(4, 8), dense=16))
    c.split.folds = 2
    c.train.epochs, c.stage2.epochs = 2, 2
  return c


def sweep(arg=None):
  """Every scenario x IR x approach; ranks are taken within each (scenario, IR, fold)."""
  a = _args(arg)
  scenarios, ratios = (("linear",), (5.0,)) if a.tiny else (SCENARIOS, RATIOS)
  for scenario in scenarios:
    for ratio in ratios:
      task = f"{scenario}_ir{ratio:g}"
      for method in TINY_METHODS if a.tiny else METHODS:
        yield {"_name": f"{task}_{method}", "_method": method, "_task": task,
               "imbalance.profile": scenario, "imbalance.ratio": ratio, **METHODS[method]}
