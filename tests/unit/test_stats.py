"""tasks.stats against scipy, hand-worked values and simulated coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tasks.stats import (
    bootstrap_ci,
    compare_correlations,
    correlation,
    paired_gain,
    summarize,
)


def test_fisher_z_hand_worked_paper_example() -> None:
    # r1=0.95 and r2=-0.73 over 14 corpora each: atanh(0.95)=1.83178, atanh(-0.73)=-0.92873,
    # SE = sqrt(2/11) = 0.42640, z = 2.76051 / 0.42640 = 6.474 (the paper's z=+6.47).
    d = compare_correlations(0.95, 14, -0.73, 14)
    assert d.z == pytest.approx(6.474, abs=1e-3)
    assert d.p == pytest.approx(2 * stats.norm.sf(6.474), rel=1e-2)
    assert d.p < 0.001
    assert d.diff == pytest.approx(1.68)
    # Zou's interval by hand: r1 in [0.8457, 0.9845], r2 in [-0.9086, -0.3255] (Fisher z +-0.591)
    # low = 1.68 - sqrt(0.1043^2 + 0.4045^2) = 1.2623; high = 1.68 + sqrt(0.0345^2 + 0.1786^2)
    assert d.ci_low == pytest.approx(1.2623, abs=2e-3)
    assert d.ci_high == pytest.approx(1.8619, abs=2e-3)


def test_fisher_z_unequal_n_and_sign() -> None:
    d = compare_correlations(0.2, 30, 0.5, 50)
    expected = (math.atanh(0.2) - math.atanh(0.5)) / math.sqrt(1 / 27 + 1 / 47)
    assert d.z == pytest.approx(expected)
    assert d.z < 0
    assert d.ci_low < d.diff < d.ci_high
    assert math.isnan(compare_correlations(0.5, 3, 0.1, 20).z)


def test_pearson_and_spearman_match_scipy() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(size=25)
    p = correlation(x, y, "pearson")
    ref = stats.pearsonr(x, y)
    assert p.r == pytest.approx(ref.statistic)
    assert p.p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (p.ci_low, p.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    s = correlation(x, y, "spearman")
    sref = stats.spearmanr(x, y)
    assert s.r == pytest.approx(sref.statistic)
    assert s.p == pytest.approx(sref.pvalue)
    half = 1.959964 * 1.06 / math.sqrt(22)
    assert s.ci_low == pytest.approx(math.tanh(math.atanh(s.r) - half), abs=1e-6)
    assert s.n == 25


def test_correlation_drops_nan_pairs_and_degenerate_input() -> None:
    c = correlation([1, 2, 3, np.nan, 5], [2, 4, 6, 8, np.nan])
    assert c.n == 3
    assert c.r == pytest.approx(1.0)
    assert math.isnan(correlation([1, 1, 1], [1, 2, 3]).r)
    with pytest.raises(ValueError, match="method"):
        correlation([1, 2], [1, 2], "kendall")


def test_bootstrap_ci_covers_known_mean_at_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    trials = 300
    for i in range(trials):
        sample = rng.normal(loc=2.0, scale=1.0, size=40)
        lo, hi = bootstrap_ci(sample, 0.9, n_resamples=400, seed=i)
        hits += lo <= 2.0 <= hi
    # Percentile bootstrap at n=40 under-covers slightly; 300 draws give a SE of ~1.7 points.
    assert 0.84 <= hits / trials <= 0.95


def test_summarize_and_paired_gain() -> None:
    s = summarize([0.5, 0.7, np.nan, 0.6])
    assert s.n == 3
    assert s.mean == pytest.approx(0.6)
    assert s.std == pytest.approx(0.1)
    assert s.ci_low <= 0.6 <= s.ci_high
    one = summarize([0.4])
    assert (one.n, one.mean) == (1, 0.4)
    assert math.isnan(one.ci_low) and math.isnan(one.std)
    g = paired_gain([0.7, 0.8, 0.9], [0.6, 0.7, 0.8])
    assert g.mean == pytest.approx(0.1)
    assert (g.ci_low, g.ci_high) == pytest.approx((0.1, 0.1))  # constant differences
    with pytest.raises(ValueError, match="paired_gain"):
        paired_gain([1, 2], [1])
