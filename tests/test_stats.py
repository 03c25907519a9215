"""Significance tests against Demsar (2006)'s worked example and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp_stats
import scikit_posthocs

from jimb import stats

# Demsar (2006), JMLR 7:1-30, Table 6: AUC of C4.5, C4.5+m, C4.5+cf and C4.5+m+cf (columns) on
# adult (sample), breast cancer, breast cancer wisconsin, cmc, ionosphere, iris, liver disorders,
# lung cancer, lymphography, mushroom, primary tumor, rheum, voting and wine (rows).
PAPER_AUC = np.array([
    [0.763, 0.768, 0.771, 0.798],
    [0.599, 0.591, 0.590, 0.569],
    [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657],
    [0.882, 0.888, 0.886, 0.898],
    [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685],
    [0.583, 0.583, 0.563, 0.625],
    [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000],
    [0.940, 0.962, 0.965, 0.962],
    [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.975, 0.975],
    [0.957, 0.978, 0.946, 0.970],
])
# The ranks printed in parentheses in the same table (1 = best). The paper names iris, lung
# cancer, mushroom and primary tumor as the tied data sets; voting's 0.975 and 0.975 are rounded
# from different AUCs, ranked 2 and 3.
PAPER_RANKS = np.array([
    [4, 3, 2, 1],
    [1, 2, 3, 4],
    [4, 1, 2, 3],
    [4, 1, 3, 2],
    [4, 2, 3, 1],
    [1, 2.5, 4, 2.5],
    [3, 2, 4, 1],
    [2.5, 2.5, 4, 1],
    [4, 3, 2, 1],
    [2.5, 2.5, 2.5, 2.5],
    [4, 2.5, 1, 2.5],
    [3, 2, 4, 1],
    [4, 1, 2, 3],
    [3, 1, 4, 2],
])
VOTING = 12
PAPER_AVERAGE_RANKS = [3.143, 2.000, 2.893, 1.964]
# Demsar's Table 5(a): q_alpha of the Nemenyi test for k = 3..10 methods.
TABLE_5A = {
    0.05: [2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164],
    0.10: [2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920],
}


def _paper_friedman(**kwargs):
  return stats.friedman(PAPER_RANKS, higher_is_better=False, **kwargs)


def test_table6_average_ranks():
  np.testing.assert_allclose(stats.average_ranks(PAPER_RANKS, higher_is_better=False),
                             PAPER_AVERAGE_RANKS, atol=5e-4)
  # Ranking the printed AUCs gives the printed ranks on every data set but voting, where the
  # rounded values tie; that moves half a rank between C4.5+cf and C4.5+m+cf.
  auc_ranks = sp_stats.rankdata(-PAPER_AUC, axis=1)
  others = np.arange(len(PAPER_AUC)) != VOTING
  np.testing.assert_array_equal(auc_ranks[others], PAPER_RANKS[others])
  np.testing.assert_array_equal(auc_ranks[VOTING], [4, 1, 2.5, 2.5])
  np.testing.assert_allclose(stats.average_ranks(PAPER_AUC), [44 / 14, 2, 41 / 14, 27 / 14])


def test_average_ranks_share_ties():
  scores = np.array([[0.9, 0.8, 0.8], [0.7, 0.7, 0.7], [0.1, 0.5, 0.3]])
  # Per block, higher is better: [1, 2.5, 2.5], [2, 2, 2], [3, 1, 2].
  np.testing.assert_allclose(stats.average_ranks(scores), [2, 11 / 6, 13 / 6])
  np.testing.assert_allclose(stats.average_ranks(scores, higher_is_better=False),
                             [2, 13 / 6, 11 / 6])


def test_friedman_reproduces_demsar_without_tie_correction():
  out = _paper_friedman(tie_correction=False)
  assert out["chi2"] == pytest.approx(9.28, abs=5e-3)
  assert out["iman_davenport"] == pytest.approx(3.69, abs=5e-3)
  assert (out["df1"], out["df2"], out["num_blocks"], out["num_methods"]) == (3, 39, 14, 4)
  np.testing.assert_allclose(out["average_ranks"], PAPER_AVERAGE_RANKS, atol=5e-4)
  # The critical value of F(3, 39) at alpha = 0.05 is 2.85, so the null hypothesis is rejected.
  assert sp_stats.f.ppf(0.95, 3, 39) == pytest.approx(2.85, abs=5e-3)
  assert out["iman_davenport"] > 2.85 and out["iman_davenport_p_value"] < 0.05
  assert out["p_value"] == pytest.approx(sp_stats.chi2.sf(out["chi2"], 3))
  assert out["iman_davenport_p_value"] == pytest.approx(
      sp_stats.f.sf(out["iman_davenport"], 3, 39))
  assert not out["tie_correction"]


def test_friedman_tie_correction_is_scipys():
  out = _paper_friedman()
  expected = sp_stats.friedmanchisquare(*PAPER_RANKS.T)
  assert out["tie_correction"]
  assert out["chi2"] == pytest.approx(expected.statistic)
  assert out["p_value"] == pytest.approx(expected.pvalue)
  # Demsar's example does not correct for its ties: the corrected statistic is larger.
  assert out["chi2"] == pytest.approx(10.228, abs=1e-3)
  assert out["iman_davenport"] == pytest.approx(4.185, abs=1e-3)
  # Iman-Davenport on the corrected chi2 is the repeated-measures ANOVA F on the ranks.
  n, k = PAPER_RANKS.shape
  mean_ranks = PAPER_RANKS.mean(axis=0)
  ss_methods = n * np.sum((mean_ranks - (k + 1) / 2) ** 2)
  ss_error = np.sum((PAPER_RANKS - mean_ranks) ** 2)  # block means are all (k + 1) / 2
  anova_f = (ss_methods / (k - 1)) / (ss_error / ((k - 1) * (n - 1)))
  assert out["iman_davenport"] == pytest.approx(anova_f)


def test_friedman_without_ties_needs_no_correction():
  scores = np.random.default_rng(0).normal(size=(10, 5))
  corrected = stats.friedman(scores)
  plain = stats.friedman(scores, tie_correction=False)
  assert corrected["chi2"] == pytest.approx(plain["chi2"])
  assert corrected["iman_davenport"] == pytest.approx(plain["iman_davenport"])
  # Ranks reversed, the statistics are the same.
  assert stats.friedman(scores, higher_is_better=False)["chi2"] == pytest.approx(
      corrected["chi2"])


@pytest.mark.parametrize("tie_correction", [True, False])
def test_friedman_degenerate_cases(tie_correction):
  agree = np.tile([0.9, 0.7, 0.8], (5, 1))  # every block ranks the methods 1, 3, 2
  out = stats.friedman(agree, tie_correction=tie_correction)
  assert out["chi2"] == pytest.approx(10.0)  # N (k - 1)
  assert out["iman_davenport"] == math.inf and out["iman_davenport_p_value"] == 0.0
  assert out["average_ranks"] == [1.0, 3.0, 2.0]

  tied = np.ones((4, 3))
  out = stats.friedman(tied, tie_correction=tie_correction)
  assert out["chi2"] == 0.0 and out["p_value"] == pytest.approx(1.0)
  assert out["iman_davenport"] == 0.0 and out["iman_davenport_p_value"] == pytest.approx(1.0)


def test_nemenyi_reproduces_demsar():
  out = stats.nemenyi(PAPER_RANKS, higher_is_better=False)
  assert out["alpha"] == 0.05
  assert out["q_alpha"] == pytest.approx(2.569, abs=1e-3)
  assert out["critical_difference"] == pytest.approx(1.25, abs=5e-3)
  np.testing.assert_allclose(out["average_ranks"], PAPER_AVERAGE_RANKS, atol=5e-4)
  # "even the difference between the best and the worst performing algorithm is already
  # smaller than that"
  assert (out["p_values"] >= 0.05).all()

  # At alpha = 0.10, CD = 1.12: C4.5 is worse than C4.5+m and C4.5+m+cf, and nothing else.
  out = stats.nemenyi(PAPER_RANKS, alpha=0.10, higher_is_better=False)
  assert out["q_alpha"] == pytest.approx(2.291, abs=1e-3)
  assert out["critical_difference"] == pytest.approx(1.12, abs=5e-3)
  significant = {(i, j) for i in range(4) for j in range(i + 1, 4) if out["p_values"][i, j] < 0.10}
  assert significant == {(0, 1), (0, 3)}
  ranks = np.array(out["average_ranks"])
  by_cd = np.abs(ranks[:, None] - ranks[None, :]) > out["critical_difference"]
  np.testing.assert_array_equal(by_cd, out["p_values"] < 0.10)


@pytest.mark.parametrize("alpha", sorted(TABLE_5A))
def test_nemenyi_q_alpha_matches_table5a(alpha):
  for k, expected in zip(range(3, 11), TABLE_5A[alpha]):
    scores = np.arange(2 * k, dtype=float).reshape(2, k)
    # The published values are rounded or truncated to three decimals.
    assert stats.nemenyi(scores, alpha=alpha)["q_alpha"] == pytest.approx(expected, abs=1e-3)


def test_nemenyi_p_values():
  scores = np.random.default_rng(1).normal(size=(12, 5)) + np.linspace(0, 1, 5)
  p = stats.nemenyi(scores)["p_values"]
  assert p.shape == (5, 5)
  np.testing.assert_allclose(p, p.T)
  np.testing.assert_allclose(np.diag(p), 1.0)
  np.testing.assert_allclose(p, scikit_posthocs.posthoc_nemenyi_friedman(scores).to_numpy())
  # From the definition: the studentized range of the rank difference over its standard error.
  n, k = scores.shape
  ranks = np.array(stats.average_ranks(scores))
  q = np.abs(ranks[:, None] - ranks[None, :]) / math.sqrt(k * (k + 1) / (6 * n))
  expected = sp_stats.studentized_range.sf(q * math.sqrt(2), k, np.inf)
  np.fill_diagonal(expected, 1.0)
  np.testing.assert_allclose(p, expected, rtol=1e-6)


def _holm(p):
  """Holm's step-down adjustment by hand: ascending p times m, m - 1, ..., made monotone."""
  p = np.asarray(p, dtype=float)
  order = np.argsort(p)
  scaled = p[order] * np.arange(len(p), 0, -1)
  adjusted = np.empty_like(p)
  adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
  return adjusted


