"""Statistics of the report: bootstrap CIs, paired gains, correlations and Fisher's z test.

scipy does the resampling and the Pearson interval; what scipy lacks (a Spearman interval, the
comparison of two independent correlations) is written out below with its reference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation and bootstrap CI of the mean of one sample."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient with its two-sided p-value and CI over `n` pairs."""

    method: str
    n: int
    r: float
    p: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class CorrelationDifference:
    """Fisher's z test of r1 - r2 for two independent samples, with Zou's CI on r1 - r2."""

    r1: float
    n1: int
    r2: float
    n2: int
    z: float
    p: float
    diff: float
    ci_low: float
    ci_high: float


def _clean(values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def bootstrap_ci(
    values: Any, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) below two values, (x, x) if constant."""
    a = _clean(values)
    if len(a) < 2:
        return math.nan, math.nan
    if np.ptp(a) == 0:  # scipy warns and returns nan for a degenerate distribution
        return float(a[0]), float(a[0])
    res = stats.bootstrap(
        (a,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(
    values: Any, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Summary:
    """n, mean, sample standard deviation and bootstrap CI of the finite values."""
    a = _clean(values)
    if len(a) == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    lo, hi = bootstrap_ci(a, confidence, n_resamples, seed)
    std = float(a.std(ddof=1)) if len(a) > 1 else math.nan
    return Summary(len(a), float(a.mean()), std, lo, hi)


def paired_gain(
    treated: Any, control: Any, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Summary:
    """Mean of treated - control over pairs (same seed), with a paired bootstrap CI.

    Resampling the pairs (not the two arms apart) keeps the seed-to-seed correlation that makes
    a paired comparison sharper.
    """
    t, c = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if t.shape != c.shape:
        raise ValueError(f"paired_gain: treated has {t.shape} values, control {c.shape}")
    return summarize(t - c, confidence, n_resamples, seed)


def _fisher_ci(r: float, n: int, se_scale: float, confidence: float) -> tuple[float, float]:
    if n <= 3 or not math.isfinite(r):
        return math.nan, math.nan
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    half = stats.norm.ppf(0.5 + confidence / 2) * se_scale / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def correlation(x: Any, y: Any, method: str = "pearson", confidence: float = 0.95) -> Correlation:
    """Pearson or Spearman correlation of finite pairs with p-value and Fisher-z CI.

    Spearman's interval uses the standard error 1.06 / sqrt(n - 3) of Fieller, Hartley and
    Pearson (1957), which scipy does not provide.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"correlation: x has {xa.size} values, y {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = len(xa)
    if n < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return Correlation(method, n, math.nan, math.nan, math.nan, math.nan)
    if method == "pearson":
        res = stats.pearsonr(xa, ya)
        r, p = float(res.statistic), float(res.pvalue)
        lo, hi = _fisher_ci(r, n, 1.0, confidence)
    else:
        res = stats.spearmanr(xa, ya)
        r, p = float(res.statistic), float(res.pvalue)
        lo, hi = _fisher_ci(r, n, 1.06, confidence)
    return Correlation(method, n, r, p, lo, hi)


def compare_correlations(
    r1: float, n1: int, r2: float, n2: int, confidence: float = 0.95
) -> CorrelationDifference:
    """Fisher's z test for two independent correlations and Zou's (2007) CI on r1 - r2.

    z = (atanh r1 - atanh r2) / sqrt(1/(n1-3) + 1/(n2-3)); the interval combines each r's own
    Fisher-z interval (Zou, Psychological Methods 12:399), so it stays inside [-2, 2].
    """
    nan = CorrelationDifference(r1, n1, r2, n2, math.nan, math.nan, r1 - r2, math.nan, math.nan)
    if n1 <= 3 or n2 <= 3 or not (math.isfinite(r1) and math.isfinite(r2)):
        return nan
    clip = 1 - 1e-12
    z1, z2 = math.atanh(max(min(r1, clip), -clip)), math.atanh(max(min(r2, clip), -clip))
    z = (z1 - z2) / math.sqrt(1 / (n1 - 3) + 1 / (n2 - 3))
    p = float(2 * stats.norm.sf(abs(z)))
    l1, u1 = _fisher_ci(r1, n1, 1.0, confidence)
    l2, u2 = _fisher_ci(r2, n2, 1.0, confidence)
    d = r1 - r2
    low = d - math.sqrt((r1 - l1) ** 2 + (u2 - r2) ** 2)
    high = d + math.sqrt((u1 - r1) ** 2 + (r2 - l2) ** 2)
    return CorrelationDifference(r1, n1, r2, n2, z, p, d, low, high)
