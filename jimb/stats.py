"""Significance tests for comparing several methods over several blocks.

A block is one unit the methods were all scored on: a data set, or a (scenario, fold) partition.
Scores from different blocks are not commensurable (an AUC of 0.9 may be poor on one data set and
excellent on another), and their number is small, so the tests here work on within-block ranks and
make no normality assumption. They follow the procedure Demsar (2006, "Statistical Comparisons of
Classifiers over Multiple Data Sets", JMLR 7:1-30) recommends:

1. `friedman`: are the methods' average ranks different at all? Judge by the Iman-Davenport F
   statistic, which is less conservative than Friedman's chi-square.
2. Only if it rejects, a post-hoc test:
   - `nemenyi` to compare all pairs (critical difference of average ranks, and pairwise p-values);
   - `wilcoxon_holm` to compare every method with one control (e.g. a baseline), which makes k - 1
     comparisons instead of k (k - 1) / 2 and so has more power.

Every function takes `scores` of shape [N blocks, k methods] (methods are named by column index;
the caller maps names) and returns a plain dict. Missing scores (NaN) are refused: ranks need every
method scored on every block.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sp_stats
import scikit_posthocs
from statsmodels.stats.multitest import multipletests


def _check_alpha(alpha: float) -> float:
  alpha = float(alpha)
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
  return alpha


def _check_scores(scores: np.ndarray, min_methods: int, what: str,
                  min_blocks: int = 2) -> np.ndarray:
  """`scores` as a float64 [N, k] array with N >= min_blocks, k >= min_methods and no NaN."""
  try:
    s = np.asarray(scores, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{what}: scores must be numeric, got {e}") from None
  if s.ndim != 2:
    raise ValueError(f"{what}: scores must be a 2-D array [blocks, methods], got shape {s.shape}")
  n, k = s.shape
  if n < min_blocks:
    raise ValueError(f"{what} needs at least {min_blocks} block(s) (rows), got {n}")
  if k < min_methods:
    hint = " Compare two methods with wilcoxon_holm." if min_methods == 3 else ""
    raise ValueError(f"{what} needs at least {min_methods} methods (columns), got {k}.{hint}")
  missing = np.isnan(s)
  if missing.any():
    rows = np.flatnonzero(missing.any(axis=1)).tolist()
    raise ValueError(
        f"{what}: scores contain NaN in blocks (rows) {rows}. Ranks need every method scored on "
        "every block: rerun the missing (block, method) cells, or drop those blocks with "
        "scores[~np.isnan(scores).any(axis=1)].")
  return s


def _block_ranks(s: np.ndarray, higher_is_better: bool) -> np.ndarray:
  """Rank 1 = best within each block (row); ties share the mean rank."""
  return sp_stats.rankdata(-s if higher_is_better else s, method="average", axis=1)


def average_ranks(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
  """Mean over blocks of each method's within-block rank (1 = best, ties share the mean rank)."""
  s = _check_scores(scores, 2, "average_ranks", min_blocks=1)
  return _block_ranks(s, higher_is_better).mean(axis=0)


def friedman(scores: np.ndarray, higher_is_better: bool = True,
             tie_correction: bool = True) -> dict[str, Any]:
  """Friedman test of equal average ranks, with the Iman-Davenport F statistic.

  With `tie_correction` (the default) chi2_F is scipy.stats.friedmanchisquare's, which divides
  Demsar's statistic by 1 - sum(t^3 - t) / (N k (k^2 - 1)) over groups of t tied methods in a block;
  the Iman-Davenport F built from it is then exactly the repeated-measures ANOVA F on the
  within-block ranks. Demsar's formula, chi2_F = 12N / (k(k+1)) [sum_j R_j^2 - k(k+1)^2 / 4], has no
  correction, and his worked example (Table 6, with ties in four of 14 data sets) uses it: chi2_F =
  9.28, F_F = 3.69, where the corrected values are 10.23 and 4.19. Pass tie_correction=False to
  reproduce published numbers; without ties the two agree.

  When every block ranks the methods identically, chi2_F = N(k-1) and F_F is infinite (p = 0).
  When every block ties all methods, nothing distinguishes them: chi2_F = F_F = 0, p = 1.
  """
  s = _check_scores(scores, 3, "friedman")
  n, k = s.shape
  ranks = _block_ranks(s, higher_is_better)
  mean_ranks = ranks.mean(axis=0)
  df1, df2 = k - 1, (k - 1) * (n - 1)
  if np.all(ranks == (k + 1) / 2):
    chi2 = 0.0
  elif tie_correction:
    chi2 = float(sp_stats.friedmanchisquare(*s.T).statistic)
  else:
    chi2 = float(12 * n / (k * (k + 1)) * (np.sum(mean_ranks ** 2) - k * (k + 1) ** 2 / 4))
  chi2 = min(max(chi2, 0.0), float(n * df1))  # rounding can push it just outside [0, N(k-1)]
  denominator = n * df1 - chi2
  if denominator <= 1e-9 * n * df1:
    f_stat, f_p = math.inf, 0.0
  else:
    f_stat = (n - 1) * chi2 / denominator
    f_p = float(sp_stats.f.sf(f_stat, df1, df2))
  return {
      "chi2": chi2,
      "p_value": float(sp_stats.chi2.sf(chi2, df1)),
      "iman_davenport": float(f_stat),
      "iman_davenport_p_value": f_p,
      "df1": df1,
      "df2": df2,
      "num_blocks": n,
      "num_methods": k,
      "tie_correction": bool(tie_correction),
      "average_ranks": mean_ranks.tolist(),
  }