def test_wilcoxon_holm_by_hand():
  control = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
  up = np.arange(1.0, 7.0)
  scores = np.stack([
      control + up,                                 # all 6 differences positive
      control + up * [-1, 1, 1, 1, 1, 1],           # only the smallest negative
      control,                                      # the control
      control - up * [-1, 1, 1, 1, 1, 1],           # only the smallest positive
      control,                                      # identical to the control
  ], axis=1)
  out = stats.wilcoxon_holm(scores, control=2, alpha=0.15)
  assert out["control"] == 2 and out["alpha"] == 0.15
  comparisons = out["comparisons"]
  assert sorted(comparisons) == [0, 1, 3, 4]
  # Exact two-sided p with 6 differences: W = 0 has 2 of 64 sign patterns as or more extreme
  # on either side, W = 1 has 4.
  p_raw = {0: 2 / 64, 1: 4 / 64, 3: 4 / 64, 4: 1.0}
  for j, p in p_raw.items():
    assert comparisons[j]["p_value"] == pytest.approx(p)
  assert [comparisons[j]["statistic"] for j in (0, 1, 3)] == [0.0, 1.0, 1.0]
  assert math.isnan(comparisons[4]["statistic"])
  assert [comparisons[j]["all_zero_differences"] for j in (0, 1, 3, 4)] == [
      False, False, False, True]
  assert comparisons[0]["median_difference"] == 3.5
  assert comparisons[3]["median_difference"] == -3.5
  # Holm: 2/64 * 4 = 0.125; 4/64 * 3 = 0.1875; 4/64 * 2 = 0.125, raised to 0.1875; 1 * 1 = 1.
  holm = _holm([p_raw[j] for j in (0, 1, 3, 4)])
  np.testing.assert_allclose(holm, [0.125, 0.1875, 0.1875, 1.0])
  np.testing.assert_allclose([comparisons[j]["p_holm"] for j in (0, 1, 3, 4)], holm)
  assert [comparisons[j]["reject"] for j in (0, 1, 3, 4)] == [True, False, False, False]


