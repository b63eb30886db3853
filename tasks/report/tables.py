"""Report tables from `trials/results.parquet`: per-cell aggregates, controlled gains, mixing.

Every comparison is paired by seed: an augmented trial is compared with the trial of the same
seed in its reference arm, so seed-to-seed noise shared by both cancels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.stats import paired_gain, summarize

AUGMENTED_ARMS = ("real_plus_synthetic", "filtered", "fixed_budget", "ensemble")
#: The columns that name a grid cell (a trial without its seed).
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
    """How intervals are computed: confidence level, bootstrap resamples and seed."""

    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0

    def kw(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "n_resamples": self.n_resamples, "seed": self.seed}


def normalize(results: pd.DataFrame) -> pd.DataFrame:
    """Results with empty strings for missing text keys (so grouping never drops a cell)."""
    df = results.copy()
    numeric = ("ratio", "real_fraction", "control_size")
    n_train = pd.to_numeric(df.get("n_train", pd.Series(np.nan, index=df.index)), errors="coerce")
    df["control_size"] = n_train.where(df.get("arm", "") == "duplicate_to_match")
    for col in CELL + ["controls", "status", "trial_id"]:
        if col not in df.columns:
            df[col] = np.nan if col in numeric else ""
    for col in CELL + ["controls"]:
        if col not in numeric:
            df[col] = df[col].fillna("").astype(str)
    for col in numeric:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    return df


def _groups(df: pd.DataFrame, keys: list[str]):
    return df.groupby(keys, dropna=False, sort=False)


def aggregate(results: pd.DataFrame, opts: StatsOptions) -> pd.DataFrame:
    """One row per grid cell: trial counts and mean/std/CI of every metric over seeds."""
    df = normalize(results)
    rows = []
    for key, g in _groups(df, CELL):
        ok = g[g.status == "ok"]
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        row.update(
            n_ok=len(ok),
            n_failed=int((g.status == "failed").sum()),
            n_skipped=int((g.status == "skipped").sum()),
        )
        for m in METRICS:
            row.update(summarize(ok[m], **opts.kw()).to_dict(f"{m}_"))
            row.pop(f"{m}_n")
        rows.append(row)
    return pd.DataFrame(rows)


def _lookup(df: pd.DataFrame, keys: list[str], metric: str) -> dict[tuple, float]:
    return {tuple(k): v for k, v in zip(df[keys].itertuples(index=False), df[metric], strict=True)}


def _best_baseline(real: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Real-only trials of the loss with the best mean per (regime, family, numerics)."""
    keys = ["regime", "family", "precision", "attention"]
    real = real.dropna(subset=[metric])
    means = real.groupby(keys + ["loss"], sort=False)[metric].mean().reset_index()
    best = means.loc[means.groupby(keys, sort=False)[metric].idxmax().dropna()]
    return real.merge(best[keys + ["loss"]], on=keys + ["loss"])


