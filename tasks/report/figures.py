"""Report figures (matplotlib, Agg backend): each returns a `Figure` record with its caption."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Figure:
    """A written PNG and the caption that says what it shows and how many trials per point."""

    name: str
    path: Path
    title: str
    caption: str


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _err(mean: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Asymmetric error bar lengths; no bar where the interval is undefined (one seed)."""
    lo = (mean - low).to_numpy(dtype=float)
    hi = (high - mean).to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([lo, hi]), nan=0.0).clip(min=0)


def _trials(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _label(row: pd.Series) -> str:
    corpus = "/".join(x for x in (row.generator, row.strategy, row.variant) if x) or "ensemble"
    extra = []
    if isinstance(row.ratio, float) and math.isfinite(row.ratio):
        extra.append(f"r={row.ratio:g}")
    if isinstance(row.real_fraction, float) and math.isfinite(row.real_fraction):
        extra.append(f"real={row.real_fraction:.0%}")
    if row.ordering != "shuffled":
        extra.append(row.ordering)
    arm = "" if row.arm == "real_plus_synthetic" else f"{row.arm}: "
    return f"{arm}{corpus}" + (f" ({', '.join(extra)})" if extra else "")


def gains_figure(
    gains: pd.DataFrame, out: Path, metric: str, confidence: float = 0.95
) -> Figure | None:
    """Controlled gain (vs duplicate_to_match) and raw gain (vs real_only) per corpus, with
    paired intervals, one panel per regime x family."""
    if gains.empty:
        return None
    plt = _plt()
    panels = list(gains.groupby(["regime", "family"], sort=False))
    height = sum(1.4 + 0.5 * len(g) for _, g in panels) + 0.6
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), squeeze=False)
    for ax, ((regime, family), g) in zip(axes[:, 0], panels, strict=True):
        y = np.arange(len(g))
        ax.errorbar(
            g.gain_control,
            y - 0.12,
            xerr=_err(g.gain_control, g.gain_control_low, g.gain_control_high),
            fmt="o",
            color="C0",
            capsize=3,
            label="vs duplicate_to_match (controlled)",
        )
        ax.errorbar(
            g.gain_real_only,
            y + 0.12,
            xerr=_err(g.gain_real_only, g.gain_real_only_low, g.gain_real_only_high),
            fmt="s",
            color="C1",
            capsize=3,
            label="vs real_only (raw)",
        )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, [_label(r) for _, r in g.iterrows()], fontsize=8)
        ax.set_title(f"{regime}, {family}", fontsize=10)
        ax.set_xlabel(f"gain in {metric}")
    for ax in axes[:, 0]:
        ax.set_ylim(-0.6, ax.get_ylim()[1] + 0.3)
    # Below the panels: inside one it would hide points.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    path = out / "gains.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = (
        f"Gain in {metric} of each augmented arm over its own duplicate_to_match volume control "
        f"(circles, the controlled synthetic gain) and over real_only with the same loss "
        f"(squares, raw gain: volume plus content), with {confidence:.0%} paired intervals "
        "(each row's method is in the controlled_gains table). "
        f"{_trials(gains.n_gain_control)} paired runs per point ({gains.over.iloc[0]})."
    )
    return Figure("gains", path, "Synthetic gain: controlled vs raw", caption)


def mmd_figure(
    joined: pd.DataFrame, corr: pd.DataFrame, out: Path, metric: str, confidence: float = 0.95
) -> Figure | None:
    """MMD^2 vs controlled gain per regime, with Pearson r and the number of corpora."""
    if joined.empty or "fid_mmd2" not in joined:
        return None
    plt = _plt()
    panels = list(joined.groupby(["regime", "family"], sort=False))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    pearson = corr[(corr.measure == "mmd2") & (corr.method == "pearson")] if len(corr) else corr
    for ax, ((regime, family), g) in zip(axes.ravel(), panels, strict=False):
        ax.errorbar(
            g.fid_mmd2,
            g.gain_control,
            yerr=_err(g.gain_control, g.gain_control_low, g.gain_control_high),
            fmt="o",
            capsize=3,
        )
        ax.axhline(0, color="grey", lw=0.8)
        c = pearson[(pearson.regime == regime) & (pearson.family == family)]
        r = c.r.iloc[0] if len(c) else math.nan
        n = int(c.n.iloc[0]) if len(c) else len(g)
        shown = f"{r:+.2f}" if math.isfinite(r) else "n/a (n<3)"
        ax.set_title(f"{regime}, {family}: r={shown}, n={n}", fontsize=10)
        ax.set_xlabel("MMD$^2$ (synthetic vs real)")
        ax.set_ylabel(f"controlled gain ({metric})")
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    path = out / "mmd_vs_gain.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = (
        "MMD^2 between each synthetic corpus and the real regime (x) against that corpus's "
        f"controlled gain over duplicate_to_match (y, {confidence:.0%} paired interval), "
        f"per regime; the title gives Pearson r over n corpora. "
        f"{_trials(joined.n_gain_control)} paired runs per point ({joined.over.iloc[0]})."
    )
    return Figure("mmd_vs_gain", path, "Fidelity (MMD) vs controlled gain", caption)


def fixed_budget_figure(
    curve: pd.DataFrame, out: Path, metric: str, confidence: float = 0.95
) -> Figure | None:
    """Metric vs real fraction at a fixed total budget, CI band, optimum marked."""
    if curve.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    keys = ["regime", "generator", "strategy", "variant", "ordering", "family", "loss"]
    for i, (key, g) in enumerate(curve.groupby(keys, sort=False)):
        g = g.sort_values("real_fraction")
        label = f"{key[0]} {key[5]} {key[1]}/{key[2]}"
        ax.plot(g.real_fraction, g["mean"], "o-", color=f"C{i}", label=label)
        ax.fill_between(g.real_fraction, g.ci_low, g.ci_high, color=f"C{i}", alpha=0.2)
        opt = g[g.optimum].iloc[0]
        ax.plot(opt.real_fraction, opt["mean"], "*", ms=14, color=f"C{i}")
    ax.set_xlabel("real share of the training budget")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "fixed_budget.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = (
        f"{metric} against the real share of a fixed training budget (the rest synthetic); band: "
        f"{confidence:.0%} interval of the mean ({curve.method.iloc[0]}); star: the share with "
        f"the best validation metric (chosen on validation, shown on test). "
        f"{_trials(curve.n_trials)} trials per point."
    )
    return Figure("fixed_budget", path, "Fixed-budget mixing curve", caption)


def retrieval_figure(ret: pd.DataFrame, out: Path, confidence: float = 0.95) -> Figure | None:
    """nDCG@10 change vs micro-F1 change over real_only, one point per augmented cell."""
    if ret.empty or not np.isfinite(ret.ndcg_change).any():
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (regime, g) in enumerate(ret.groupby("regime", sort=False)):
        ax.errorbar(
            g.f1_change,
            g.ndcg_change,
            xerr=_err(g.f1_change, g.f1_change_low, g.f1_change_high),
            yerr=_err(g.ndcg_change, g.ndcg_change_low, g.ndcg_change_high),
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
    path = out / "retrieval.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = (
        "Retrieval proxy (nDCG@10, relevance = Jaccard overlap of label sets) change against "
        "micro-F1 change, both over real_only of the same draw and seed, one point per augmented "
        f"cell ({confidence:.0%} paired intervals). {_trials(ret.n_f1_change)} paired runs per "
        "point."
    )
    return Figure("retrieval", path, "Retrieval proxy vs classification", caption)
