"""Rank correlations between predicted and measured figures, with bootstrap confidence intervals.

Spearman's ρ and Kendall's τ come from scipy. The interval is a percentile bootstrap over
placements (resampled with replacement, both figures of a placement kept together). A
resample whose predictor or measure is constant has no rank correlation; it is dropped rather
than counted as 0, and the number kept is reported, so a wide or short interval is visible.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    if len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on ties; ties are fine for ranks
        return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def rank_correlation(predicted, measured, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """ρ and τ of ``predicted`` vs ``measured`` (same length), each with a (lo, hi) interval.

    Pairs with a non-finite predictor that is NaN are dropped; ±inf is kept (it ranks last or
    first, as a κ of inf should).
    """
    x = np.asarray(predicted, dtype=float)
    y = np.asarray(measured, dtype=float)
    keep = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[keep], y[keep]
    result = {"n": int(len(x)), "spearman": math.nan, "kendall": math.nan, "spearman_ci": [math.nan, math.nan],
              "kendall_ci": [math.nan, math.nan], "resamples_used": 0}
    if len(x) < 3:
        return result
    result["spearman"], result["kendall"] = _correlations(x, y)
    rng = np.random.default_rng(seed)
    draws = np.array([_correlations(x[idx], y[idx]) for idx in rng.integers(0, len(x), size=(resamples, len(x)))])
    usable = ~np.isnan(draws).any(axis=1)
    result["resamples_used"] = int(usable.sum())
    if usable.sum() >= 10:
        tail = 100 * (1 - level) / 2
        for column, key in enumerate(("spearman_ci", "kendall_ci")):
            result[key] = [float(np.percentile(draws[usable, column], tail)),
                           float(np.percentile(draws[usable, column], 100 - tail))]
    return result
