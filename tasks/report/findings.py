"""Fidelity vs controlled gain (correlations with clustered p-values, Fisher z between the
smallest and the largest regime) and paper vs this run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tasks.report.tables import CORPUS
from tasks.stats import bh_qvalues, cluster_permutation_pvalue, compare_correlations, correlation

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
    # One point per corpus recipe: with several regime draws its measures are averaged over the
    # draws, as its gain is.
    fid = fid.groupby(CORPUS, sort=False, dropna=False)[measures].mean().reset_index()
    # The fidelity summary's `precision` (PRDC) would clash with the numerics precision.
    fid = fid.rename(columns={m: f"fid_{m}" for m in measures})
    return plain.merge(fid, on=CORPUS, how="inner")


def fidelity_correlations(
    joined: pd.DataFrame, confidence: float = 0.95, n_permutations: int = 9999, seed: int = 0
) -> pd.DataFrame:
    """Per group and measure: Pearson and Spearman r between fidelity and controlled gain.

    p: permutation p-value that permutes gains only among corpora of the same generator
    (`tasks.stats.cluster_permutation_pvalue`); when every generator has a single corpus the
    points share no cluster and the parametric p is used. q: Benjamini-Hochberg over every row.
    The Fisher-z interval of r assumes independent corpora.
    """
    if joined.empty:
        return pd.DataFrame()
    measures = [c[4:] for c in joined.columns if c.startswith("fid_")]
    rows = []
    for key, g in joined.groupby(GROUP, dropna=False, sort=False):
        clusters = g["generator"].astype(str).to_numpy()
        for m in measures:
            x, y = g[f"fid_{m}"].to_numpy(float), g["gain_control"].to_numpy(float)
            for method in ("pearson", "spearman"):
                c = correlation(x, y, method, confidence)
                p_perm, arrangements = cluster_permutation_pvalue(
                    x, y, clusters, method, n_permutations, seed
                )
                clustered = math.isfinite(p_perm)
                rows.append(
                    {
                        **dict(zip(GROUP, key, strict=True)),
                        "measure": m,
                        "method": method,
                        "n": c.n,
                        "generators": int(len(set(clusters))),
                        "r": c.r,
                        "ci_low": c.ci_low,
                        "ci_high": c.ci_high,
                        "p_parametric": c.p,
                        "p": p_perm if clustered else c.p,
                        "p_method": (
                            f"permutation within generator ({arrangements:,} arrangements)"
                            if clustered
                            else "parametric (one corpus per generator)"
                        ),
                        "trials_per_point": int(g["n_gain_control"].min()),
                    }
                )
    out = pd.DataFrame(rows)
    out["q"] = bh_qvalues(out["p"])
    return out


def regime_comparisons(
    corr: pd.DataFrame, regime_order: list[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Fisher's z for the difference of Pearson r between the smallest and the largest regime
    (by size) of each family x ratio x loss x numerics x measure; q across the rows.

    The test treats the two correlations as independent: they are computed over different
    corpora (each regime generates its own), though corpora of one generator share its style.
    """
    if corr.empty:
        return pd.DataFrame()
    pearson = corr[(corr.method == "pearson") & corr.r.notna()]
    rank = {r: i for i, r in enumerate(regime_order)}
    rest = [k for k in GROUP if k != "regime"] + ["measure"]
    rows = []
    for key, g in pearson.groupby(rest, dropna=False, sort=False):
        ordered = sorted(g.itertuples(index=False), key=lambda t: rank.get(t.regime, len(rank)))
        if len(ordered) < 2:
            continue
        a, b = ordered[0], ordered[-1]
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
    out = pd.DataFrame(rows)
    if len(out):
        out["q"] = bh_qvalues(out["p"])
    return out


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(mean: float, low: float, high: float) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def paper_vs_run(
    verdict: list[dict[str, Any]],
    gains: pd.DataFrame,
    comparisons: pd.DataFrame,
    curve: pd.DataFrame,
    retrieval: pd.DataFrame,
    regime_order: list[str],
    agg: pd.DataFrame,
    metric: str,
) -> pd.DataFrame:
    """The paper's headline figures beside the same quantities from this run, at the smallest
    regime, for its verdict cell (chosen on validation, never on test)."""
    rows: list[dict[str, Any]] = []

    def add(quantity: str, paper: str, run: str, where: str) -> None:
        rows.append({"quantity": quantity, "paper": paper, "this run": run, "where": where})

    small = regime_order[0] if regime_order else ""
    v = next((x for x in verdict if x["regime"] == small), None)
    if v is not None:
        c = v["cell"]
        g = gains[gains.trial_ids == ",".join(v["trial_ids"])].iloc[0]
        how = (
            f"chosen on validation among {v['n_cells_compared']} augmented cells"
            if v["selected_by"] == "validation"
            else "pre-registered"
        )
        where = f"{small}, {v['cell_text']} ({how})"
        real_where = f"{small}, {c['family']}, loss {c['loss']}"
        add("real-only micro-F1", "0.120", _fmt(g["mean"] - g.gain_real_only), real_where)
        add("augmented micro-F1", "0.702", _fmt(v["augmented_mean"]), where)
        add("duplicate-to-match control micro-F1", "0.678", _fmt(v["control_mean"]), where)
        add(
            "controlled synthetic gain",
            "+0.024",
            _ci(v["gain"], v["ci_low"], v["ci_high"]) + f", p={v['p']:.3g}",
            f"{where}; interval adjusted for the choice; over {v['units_text']}",
        )
        volume = (
            "volume-controlled" if g.baseline.startswith("duplicate") else "not volume-controlled"
        )
        add(
            "gain vs best non-augmentation baseline",
            "+0.219 (focal)",
            _ci(g.gain_baseline, g.gain_baseline_low, g.gain_baseline_high) + f" ({g.baseline})",
            f"{where}; baseline chosen on validation among {g.baseline_candidates}; {volume}",
        )
    else:
        real = agg[(agg.arm == "real_only") & (agg.regime == small)]
        m = f"{metric}_mean"
        if len(real):
            # Which real-only cell is shown is chosen on validation too.
            r = real.loc[real["val_micro_f1_mean"].fillna(-np.inf).idxmax()]
            where = f"{small}, {r.family} (best on validation)"
            add("real-only micro-F1", "0.120", _fmt(float(r[m])), where)
    mmd = comparisons[comparisons.measure == "mmd2"] if not comparisons.empty else comparisons
    if len(mmd) and v is not None:
        same = mmd[(mmd.family == v["cell"]["family"]) & (mmd.loss == v["cell"]["loss"])]
        mmd = same if len(same) else mmd
    if len(mmd):
        c = mmd.iloc[0]
        where = (
            f"{c.regime_1} (smallest) vs {c.regime_2} (largest), {c.family}, ratio {c.ratio:g}, "
            f"n={c.n1}/{c.n2} corpora"
        )
        add(f"MMD-gain r, smallest regime ({c.regime_1})", "+0.95", _fmt(c.r1, True), where)
        add(f"MMD-gain r, largest regime ({c.regime_2})", "-0.73", _fmt(c.r2, True), where)
        add(
            "Fisher z (difference of r)",
            "+6.47, p<0.001",
            f"{_fmt(c.z, True)}, p={c.p:.3g}" if math.isfinite(c.z) else "n/a (n<=3)",
            where + "; assumes the two regimes' corpora independent",
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
            "needs generation, fidelity, two regimes and at least 4 corpora per regime",
        )
    if not curve.empty:
        opt = curve[curve.optimum].iloc[0]
        add(
            "best real share at fixed budget",
            "20-30%",
            f"{opt.real_fraction:.0%} (test {opt['mean']:.3f})",
            f"{opt.regime}, {opt.family}; chosen on validation among {opt.n_fractions} shares",
        )
    else:
        add("best real share at fixed budget", "20-30%", "n/a", "no fixed_budget arm in the grid")
    if v is not None and not retrieval.empty:
        hit = retrieval
        for k in ("regime", "arm", "generator", "strategy", "variant", "family", "loss"):
            want = small if k == "regime" else v["cell"][k]
            hit = hit[hit[k].astype(str) == str(want)]
        if len(hit) and math.isfinite(hit.iloc[0].ndcg_change_rel):
            h = hit.iloc[0]
            add(
                "nDCG@10 change of the verdict cell",
                "-26% (filtered)",
                f"{h.ndcg_change_rel:+.0%} (F1 {h.f1_change:+.3f})",
                f"{small}, {v['cell_text']}",
            )
    return pd.DataFrame(rows)
