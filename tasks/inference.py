"""Means and paired gains of trial metrics, with intervals over the variation that matters.

A trial's test metric varies for three reasons: which real patents the regime drew (draws),
how training went (seeds), and which documents happen to be in the test set (documents). The
report's estimate of a cell's mean, or of the gain of one cell over another, is the mean over
draws of the mean over seeds within the draw, and its variance is the sum of two parts:

- over runs: the sample variance of the per-draw means divided by the number of draws when there
  are at least two draws (a one-way nested random-effects design: the per-draw mean carries the
  seed noise of that draw); with one draw, the variance of the per-seed values over the seeds,
  which makes the interval conditional on that draw (the report says so);
- over documents: the variance of the same estimate under a bootstrap of the test documents
  (Efron and Tibshirani 1993, ch. 6), the same resampled documents for every trial so that a
  paired comparison keeps its pairing. All trials share one test set, so this part is common to
  every run and does not shrink with more seeds or draws.

The interval is a t interval with Welch-Satterthwaite degrees of freedom (Satterthwaite 1946),
made conservative where that approximation is not (`combined_df`): the run part has (units - 1)
degrees of freedom, the document part (estimated from hundreds of documents) is treated as
known. With two or three seeds and no document variance this is the classical paired t
interval, whose coverage is exact for normal errors; a percentile bootstrap of 2-3 values (the
interval [min, max]) covers far less. Coverage and false-positive rates are checked by
simulation in tests/integration/test_calibration.py.

Documents are resampled as multinomial weights (B, n) applied to per-document counts, so every
trial's B resampled micro-F1 values cost one matrix product (`DocResampler`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

#: Test metrics whose value is a function of per-document quantities (they can be resampled).
DOC_METRICS = ("micro_f1", "precision", "recall", "samples_f1", "ndcg10")


@dataclass(frozen=True)
class Estimate:
    """A mean (or mean paired gain) with its interval and what the interval varies over.

    `runs_unit` is "draws" (intervals generalize to another draw of the regime), "seeds"
    (one draw: conditional on it), or "none" (one run: training variation not estimated).
    `n_docs` is 0 when test documents were not resampled.
    """

    mean: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p: float
    confidence: float
    n_draws: int
    n_seeds: int
    n_runs: int
    n_docs: int
    var_runs: float
    var_docs: float
    runs_unit: str
    pooled_cells: int = 0  # >0: the run variance is pooled over this many cells
    df_runs: float = math.nan  # degrees of freedom of the run variance

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}

    @property
    def method(self) -> str:
        """The interval's method in words, for the report."""
        return interval_method(self.runs_unit, self.n_docs, self.pooled_cells, self.df_runs)

    @property
    def units(self) -> str:
        """What the figure was computed over, e.g. '2 draws x 2 seeds, 400 test documents'."""
        return units_text(self.n_draws, self.n_seeds, self.n_docs)

    def adjusted(self, k: int) -> Estimate:
        """The interval and p-value after choosing this estimate among `k` (Bonferroni).

        A choice made on validation still leaks into test through the trials themselves (a
        lucky training run is lucky on both splits), so an interval for a chosen cell must hold
        for whichever of the k candidates was chosen: level 1 - alpha / k, p multiplied by k.
        With one selection this is also the false-coverage-rate adjustment of Benjamini and
        Yekutieli (2005).
        """
        if k <= 1:
            return self
        alpha = (1 - self.confidence) / k
        lo, hi = _interval(self.mean, self.se, self.df, 1 - alpha)
        p = min(1.0, self.p * k) if math.isfinite(self.p) else self.p
        return Estimate(**{**asdict(self), "ci_low": lo, "ci_high": hi, "p": p})


def interval_method(runs_unit: str, n_docs: int, pooled_cells: int = 0, df_runs: float = 0) -> str:
    runs = {
        "draws": "t interval over regime draws",
        "seeds": "t interval over training seeds (one regime draw: conditional on it)",
        "none": "one run per cell (training variation not estimated)",
    }[runs_unit]
    if pooled_cells > 1 and runs_unit != "none":
        runs += f", its variance pooled over {pooled_cells} cells of the family ({df_runs:g} df)"
    if n_docs:
        return f"{runs} + bootstrap over {n_docs} test documents (Welch-Satterthwaite df)"
    return f"{runs}; test documents not resampled"


def units_text(n_draws: int, n_seeds: int, n_docs: int) -> str:
    plural = lambda n, w: f"{n} {w}{'' if n == 1 else 's'}"  # noqa: E731
    parts = [plural(n_draws, "draw"), plural(n_seeds, "seed")]
    text = " x ".join(parts)
    return f"{text}, {n_docs} test documents" if n_docs else text


