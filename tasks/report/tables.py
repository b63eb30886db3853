"""Report tables from `trials/results.parquet`: per-cell estimates, controlled gains, mixing.

Every comparison is paired: a treated trial is compared with the reference trial of the same
regime draw and seed, on the same test documents, so the noise they share cancels. Every
estimate is a `tasks.inference.Estimate` (mean over draws of the mean over seeds, t interval
with a document-bootstrap variance); every "best" is chosen on the validation metric
(`Analysis.select`), never on test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from config.trials import AUGMENTED_ARMS
from tasks.inference import (
    DocResampler,
    Estimate,
    PooledVariance,
    estimate_runs,
    pool,
    unit_matrix,
)
from tasks.stats import bh_qvalues

#: The columns that name a grid cell (a trial without its draw and seed).
CELL = [
    "regime",
    "arm",
    "ratio",
    "real_fraction",
    "control_size",  # n_train of a duplicate_to_match control (its only distinguishing field)
    "ordering",
    "generator",
    "strategy",
    "variant",
    "family",
    "loss",
    "precision",
    "attention",
]
CORPUS = ["regime", "generator", "strategy", "variant"]
NUMERICS = ["family", "precision", "attention"]
#: Where a non-augmentation baseline is looked up for an augmented trial (plus its loss).
TWIN = ["regime", "draw", "family", "precision", "attention", "seed"]
METRICS = [
    "val_micro_f1",
    "test_micro_f1",
    "test_macro_f1",
    "test_samples_f1",
    "test_precision",
    "test_recall",
    "test_ndcg10",
]


@dataclass(frozen=True)
class StatsOptions:
    """How intervals are computed: confidence level, document-bootstrap resamples and seed."""

    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0


def normalize(results: pd.DataFrame) -> pd.DataFrame:
    """Results with empty strings for missing text keys (so grouping never drops a cell)."""
    df = results.copy()
    numeric = ("ratio", "real_fraction", "control_size")
    n_train = pd.to_numeric(df.get("n_train", pd.Series(np.nan, index=df.index)), errors="coerce")
    df["control_size"] = n_train.where(df.get("arm", "") == "duplicate_to_match")
    for col in CELL + ["controls", "status", "trial_id", "family_kind"]:
        if col not in df.columns:
            df[col] = np.nan if col in numeric else ""
    for col in CELL + ["controls", "family_kind", "trial_id", "status"]:
        if col not in numeric:
            df[col] = df[col].fillna("").astype(str)
    for col in numeric:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("draw", "seed"):  # runs from before regime draws have no `draw` column
        values = df[col] if col in df.columns else pd.Series(0, index=df.index)
        df[col] = pd.to_numeric(values, errors="coerce").fillna(0).astype(int)
    df["n_train"] = n_train
    for col in METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    return df


def _groups(df: pd.DataFrame, keys: list[str]) -> dict[tuple, np.ndarray]:
    """Group key -> row positions (in df's order), groups in order of appearance."""
    if df.empty:
        return {}
    return dict(df.reset_index(drop=True).groupby(keys, dropna=False, sort=False).indices)


class Analysis:
    """The ok trials of a study and how to estimate over them: `metric` on test, chosen by
    `select` on validation, documents resampled by `resampler` when predictions exist.

    Trials are addressed by position in `ok` (-1: no such trial), so that the many small
    comparisons of a big grid are numpy indexing rather than DataFrame work.
    """

    def __init__(
        self,
        results: pd.DataFrame,
        metric: str = "test_micro_f1",
        select: str = "val_micro_f1",
        opts: StatsOptions | None = None,
        resampler: DocResampler | None = None,
        pool_runs: bool = True,
    ):
        if not select.startswith("val_"):
            raise ValueError(f"select metric {select!r}: choices are made on validation (val_*)")
        self.all = normalize(results)
        ok = self.all[(self.all.status == "ok") & self.all[metric].notna()]
        self.ok = ok.reset_index(drop=True)
        self.metric = metric
        self.select = select
        self.opts = opts or StatsOptions()
        self.resampler = resampler
        self.pool_runs = pool_runs
        #: family -> run variance of its controlled gains pooled over its cells (controlled_gains)
        self.pooled: dict[str, PooledVariance] = {}
        self.ids: list[str] = self.ok.trial_id.tolist()
        self.pos = {t: i for i, t in enumerate(self.ids)}
        self.m = self.ok[metric].to_numpy(float)
        self.v = self.ok[select].to_numpy(float)
        self.draw = self.ok.draw.to_numpy()
        self.seed = self.ok.seed.to_numpy()
        self.reps = None
        self.has_reps = np.zeros(len(self.ids), dtype=bool)
        if resampler is not None and self.ids:
            self.has_reps = np.array([resampler.has([t]) for t in self.ids])
            if self.has_reps.any():
                self.reps = np.full((len(self.ids), resampler.n_resamples), np.nan, np.float32)
                have = [t for t, h in zip(self.ids, self.has_reps, strict=True) if h]
                self.reps[self.has_reps] = resampler.replicates(have)

    @property
    def n_docs(self) -> int:
        return self.resampler.n_docs if self.reps is not None else 0

    def index(self, ids: Iterable[str]) -> np.ndarray:
        return np.array([self.pos.get(t, -1) for t in ids], dtype=int)

    def _reps_of(self, idx: np.ndarray) -> np.ndarray | None:
        if self.reps is None or not len(idx) or not self.has_reps[idx].all():
            return None
        return self.reps[idx]

    def estimate(self, idx: np.ndarray) -> Estimate:
        """The metric of one cell's trials (positions), over draws x seeds (and documents)."""
        idx = idx[idx >= 0]
        return estimate_runs(
            self.draw[idx], self.seed[idx], self.m[idx], self._reps_of(idx),
            self.opts.confidence, self.n_docs,
        )  # fmt: skip

    def compare(
        self, treated: np.ndarray, reference: np.ndarray, pooled: PooledVariance | None = None
    ) -> Estimate:
        """Paired gain of `treated` trials over `reference` trials aligned position by position
        (`pooled`: a run variance pooled over cells, see `pooled_gain_variance`)."""
        keep = (treated >= 0) & (reference >= 0)
        t, r = treated[keep], reference[keep]
        rt, rr = self._reps_of(t), self._reps_of(r)
        reps = rt - rr if rt is not None and rr is not None else None
        return estimate_runs(
            self.draw[t], self.seed[t], self.m[t] - self.m[r], reps, self.opts.confidence,
            self.n_docs, pooled,
        )  # fmt: skip

    def gain_units(self, treated: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The paired gains laid out draws x seeds (for pooling their variance)."""
        keep = (treated >= 0) & (reference >= 0)
        t, r = treated[keep], reference[keep]
        grid, _ = unit_matrix(self.draw[t], self.seed[t], self.m[t] - self.m[r])
        return grid

    def val_mean(self, idx: np.ndarray) -> float:
        v = self.v[idx[idx >= 0]]
        return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan

    def mean(self, idx: np.ndarray) -> float:
        v = self.m[idx[idx >= 0]]
        return float(v.mean()) if len(v) else math.nan


def _estimate_columns(e: Estimate, name: str) -> dict[str, Any]:
    return {
        name: e.mean,
        f"{name}_low": e.ci_low,
        f"{name}_high": e.ci_high,
        f"{name}_p": e.p,
        f"n_{name}": e.n_runs,
    }


def _units_columns(e: Estimate) -> dict[str, Any]:
    return {
        "n_draws": e.n_draws,
        "n_seeds": e.n_seeds,
        "n_docs": e.n_docs,
        "over": e.units,
        "method": e.method,
    }


def aggregate(a: Analysis) -> pd.DataFrame:
    """One row per grid cell: trial counts, the metric's estimate and the means of all metrics."""
    rows = []
    for key, pos in _groups(a.all, CELL).items():
        g = a.all.iloc[pos]
        ok = g[(g.status == "ok") & g[a.metric].notna()]
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        row.update(
            n_ok=len(ok),
            n_failed=int((g.status == "failed").sum()),
            n_skipped=int((g.status == "skipped").sum()),
        )
        for m in METRICS:
            row[f"{m}_mean"] = float(ok[m].mean()) if ok[m].notna().any() else math.nan
        e = a.estimate(a.index(ok.trial_id))
        row.update(
            {
                f"{a.metric}_ci_low": e.ci_low,
                f"{a.metric}_ci_high": e.ci_high,
                f"{a.metric}_std": float(ok[a.metric].std(ddof=1)) if len(ok) > 1 else math.nan,
            }
        )
        row.update(_units_columns(e))
        rows.append(row)
    return pd.DataFrame(rows)


class Twins:
    """Lookups of an augmented trial's reference trials (positions in `a.ok`): its control, and
    real_only / duplicate_to_match trials of the same regime draw, family, numerics and seed,
    by loss."""

    def __init__(self, a: Analysis):
        ok = a.ok
        cols = {c: ok[c].tolist() for c in TWIN + ["loss", "arm", "controls"]}
        self.key = list(zip(*(cols[c] for c in TWIN), strict=True))
        n_train = ok.n_train.astype(float).tolist()
        self.control = np.full(len(ok), -1, dtype=int)
        self.real: dict[tuple, int] = {}
        self.dup: dict[tuple, int] = {}
        for i, (arm, loss, controls) in enumerate(
            zip(cols["arm"], cols["loss"], cols["controls"], strict=True)
        ):  # noqa: E501
            if arm == "real_only":
                self.real[(*self.key[i], loss)] = i
            elif arm == "duplicate_to_match":
                self.dup[(*self.key[i], loss, n_train[i])] = i
                for aug in filter(None, (c.strip() for c in controls.split(","))):
                    j = a.pos.get(aug, -1)
                    if j >= 0:
                        self.control[j] = i
        self.n_train = n_train

    def real_only(self, idx: np.ndarray, loss: str) -> np.ndarray:
        return np.array([self.real.get((*self.key[i], loss), -1) for i in idx], dtype=int)

    def duplicate(self, idx: np.ndarray, loss: str) -> np.ndarray:
        """duplicate_to_match trials of `loss` with the size of each trial's own control."""
        out = []
        for i in idx:
            c = self.control[i]
            out.append(self.dup.get((*self.key[i], loss, self.n_train[c]), -1) if c >= 0 else -1)
        return np.array(out, dtype=int)


def controlled_gains(a: Analysis) -> pd.DataFrame:
    """Per augmented cell: the gain over its duplicate_to_match control (the volume-controlled
    synthetic gain), over the best non-augmentation baseline chosen on validation, and the raw
    gain over real_only with the same loss. q: Benjamini-Hochberg over every cell's
    controlled-gain p-value."""
    ok = a.ok
    is_aug = ok.arm.isin(AUGMENTED_ARMS).to_numpy()
    if not is_aug.any():
        return pd.DataFrame()
    twins = Twins(a)
    losses = sorted(set(ok.loss))
    aug_pos = np.flatnonzero(is_aug)
    rows = []
    nan = Estimate(*([math.nan] * 6), a.opts.confidence, 0, 0, 0, 0, math.nan, math.nan, "none")
    groups = {k: aug_pos[local] for k, local in _groups(ok.iloc[aug_pos], CELL).items()}
    family = CELL.index("family")
    if a.pool_runs:
        a.pooled = pooled_gain_variance(a, groups, twins.control, family)
    for key, g in groups.items():
        loss = str(key[CELL.index("loss")])
        ctl = twins.control[g]
        e_cell = a.estimate(g)
        e_ctl = a.compare(g, ctl, a.pooled.get(str(key[family])))
        e_real = a.compare(g, twins.real_only(g, loss))
        base_name, base, n_cand = _best_baseline(a, g, twins, losses)
        e_base = a.compare(g, base) if base is not None else nan
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        row.update(
            metric=a.metric,
            n_trials=len(g),
            mean=e_cell.mean,
            mean_low=e_cell.ci_low,
            mean_high=e_cell.ci_high,
            val_mean=a.val_mean(g),
            control_mean=a.mean(ctl),
            control_val_mean=a.val_mean(ctl),
            baseline=base_name,
            baseline_candidates=n_cand,
        )
        row.update(_estimate_columns(e_ctl, "gain_control"))
        row.update(_units_columns(e_ctl))
        row.update(_estimate_columns(e_real, "gain_real_only"))
        row.update(_estimate_columns(e_base, "gain_baseline"))
        row["trial_ids"] = ",".join(a.ids[i] for i in g)
        row["control_ids"] = ",".join(a.ids[i] if i >= 0 else "" for i in ctl)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["gain_control_q"] = bh_qvalues(out["gain_control_p"])
    return out


def pooled_gain_variance(
    a: Analysis, groups: dict[tuple, np.ndarray], control: np.ndarray, family: int
) -> dict[str, PooledVariance]:
    """Per family: the run variance of the controlled gain pooled over the family's cells.

    With two seeds a cell's own seed variance has one degree of freedom, and a t interval on it
    is uselessly wide (t quantile 12.7 at 95%, 50+ once adjusted for a choice among cells). The
    seed-to-seed (or draw-to-draw) spread of a gain is taken to be the same for every cell of a
    family, as in an ANOVA's pooled residual variance (docs/statistics.md).
    """
    by_family: dict[str, list[np.ndarray]] = {}
    for key, g in groups.items():
        by_family.setdefault(str(key[family]), []).append(a.gain_units(g, control[g]))
    out = {}
    for fam, cells in by_family.items():
        pooled = pool(cells)
        if pooled is not None:
            out[fam] = pooled
    return out


def _best_baseline(
    a: Analysis, g: np.ndarray, twins: Twins, losses: list[str]
) -> tuple[str, np.ndarray | None, int]:
    """The real_only or same-size duplicate_to_match baseline (any loss) with the best mean
    validation metric over the trials paired with `g`, its positions aligned with g's, and the
    number of candidates it was chosen among."""
    best, best_val, best_idx, n = "", -math.inf, None, 0
    for loss in losses:
        for arm, find in (("real_only", twins.real_only), ("duplicate_to_match", twins.duplicate)):
            idx = find(g, loss)
            if (idx < 0).all():
                continue
            n += 1
            v = a.val_mean(idx)
            if math.isfinite(v) and v > best_val:
                best, best_val, best_idx = f"{arm}, {loss}", v, idx
    return best, best_idx, n


def paired_comparison(
    a: Analysis,
    treated: pd.Series,
    reference: pd.Series,
    keys: list[str],
    label: str,
) -> pd.DataFrame:
    """Gain of `treated` trials over the `reference` trial with the same keys (draw and seed
    among them), one row per treated cell. `treated`/`reference`: masks over `a.ok`."""
    ok = a.ok
    cols = [ok[k].tolist() for k in keys]
    key_of = list(zip(*cols, strict=True))
    ref_pos = np.flatnonzero(reference.to_numpy())
    lookup = {key_of[i]: i for i in ref_pos}
    t_pos = np.flatnonzero(treated.to_numpy())
    rows = []
    for key, local in _groups(ok.iloc[t_pos], CELL).items():
        g = t_pos[local]
        r = np.array([lookup.get(key_of[i], -1) for i in g], dtype=int)
        e = a.compare(g, r)
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        row.update(comparison=label, mean=a.mean(g), val_mean=a.val_mean(g))
        row.update(_estimate_columns(e, "gain_reference"))
        row.update(_units_columns(e))
        rows.append(row)
    return pd.DataFrame(rows)


MIX_SAME = [
    "regime",
    "draw",
    "generator",
    "strategy",
    "variant",
    "ratio",
    "family",
    "loss",
    "precision",
    "attention",
    "seed",
]


def mixing_comparisons(a: Analysis) -> pd.DataFrame:
    """Curriculum vs shuffled (same rows, same steps), filtered vs plain mixing (fewer rows:
    not volume-controlled), ensemble vs the plain corpus best on validation."""
    df = a.ok
    plain = (df.arm == "real_plus_synthetic") & (df.ordering == "shuffled")
    parts = []
    curriculum = (df.arm == "real_plus_synthetic") & (df.ordering != "shuffled")
    if curriculum.any():
        parts.append(paired_comparison(a, curriculum, plain, MIX_SAME, "vs shuffled"))
    if (df.arm == "filtered").any():
        keys = MIX_SAME[:-1] + ["ordering", "seed"]
        parts.append(
            paired_comparison(
                a, df.arm == "filtered", df.arm == "real_plus_synthetic", keys, "vs plain mixing"
            )
        )
    if (df.arm == "ensemble").any():
        group = ["regime", "ratio", "family", "loss", "precision", "attention"]
        cand = df[plain]
        means = cand.groupby(group + CORPUS[1:], dropna=False)[a.select].mean().reset_index()
        best = means.loc[means.groupby(group, dropna=False)[a.select].idxmax().dropna()]
        best_rows = cand.merge(best[group + CORPUS[1:]], on=group + CORPUS[1:])
        ref = df.trial_id.isin(best_rows.trial_id)
        parts.append(
            paired_comparison(
                a, df.arm == "ensemble", ref, group + ["draw", "seed"], "vs best plain corpus (val)"
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def loss_comparisons(a: Analysis) -> pd.DataFrame:
    """Each real-only loss against bce on the same draw and seed (the non-augmentation losses)."""
    df = a.ok
    real = df.arm == "real_only"
    if not ((real & (df.loss == "bce")).any() and (real & (df.loss != "bce")).any()):
        return pd.DataFrame()
    keys = ["regime", "draw", "family", "precision", "attention", "seed"]
    return paired_comparison(
        a, real & (df.loss != "bce"), real & (df.loss == "bce"), keys, "vs bce"
    )


def fixed_budget_curve(a: Analysis) -> pd.DataFrame:
    """Metric vs real fraction per fixed-budget curve; the optimum is the fraction with the best
    mean validation metric, its test estimate reported with the number of fractions compared."""
    fb_pos = np.flatnonzero((a.ok.arm == "fixed_budget").to_numpy())
    if not len(fb_pos):
        return pd.DataFrame()
    curve_keys = [
        "regime",
        "generator",
        "strategy",
        "variant",
        "ordering",
        "family",
        "loss",
        "precision",
        "attention",
    ]
    fb = a.ok.iloc[fb_pos]
    rows = []
    for key, local in _groups(fb, curve_keys).items():
        g = fb_pos[local]
        fracs = a.ok.real_fraction.to_numpy(float)[g]
        points = {float(f): g[fracs == f] for f in sorted(set(fracs))}
        vals = {f: a.val_mean(p) for f, p in points.items()}
        best = max(vals, key=lambda f: vals[f] if math.isfinite(vals[f]) else -math.inf)
        for frac, p in points.items():
            e = a.estimate(p)
            rows.append(
                {
                    **dict(zip(curve_keys, key, strict=True)),
                    "real_fraction": frac,
                    "n_trials": len(p),
                    "mean": e.mean,
                    "ci_low": e.ci_low,
                    "ci_high": e.ci_high,
                    "val_mean": vals[frac],
                    "optimum": bool(frac == best),
                    "optimum_fraction": best,
                    "n_fractions": len(points),
                    **_units_columns(e),
                }
            )
    return pd.DataFrame(rows)


def retrieval_vs_classification(
    a: Analysis, ndcg: Analysis | None, f1: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per augmented cell: nDCG@10 change (absolute and relative) beside the micro-F1 change,
    both over real_only of the same loss, draw and seed (`f1`: a's controlled gains, when
    already computed)."""
    f1 = controlled_gains(a) if f1 is None else f1
    if f1.empty or ndcg is None:
        return pd.DataFrame()
    nd = controlled_gains(ndcg)
    if nd.empty:
        return pd.DataFrame()
    cols = ["gain_real_only", "gain_real_only_low", "gain_real_only_high", "n_gain_real_only"]
    left = f1[CELL + ["val_mean"] + cols].rename(
        columns={c: c.replace("gain_real_only", "f1_change") for c in cols}
    )
    nd = nd.assign(real_only_ndcg=nd["mean"] - nd["gain_real_only"])
    right = nd[CELL + cols + ["real_only_ndcg", "over"]].rename(
        columns={c: c.replace("gain_real_only", "ndcg_change") for c in cols}
    )
    out = left.merge(right, on=CELL, how="left")
    out["ndcg_change_rel"] = out["ndcg_change"] / out["real_only_ndcg"]
    return out


def numerics_table(numerics: list[dict[str, Any]], a: Analysis) -> pd.DataFrame:
    """Precision x attention per family: the guard's logit differences and flag, and the trials."""
    ok = a.ok
    if "numerics_flag" not in ok:
        ok = ok.assign(numerics_flag=False)
    trials = (
        ok.groupby(NUMERICS, sort=False)
        .agg(
            n_trials=(a.metric, "size"),
            mean=(a.metric, "mean"),
            flagged_trials=("numerics_flag", "sum"),
        )
        .reset_index()
    )
    guard = pd.DataFrame(numerics) if numerics else pd.DataFrame(columns=NUMERICS)
    cols = [
        c
        for c in NUMERICS + ["max_abs_diff", "mean_abs_diff", "flagged", "skipped_reason"]
        if c in guard.columns
    ]
    guard = guard[cols]
    if guard.empty:
        return trials
    return guard.merge(trials, on=NUMERICS, how="outer")


def variance_components(a: Analysis, gains: pd.DataFrame) -> pd.DataFrame:
    """Per augmented cell: the controlled gain's variance between draws, between seeds within a
    draw, and per test document (the inputs of `synthpat plan --pilot`; tasks/power.py).

    seed: the pooled within-draw variance of the per-run gains; draw: the variance of the
    per-draw means less their seed part (method of moments, floored at 0; NaN with one draw);
    doc: the document-bootstrap variance of the gain times the number of test documents.
    """
    rows = []
    for r in gains.itertuples(index=False):
        t, c = a.index(r.trial_ids.split(",")), a.index(r.control_ids.split(","))
        keep = (t >= 0) & (c >= 0)
        t, c = t[keep], c[keep]
        if not len(t):
            continue
        diff = pd.DataFrame({"draw": a.draw[t], "g": a.m[t] - a.m[c]})
        by = diff.groupby("draw").g
        within = by.var(ddof=1).dropna()
        seed = float(within.mean()) if len(within) else math.nan
        draw = math.nan
        if by.ngroups >= 2:
            spread = float(by.mean().var(ddof=1))
            part = seed / float(by.size().mean()) if math.isfinite(seed) else 0.0
            draw = max(0.0, spread - part)
        e = a.compare(t, c)
        rows.append(
            {
                "regime": r.regime,
                "family": r.family,
                "family_kind": a.ok.family_kind.iloc[t[0]],
                "arm": r.arm,
                "draw": draw,
                "seed": seed,
                "doc": e.var_docs * e.n_docs if e.n_docs else math.nan,
                "n_docs": e.n_docs,
                "n_draws": e.n_draws,
                "n_seeds": e.n_seeds,
            }
        )
    return pd.DataFrame(rows)
