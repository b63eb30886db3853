"""The verdict: per regime, does synthetic text help beyond volume? In plain words and as JSON.

Per regime the headline cell is the augmented cell with the best mean validation metric (or the
one the config pre-registers in `report.headline`); its controlled gain (over its own
duplicate_to_match control: same rows, same steps) is estimated on test with
`tasks.inference.estimate`, and its interval and p-value are adjusted for having been chosen
among the k candidates (Bonferroni; k = 1 when pre-registered). q: Benjamini-Hochberg across
the regimes' verdicts. `significant` means q < 1 - confidence. docs/statistics.md explains why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from config.report import HEADLINE_KEYS
from tasks.inference import Estimate
from tasks.report.tables import Analysis
from tasks.stats import bh_qvalues

METRIC_WORDS = {
    "test_micro_f1": "micro-F1",
    "test_macro_f1": "macro-F1",
    "test_samples_f1": "samples-F1",
    "test_precision": "micro precision",
    "test_recall": "micro recall",
    "test_ndcg10": "nDCG@10",
}


def _matches(row: pd.Series, want: dict[str, Any]) -> bool:
    for k, v in want.items():
        have = row[k]
        if isinstance(have, float) or k in ("ratio", "real_fraction"):
            try:
                if not math.isclose(float(have), float(v)):
                    return False
            except (TypeError, ValueError):
                return False
        elif str(have) != str(v):
            return False
    return True


def choose(
    gains: pd.DataFrame, regime: str, headline: dict[str, Any] | None
) -> tuple[pd.Series | None, int, str]:
    """(headline row, number of candidates, how it was selected) for one regime."""
    cand = gains[(gains.regime == regime) & gains.gain_control.notna()]
    if cand.empty:
        return None, 0, ""
    if headline:
        unknown = sorted(set(headline) - set(HEADLINE_KEYS))
        if unknown:
            raise ValueError(f"report.headline: unknown keys {unknown}; allowed {HEADLINE_KEYS}")
        hit = cand[[_matches(r, headline) for _, r in cand.iterrows()]]
        if len(hit) != 1:
            raise ValueError(
                f"report.headline {headline} matches {len(hit)} augmented cells of regime "
                f"{regime} (it must name exactly one; add keys among {HEADLINE_KEYS})"
            )
        return hit.iloc[0], 1, "pre-registered (report.headline)"
    ranked = cand[cand.val_mean.notna()]
    if ranked.empty:
        return None, 0, ""
    best = ranked.loc[ranked.val_mean.idxmax()]
    return best, len(ranked), "validation"


def _cell_text(row: pd.Series) -> str:
    corpus = "/".join(x for x in (row.generator, row.strategy, row.variant) if x) or "-"
    parts = [str(row.family), str(row.arm), corpus]
    if pd.notna(row.ratio):
        parts.append(f"ratio {row.ratio:g}")
    if pd.notna(row.real_fraction):
        parts.append(f"real share {row.real_fraction:.0%}")
    if row.ordering != "shuffled":
        parts.append(str(row.ordering))
    parts.append(f"loss {row.loss}")
    if row.precision != "fp32" or row.attention not in ("sdpa", "none"):
        parts.append(f"{row.precision}/{row.attention}")
    return ", ".join(parts)


def _sentence(v: dict[str, Any], metric: str, n_regimes: int) -> str:
    words = METRIC_WORDS.get(metric, metric)
    g, lo, hi = v["gain"], v["ci_low"], v["ci_high"]
    conf = f"{v['confidence']:.0%} CI"
    if v["significant"] and g > 0:
        claim = f"synthetic text adds {g:+.3f} {words} beyond volume [{conf} {lo:+.3f}, {hi:+.3f}]"
        verdict = "significant"
    elif v["significant"]:
        claim = (
            f"synthetic text does worse than the same volume of duplicated real patents: "
            f"{g:+.3f} {words} [{conf} {lo:+.3f}, {hi:+.3f}]"
        )
        verdict = "significant"
    else:
        claim = (
            f"no evidence that synthetic text helps beyond volume: {g:+.3f} {words} "
            f"[{conf} {lo:+.3f}, {hi:+.3f}]"
        )
        verdict = "not significant"
    how = (
        f"chosen on validation among {v['n_cells_compared']} augmented cells"
        if v["selected_by"] == "validation"
        else "pre-registered in report.headline"
    )
    across = f"; q={v['q']:.3g} across {n_regimes} regimes" if n_regimes > 1 else ""
    return (
        f"At {v['regime']}, {claim}, {verdict} (p={v['p']:.3g}, {how}{across}; "
        f"over {v['units_text']}). Cell: {v['cell_text']}."
    )


def verdicts(
    a: Analysis,
    gains: pd.DataFrame,
    regime_order: list[str],
    headline: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One verdict per regime that has an augmented cell with a control, smallest regime first."""
    if gains.empty:
        return []
    alpha = 1 - a.opts.confidence
    out: list[dict[str, Any]] = []
    chosen: list[tuple[pd.Series, Estimate, Estimate]] = []
    for regime in regime_order:
        row, k, how = choose(gains, regime, headline)
        if row is None:
            continue
        raw = a.compare(
            a.index(row.trial_ids.split(",")),
            a.index(row.control_ids.split(",")),
            a.pooled.get(str(row.family)),
        )
        chosen.append((row, raw, raw.adjusted(k)))
        v = {
            "regime": regime,
            "metric": a.metric,
            "selected_by": how,
            "select_metric": a.select,
            "n_cells_compared": k,
            "cell": {key: _plain(row[key]) for key in HEADLINE_KEYS},
            "cell_text": _cell_text(row),
            "trial_ids": row.trial_ids.split(","),
            "control_trial_ids": row.control_ids.split(","),
            "augmented_mean": float(row["mean"]),
            "control_mean": float(row.control_mean),
            "augmented_val_mean": float(row.val_mean),
        }
        out.append(v)
    q = bh_qvalues([adj.p for _, _, adj in chosen])
    for v, (row, raw, adj), qv in zip(out, chosen, q, strict=True):
        v.update(
            gain=adj.mean,
            ci_low=adj.ci_low,
            ci_high=adj.ci_high,
            confidence=a.opts.confidence,
            p=adj.p,
            p_unadjusted=raw.p,
            q=float(qv),
            significant=bool(math.isfinite(qv) and qv < alpha),
            direction="gain" if adj.mean > 0 else "loss",
            interval_method=adj.method
            + (
                f"; interval at level 1 - {alpha:g}/{v['n_cells_compared']} and p x "
                f"{v['n_cells_compared']} for the choice among {v['n_cells_compared']} cells"
                if v["n_cells_compared"] > 1
                else ""
            ),
            units={"draws": adj.n_draws, "seeds": adj.n_seeds, "documents": adj.n_docs},
            units_text=adj.units,
            conditional_on_draw=adj.runs_unit != "draws",
            raw_gain_over_real_only=float(row.gain_real_only),
            baseline=row.baseline,
            gain_over_baseline=float(row.gain_baseline),
        )
        v["sentence"] = _sentence(v, a.metric, len(out))
    return out