def nemenyi(scores: np.ndarray, alpha: float = 0.05,
            higher_is_better: bool = True) -> dict[str, Any]:
  """Nemenyi all-pairs post-hoc test.

  Two methods differ significantly when their average ranks differ by more than the critical
  difference CD = q_alpha sqrt(k(k+1) / (6N)), q_alpha being the studentized range quantile over
  sqrt(2) (Demsar's Table 5(a); 2.569 for k = 4 at alpha = 0.05). `p_values[i, j]` (symmetric,
  1 on the diagonal) is below alpha exactly for those pairs; it comes from scikit-posthocs.
  """
  alpha = _check_alpha(alpha)
  s = _check_scores(scores, 3, "nemenyi")
  n, k = s.shape
  q_alpha = float(sp_stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))
  p_values = scikit_posthocs.posthoc_nemenyi_friedman(s).to_numpy(dtype=np.float64)
  return {
      "alpha": alpha,
      "q_alpha": q_alpha,
      "critical_difference": q_alpha * math.sqrt(k * (k + 1) / (6 * n)),
      "p_values": p_values,
      "average_ranks": _block_ranks(s, higher_is_better).mean(axis=0).tolist(),
      "num_blocks": n,
      "num_methods": k,
  }


def wilcoxon_holm(scores: np.ndarray, control: int, alpha: float = 0.05) -> dict[str, Any]:
  """Two-sided Wilcoxon signed-rank test of every method against `control`, Holm-corrected.

  Returns {"control", "alpha", "comparisons"}, where comparisons maps each other method's index to
  {"statistic", "p_value", "p_holm", "reject", "median_difference" (method minus control),
  "all_zero_differences"}. A method that scores exactly like the control on every block has no
  signed ranks to test: it is reported with p_value 1.0, statistic NaN and all_zero_differences
  True, and still counts in the Holm family.
  """
  alpha = _check_alpha(alpha)
  s = _check_scores(scores, 2, "wilcoxon_holm")
  k = s.shape[1]
  if isinstance(control, (bool, np.bool_)) or not isinstance(control, (int, np.integer)):
    raise ValueError(f"control must be an integer method index, got {control!r}")
  if not 0 <= control < k:
    raise ValueError(f"control must be a method index in [0, {k}), got {control}")
  control = int(control)
  others = [j for j in range(k) if j != control]
  results = {}
  for j in others:
    diff = s[:, j] - s[:, control]
    all_zero = bool(np.all(diff == 0))
    if all_zero:
      statistic, p_value = math.nan, 1.0
    else:
      test = sp_stats.wilcoxon(s[:, j], s[:, control], alternative="two-sided")
      statistic, p_value = float(test.statistic), float(test.pvalue)
    results[j] = {"statistic": statistic, "p_value": p_value,
                  "median_difference": float(np.median(diff)), "all_zero_differences": all_zero}
  reject, p_holm, _, _ = multipletests([results[j]["p_value"] for j in others], alpha=alpha,
                                       method="holm")
  for j, rej, p in zip(others, reject, p_holm):
    results[j]["p_holm"] = float(p)
    results[j]["reject"] = bool(rej)
  return {"control": control, "alpha": alpha, "comparisons": results}
