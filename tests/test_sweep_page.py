"""The sweep's report page: CD cliques against Demsar's example and brute force, heatmap data
against sweep.json, a well-formed offline page opened in a browser, and a real tiny sweep (slow)."""

from __future__ import annotations

import html.parser
import itertools
import json
import textwrap

from matplotlib import text
from matplotlib.backends import backend_agg
import numpy as np
import pytest

import browser
from jimb import metrics
from jimb import sweep
from jimb.render import figures, stats_figures
from jimb.sweep import executors
from jimb.sweep import job as job_lib
from jimb.sweep import page
from jimb.sweep import tables

# Demsar (2006), Table 6: average ranks of C4.5, C4.5+m, C4.5+cf, C4.5+m+cf; CD at alpha 0.05
# and 0.10 (test_stats.py reproduces both).
NAMES = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
RANKS = [3.143, 2.000, 2.893, 1.964]
VOID = {"meta", "img", "br", "hr", "link", "input"}


def test_cliques_reproduce_demsar():
  # At alpha 0.05 even best and worst differ by 1.179 < 1.2536: one group of all four.
  assert stats_figures.cliques(RANKS, 1.2536) == [(3, 1, 2, 0)]
  # At alpha 0.10 (CD 1.12) C4.5 differs from C4.5+m and C4.5+m+cf (Demsar's Fig. 2): two bars,
  # {C4.5+m+cf, C4.5+m, C4.5+cf} and {C4.5+cf, C4.5}.
  assert stats_figures.cliques(RANKS, 1.12) == [(3, 1, 2), (2, 0)]
  assert stats_figures.cliques(RANKS, 0.01) == []
  fig = stats_figures.cd_diagram(NAMES, RANKS, 1.12, "AUC")
  assert len([l for l in fig.axes[0].lines if l.get_linewidth() > 3]) == 2


def test_cliques_are_the_maximal_groups_of_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(50):
    k = int(rng.integers(2, 8))
    ranks = np.round(rng.uniform(1, k, k), 1).tolist()
    cd = float(rng.uniform(0.2, 3))
    close = lambda g: max(ranks[i] for i in g) - min(ranks[i] for i in g) <= cd
    groups = [set(g) for n in range(2, k + 1) for g in itertools.combinations(range(k), n)
              if close(g)]
    maximal = [g for g in groups if not any(g < h for h in groups)]
    found = stats_figures.cliques(ranks, cd)
    assert sorted(map(sorted, found)) == sorted(map(sorted, maximal))
    assert all(list(g) == sorted(g, key=lambda i: (ranks[i], i)) for g in found)


def _assert_apart_and_inside(fig):
  """No two level texts overlap, and every text lies inside the figure (slanted column names
  are parallel and a column apart; their upright boxes overlap by design)."""
  canvas = backend_agg.FigureCanvasAgg(fig)
  canvas.draw()
  texts = [t for t in fig.findobj(text.Text) if t.get_visible() and t.get_text()]
  boxes = [t.get_window_extent(canvas.get_renderer()) for t in texts]
  level = [b for t, b in zip(texts, boxes) if t.get_rotation() == 0]
  for a, b in itertools.combinations(level, 2):
    assert not a.overlaps(b), f"texts at {a} and {b} overlap"
  width, height = canvas.get_width_height()
  for box in boxes:
    assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height, box


def test_cd_diagram_labels_every_method_and_no_text_overlaps():
  names = ["instance_sampling", "class_balanced", "TS_SMOTE+SMOTE", "a_long_method_name_here",
           "B", "WWWWWWWWWWWW", "D"]
  ranks = [2.1, 3.5, 3.6, 3.62, 5.0, 5.0, 6.5]
  fig = stats_figures.cd_diagram(names, ranks, 2.3, "AvAcc")
  texts = [t.get_text() for t in fig.axes[0].texts]
  for name, rank in zip(names, ranks):
    assert f"{name} ({rank:.2f})" in texts
  _assert_apart_and_inside(fig)
  # Three cliques: three thick bars.
  assert len([l for l in fig.axes[0].lines if l.get_linewidth() > 3]) == 3
  assert figures.encode(fig).startswith(b"\x89PNG")
  # A CD longer than the axis is cut at its end and says so.
  fig = stats_figures.cd_diagram(names[:3], [1.5, 1.5, 3.0], 2.343)
  assert "CD = 2.343 (beyond the axis)" in [t.get_text() for t in fig.axes[0].texts]
  _assert_apart_and_inside(fig)


@pytest.mark.parametrize("columns", [["IR5", "IR20"], ["single_majority_ir100", "linear_ir5",
                                                      "half_minority_ir10"]])
def test_heatmap_texts_stay_apart_and_inside(columns):
  rows = ["baseline", "TS_SMOTE+SMOTE", "FS_RUS"]
  values = np.arange(3.0 * len(columns)).reshape(3, len(columns)) / 10
  values[1, 0] = np.nan
  _assert_apart_and_inside(stats_figures.heatmap(rows, columns, values, "macro-F1"))