def _interval(mean: float, se: float, df: float, level: float) -> tuple[float, float]:
    if not (math.isfinite(mean) and math.isfinite(se)):
        return math.nan, math.nan
    q = (
        stats.norm.ppf(0.5 + level / 2)
        if not math.isfinite(df)
        else stats.t.ppf(0.5 + level / 2, df)
    )
    return mean - q * se, mean + q * se


def _nan_estimate(confidence: float, n_draws: int = 0, n_seeds: int = 0) -> Estimate:
    nan = math.nan
    return Estimate(
        nan, nan, nan, nan, nan, nan, confidence, n_draws, n_seeds, 0, 0, nan, nan, "none"
    )


@dataclass(frozen=True)
class PooledVariance:
    """The variance of one unit (a seed's value, or a draw's mean) pooled over cells, as a
    one-way ANOVA's residual mean square: sum of squared deviations / sum of their df."""

    unit: str  # "draws" or "seeds"
    variance: float
    df: float
    cells: int


def unit_deviations(values: np.ndarray) -> tuple[str, float, int]:
    """(unit, sum of squared deviations of the units from their mean, df) of one cell's
    draws x seeds values: draw means when there are two or more draws, else the seeds."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v).any(axis=1)]
    if len(v) >= 2:
        with np.errstate(invalid="ignore"):
            means = np.nanmean(v, axis=1)
        return "draws", float(((means - means.mean()) ** 2).sum()), len(means) - 1
    seeds = v[0][np.isfinite(v[0])] if len(v) else np.array([])
    if len(seeds) < 2:
        return "none", 0.0, 0
    return "seeds", float(((seeds - seeds.mean()) ** 2).sum()), len(seeds) - 1


def pool(cells: list[np.ndarray]) -> PooledVariance | None:
    """Pool the run variance of several cells' draws x seeds values (None if nothing to pool).

    Assumes one unit variance for every cell (e.g. the seed-to-seed spread of a family's gains):
    the price of two seeds is one degree of freedom per cell, and pooling turns a study's cells
    into the degrees of freedom a t interval needs. Cells measured over draws and over seeds are
    not mixed: the draws' kind wins when any cell has two draws.
    """
    parts = [unit_deviations(v) for v in cells]
    unit = "draws" if any(u == "draws" for u, _, _ in parts) else "seeds"
    ss = sum(s for u, s, _ in parts if u == unit)
    df = sum(d for u, _, d in parts if u == unit)
    n = sum(1 for u, _, d in parts if u == unit and d > 0)
    if df < 1:
        return None
    return PooledVariance(unit, ss / df, float(df), n)


def estimate(
    values: np.ndarray,
    doc_replicates: np.ndarray | None = None,
    confidence: float = 0.95,
    n_docs: int = 0,
    pooled: PooledVariance | None = None,
) -> Estimate:
    """Mean of `values` (draws x seeds, NaN where a run is missing) and its interval.

    `doc_replicates`: the same statistic recomputed on B bootstrap resamples of the test
    documents (B,), or None when the documents are not resampled. `pooled`: a unit variance
    pooled over cells (`pool`) to use instead of this cell's own. The p-value tests mean = 0
    (meaningful for gains).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    rows = np.isfinite(v).any(axis=1)
    v = v[rows]
    n_draws = int(len(v))
    counts = np.isfinite(v).sum(axis=1)
    n_runs = int(counts.sum())
    if n_runs == 0:
        return _nan_estimate(confidence)
    n_seeds = int(counts.max())
    with np.errstate(invalid="ignore"):
        draw_means = np.nanmean(v, axis=1)
    mean = float(draw_means.mean())
    if n_draws >= 2:
        unit, var_runs, df_runs = "draws", float(draw_means.var(ddof=1)) / n_draws, n_draws - 1
    elif n_runs >= 2:
        seeds = v[0][np.isfinite(v[0])]
        unit, var_runs, df_runs = "seeds", float(seeds.var(ddof=1)) / len(seeds), len(seeds) - 1
    else:
        unit, var_runs, df_runs = "none", 0.0, math.inf
    pooled_cells = 0
    if pooled is not None and (unit == pooled.unit or unit == "none"):
        n_units = n_draws if pooled.unit == "draws" else int(counts[0])
        if pooled.unit == "draws" and n_draws < 2:
            n_units = 0
        if n_units >= 1:
            unit, var_runs, df_runs = pooled.unit, pooled.variance / n_units, pooled.df
            pooled_cells = pooled.cells
    var_docs = 0.0
    if doc_replicates is not None and len(doc_replicates) > 1:
        reps = np.asarray(doc_replicates, dtype=float)
        var_docs = float(np.nanvar(reps, ddof=1))
    else:
        n_docs = 0
    total = var_runs + var_docs
    se = math.sqrt(total)
    df = combined_df(var_runs, df_runs, var_docs)
    lo, hi = _interval(mean, se, df, confidence)
    if se > 0:
        t = abs(mean) / se
        p = float(2 * (stats.norm.sf(t) if not math.isfinite(df) else stats.t.sf(t, df)))
    else:
        p = math.nan
    return Estimate(
        mean, se, df, lo, hi, p, confidence, n_draws, n_seeds, n_runs, n_docs, var_runs,
        var_docs, unit, pooled_cells, float(df_runs),
    )  # fmt: skip


#: The run variance enters the degrees of freedom at this quantile's upper confidence bound.
DF_QUANTILE = 0.25


def combined_df(var_runs: Any, df_runs: float, var_docs: Any) -> Any:
    """Degrees of freedom of (run variance + document variance), the document part known.

    Welch-Satterthwaite's df is (V_r + V_d)^2 / (V_r^2 / nu). Plugging in the estimate of V_r
    makes it anti-conservative when nu is 1-4 and the estimate happens to be small (a 95% interval
    from two seeds then covers ~87%); so the df is computed with V_r at its upper 75% confidence
    bound, V_r nu / chi2_nu(0.25), while the variance itself stays the estimate. Over every
    ratio of V_d to V_r and nu = 1, 2, 4 this keeps a 95% interval's coverage in 94-97%
    (docs/statistics.md, tests/integration/test_calibration.py). Works on arrays (tasks/power.py).
    """
    vr = np.asarray(var_runs, dtype=float)
    if not math.isfinite(df_runs) or df_runs < 1:
        return np.inf if vr.ndim == 0 else np.full(vr.shape, np.inf)
    up = vr * df_runs / stats.chi2.ppf(DF_QUANTILE, df_runs)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(vr > 0, (up + var_docs) ** 2 / (up**2 / df_runs), np.inf)
    return float(df) if df.ndim == 0 else df


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.maximum(den, 1e-12), 0.0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


@dataclass
class DocScores:
    """Per trial and test document: true/false positives, false negatives and query nDCG.

    Rows follow `trial_ids`; columns are the test documents in the prepare stage's order.
    """

    trial_ids: list[str]
    tp: np.ndarray  # (trials, docs) float32
    fp: np.ndarray
    fn: np.ndarray
    ndcg: np.ndarray | None = None  # (trials, docs), NaN where a trial has none

    @property
    def n_docs(self) -> int:
        return int(self.tp.shape[1])

    @classmethod
    def from_predictions(
        cls, predictions: Mapping[str, Mapping[str, np.ndarray]], y_test: np.ndarray
    ) -> DocScores:
        """From each trial's `test_pred` (docs, labels), else `test_proba` and `thresholds`;
        `test_ndcg` (docs,) when present. Trials whose arrays do not match the test set are left
        out."""
        y = np.asarray(y_test, dtype=bool)
        ids, tps, fps, fns, nds = [], [], [], [], []
        for tid, arrays in predictions.items():
            if "test_pred" in arrays:  # the decisions at full precision
                pred = np.asarray(arrays["test_pred"], dtype=bool)
            else:
                proba = np.asarray(arrays["test_proba"], dtype=np.float32)
                pred = proba >= np.asarray(arrays["thresholds"], dtype=np.float32)[None, :]
            if pred.shape != y.shape:
                continue
            ids.append(tid)
            tps.append((pred & y).sum(1))
            fps.append((pred & ~y).sum(1))
            fns.append((~pred & y).sum(1))
            nd = arrays.get("test_ndcg")
            ok = nd is not None and np.shape(nd) == (len(y),)
            nds.append(np.asarray(nd, dtype=np.float32) if ok else np.full(len(y), np.nan))
        empty = np.zeros((0, len(y)), np.float32)
        stack = lambda a: np.array(a, dtype=np.float32) if a else empty  # noqa: E731
        return cls(ids, stack(tps), stack(fps), stack(fns), stack(nds))

    def point(self, metric: str) -> np.ndarray:
        """Each trial's metric on the full test set (what results.parquet holds)."""
        ones = np.ones((1, self.n_docs), np.float32)
        return self._apply(metric, ones)[:, 0]

    def _apply(self, metric: str, w: np.ndarray) -> np.ndarray:
        """The metric of every trial under document weights `w` (B, docs): (trials, B)."""
        n = float(self.n_docs)
        if metric in ("micro_f1", "precision", "recall"):
            tp, fp, fn = self.tp @ w.T, self.fp @ w.T, self.fn @ w.T
            if metric == "micro_f1":
                return _f1(tp, fp, fn)
            return _ratio(tp, tp + fp) if metric == "precision" else _ratio(tp, tp + fn)
        if metric == "samples_f1":
            # scikit-learn's samples average with zero_division=0: a document with no true and
            # no predicted label scores 0.
            return _f1(self.tp, self.fp, self.fn) @ w.T / n
        if metric == "ndcg10":
            if self.ndcg is None:
                raise ValueError("no per-query nDCG in the predictions")
            return np.nan_to_num(self.ndcg) @ w.T / n
        raise ValueError(f"metric {metric!r} cannot be resampled by document; use {DOC_METRICS}")


class DocResampler:
    """B bootstrap resamples of the test documents, shared by every trial and comparison.

    `replicates(trial_ids)` gives each trial's metric on every resample (len, B), computed once
    per trial (one matrix product for all trials), or None when a trial has no predictions.
    """

    def __init__(self, scores: DocScores, metric: str, n_resamples: int = 2000, seed: int = 0):
        if metric not in DOC_METRICS:
            raise ValueError(
                f"metric {metric!r} cannot be resampled by document; use {DOC_METRICS}"
            )
        if metric == "ndcg10" and (scores.ndcg is None or np.isnan(scores.ndcg).all()):
            raise ValueError("no per-query nDCG in the predictions")
        self.scores = scores
        self.metric = metric
        self.n_docs = scores.n_docs
        self.n_resamples = n_resamples
        rng = np.random.default_rng(seed)
        n = scores.n_docs
        # Multinomial document counts per resample, as bincounts of uniform draws (fast).
        draws = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
        weights = np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
        weights = weights.astype(np.float32)
        self._reps = np.empty((len(scores.trial_ids), n_resamples), np.float32)
        from threadpoolctl import threadpool_limits

        # One BLAS thread: these products are small, and OpenBLAS's spinning threads run them
        # ~100x slower when the cores are busy with trials or other tests (measured here).
        with threadpool_limits(1, user_api="blas"):
            for start in range(0, len(scores.trial_ids), 512):  # bounded memory on big grids
                sl = slice(start, start + 512)
                part = DocScores(
                    scores.trial_ids[sl], scores.tp[sl], scores.fp[sl], scores.fn[sl],
                    None if scores.ndcg is None else scores.ndcg[sl],
                )  # fmt: skip
                self._reps[sl] = part._apply(metric, weights)
        self._row = {t: i for i, t in enumerate(scores.trial_ids)}

    def has(self, trial_ids: Sequence[str]) -> bool:
        return all(t in self._row for t in trial_ids)

    def replicates(self, trial_ids: Sequence[str]) -> np.ndarray | None:
        if not self.has(trial_ids):
            return None
        return self._reps[[self._row[t] for t in trial_ids]]


def unit_matrix(
    draws: Sequence[int], seeds: Sequence[int], values: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Values laid out as draws x seeds (NaN where missing) and the (draw, seed) of each cell.

    `values` may be (n,) or (n, B); the result is (D, S) or (D, S, B).
    """
    d_index = {d: i for i, d in enumerate(sorted(set(draws)))}
    s_index = {s: i for i, s in enumerate(sorted(set(seeds)))}
    vals = np.asarray(values, dtype=float)
    shape = (len(d_index), len(s_index), *vals.shape[1:])
    out = np.full(shape, np.nan)
    for d, s, v in zip(draws, seeds, vals, strict=True):
        out[d_index[d], s_index[s]] = v
    return out, [(d, s) for d in d_index for s in s_index]


def estimate_runs(
    draws: Sequence[int],
    seeds: Sequence[int],
    values: np.ndarray,
    replicates: np.ndarray | None,
    confidence: float,
    n_docs: int,
    pooled: PooledVariance | None = None,
) -> Estimate:
    """`estimate` of per-run values (a metric, or a treated - reference difference) keyed by
    (draw, seed), with per-run document replicates (n, B) combined the same way as the values:
    the mean over draws of the mean over seeds."""
    if len(values) == 0:
        return _nan_estimate(confidence)
    grid, _ = unit_matrix(draws, seeds, values)
    reps = None
    if replicates is not None:
        rgrid, _ = unit_matrix(draws, seeds, replicates)
        with np.errstate(invalid="ignore"):
            reps = np.nanmean(np.nanmean(rgrid, axis=1), axis=0)  # (B,)
    return estimate(grid, reps, confidence, n_docs if replicates is not None else 0, pooled)
