"""Statistics of the report: correlations, Fisher's z test, clustered permutation p-values and
Benjamini-Hochberg q-values. Means and gains with their intervals are in `tasks.inference`.

scipy does the Pearson interval and the BH step; what scipy lacks (a Spearman interval, the
comparison of two independent correlations, a permutation test that permutes within clusters)
is written out below with its reference.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


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


def bh_qvalues(p: Any) -> np.ndarray:
    """Benjamini-Hochberg q-values of a family of p-values (NaN entries stay NaN, not counted).

    The step-up procedure of Benjamini and Hochberg (1995) through scipy's
    `false_discovery_control`; it controls the false discovery rate under independence and
    positive regression dependence, which shared test documents and shared generators give.
    """
    a = np.asarray(p, dtype=float).ravel()
    out = np.full(a.shape, math.nan)
    keep = np.isfinite(a)
    if keep.any():
        out[keep] = stats.false_discovery_control(np.clip(a[keep], 0.0, 1.0), method="bh")
    return out


#: Up to this many distinct within-cluster arrangements, the permutation test enumerates them all.
EXACT_PERMUTATIONS = 20000


def _pearson_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson r of x against every row of ys (m, n), vectorized."""
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    den = np.sqrt((xc**2).sum()) * np.sqrt((yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / den


def _within_cluster_arrangements(clusters: np.ndarray) -> int:
    """The product of the clusters' factorial sizes (Python ints: exact however large)."""
    return math.prod(math.factorial(int((clusters == c).sum())) for c in np.unique(clusters))


def cluster_permutation_pvalue(
    x: Any,
    y: Any,
    clusters: Any,
    method: str = "pearson",
    n_permutations: int = 9999,
    seed: int = 0,
) -> tuple[float, int]:
    """Two-sided permutation p-value of a correlation, permuting y only within clusters.

    Points that share a cluster (corpora of one generator, which also share prompts and source
    patents) are not independent: a generator that writes both farther-from-real and more useful
    text makes X and Y correlate across generators with no within-generator link. Permuting
    within clusters keeps every cluster's set of y values, so that between-cluster structure is
    in the null distribution too, and only the within-cluster association is tested (the
    restricted permutation scheme of Good, "Permutation, Parametric and Bootstrap Tests of
    Hypotheses", 2005, ch. 3; Anderson and ter Braak, 2003). Enumerates every arrangement when
    there are at most EXACT_PERMUTATIONS, else draws `n_permutations` (p = (1 + hits) / (1 + m)).
    Returns (p, number of distinct arrangements); p is NaN when no permutation changes anything
    (every cluster a single point), since such a design cannot tell association from cluster.
    """
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ca = np.asarray(clusters).ravel()
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, ca = xa[keep], ya[keep], ca[keep]
    if len(xa) < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return math.nan, 0
    if method == "spearman":
        xa, ya = stats.rankdata(xa), stats.rankdata(ya)
    elif method != "pearson":
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    observed = abs(float(_pearson_rows(xa, ya[None, :])[0]))
    arrangements = _within_cluster_arrangements(ca)
    if arrangements <= 1:
        return math.nan, 1
    groups = [np.flatnonzero(ca == c) for c in np.unique(ca)]
    if arrangements <= EXACT_PERMUTATIONS:
        perms = []
        for combo in itertools.product(*(itertools.permutations(g) for g in groups)):
            idx = np.empty(len(ya), dtype=int)
            for g, p in zip(groups, combo, strict=True):
                idx[g] = p
            perms.append(idx)
        r = np.abs(_pearson_rows(xa, ya[np.array(perms)]))
        # The identity arrangement is among them: p = share of arrangements at least as extreme.
        return float(np.mean(r >= observed - 1e-12)), arrangements
    rng = np.random.default_rng(seed)
    idx = np.tile(np.arange(len(ya)), (n_permutations, 1))
    for g in groups:
        if len(g) > 1:
            idx[:, g] = g[np.argsort(rng.random((n_permutations, len(g))), axis=1)]
    r = np.abs(_pearson_rows(xa, ya[idx]))
    return float((1 + np.sum(r >= observed - 1e-12)) / (1 + n_permutations)), arrangements