def _results(rng, k_classes=3):
  folds = [{"index": f, "test": {m: float(rng.uniform(0.3, 0.9)) for m in metrics.METRIC_NAMES}}
           for f in range(3)]
  pooled = {m: float(rng.uniform(0.3, 0.9)) for m in metrics.METRIC_NAMES}
  pooled["per_class"] = {k: rng.uniform(0, 1, k_classes).tolist() for k in
                         ("precision", "recall", "f1")}
  return {"folds": folds, "data": {"class_names": ["nevus", "melanoma", "bcc"]},
          "summary": {"pooled": pooled, "mean_std": metrics.summarize([f["test"] for f in folds])}}


def _summary(methods=("base", "focal", "drw"), tasks=("ir10", "ir100"), missing=(),
             per_class=True):
  """tables.summarise over hand-made cell results (a cell in `missing` has none)."""
  rng = np.random.default_rng(1)
  entries = [{"name": f"{t}_{m}", "method": m, "task": t, "overrides": {"loss.name": m},
              "workdir": f"/elsewhere/{t}_{m}",
              "results": None if f"{t}_{m}" in missing else _results(rng)}
             for t in tasks for m in methods]
  settings = {"metrics": ["macro_f1", "balanced_accuracy"], "control": "", "alpha": 0.05,
              "per_class": per_class}
  return tables.summarise(entries, settings)


def _write(root, summary):
  (root / "sweep.json").write_text(json.dumps(summary, allow_nan=True))
  return page.write(root)


def test_heatmap_data_equals_the_cells_means_in_sweep_json(tmp_path):
  _write(tmp_path, _summary(missing=("ir100_drw",)))
  stored = json.loads((tmp_path / "sweep.json").read_text())
  methods, tasks, values = page.heatmap_data(stored, "macro_f1")
  assert (methods, tasks) == (["base", "focal", "drw"], ["ir10", "ir100"])
  for c in stored["cells"]:
    v = values[methods.index(c["method"]), tasks.index(c["task"])]
    if c["status"] == "finished":
      assert v == c["mean_std"]["macro_f1"]["mean"]
    else:
      assert np.isnan(v)
  best = stats_figures.best_per_column(values)
  np.testing.assert_array_equal(best.argmax(axis=0), np.nanargmax(values, axis=0))
  assert best.sum() == 2
  assert (tmp_path / "figures" / "heatmap_macro_f1.png").read_bytes().startswith(b"\x89PNG")


class _Checker(html.parser.HTMLParser):
  """Open tags (void ones aside), every URL, and whatever is not allowed in the page."""

  def __init__(self):
    super().__init__()
    self.stack, self.urls, self.problems, self.tables = [], [], [], []

  def handle_starttag(self, tag, attrs):
    if tag == "script":
      self.problems.append("script")
    self.urls += [v for k, v in attrs if k in ("href", "src")]
    if tag not in VOID:
      self.stack.append(tag)

  def handle_endtag(self, tag):
    if not self.stack or self.stack[-1] != tag:
      self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
    else:
      self.stack.pop()

  def handle_data(self, data):
    if self.stack and self.stack[-1] == "th":
      self.tables.append(data)


def _check(path):
  checker = _Checker()
  text = path.read_text()
  checker.feed(text)
  checker.close()
  assert checker.problems == [] and checker.stack == []
  for url in checker.urls:
    assert url.startswith("data:image/png;base64,") or "://" not in url and not \
        url.startswith(("/", "//")), url
  return text, checker


def test_page_is_well_formed_offline_and_holds_every_table(tmp_path):
  summary = _summary()
  (tmp_path / "drw_cell").mkdir()
  path = _write(tmp_path, summary)
  text, checker = _check(path)
  assert path == tmp_path / "report.html"
  assert "INCOMPLETE" not in text
  for shown in ("macro-F1", "AvAcc"):
    assert text.count(f"<th>{shown}</th>") == 3        # Table II, Wilcoxon-Holm, cells
    assert f"<h2>{shown}</h2>" in text
  for metric in ("macro_f1", "balanced_accuracy"):
    for kind in ("cd", "heatmap"):
      assert (tmp_path / "figures" / f"{kind}_{metric}.png").exists()
  assert text.count("<img ") == 4
  ranking = summary["ranking"]["macro_f1"]
  best = max(ranking, key=lambda m: ranking[m]["mean"])
  assert (f"<td>{ranking[best]['mean']:.4f} ({ranking[best]['average_rank']:.2f}) \u25c6</td>"
          in text)
  cd = summary["nemenyi"]["macro_f1"]["critical_difference"]
  assert f"<td>{cd:.3f}</td>" in text
  assert "Pooled per-class recall" in text and "<th>melanoma</th>" in text
  assert "No cell has a report.html yet" in text
  # A cell's own report is linked relative to the sweep root.
  (tmp_path / "ir10_focal").mkdir()
  (tmp_path / "ir10_focal" / "report.html").write_text("<html></html>")
  text, checker = _check(page.write(tmp_path))
  assert checker.urls.count("ir10_focal/report.html") == 1
  assert len([u for u in checker.urls if u.endswith("report.html")]) == 1


