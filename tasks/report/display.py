"""Display versions of the report tables: formatted strings, "mean [low, high]" intervals."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def _ci(mean: Any, low: Any, high: Any) -> str:
    if mean is None or not math.isfinite(float(mean)):
        return "n/a"
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _corpus(df: pd.DataFrame) -> pd.Series:
    parts = df[["generator", "strategy", "variant"]].astype(str)
    return parts.agg(lambda r: "/".join(x for x in r if x), axis=1).replace("", "-")


def _num(x: Any, fmt: str = "{:.3f}") -> str:
    return fmt.format(x) if isinstance(x, int | float) and math.isfinite(x) else "n/a"


def display_gains(g: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "regime": g.regime,
            "family": g.family,
            "loss": g.loss,
            "arm": g.arm,
            "corpus": _corpus(g),
            "ratio": g.ratio.map(lambda x: _num(x, "{:g}")),
            "mean": g["mean"].map(_num),
            "trials": g.n_trials,
            "vs duplicate_to_match": [
                _ci(*t)
                for t in zip(g.gain_control, g.gain_control_low, g.gain_control_high, strict=True)
            ],
            "vs best baseline": [
                f"{_ci(*t[:3])} ({t[3]})"
                for t in zip(
                    g.gain_baseline,
                    g.gain_baseline_low,
                    g.gain_baseline_high,
                    g.baseline_loss,
                    strict=True,
                )
            ],
            "vs real_only (raw)": [
                _ci(*t)
                for t in zip(
                    g.gain_real_only, g.gain_real_only_low, g.gain_real_only_high, strict=True
                )
            ],
        }
    )


def display_agg(agg: pd.DataFrame, metric: str) -> pd.DataFrame:
    m = metric
    return pd.DataFrame(
        {
            "regime": agg.regime,
            "arm": agg.arm,
            "corpus": _corpus(agg),
            "size": agg.control_size.map(lambda x: _num(x, "{:.0f}")),
            "family": agg.family,
            "loss": agg.loss,
            "precision": agg.precision,
            "attention": agg.attention,
            "ok": agg.n_ok,
            "failed": agg.n_failed,
            "skipped": agg.n_skipped,
            m: [
                f"{_num(a)} [{_num(b)}, {_num(c)}]"
                for a, b, c in zip(
                    agg[f"{m}_mean"], agg[f"{m}_ci_low"], agg[f"{m}_ci_high"], strict=True
                )
            ],
            "sd": agg[f"{m}_std"].map(_num),
        }
    )


def display_pairs(c: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "comparison": c.comparison,
            "regime": c.regime,
            "arm": c.arm,
            "corpus": _corpus(c),
            "ordering": c.ordering,
            "family": c.family,
            "loss": c.loss,
            "mean": c["mean"].map(_num),
            "gain": [
                _ci(*t)
                for t in zip(
                    c.gain_reference, c.gain_reference_low, c.gain_reference_high, strict=True
                )
            ],
            "seed pairs": c.n_reference,
        }
    )


def display_corr(corr: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(["mmd2"])}
    c = corr.sort_values("measure", key=lambda s: s.map(lambda m: order.get(m, 9)), kind="stable")
    return pd.DataFrame(
        {
            "regime": c.regime,
            "family": c.family,
            "measure": c.measure,
            "method": c.method,
            "n corpora": c.n,
            "r": c.r.map(lambda x: _num(x, "{:+.3f}")),
            "CI": [
                f"[{_num(a, '{:+.3f}')}, {_num(b, '{:+.3f}')}]"
                for a, b in zip(c.ci_low, c.ci_high, strict=True)
            ],
            "p": c.p.map(lambda x: _num(x, "{:.3g}")),
            "seed pairs per point": c.trials_per_point,
        }
    )


def display_fisher(d: pd.DataFrame) -> pd.DataFrame:
    f = lambda x: _num(x, "{:+.3f}")  # noqa: E731
    return pd.DataFrame(
        {
            "family": d.family,
            "measure": d.measure,
            "regimes": d.regime_1 + " vs " + d.regime_2,
            "r1 (n1)": [f"{f(a)} ({b})" for a, b in zip(d.r1, d.n1, strict=True)],
            "r2 (n2)": [f"{f(a)} ({b})" for a, b in zip(d.r2, d.n2, strict=True)],
            "z": d.z.map(f),
            "p": d.p.map(lambda x: _num(x, "{:.3g}")),
            "r1 - r2 [CI]": [
                f"{f(a)} [{f(b)}, {f(c)}]"
                for a, b, c in zip(d["diff"], d.ci_low, d.ci_high, strict=True)
            ],
        }
    )


def display_curve(c: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "regime": c.regime,
            "family": c.family,
            "corpus": _corpus(c),
            "ordering": c.ordering,
            "real share": c.real_fraction.map(lambda x: f"{x:.0%}"),
            "trials": c.n_trials,
            "mean [CI]": [
                f"{_num(a)} [{_num(b)}, {_num(d)}]"
                for a, b, d in zip(c["mean"], c.ci_low, c.ci_high, strict=True)
            ],
            "optimum": ["yes" if o else "" for o in c.optimum],
        }
    )


def display_retrieval(r: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "regime": r.regime,
            "family": r.family,
            "arm": r.arm,
            "corpus": _corpus(r),
            "micro-F1 change": [
                _ci(*t) for t in zip(r.f1_change, r.f1_change_low, r.f1_change_high, strict=True)
            ],
            "nDCG@10 change": [
                _ci(*t)
                for t in zip(r.ndcg_change, r.ndcg_change_low, r.ndcg_change_high, strict=True)
            ],
            "nDCG@10 relative": r.ndcg_change_rel.map(lambda x: _num(x, "{:+.0%}")),
            "seed pairs": r.n_f1_change,
        }
    )


def display_numerics(n: pd.DataFrame) -> pd.DataFrame:
    """The guard's verdict per family x precision x attention beside the trials run with it."""
    if n.empty:
        return n
    get = lambda c: n[c] if c in n else pd.Series([None] * len(n), index=n.index)  # noqa: E731
    reason = get("skipped_reason").fillna("").astype(str)
    flagged = get("flagged")
    verdict = [
        f"skipped: {r}" if r else ("FLAGGED" if f is True else ("ok" if f is False else "not run"))
        for r, f in zip(reason, flagged, strict=True)
    ]
    return pd.DataFrame(
        {
            "family": n.family,
            "precision": n.precision,
            "attention": n.attention,
            "max |logit diff| vs fp32 eager": get("max_abs_diff").map(lambda x: _num(x, "{:.3g}")),
            "guard": verdict,
            "trials": get("n_trials").fillna(0).astype(int),
            "flagged trials": get("flagged_trials").fillna(0).astype(int),
            "mean metric": get("mean").map(_num),
        }
    )
