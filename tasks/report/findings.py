"""Fidelity vs controlled gain (correlations, Fisher z across regimes) and paper vs this run."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from tasks.report.tables import CORPUS
from tasks.stats import compare_correlations, correlation

#: Fidelity measures correlated with the gain, MMD first; lower is closer to real for the first two.
MEASURES = ["mmd2", "frechet", "precision", "recall", "density", "coverage", "label_js"]
#: What a fidelity-gain correlation is computed within (across the corpora of that group).
GROUP = ["regime", "ratio", "family", "loss", "precision", "attention"]


def with_fidelity(gains: pd.DataFrame, summary: pd.DataFrame | None) -> pd.DataFrame:
    """Plain shuffled mixing cells with their corpus's fidelity measures joined on."""
    if gains.empty or summary is None or summary.empty:
        return pd.DataFrame()
    plain = gains[(gains.arm == "real_plus_synthetic") & (gains.ordering == "shuffled")]
    measures = [m for m in MEASURES if m in summary.columns]
    fid = summary[CORPUS + measures].copy()
    for col in CORPUS:
        fid[col] = fid[col].fillna("").astype(str)
    # The fidelity summary's `precision` (PRDC) would clash with the numerics precision.
    fid = fid.rename(columns={m: f"fid_{m}" for m in measures})
    return plain.merge(fid, on=CORPUS, how="inner")