def test_wilcoxon_holm_matches_scipy_on_random_scores():
  scores = np.random.default_rng(2).normal(size=(15, 4)) + [0.0, 0.3, 0.8, 1.5]
  comparisons = stats.wilcoxon_holm(scores, control=0)["comparisons"]
  p = [sp_stats.wilcoxon(scores[:, j], scores[:, 0]).pvalue for j in (1, 2, 3)]
  np.testing.assert_allclose([comparisons[j]["p_value"] for j in (1, 2, 3)], p)
  np.testing.assert_allclose([comparisons[j]["p_holm"] for j in (1, 2, 3)], _holm(p))


@pytest.mark.parametrize("fn", [stats.average_ranks, stats.friedman, stats.nemenyi,
                                lambda s: stats.wilcoxon_holm(s, control=0)])
def test_bad_scores(fn):
  # Ranks of a single block are its ranks; a test needs at least two.
  with pytest.raises(ValueError, match=r"at least \d block"):
    fn(np.ones((1 if fn is not stats.average_ranks else 0, 4)))
  with pytest.raises(ValueError, match="2-D"):
    fn(np.ones(4))
  nan = np.ones((5, 4))
  nan[3, 1] = np.nan
  with pytest.raises(ValueError, match=r"NaN in blocks \(rows\) \[3\].*drop those blocks"):
    fn(nan)


@pytest.mark.parametrize("fn", [stats.friedman, stats.nemenyi])
def test_friedman_and_nemenyi_need_three_methods(fn):
  with pytest.raises(ValueError, match="at least 3 methods.*wilcoxon_holm"):
    fn(np.random.default_rng(0).normal(size=(6, 2)))


def test_bad_control_and_alpha():
  scores = np.random.default_rng(0).normal(size=(6, 3))
  for control in (3, -1):
    with pytest.raises(ValueError, match=r"control must be a method index in \[0, 3\)"):
      stats.wilcoxon_holm(scores, control=control)
  for control in (True, 1.0):
    with pytest.raises(ValueError, match="integer method index"):
      stats.wilcoxon_holm(scores, control=control)
  assert stats.wilcoxon_holm(scores, control=np.int64(1))["control"] == 1
  for alpha in (0.0, 1.0):
    with pytest.raises(ValueError, match="alpha"):
      stats.nemenyi(scores, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
      stats.wilcoxon_holm(scores, control=0, alpha=alpha)
