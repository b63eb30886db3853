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


def _p(x: Any) -> str:
    return _num(x, "{:.3g}")


def display_verdict(verdict: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per regime: the verdict cell, its controlled gain and the test behind it."""
    return pd.DataFrame(
        {
            "regime": [v["regime"] for v in verdict],
            "verdict": [
                ("helps" if v["gain"] > 0 else "hurts") if v["significant"] else "not significant"
                for v in verdict
            ],
            "controlled gain [CI]": [_ci(v["gain"], v["ci_low"], v["ci_high"]) for v in verdict],
            "p": [_p(v["p"]) for v in verdict],
            "q": [_p(v["q"]) for v in verdict],
            "cell": [v["cell_text"] for v in verdict],
            "chosen": [
                f"on validation among {v['n_cells_compared']}"
                if v["selected_by"] == "validation"
                else "pre-registered"
                for v in verdict
            ],
            "over": [v["units_text"] for v in verdict],
        }
    )


def display_gains(g: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "regime": g.regime,
            "family": g.family,
            "loss": g.loss,
            "arm": g.arm,
            "corpus": _corpus(g),
            "ratio": g.ratio.map(lambda x: _num(x, "{:g}")),
            "ordering": g.ordering,
            "val": g.val_mean.map(_num),
            "test": g["mean"].map(_num),
            "vs duplicate_to_match": [
                _ci(*t)
                for t in zip(g.gain_control, g.gain_control_low, g.gain_control_high, strict=True)
            ],
            "p": g.gain_control_p.map(_p),
            "q": g.gain_control_q.map(_p),
            "vs best baseline (val)": [
                f"{_ci(*t[:3])} ({t[3]})" if t[3] else "n/a"
                for t in zip(
                    g.gain_baseline,
                    g.gain_baseline_low,
                    g.gain_baseline_high,
                    g.baseline,
                    strict=True,
                )
            ],
            "vs real_only (raw)": [
                _ci(*t)
                for t in zip(
                    g.gain_real_only, g.gain_real_only_low, g.gain_real_only_high, strict=True
                )
            ],
            "over": g.over,
        }
    )


def display_agg(agg: pd.DataFrame, metric: str) -> pd.DataFrame:
    m = metric
    return pd.DataFrame(
        {
            "regime": agg.regime,
            "arm": agg.arm,
            "corpus": _corpus(agg),
            "ratio": agg.ratio.map(lambda x: _num(x, "{:g}")),
            "size": agg.control_size.map(lambda x: _num(x, "{:.0f}")),
            "family": agg.family,
            "loss": agg.loss,
            "precision": agg.precision,
            "attention": agg.attention,
            "ok": agg.n_ok,
            "failed": agg.n_failed,
            "skipped": agg.n_skipped,
            "val": agg["val_micro_f1_mean"].map(_num),
            m: [
                f"{_num(a)} [{_num(b)}, {_num(c)}]"
                for a, b, c in zip(
                    agg[f"{m}_mean"], agg[f"{m}_ci_low"], agg[f"{m}_ci_high"], strict=True
                )
            ],
            "sd over runs": agg[f"{m}_std"].map(_num),
            "over": agg.over,
        }
    )


def display_pairs(c: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "comparison": c.comparison,
            "regime": c.regime,
            "arm": c.arm,
            "corpus": _corpus(c),
            "ratio": c.ratio.map(lambda x: _num(x, "{:g}")),
            "ordering": c.ordering,
            "family": c.family,
            "loss": c.loss,
            "test": c["mean"].map(_num),
            "gain": [
                _ci(*t)
                for t in zip(
                    c.gain_reference, c.gain_reference_low, c.gain_reference_high, strict=True
                )
            ],
            "p": c.gain_reference_p.map(_p),
            "over": c.over,
        }
    )


def display_corr(corr: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(["mmd2"])}
    c = corr.sort_values("measure", key=lambda s: s.map(lambda m: order.get(m, 9)), kind="stable")
    return pd.DataFrame(
        {
            "regime": c.regime,
            "ratio": c.ratio.map(lambda x: _num(x, "{:g}")),
            "family": c.family,
            "loss": c.loss,
            "numerics": c.precision + "/" + c.attention,
            "measure": c.measure,
            "method": c.method,
            "n corpora": c.n,
            "generators": c.generators,
            "r": c.r.map(lambda x: _num(x, "{:+.3f}")),
            "Fisher CI (independent corpora)": [
                f"[{_num(a, '{:+.3f}')}, {_num(b, '{:+.3f}')}]"
                for a, b in zip(c.ci_low, c.ci_high, strict=True)
            ],
            "p": c.p.map(_p),
            "p from": c.p_method,
            "q": c.q.map(_p),
            "runs per point": c.trials_per_point,
        }
    )


def display_fisher(d: pd.DataFrame) -> pd.DataFrame:
    f = lambda x: _num(x, "{:+.3f}")  # noqa: E731
    return pd.DataFrame(
        {
            "family": d.family,
            "ratio": d.ratio.map(lambda x: _num(x, "{:g}")),
            "loss": d.loss,
            "measure": d.measure,
            "regimes": d.regime_1 + " (smallest) vs " + d.regime_2 + " (largest)",
            "r1 (n1)": [f"{f(a)} ({b})" for a, b in zip(d.r1, d.n1, strict=True)],
            "r2 (n2)": [f"{f(a)} ({b})" for a, b in zip(d.r2, d.n2, strict=True)],
            "z": d.z.map(f),
            "p": d.p.map(_p),
            "q": d.q.map(_p),
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
            "val": c.val_mean.map(_num),
            "test mean [CI]": [
                f"{_num(a)} [{_num(b)}, {_num(d)}]"
                for a, b, d in zip(c["mean"], c.ci_low, c.ci_high, strict=True)
            ],
            "optimum (val)": ["yes" if o else "" for o in c.optimum],
            "over": c.over,
        }
    )


def display_fewshot(f: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "regime": f.regime,
            "few-shot baseline": f.fewshot_family + " (real only, " + f.fewshot_loss + ")",
            "chosen on val among": f.n_fewshot_cells,
            "few-shot test": f.fewshot_mean.map(_num),
            "verdict cell test": f.headline_mean.map(_num),
            "gain [CI]": [_ci(*t) for t in zip(f.gain, f.ci_low, f.ci_high, strict=True)],
            "p": f.p.map(_p),
            "over": f.over,
        }
    )


def display_retrieval(r: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "regime": r.regime,
            "family": r.family,
            "loss": r.loss,
            "arm": r.arm,
            "corpus": _corpus(r),
            "ratio": r.ratio.map(lambda x: _num(x, "{:g}")),
            "micro-F1 change": [
                _ci(*t) for t in zip(r.f1_change, r.f1_change_low, r.f1_change_high, strict=True)
            ],
            "nDCG@10 change": [
                _ci(*t)
                for t in zip(r.ndcg_change, r.ndcg_change_low, r.ndcg_change_high, strict=True)
            ],
            "nDCG@10 relative": r.ndcg_change_rel.map(lambda x: _num(x, "{:+.0%}")),
            "paired runs": r.n_f1_change,
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