def attach_fewshot(verdict: list[dict[str, Any]], table: pd.DataFrame) -> None:
    """Add each regime's few-shot comparison (see `fewshot_comparison`) to its verdict."""
    if table.empty:
        return
    words = METRIC_WORDS.get(verdict[0]["metric"], verdict[0]["metric"]) if verdict else ""
    for v in verdict:
        f = table[table.regime == v["regime"]]
        if f.empty:
            continue
        row = {k: _plain(x) for k, x in f.iloc[0].items()}
        v["fewshot"] = row
        v["sentence"] += (
            f" Against the few-shot baseline on the same real patents ({row['fewshot_family']}, "
            f"real only, best on validation of {row['n_fewshot_cells']}): {row['gain']:+.3f} "
            f"{words} [{v['confidence']:.0%} CI {row['ci_low']:+.3f}, {row['ci_high']:+.3f}] "
            "(not volume-controlled)."
        )


def fewshot_comparison(a: Analysis, gains: pd.DataFrame, verdict: list[dict]) -> pd.DataFrame:
    """Per regime: the headline cell against the few-shot baseline (the SetFit real_only cell
    best on validation) trained on the same real patents. Not volume-controlled: it answers
    whether synthetic text beat what a few-shot method gets from the real rows alone."""
    ok = a.ok
    few = ok[(ok.family_kind == "setfit") & (ok.arm == "real_only")]
    rows = []
    for v in verdict:
        cand = few[few.regime == v["regime"]]
        if cand.empty:
            continue
        cells = [(k, a.index(g.trial_id)) for k, g in cand.groupby(["family", "loss"], sort=False)]
        (fam, loss), best = max(cells, key=lambda kv: a.val_mean(kv[1]))
        treated = a.index(v["trial_ids"])
        lookup = {(a.draw[i], a.seed[i]): i for i in best}
        ref = np.array([lookup.get((a.draw[i], a.seed[i]), -1) for i in treated], dtype=int)
        e = a.compare(treated, ref)
        rows.append(
            {
                "regime": v["regime"],
                "fewshot_family": fam,
                "fewshot_loss": loss,
                "n_fewshot_cells": len(cells),
                "fewshot_mean": a.mean(best),
                "headline_mean": v["augmented_mean"],
                "gain": e.mean,
                "ci_low": e.ci_low,
                "ci_high": e.ci_high,
                "p": e.p,
                "over": e.units,
            }
        )
    return pd.DataFrame(rows)


def _plain(x: Any) -> Any:
    """A JSON-friendly scalar (numpy numbers to Python, NaN to None)."""
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
