"""The run report: figures drawn from hand-made results checked against scikit-learn, the page's
HTML, and `--mode=report` on a trained tiny run (checkpoints untouched, the page seen in a
browser)."""

from __future__ import annotations

import html.parser
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from jimb import experiment, metrics
from jimb.render import figures, html as page_html, run
from tests import browser
from tests.helpers import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ["benign", "malignant", "other"]


def _predictions(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Labels and probabilities that carry some signal, so every curve has a shape."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n)
  logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return labels, probs


def _fold(index: int, test: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict:
  return {"index": index, "sizes": {"train": 60, "val": 10, "test": len(test)},
          "class_counts": {"train": [30, 20, 10], "val": [5, 3, 2],
                           "test": np.bincount(labels, minlength=3).tolist(),
                           "train_resampled": [30, 30, 30], "train_synthetic": [0, 10, 20]},
          "best_epoch": 2, "epochs_run": 3,
          "history": [{"epoch": e, "loss": 1.0 / e, "val": {"macro_f1": 0.5 + 0.1 * (e == 2)}}
                      for e in (1, 2, 3)],
          "test": metrics.classification_metrics(labels, probs, 3)}


def _results(labels: np.ndarray, probs: np.ndarray) -> dict:
  """A results.json as a two-fold run writes it (the keys the report reads)."""
  halves = np.array_split(np.arange(len(labels)), 2)
  folds = [_fold(i, h, labels[h], probs[h]) for i, h in enumerate(halves)]
  pooled = metrics.classification_metrics(labels, probs, 3)
  pooled["ci"] = {"macro_f1": [0.4, 0.6]}
  return {"config": {"seed": 0, "train": {"select_metric": "macro_f1"}, "model": {"x": 1}},
          "data": {"name": "hand-made", "num_examples": len(labels), "class_names": NAMES,
                   "source_class_counts": {"benign": 40, "malignant": 30, "other": 20},
                   "class_counts": [40, 30, 20], "grouped": True, "group_by": "patient",
                   "num_groups": 12, "duplicates": {"exact_pairs": 1, "near_pairs": 2,
                                                    "examples_involved": 5, "folds": []}},
          "folds": folds,
          "summary": {"mean_std": metrics.summarize([f["test"] for f in folds]),
                      "pooled": pooled, "pooled_calibrated": {"ece": 0.01, "brier": 0.3}}}


def _workdir(tmp_path: pathlib.Path, labels, probs, with_labels: bool = True) -> pathlib.Path:
  results = _results(labels, probs)
  (tmp_path / "results.json").write_text(json.dumps(results))
  start = 0
  for fold in results["folds"]:
    n = fold["sizes"]["test"]
    part = slice(start, start + n)
    arrays = {"index": np.arange(start, start + n), "probs": probs[part]}
    if with_labels:
      arrays.update(labels=labels[part], probs_calibrated=probs[part] ** 0.5 / (
          probs[part] ** 0.5).sum(1, keepdims=True), decision_pred=probs[part].argmin(1))
    (tmp_path / f"fold_{fold['index']}").mkdir()
    np.savez(tmp_path / f"fold_{fold['index']}" / "test_probs.npz", **arrays)
    start += n
  return tmp_path


def test_roc_and_pr_curves_are_sklearns():
  labels, probs = _predictions()
  fig = figures.roc_pr(labels, probs, NAMES)
  roc_ax, pr_ax = fig.axes
  for c in range(3):
    fpr, tpr, _ = skm.roc_curve(labels == c, probs[:, c])
    np.testing.assert_allclose(roc_ax.lines[c].get_xydata(), np.stack([fpr, tpr], 1))
    precision, recall, _ = skm.precision_recall_curve(labels == c, probs[:, c])
    np.testing.assert_allclose(pr_ax.lines[c].get_xydata(), np.stack([recall, precision], 1))
    auc = skm.roc_auc_score(labels == c, probs[:, c])
    assert f"AUC = {auc:.2f}" in roc_ax.get_legend().get_texts()[c].get_text()
    ap = skm.average_precision_score(labels == c, probs[:, c])
    assert f"AP = {ap:.2f}" in pr_ax.get_legend().get_texts()[c].get_text()
  macro = roc_ax.lines[3].get_xydata()   # the mean of per-class TPRs on a common FPR grid
  grid_tpr = np.mean([np.interp(macro[:, 0], *skm.roc_curve(labels == c, probs[:, c])[:2])
                      for c in range(3)], axis=0)
  np.testing.assert_allclose(macro[:, 1], grid_tpr)


def test_confusion_matrix_is_sklearns():
  labels, probs = _predictions()
  counts_ax, rows_ax = figures.confusion(labels, probs.argmax(1), NAMES).axes
  expected = skm.confusion_matrix(labels, probs.argmax(1))
  np.testing.assert_array_equal(counts_ax.images[0].get_array(), expected)
  np.testing.assert_allclose(rows_ax.images[0].get_array(),
                             skm.confusion_matrix(labels, probs.argmax(1), normalize="true"))
  assert [t.get_text() for t in counts_ax.get_xticklabels()] == NAMES


def test_reliability_bins_are_the_top_class_accuracy():
  labels, probs = _predictions(300)
  fig = figures.reliability(labels, {"softmax": probs, "scaled": probs ** 0.5})
  assert len(fig.axes) == 2
  confidence, correct = probs.max(1), probs.argmax(1) == labels
  heights = [bar.get_height() for bar in fig.axes[0].patches]
  for b in range(15):   # by hand: (b/15, (b+1)/15]
    inside = (confidence > b / 15) & (confidence <= (b + 1) / 15)
    assert heights[b] == pytest.approx(correct[inside].mean() if inside.any() else 0.0)
  ece = sum(abs(correct[(confidence > b / 15) & (confidence <= (b + 1) / 15)].sum()
                - confidence[(confidence > b / 15) & (confidence <= (b + 1) / 15)].sum())
            for b in range(15)) / len(labels)
  assert f"ECE {ece:.3f}" in fig.axes[0].get_title()


def test_class_counts_and_learning_curves_draw_the_records():
  labels, probs = _predictions()
  results = _results(labels, probs)
  fig = figures.class_counts(NAMES, [40, 30, 20], [40, 30, 1], results["folds"])
  left, right = fig.axes
  assert [p.get_height() for p in left.patches] == [40, 30, 20, 40, 30, 1]
  assert left.get_yscale() == "log"   # 40 / 1 > 20
  real, synthetic = right.containers[:2]   # fold 0: real rows, synthetic stacked on top
  assert [p.get_height() for p in real] == [30, 20, 10]
  assert [(p.get_y(), p.get_height()) for p in synthetic] == [(30, 0), (20, 10), (10, 20)]
  assert right.get_yscale() == "linear"
  loss_ax, val_ax = figures.learning_curves(results["folds"], "macro_f1").axes
  np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [1.0, 0.5, 1 / 3])
  best = val_ax.lines[1].get_xydata()
  np.testing.assert_allclose(best, [[2, 0.6]])


class _Checker(html.parser.HTMLParser):
  """Every opened tag closed in order (void elements excepted), and the tags seen."""
  VOID = {"meta", "img", "br", "hr", "link", "input"}

  def __init__(self):
    super().__init__()
    self.open, self.seen = [], []

  def handle_starttag(self, tag, attrs):
    self.seen.append((tag, dict(attrs)))
    if tag not in self.VOID:
      self.open.append(tag)

  def handle_endtag(self, tag):
    assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
    self.open.pop()


def _check_html(text: str) -> list[tuple[str, dict]]:
  checker = _Checker()
  checker.feed(text)
  checker.close()
  assert not checker.open, f"unclosed: {checker.open}"
  tags = [t for t, _ in checker.seen]
  assert "script" not in tags
  for tag, attrs in checker.seen:
    for value in attrs.values():
      assert not (value or "").startswith(("http:", "https:", "//")), (tag, attrs)
  assert "http://" not in text and "https://" not in text
  return checker.seen


def test_html_builder_escapes_and_closes():
  page = page_html.document("a <b> & c", [page_html.section(
      "s", page_html.table(["x", "<y>"], [[1.5, None], ["<i>", 2]], "cap"),
      page_html.figure(b"\x89PNG", "caption", alt='"quoted"'),
      page_html.folded("more", page_html.paragraph("text")))])
  seen = _check_html(page)
  assert ("i", {}) not in seen and "&lt;i&gt;" in page and "1.5000" in page
  assert [a["src"][:22] for t, a in seen if t == "img"] == ["data:image/png;base64,"]


def test_report_from_saved_files(tmp_path):
  labels, probs = _predictions()
  workdir = _workdir(tmp_path, labels, probs)
  text = run.write(workdir).read_text()
  seen = _check_html(text)
  names = ["class_counts", "learning_curves", "confusion", "confusion_decision", "roc_pr",
           "reliability"]
  assert sum(t == "img" for t, _ in seen) == len(names)
  for name in names:
    assert (workdir / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
  for name in run.VECTOR:
    assert (workdir / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
  for expected in ("grouped by patient, 12 groups", "Calibrated (pooled",
                   "1 exact and 2 near pairs", "[0.4, 0.6]", "pooled_calibrated",
                   "recall (sensitivity)", "model.x"):
    assert expected in text, expected


def test_report_opens_offline_in_a_browser(tmp_path):
  reason = browser.skip_reason()
  if reason:
    pytest.skip(reason)
  labels, probs = _predictions()
  page = run.write(_workdir(tmp_path, labels, probs))
  seen = browser.check_page(page, tmp_path / "report.png")
  assert seen["console_errors"] == []
  assert seen["images"] == seen["images_loaded"] == 6
  assert seen["title"] == f"hand-made: {tmp_path.name}"


def test_report_of_a_workdir_without_saved_labels_says_why(tmp_path):
  labels, probs = _predictions()
  workdir = _workdir(tmp_path, labels, probs, with_labels=False)
  text = run.write(workdir).read_text()
  assert "holds no test labels" in text
  assert not (workdir / "figures" / "confusion.png").exists()
  assert (workdir / "figures" / "learning_curves.png").exists()


def test_missing_results_name_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="train there first"):
    run.write(tmp_path)


def _tree(root: pathlib.Path) -> dict[str, tuple[int, int]]:
  return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
          for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_mode_report_redraws_a_trained_run(tmp_path):
  """Training writes the report; --mode=report draws the same files again without training."""
  experiment.train_and_evaluate(tiny_config(), tmp_path, log=lambda s: None)
  page = tmp_path / "report.html"
  before = {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()}
  first = page.read_text()
  checkpoints = {f: _tree(f) for f in tmp_path.glob("fold_*/checkpoints")}
  assert checkpoints and set(before) >= {"confusion.png", "roc_pr.png", "reliability.png"}
  page.unlink()
  for p in (tmp_path / "figures").iterdir():
    p.unlink()
  proc = subprocess.run([sys.executable, "main.py", f"--workdir={tmp_path}", "--mode=report"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert page.read_text() == first
  after = {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()}
  assert {k: v for k, v in after.items() if k.endswith(".png")} == {
      k: v for k, v in before.items() if k.endswith(".png")}
  assert after.keys() == before.keys()
  assert {f: _tree(f) for f in checkpoints} == checkpoints   # nothing retrained or rewritten
  assert "epoch" not in proc.stdout   # no training progress
  reason = browser.skip_reason()
  if reason:
    pytest.skip(reason)
  seen = browser.check_page(page, tmp_path / "report.png")
  assert seen["console_errors"] == []
  assert seen["images"] == seen["images_loaded"] == first.count("<img ")
  assert seen["title"].endswith(tmp_path.name)