def paired_columns(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Augmented ok trials with the metric of their control, real_only and best-baseline twins."""
    df = normalize(results)
    ok = df[df.status == "ok"]
    aug = ok[ok.arm.isin(AUGMENTED_ARMS)].copy()
    control: dict[str, float] = {}
    control_id: dict[str, str] = {}
    for _, row in ok[ok.arm == "duplicate_to_match"].iterrows():
        for tid in filter(None, row.controls.split(",")):
            control[tid.strip()] = row[metric]
            control_id[tid.strip()] = row.trial_id
    aug["control_trial"] = aug.trial_id.map(control_id).fillna("")
    aug["control"] = aug.trial_id.map(control)
    real = ok[ok.arm == "real_only"]
    twin = ["regime", "family", "loss", "precision", "attention", "seed"]
    same_loss = _lookup(real, twin, metric)
    aug["real_only"] = [same_loss.get(tuple(k), np.nan) for k in aug[twin].itertuples(index=False)]
    base = _best_baseline(real, metric) if len(real) else real
    base_keys = ["regime", "family", "precision", "attention", "seed"]
    best = _lookup(base, base_keys, metric)
    best_loss = {tuple(k[:-1]): k[-1] for k in base[base_keys[:-1] + ["loss"]].values.tolist()}
    aug["baseline"] = [best.get(tuple(k), np.nan) for k in aug[base_keys].itertuples(index=False)]
    aug["baseline_loss"] = [
        best_loss.get(tuple(k), "") for k in aug[base_keys[:-1]].itertuples(index=False)
    ]
    return aug


def _gain(g: pd.DataFrame, metric: str, ref: str, opts: StatsOptions) -> dict[str, Any]:
    pair = g[[metric, ref]].dropna()
    s = paired_gain(pair[metric], pair[ref], **opts.kw())
    return {
        f"gain_{ref}": s.mean,
        f"gain_{ref}_low": s.ci_low,
        f"gain_{ref}_high": s.ci_high,
        f"n_{ref}": s.n,
    }


def controlled_gains(results: pd.DataFrame, metric: str, opts: StatsOptions) -> pd.DataFrame:
    """Per augmented cell: the gain over its duplicate_to_match control (the volume-controlled
    synthetic gain), over the best real-only loss, and the raw gain over real_only (same loss).
    """
    aug = paired_columns(results, metric)
    rows = []
    for key, g in _groups(aug, CELL):
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        row.update(metric=metric, n_trials=len(g), mean=float(g[metric].mean()))
        row["control_mean"] = float(g["control"].mean())
        row["baseline_loss"] = g["baseline_loss"].iloc[0]
        for ref in ("control", "baseline", "real_only"):
            row.update(_gain(g, metric, ref, opts))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_comparison(
    results: pd.DataFrame,
    metric: str,
    treated: pd.Series,
    reference: pd.Series,
    keys: list[str],
    opts: StatsOptions,
    label: str,
) -> pd.DataFrame:
    """Gain of `treated` rows over the `reference` row with the same keys (seed included)."""
    df = normalize(results)
    df = df[df.status == "ok"]
    ref = _lookup(df[reference.reindex(df.index, fill_value=False)], keys, metric)
    t = df[treated.reindex(df.index, fill_value=False)].copy()
    t["reference"] = [ref.get(tuple(k), np.nan) for k in t[keys].itertuples(index=False)]
    rows = []
    for key, g in _groups(t, CELL):
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        row.update(
            comparison=label, mean=float(g[metric].mean()), **_gain(g, metric, "reference", opts)
        )
        rows.append(row)
    return pd.DataFrame(rows)


def mixing_comparisons(results: pd.DataFrame, metric: str, opts: StatsOptions) -> pd.DataFrame:
    """Curriculum vs shuffled, filtered vs plain mixing, ensemble vs the best plain corpus."""
    df = normalize(results)
    plain = (df.arm == "real_plus_synthetic") & (df.ordering == "shuffled")
    same = [
        "regime",
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
    parts = []
    curriculum = (df.arm == "real_plus_synthetic") & (df.ordering != "shuffled")
    if curriculum.any():
        parts.append(paired_comparison(df, metric, curriculum, plain, same, opts, "vs shuffled"))
    if (df.arm == "filtered").any():
        filt = df.arm == "filtered"
        keys = same[:-1] + ["ordering", "seed"]
        plain_any = df.arm == "real_plus_synthetic"
        parts.append(paired_comparison(df, metric, filt, plain_any, keys, opts, "vs plain mixing"))
    if (df.arm == "ensemble").any():
        ok = df[plain & (df.status == "ok")].dropna(subset=[metric])
        group = ["regime", "ratio", "family", "loss", "precision", "attention"]
        means = ok.groupby(group + CORPUS[1:], dropna=False)[metric].mean().reset_index()
        best = means.loc[means.groupby(group, dropna=False)[metric].idxmax().dropna()]
        best_rows = ok.merge(best[group + CORPUS[1:]], on=group + CORPUS[1:])
        ref = pd.Series(df.trial_id.isin(best_rows.trial_id), index=df.index)
        parts.append(
            paired_comparison(
                df,
                metric,
                df.arm == "ensemble",
                ref,
                group + ["seed"],
                opts,
                "vs best plain corpus",
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def fixed_budget_curve(results: pd.DataFrame, metric: str, opts: StatsOptions) -> pd.DataFrame:
    """Metric vs real fraction per fixed-budget curve, with the optimum and a seed-bootstrap
    interval on the optimum's real fraction (the argmax of the mean curve over resampled seeds).
    """
    df = normalize(results)
    fb = df[(df.arm == "fixed_budget") & (df.status == "ok")].dropna(subset=[metric])
    if fb.empty:
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
    rows = []
    for key, g in _groups(fb, curve_keys):
        wide = g.pivot_table(index="seed", columns="real_fraction", values=metric)
        fractions = wide.columns.to_numpy(dtype=float)
        lo, hi = _argmax_interval(wide.to_numpy(), fractions, opts)
        best = fractions[int(np.nanargmax(wide.mean().to_numpy()))]
        for frac, col in wide.items():
            s = summarize(col, **opts.kw())
            rows.append(
                {
                    **dict(zip(curve_keys, key, strict=True)),
                    "real_fraction": float(frac),
                    "n_trials": s.n,
                    "mean": s.mean,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                    "optimum": bool(frac == best),
                    "optimum_fraction": float(best),
                    "optimum_low": lo,
                    "optimum_high": hi,
                }
            )
    return pd.DataFrame(rows)


def _argmax_interval(
    values: np.ndarray, fractions: np.ndarray, opts: StatsOptions
) -> tuple[float, float]:
    # Hand-written: the statistic is an argmax over columns of resampled rows, which
    # scipy.stats.bootstrap (one-sample statistics along an axis) does not express directly.
    if values.shape[0] < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(opts.seed)
    idx = rng.integers(0, values.shape[0], size=(opts.n_resamples, values.shape[0]))
    with np.errstate(all="ignore"):
        means = np.nanmean(values[idx], axis=1)
    picks = fractions[np.nanargmax(np.nan_to_num(means, nan=-np.inf), axis=1)]
    alpha = (1 - opts.confidence) / 2
    return float(np.quantile(picks, alpha)), float(np.quantile(picks, 1 - alpha))


def retrieval_vs_classification(results: pd.DataFrame, opts: StatsOptions) -> pd.DataFrame:
    """Per augmented corpus cell: nDCG@10 change (absolute and relative) beside the micro-F1
    change, both over real_only of the same seed."""
    f1 = controlled_gains(results, "test_micro_f1", opts)
    nd = controlled_gains(results, "test_ndcg10", opts)
    if f1.empty:
        return f1

    def renamed(df: pd.DataFrame, name: str) -> pd.DataFrame:
        cols = {
            "gain_real_only": name,
            "gain_real_only_low": f"{name}_low",
            "gain_real_only_high": f"{name}_high",
            "n_real_only": f"n_{name}",
        }
        return df[CELL + list(cols)].rename(columns=cols)

    nd = nd.assign(real_only_ndcg=nd["mean"] - nd["gain_real_only"])
    out = renamed(f1, "f1_change").merge(
        renamed(nd, "ndcg_change").join(nd["real_only_ndcg"]), on=CELL, how="left"
    )
    out["ndcg_change_rel"] = out["ndcg_change"] / out["real_only_ndcg"]
    return out


def numerics_table(
    numerics: list[dict[str, Any]], results: pd.DataFrame, metric: str
) -> pd.DataFrame:
    """Precision x attention per family: the guard's logit differences and flag, and the trials."""
    df = normalize(results)
    ok = df[df.status == "ok"]
    if "numerics_flag" not in ok:
        ok = ok.assign(numerics_flag=False)
    trials = (
        ok.groupby(NUMERICS, sort=False)
        .agg(
            n_trials=(metric, "size"),
            mean=(metric, "mean"),
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