def fidelity_correlations(joined: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per group and measure: Pearson and Spearman r between fidelity and controlled gain."""
    if joined.empty:
        return pd.DataFrame()
    measures = [c[4:] for c in joined.columns if c.startswith("fid_")]
    rows = []
    for key, g in joined.groupby(GROUP, dropna=False, sort=False):
        for m in measures:
            for method in ("pearson", "spearman"):
                c = correlation(g[f"fid_{m}"], g["gain_control"], method, confidence)
                rows.append(
                    {
                        **dict(zip(GROUP, key, strict=True)),
                        "measure": m,
                        "method": method,
                        "n": c.n,
                        "r": c.r,
                        "p": c.p,
                        "ci_low": c.ci_low,
                        "ci_high": c.ci_high,
                        "trials_per_point": int(g["n_control"].min()),
                    }
                )
    return pd.DataFrame(rows)


def regime_comparisons(
    corr: pd.DataFrame, regime_order: list[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Fisher's z for the difference of Pearson r between every two regimes (same group and
    measure), smaller regime first."""
    if corr.empty:
        return pd.DataFrame()
    pearson = corr[corr.method == "pearson"]
    rank = {r: i for i, r in enumerate(regime_order)}
    rest = [k for k in GROUP if k != "regime"] + ["measure"]
    rows = []
    for key, g in pearson.groupby(rest, dropna=False, sort=False):
        ordered = sorted(g.itertuples(index=False), key=lambda t: rank.get(t.regime, len(rank)))
        for a, b in itertools.combinations(ordered, 2):
            d = compare_correlations(a.r, a.n, b.r, b.n, confidence)
            rows.append(
                {
                    **dict(zip(rest, key, strict=True)),
                    "regime_1": a.regime,
                    "regime_2": b.regime,
                    "r1": d.r1,
                    "n1": d.n1,
                    "r2": d.r2,
                    "n2": d.n2,
                    "z": d.z,
                    "p": d.p,
                    "diff": d.diff,
                    "ci_low": d.ci_low,
                    "ci_high": d.ci_high,
                }
            )
    return pd.DataFrame(rows)


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def paper_vs_run(
    agg: pd.DataFrame,
    gains: pd.DataFrame,
    comparisons: pd.DataFrame,
    curve: pd.DataFrame,
    retrieval: pd.DataFrame,
    regime_order: list[str],
    metric: str,
) -> pd.DataFrame:
    """The paper's headline figures beside the same quantities from this run (micro-F1 at the
    smallest regime, for the best augmented cell there)."""
    rows: list[dict[str, Any]] = []

    def add(quantity: str, paper: str, run: str, where: str) -> None:
        rows.append({"quantity": quantity, "paper": paper, "this run": run, "where": where})

    m = f"{metric}_mean"
    small = regime_order[0] if regime_order else ""
    real = agg[(agg.arm == "real_only") & (agg.regime == small)]
    best_aug = (
        gains[gains.regime == small].sort_values("mean", ascending=False).head(1)
        if not gains.empty
        else gains
    )
    if len(best_aug):
        b = best_aug.iloc[0]
        fam_real = real[(real.family == b.family) & (real.loss == b.loss)]
        where = f"{small}, {b.family}, {b.arm} {b.generator}/{b.strategy}/{b.variant}"
        real_v = float(fam_real[m].iloc[0]) if len(fam_real) else math.nan
        add("real-only micro-F1", "0.120", _fmt(real_v), f"{small}, {b.family}, loss {b.loss}")
        add("augmented micro-F1", "0.702", _fmt(b["mean"]), where)
        add("duplicate-to-match control micro-F1", "0.678", _fmt(b.control_mean), where)
        add(
            "controlled synthetic gain",
            "+0.024",
            _ci(b.gain_control, b.gain_control_low, b.gain_control_high),
            where,
        )
        add(
            "gain vs best non-augmentation baseline",
            "+0.219 (focal)",
            _ci(b.gain_baseline, b.gain_baseline_low, b.gain_baseline_high)
            + f" ({b.baseline_loss})",
            where,
        )
    else:
        r = real.sort_values(m, ascending=False).head(1)
        if len(r):
            add(
                "real-only micro-F1",
                "0.120",
                _fmt(float(r[m].iloc[0])),
                f"{small}, {r.family.iloc[0]}",
            )
    mmd = comparisons[comparisons.measure == "mmd2"] if not comparisons.empty else comparisons
    if len(mmd):
        c = mmd.iloc[0]
        where = f"{c.regime_1} vs {c.regime_2}, {c.family}, n={c.n1}/{c.n2} corpora"
        add("MMD-gain r, smallest regime", "+0.95", _fmt(c.r1, True), where)
        add("MMD-gain r, largest regime", "-0.73", _fmt(c.r2, True), where)
        add(
            "Fisher z (difference of r)",
            "+6.47, p<0.001",
            f"{_fmt(c.z, True)}, p={c.p:.3g}" if math.isfinite(c.z) else "n/a (n<=3)",
            where,
        )
        add(
            "95% CI on the difference of r",
            "[+0.96, +1.00]",
            f"[{_fmt(c.ci_low, True)}, {_fmt(c.ci_high, True)}]",
            where,
        )
    else:
        add(
            "MMD-gain r by regime, Fisher z",
            "+0.95 vs -0.73, z=+6.47",
            "n/a",
            "needs generation, fidelity and two regimes",
        )
    if not curve.empty:
        opt = curve[curve.optimum].iloc[0]
        add(
            "best real share at fixed budget",
            "20-30%",
            f"{opt.real_fraction:.0%} [{opt.optimum_low:.0%}, {opt.optimum_high:.0%}]",
            f"{opt.regime}, {opt.family}",
        )
    else:
        add("best real share at fixed budget", "20-30%", "n/a", "no fixed_budget arm in the grid")
    if not retrieval.empty and np.isfinite(retrieval["ndcg_change_rel"]).any():
        worst = retrieval.sort_values("f1_change", ascending=False).iloc[0]
        add(
            "nDCG@10 change of the corpus with the largest F1 gain",
            "-26% (filtered)",
            f"{worst.ndcg_change_rel:+.0%} (F1 {worst.f1_change:+.3f})",
            f"{worst.regime}, {worst.family}, {worst.arm} {worst.generator}/{worst.strategy}",
        )
    return pd.DataFrame(rows)