def test_per_class_tables_follow_each_set_of_classes(tmp_path):
  summary = _summary()
  for c in summary["cells"]:
    if c["task"] == "ir100":    # another data set, two classes
      c["class_names"] = ["benign", "malignant"]
      c["per_class"] = {k: v[:2] for k, v in c["per_class"].items()}
  text, _ = _check(_write(tmp_path, summary))
  assert text.count("Pooled per-class recall") == 2
  assert text.count("<th>melanoma</th>") == 3 and text.count("<th>malignant</th>") == 3
  cell = summary["cells"][-1]
  assert (f"<td>{cell['name']}</td>" + "".join(f"<td>{v:.3f}</td>"
                                               for v in cell["per_class"]["f1"])) in text


def test_nemenyi_matrix_holds_the_pairwise_p_values(tmp_path):
  summary = _summary()
  text, _ = _check(_write(tmp_path, summary))
  p = summary["nemenyi"]["balanced_accuracy"]["p_values"]
  row = "<td>2 focal</td>" + "".join(
      f"<td>{p['focal'][m]:.3g}{' *' if p['focal'][m] < 0.05 and m != 'focal' else ''}</td>"
      for m in ("base", "focal", "drw"))
  assert row in text


def test_an_unfinished_sweep_says_so(tmp_path):
  text, _ = _check(_write(tmp_path, _summary(missing=("ir100_drw", "ir10_base"), per_class=False)))
  assert "INCOMPLETE SWEEP: 4 of 6 cells finished" in text
  assert "Unfinished (not started, running or failed): ir10_base, ir100_drw" in text
  assert "Per class" not in text
  # Two methods on one task: too few for Nemenyi, which the page says instead of a diagram.
  text, _ = _check(_write(tmp_path, _summary(methods=("base", "focal"), tasks=("all",),
                                             missing=("all_base", "all_focal"))))
  assert "0 of 2 cells finished" in text and "<img" not in text
  assert "No (task, fold) block has every method finished: no ranks or tests yet." in text
  # Two finished methods: Wilcoxon-Holm runs, Friedman and Nemenyi say why they did not.
  text, _ = _check(_write(tmp_path, _summary(methods=("base", "focal"))))
  assert "Friedman and Nemenyi skipped for macro-F1: needs &gt;= 3 methods" in text
  assert "Wilcoxon signed-rank against base" in text and "Wilcoxon-Holm skipped" not in text
  assert "No critical-difference diagram: Nemenyi skipped" in text


def test_no_sweep_json_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="write it with --mode=aggregate"):
    page.write(tmp_path)


# Two samplers on two seeds (tasks of one shape: the cells share compiled programs), the tiny
# default at 2 folds and 1 epoch.
TINY = textwrap.dedent("""
    from configs import default


    def get_config(arg=None):
      c = default.get_config("tiny")
      c.split.folds, c.train.epochs = 2, 1
      return c


    def sweep(arg=None):
      for seed in (0, 1):
        for sampler in ("instance", "class_balanced"):
          yield {"_name": f"seed{seed}_{sampler}", "_method": sampler, "_task": f"seed{seed}",
                 "seed": seed, "sampler.name": sampler}
""")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "tiny_sweep.py"
  path.write_text(TINY)
  import importlib.util
  spec = importlib.util.spec_from_file_location("tiny_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()
  root = tmp_path_factory.mktemp("sweep")
  lines = []
  sweep.run_sweep(config, str(path), str(root), executors.Options(executor="inline"),
                  job_lib.Settings(cpus=0), log=lines.append)
  assert lines[-1] == f"report: {root / 'report.html'}"
  return root


@pytest.mark.slow
def test_a_real_sweep_writes_its_page(tiny_sweep):
  text, _ = _check(tiny_sweep / "report.html")
  stored = json.loads((tiny_sweep / "sweep.json").read_text())
  assert "4 of 4 cells finished" in text
  assert "No critical-difference diagram: Nemenyi skipped" in text   # 2 methods
  assert text.count("<img ") == 2   # the heatmaps
  methods, tasks, values = page.heatmap_data(stored, "macro_f1")
  assert tasks == ["seed0", "seed1"] and not np.isnan(values).any()


def test_the_page_in_a_browser(tmp_path):
  reason = browser.skip_reason()
  if reason:
    pytest.skip(reason)
  path = _write(tmp_path, _summary(missing=("ir100_drw",)))
  seen = browser.check_page(path, tmp_path / "sweep.png")
  assert seen["console_errors"] == []
  assert seen["images"] == seen["images_loaded"] == 4
  assert seen["title"] == f"Sweep {tmp_path.name}"
