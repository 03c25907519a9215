"""QCSMOTE: noisy minority rows are never seeds, synthetic rows stay out of other classes'
regions (by a brute-force neighbour count), SMOTE's draws when nothing is filtered, counts,
determinism and the errors."""

from __future__ import annotations

import logging

import numpy as np
from imblearn.over_sampling import SMOTE
import pytest

from jimb.resampling import qc_smote, samplers
from jimb.resampling.qc_smote import QCSMOTE

NOISE = np.array([[0.5, 0.5], [3.5, 0.5], [0.5, 3.5], [2.0, 2.0]])


def _noisy(seed=0):
  """Majority uniform on [0, 4]^2, a minority cluster around (8, 8) and four minority rows
  inside the majority's square (label noise): rows 0-3 are the noisy ones."""
  rng = np.random.default_rng(seed)
  majority = rng.uniform(0, 4, size=(200, 2))
  cluster = rng.normal(8, 0.7, size=(40, 2))
  x = np.concatenate([NOISE, cluster, majority])
  y = np.concatenate([np.ones(4 + 40, int), np.zeros(200, int)])
  return x, y


def _own_share(points, label, x, y, m):
  """Brute force: share of each point's m nearest rows of (x, y) that have `label`."""
  dist = np.linalg.norm(points[:, None] - x[None], axis=-1)
  return np.mean(y[np.argsort(dist, axis=1, kind="stable")[:, :m]] == label, axis=1)


@pytest.mark.parametrize("classifier", qc_smote.CLASSIFIERS)
def test_noisy_minority_rows_are_never_seeds(classifier):
  x, y = _noisy()
  cluster = x[4:44]
  # No candidate check: only the seeds decide where synthetic rows go.
  sampler = QCSMOTE(candidate_purity=0, classifier=classifier, random_state=0)
  x_res, y_res = sampler.fit_resample(x, y)
  assert np.all(sampler.trust_[:4] < sampler.trust_threshold)
  assert sampler.report_[1]["seeds_excluded"] >= 4
  new = x_res[len(x):]
  # Convex combinations of cluster rows stay inside the cluster's bounding box ...
  assert np.all(new >= cluster.min(axis=0)) and np.all(new <= cluster.max(axis=0))
  # ... which SMOTE leaves: it interpolates from the noisy rows too.
  smote_new = SMOTE(random_state=0).fit_resample(x, y)[0][len(x):]
  assert np.any(np.any(smote_new < cluster.min(axis=0), axis=1))


def test_no_synthetic_row_lands_among_another_class():
  x, y = _noisy(1)
  sampler = QCSMOTE(trust_threshold=0, candidate_purity=0.5, m_neighbors=7, random_state=2)
  x_res, y_res = sampler.fit_resample(x, y)   # noisy rows are seeds here: rejection must act
  new = x_res[len(x):]
  assert len(new) == 200 - 44
  assert sampler.report_[1]["candidates_rejected"] > 0
  assert np.all(_own_share(new, 1, x, y, 7) >= 0.5)


def test_everything_trusted_and_nothing_rejected_is_smote():
  rng = np.random.default_rng(3)
  y = np.repeat([0, 1, 2], [60, 20, 12])
  x = rng.normal(size=(len(y), 4)) + y[:, None]
  for random_state in (0, 7):
    x_qc, y_qc = QCSMOTE(trust_threshold=0, candidate_purity=0, k_neighbors=4,
                         random_state=random_state).fit_resample(x, y)
    x_ref, y_ref = SMOTE(k_neighbors=4, random_state=random_state).fit_resample(x, y)
    np.testing.assert_array_equal(y_qc, y_ref)
    np.testing.assert_array_equal(x_qc, x_ref)


@pytest.mark.parametrize("strategy", ["auto", {1: 150, 2: 120}])
def test_counts_meet_the_strategy_and_repeat_draws_are_equal(strategy):
  rng = np.random.default_rng(4)
  y = np.repeat([0, 1, 2], [200, 40, 30])
  x = rng.normal(size=(len(y), 3)) + 1.5 * y[:, None]
  sampler = QCSMOTE(sampling_strategy=strategy, random_state=5)
  x_res, y_res = sampler.fit_resample(x, y)
  want = {1: 200, 2: 200} if strategy == "auto" else strategy
  assert {c: int(np.sum(y_res == c)) for c in (1, 2)} == want
  assert sum(r["candidates_rejected"] for r in sampler.report_.values()) > 0
  assert all(r["missing"] == 0 for r in sampler.report_.values())
  again = QCSMOTE(sampling_strategy=strategy, random_state=5).fit_resample(x, y)[0]
  np.testing.assert_array_equal(x_res, again)
  assert not np.array_equal(x_res, QCSMOTE(sampling_strategy=strategy,
                                           random_state=6).fit_resample(x, y)[0])


def test_what_max_rounds_leaves_missing_is_reported():
  x, y = _noisy(2)
  sampler = QCSMOTE(trust_threshold=0, candidate_purity=1.0, m_neighbors=10, max_rounds=1,
                    random_state=0)
  _, y_res = sampler.fit_resample(x, y)
  report = sampler.report_[1]
  assert report["rounds"] == 1 and report["missing"] == report["candidates_rejected"] > 0
  assert np.sum(y_res == 1) == 200 - report["missing"]


def test_purity_is_the_brute_force_share_of_own_class():
  x, y = _noisy(3)
  np.testing.assert_allclose(qc_smote.purity(x, y, 6),
                             [_own_share(x[i:i + 1], y[i], np.delete(x, i, 0),
                                         np.delete(y, i), 6)[0] for i in range(len(y))])


def test_too_few_trusted_seeds_names_the_class_and_the_fix():
  x, y = _noisy()
  with pytest.raises(ValueError, match=r"class 1 has \d+ trusted row.*lower trust_threshold "
                                       r"to at most [0-9.]+ \(admits 6 seeds\)"):
    QCSMOTE(trust_threshold=1.0, random_state=0).fit_resample(x, y)
  with pytest.raises(ValueError, match="class 1 has 44 rows.*k_neighbors to at most 43"):
    QCSMOTE(k_neighbors=44).fit_resample(x, y)


def test_runs_by_name_marks_synthetic_rows_and_logs_its_report(caplog):
  x, y = _noisy()
  with caplog.at_level(logging.WARNING):
    out = samplers.resample("QCSMOTE", {"k_neighbors": 3}, x.astype(np.float32), y, seed=0,
                            where=" (fold 0)", config_key="resample.image")
  assert np.bincount(out.y).tolist() == [200, 200]
  np.testing.assert_array_equal(out.x[~out.synthetic], x[out.source[~out.synthetic]].astype(
      np.float32))
  assert out.synthetic.sum() == 156
  assert "QCSMOTE (fold 0): class 1:" in caplog.text and "rows excluded as seeds" in caplog.text
  with pytest.raises(ValueError, match="small_classes=reduce_k"):
    samplers.resample("QCSMOTE", {"k_neighbors": 50}, x, y, seed=0)
