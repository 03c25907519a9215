"""The run report's figures: pure functions from saved results (dicts, arrays) to Figures.

Nothing here reads files or trains: jimb.render.run loads what a finished run saved and passes
it in, so each figure can be checked against an independent computation (scikit-learn's).
"""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib
matplotlib.use("Agg")   # files only: no display, the same pixels on every machine
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from etils import epath  # noqa: E402

from jimb import files, metrics  # noqa: E402

LOG_SCALE_RATIO = 20   # class counts spanning more than this are drawn on a log axis


def encode(fig: Figure, fmt: str = "png", dpi: float | None = None) -> bytes:
  """The figure as PNG or PDF bytes, without the writer's version or date in them (the same
  figure gives the same bytes)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format=fmt, dpi=dpi or "figure",
              metadata={"CreationDate": None} if fmt == "pdf" else {"Software": None})
  return buffer.getvalue()


def save(fig: Figure, path: epath.Path, fmt: str = "png", dpi: float | None = None) -> bytes:
  """Writes the figure to `path` atomically; returns its bytes (for embedding in a page)."""
  data = encode(fig, fmt, dpi)
  with files.replacing(path) as f:
    f.write(data)
  return data


def _figure(width: float, height: float, cols: int = 1) -> tuple[Figure, list]:
  fig = Figure(figsize=(width, height), layout="constrained")
  return fig, list(np.atleast_1d(fig.subplots(1, cols)))


def _counts_axis(ax, counts: np.ndarray) -> None:
  """Log scale for counts spanning more than LOG_SCALE_RATIO; head room for the legend."""
  positive = counts[counts > 0]
  if len(positive) and positive.max() / positive.min() > LOG_SCALE_RATIO:
    ax.set_yscale("log")
    ax.set_ylim(top=positive.max() * 4)
  elif len(positive):
    ax.set_ylim(top=positive.max() * 1.3)


def class_counts(class_names: Sequence[str], source: Sequence[int], after_imbalance: Sequence[int],
                 folds: Sequence[dict]) -> Figure:
  """Examples per class: the source data, after `imbalance`, and each fold's training part as
  trained on (real rows, with synthetic rows stacked on top when synthesis added some)."""
  k = len(class_names)
  x = np.arange(k)
  fig, (left, right) = _figure(11, 3.6, 2)
  width = 0.4
  left.bar(x - width / 2, source, width, label="source")
  left.bar(x + width / 2, after_imbalance, width, label="after imbalance")
  left.set_title("data set")
  _counts_axis(left, np.asarray([*source, *after_imbalance]))
  width = 0.8 / max(len(folds), 1)
  drawn = []
  for i, fold in enumerate(folds):
    counts = fold["class_counts"]
    total = np.asarray(counts.get("train_resampled", counts["train"]), float)
    synthetic = np.asarray(counts.get("train_synthetic", np.zeros(k)), float)
    at = x - 0.4 + width * (i + 0.5)
    bar = right.bar(at, total - synthetic, width, label=f"fold {fold['index']}")
    if synthetic.any():
      right.bar(at, synthetic, width, bottom=total - synthetic,
                color=bar.patches[0].get_facecolor(), alpha=0.35, hatch="//",
                label=None if i else "synthetic (hatched)")
    drawn.append(total)
  right.set_title("training parts (after resampling / synthesis)")
  _counts_axis(right, np.concatenate(drawn) if drawn else np.zeros(0))
  for ax in (left, right):
    ax.set_xticks(x, class_names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_ylabel("examples")
    ax.legend(fontsize="small", ncols=2, loc="upper right")
  return fig


def learning_curves(folds: Sequence[dict], select_metric: str) -> Figure:
  """Per fold: training loss and the validation metric that picks the best epoch (marked)."""
  fig, (loss_ax, val_ax) = _figure(11, 3.6, 2)
  for fold in folds:
    epochs = [h["epoch"] for h in fold["history"]]
    line, = loss_ax.plot(epochs, [h["loss"] for h in fold["history"]],
                         label=f"fold {fold['index']}")
    values = [h["val"][select_metric] for h in fold["history"]]
    val_ax.plot(epochs, values, color=line.get_color(), label=f"fold {fold['index']}")
    if fold["best_epoch"] in epochs:
      val_ax.plot(fold["best_epoch"], values[epochs.index(fold["best_epoch"])], "*",
                  color=line.get_color(), markersize=12)
  loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss")
  val_ax.set(title=f"validation {select_metric} (* best epoch)", xlabel="epoch",
             ylabel=select_metric)
  for ax in (loss_ax, val_ax):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
  return fig


def confusion(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> Figure:
  """The pooled out-of-fold confusion matrix: counts, and rows normalised to recall."""
  counts = metrics.confusion_matrix(labels, predicted, len(class_names))
  rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  size = 3.2 + 0.35 * len(class_names)
  fig, axes = _figure(2 * size + 1, size, 2)
  for ax, matrix, title, fmt in ((axes[0], counts, "counts", "d"),
                                 (axes[1], rows, "row-normalised (recall)", ".2f")):
    skm.ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(
        ax=ax, values_format=fmt, colorbar=False, cmap="Blues",
        xticks_rotation=45 if len(class_names) > 6 else "horizontal")
    ax.set_title(title)
  return fig


def _macro_curve(xs: list[np.ndarray], ys: list[np.ndarray], decreasing: bool) -> tuple:
  """The mean of per-class curves on a common grid (scikit-learn's macro-average ROC recipe)."""
  grid = np.linspace(0, 1, 201)
  interp = [np.interp(grid, x[::-1], y[::-1]) if decreasing else np.interp(grid, x, y)
            for x, y in zip(xs, ys)]
  return grid, np.mean(interp, axis=0)


def roc_pr(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> Figure:
  """One-vs-rest ROC and precision-recall curves per class from the pooled out-of-fold
  probabilities (AUC / AP in the legend), with the macro curve. A class absent from `labels`
  has no curve."""
  fig, (roc_ax, pr_ax) = _figure(11, 5, 2)
  fprs, tprs, recalls, precisions = [], [], [], []
  for c, name in enumerate(class_names):
    truth = labels == c
    if truth.all() or not truth.any():
      continue
    roc = skm.RocCurveDisplay.from_predictions(truth, probs[:, c], name=str(name), ax=roc_ax,
                                               plot_chance_level=False)
    pr = skm.PrecisionRecallDisplay.from_predictions(truth, probs[:, c], name=str(name), ax=pr_ax)
    fprs.append(roc.fpr), tprs.append(roc.tpr)
    recalls.append(pr.recall), precisions.append(pr.precision)
  if fprs:
    grid, tpr = _macro_curve(fprs, tprs, decreasing=False)
    roc_ax.plot(grid, tpr, "k--", lw=2, label=f"macro (AUC = {np.trapezoid(tpr, grid):.2f})")
    grid, precision = _macro_curve(recalls, precisions, decreasing=True)
    pr_ax.plot(grid, precision, "k--", lw=2, label="macro (interpolated mean)")
  roc_ax.plot([0, 1], [0, 1], ":", color="0.6")
  roc_ax.set(title="ROC, one vs rest", xlabel="false positive rate", ylabel="true positive rate")
  pr_ax.set(title="precision-recall, one vs rest", xlabel="recall", ylabel="precision")
  roc_ax.legend(fontsize="x-small", loc="lower right")
  pr_ax.legend(fontsize="x-small", loc="lower left")
  return fig


def reliability(labels: np.ndarray, probs: dict[str, np.ndarray]) -> Figure:
  """Reliability diagram of the top-class confidence (jimb.metrics.calibration's 15 bins), one
  panel per named set of probabilities (e.g. before and after temperature scaling)."""
  fig, axes = _figure(4.6 * len(probs), 4.4, len(probs))
  for ax, (name, p) in zip(axes, probs.items()):
    ece, bins = metrics.calibration(labels, p)
    edges = np.asarray(bins["edges"])
    accuracy = np.nan_to_num(np.asarray(bins["accuracy"], float))
    ax.bar(edges[:-1], accuracy, np.diff(edges), align="edge", edgecolor="k", alpha=0.8,
           label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="0.5", label="perfect calibration")
    ax.plot(np.asarray(bins["confidence"], float), np.asarray(bins["accuracy"], float), "o",
            color="C3", markersize=4, label="bin mean confidence")
    ax.set(title=f"{name}: ECE {ece:.3f}", xlabel="confidence (max probability)",
           ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize="small", loc="upper left")
  return fig


def generator_losses(histories: Sequence[dict]) -> Figure:
  """A synthesis stage's GAN / CycleGAN losses (its losses.json): one panel per loss, one line
  per model; each history holds `models`, `step` and per loss one value per model and step."""
  names = sorted({k for h in histories for k in h} - {"models", "step"})
  fig, axes = _figure(4.2 * len(names), 3.4, len(names))
  for ax, name in zip(axes, names):
    for h in (h for h in histories if name in h):
      values = np.asarray(h[name], float).reshape(len(h["step"]), -1)
      for j in range(values.shape[1]):
        ax.plot(h["step"], values[:, j], label=str(h["models"][j]))
    ax.set(title=name, xlabel="step")
  axes[0].legend(fontsize="x-small", title="model")
  return fig
