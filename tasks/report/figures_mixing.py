"""Mixing figures: the fixed-budget curve and the retrieval proxy against classification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.report.figures import (
    Drawn,
    Figure,
    NoFigure,
    describe,
    error_bars,
    over_text,
    panel_grid,
    pyplot,
    runs_range,
    save,
    varying,
)

# --- fixed budget -----------------------------------------------------------------------------

#: What tells two fixed-budget curves of one regime apart (tables.fixed_budget_curve's keys).
FB_CURVE = [
    "generator", "strategy", "variant", "ordering", "family", "loss", "precision", "attention",
]  # fmt: skip


def plot_fixed_budget(
    curve: pd.DataFrame, metric: str, confidence: float = 0.95
) -> Drawn | NoFigure:
    """Metric vs real share at a fixed total budget, one panel per regime, one line per curve
    (tasks.report.tables.fixed_budget_curve), interval band, validation optimum starred."""
    name = "fixed_budget"
    if curve.empty:
        return NoFigure(name, "no fixed-budget arm ran")
    plt = pyplot()
    keys = FB_CURVE
    shown = varying(curve, keys)
    panels = list(curve.groupby("regime", sort=False))
    fig, axes = panel_grid(plt, len(panels), 5.2, 3.8, cols=2)
    for ax, (regime, g) in zip(axes, panels, strict=True):
        for i, (key, line) in enumerate(g.groupby(keys, sort=False, dropna=False)):
            line = line.sort_values("real_fraction")
            label = describe(dict(zip(keys, key, strict=True)), shown) or "fixed budget"
            ax.plot(line.real_fraction, line["mean"], "o-", color=f"C{i}", label=label)
            ax.fill_between(
                line.real_fraction, line.ci_low, line.ci_high, color=f"C{i}", alpha=0.2, lw=0
            )
            opt = line[line.optimum]
            ax.plot(opt.real_fraction, opt["mean"], "*", ms=14, color=f"C{i}", mec="k")
        ax.plot([], [], "*", ms=10, color="w", mec="k", label="optimum (chosen on validation)")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.set_title(str(regime), fontsize=10)
        ax.set_xlabel("real share of the training budget (rest synthetic)")
        ax.set_ylabel(f"{metric} (test)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fracs = sorted(set(curve.real_fraction.astype(float)))
    caption = (
        f"{metric} on test against the real share of a fixed training budget "
        f"({', '.join(f'{f:.0%}' for f in fracs)}; the rest synthetic), one panel per regime; "
        f"band: {confidence:.0%} interval of the mean "
        f"({', '.join(sorted(set(curve.method.astype(str))))}); star: the share with the best "
        "mean validation metric (chosen on validation among the curve's shares, shown on test). "
        f"{runs_range(curve.n_trials)} trials per point ({over_text(curve)})."
    )
    return Drawn(name, fig, "Fixed-budget mixing curve", caption)


def fixed_budget_figure(
    curve: pd.DataFrame, out: Path, metric: str, confidence: float = 0.95
) -> Figure | None:
    """`plot_fixed_budget` written under out (None without a fixed-budget arm)."""
    drawn = plot_fixed_budget(curve, metric, confidence)
    return save(drawn, out) if isinstance(drawn, Drawn) else None


# --- retrieval proxy --------------------------------------------------------------------------


def plot_retrieval(ret: pd.DataFrame, confidence: float = 0.95) -> Drawn | NoFigure:
    """nDCG@10 change vs micro-F1 change over real_only, one point per augmented cell."""
    name = "retrieval"
    if ret.empty or not np.isfinite(ret.ndcg_change.astype(float)).any():
        return NoFigure(name, "no nDCG@10 change over real_only")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (regime, g) in enumerate(ret.groupby("regime", sort=False)):
        ax.errorbar(
            g.f1_change,
            g.ndcg_change,
            xerr=error_bars(g.f1_change, g.f1_change_low, g.f1_change_high),
            yerr=error_bars(g.ndcg_change, g.ndcg_change_low, g.ndcg_change_high),
            fmt="o",
            color=f"C{i}",
            capsize=2,
            label=regime,
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("micro-F1 change vs real_only")
    ax.set_ylabel("nDCG@10 change vs real_only")
    ax.legend(fontsize=8)
    fig.tight_layout()
    caption = (
        "Retrieval proxy (nDCG@10, relevance = Jaccard overlap of label sets) change against "
        "micro-F1 change, both over real_only of the same draw and seed, one point per augmented "
        f"cell ({len(ret)} cells, {confidence:.0%} paired intervals). "
        f"{runs_range(ret.n_f1_change)} paired runs per point ({over_text(ret)})."
    )
    return Drawn(name, fig, "Retrieval proxy vs classification", caption)


def retrieval_figure(ret: pd.DataFrame, out: Path, confidence: float = 0.95) -> Figure | None:
    """`plot_retrieval` written under out (None without an nDCG change)."""
    drawn = plot_retrieval(ret, confidence)
    return save(drawn, out) if isinstance(drawn, Drawn) else None
