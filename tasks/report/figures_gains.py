"""Gain figures: controlled and raw gain per corpus, gain vs the synthetic:real ratio, and
fidelity (MMD) vs controlled gain with its fitted line and correlation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.report.figures import (
    Drawn,
    Figure,
    NoFigure,
    cell_label,
    counts_text,
    describe,
    error_bars,
    finite,
    group_key,
    over_text,
    panel_grid,
    pyplot,
    runs_range,
    save,
    save_or_skip,
    varying,
)
from tasks.report.findings import GROUP

# --- controlled gain per corpus ---------------------------------------------------------------


def plot_gains(gains: pd.DataFrame, metric: str, confidence: float = 0.95) -> Drawn | NoFigure:
    """Controlled gain (vs duplicate_to_match) and raw gain (vs real_only) per augmented cell,
    with paired intervals, one panel per regime x family."""
    if gains.empty:
        return NoFigure("gains", "no augmented cell with a control")
    plt = pyplot()
    panels = list(gains.groupby(["regime", "family"], sort=False))
    height = sum(1.4 + 0.5 * len(g) for _, g in panels) + 0.6
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), squeeze=False)
    for ax, ((regime, family), g) in zip(axes[:, 0], panels, strict=True):
        y = np.arange(len(g))
        ax.errorbar(
            g.gain_control,
            y - 0.12,
            xerr=error_bars(g.gain_control, g.gain_control_low, g.gain_control_high),
            fmt="o",
            color="C0",
            capsize=3,
            label="vs duplicate_to_match (controlled)",
        )
        ax.errorbar(
            g.gain_real_only,
            y + 0.12,
            xerr=error_bars(g.gain_real_only, g.gain_real_only_low, g.gain_real_only_high),
            fmt="s",
            color="C1",
            capsize=3,
            label="vs real_only (raw)",
        )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, [cell_label(r) for _, r in g.iterrows()], fontsize=8)
        ax.set_title(f"{regime}, {family}", fontsize=10)
        ax.set_xlabel(f"gain in {metric}")
    for ax in axes[:, 0]:
        ax.set_ylim(-0.6, ax.get_ylim()[1] + 0.3)
    # Below the panels: inside one it would hide points.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    caption = (
        f"Gain in {metric} of each augmented arm over its own duplicate_to_match volume control "
        f"(circles, the controlled synthetic gain) and over real_only with the same loss "
        f"(squares, raw gain: volume plus content), with {confidence:.0%} paired intervals "
        f"(each row's method is in the controlled_gains table). {counts_text(gains)}"
    )
    return Drawn("gains", fig, "Synthetic gain: controlled vs raw", caption)


def gains_figure(
    gains: pd.DataFrame, out: Path, metric: str, confidence: float = 0.95
) -> Figure | None:
    """`plot_gains` written under out (None without augmented cells)."""
    drawn = plot_gains(gains, metric, confidence)
    return save(drawn, out) if isinstance(drawn, Drawn) else None


# --- gain vs synthetic:real ratio -------------------------------------------------------------

#: What tells two curves of one panel apart (the corpus and how it was mixed and trained).
CURVE = ["arm", "generator", "strategy", "variant", "ordering", "loss", "precision", "attention"]


def plot_ratio_curve(
    gains: pd.DataFrame, metric: str, confidence: float = 0.95
) -> Drawn | NoFigure:
    """Controlled and raw gain against the synthetic:real ratio, one panel per regime x
    family, one colour per corpus (and mixing/loss/numerics where those vary)."""
    name = "ratio_curve"
    if gains.empty or "ratio" not in gains:
        return NoFigure(name, "no augmented cell with a control")
    df = gains[np.isfinite(pd.to_numeric(gains.ratio, errors="coerce"))]
    if df.empty:
        return NoFigure(name, "no augmented cell with a synthetic:real ratio")
    ratios = sorted(set(df.ratio.astype(float)))
    if len(ratios) < 2:
        return NoFigure(
            name,
            f"only one synthetic:real ratio ran ({ratios[0]:g}), so there is no curve; the "
            "per-corpus gains figure shows each corpus at it",
        )
    plt = pyplot()
    curve_cols = varying(df, CURVE[1:]) + varying(df, ["arm"])
    panels = list(df.groupby(["regime", "family"], sort=False))
    fig, axes = panel_grid(plt, len(panels), 4.6, 3.6, cols=2)
    colours: dict[tuple, tuple[str, str]] = {}  # curve -> colour and label, across panels
    log = min(ratios) > 0 and max(ratios) / min(ratios) >= 4
    for ax, ((regime, family), g) in zip(axes, panels, strict=True):
        for key, line in g.groupby(CURVE, sort=False, dropna=False):
            line = line.sort_values("ratio")
            label = describe(dict(zip(CURVE, key, strict=True)), curve_cols) or "synthetic"
            colour, _ = colours.setdefault(group_key(key), (f"C{len(colours) % 10}", label))
            ax.errorbar(
                line.ratio,
                line.gain_control,
                yerr=error_bars(line.gain_control, line.gain_control_low, line.gain_control_high),
                fmt="o-",
                color=colour,
                capsize=3,
                label=label,
            )
            ax.errorbar(
                line.ratio,
                line.gain_real_only,
                yerr=error_bars(
                    line.gain_real_only, line.gain_real_only_low, line.gain_real_only_high
                ),
                fmt="s--",
                color=colour,
                alpha=0.6,
                capsize=2,
            )
        ax.axhline(0, color="grey", lw=0.8)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.minorticks_off()
        ax.set_title(f"{regime}, {family}", fontsize=10)
        ax.set_xlabel("synthetic:real ratio (synthetic rows per real row)")
        ax.set_ylabel(f"gain in {metric}")
    handles = [
        plt.Line2D([], [], color=c, marker="o", label=label) for c, label in colours.values()
    ]
    handles += [
        plt.Line2D(
            [], [], color="k", ls="-", marker="o", label="vs duplicate_to_match (controlled)"
        ),
        plt.Line2D([], [], color="k", ls="--", marker="s", alpha=0.6, label="vs real_only (raw)"),
    ]
    rows = math.ceil(len(handles) / 3)
    bottom = (0.15 + 0.2 * rows) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8)
    caption = (
        f"Gain in {metric} against the synthetic:real ratio ({', '.join(f'{r:g}' for r in ratios)}"
        "), one panel per regime x family and one colour per corpus: solid, over the "
        "same-size duplicate_to_match control (the volume-controlled gain); dashed, over "
        f"real_only with the same loss (raw: volume plus content); bars: {confidence:.0%} paired "
        f"intervals ({', '.join(sorted(set(df.method.astype(str))))}). {counts_text(df)}"
    )
    return Drawn(name, fig, "Gain vs synthetic:real ratio", caption)


def ratio_curve_figure(
    gains: pd.DataFrame, out: Path, metric: str, confidence: float = 0.95
) -> Figure | NoFigure:
    """`plot_ratio_curve` written under out, or why it was left out."""
    return save_or_skip(plot_ratio_curve(gains, metric, confidence), out)


# --- fidelity vs gain -------------------------------------------------------------------------


def _r_text(c: pd.Series | None) -> str:
    if c is None or not finite(c.r):
        return "Pearson r n/a (n<3)"
    ci = f" [{c.ci_low:+.2f}, {c.ci_high:+.2f}]" if finite(c.ci_low) else ""
    p = f", p={c.p:.2g}" if finite(c.p) else ""
    return f"Pearson r={c.r:+.2f}{ci}, n={int(c.n)}{p}"


def plot_mmd(
    joined: pd.DataFrame, corr: pd.DataFrame, metric: str, confidence: float = 0.95
) -> Drawn | NoFigure:
    """MMD^2 vs controlled gain, one panel per correlation group (regime, and ratio, family,
    loss or numerics where they vary), the least-squares line and Pearson r with its interval."""
    name = "mmd_vs_gain"
    if joined.empty or "fid_mmd2" not in joined:
        return NoFigure(name, "no corpus with both an MMD and a controlled gain")
    df = joined[np.isfinite(joined.fid_mmd2.astype(float)) & joined.gain_control.notna()]
    if df.empty:
        return NoFigure(name, "no corpus with both an MMD and a controlled gain")
    plt = pyplot()
    pearson = corr[(corr.measure == "mmd2") & (corr.method == "pearson")] if len(corr) else corr
    by_key = (
        {group_key(k): r for k, r in pearson.set_index(GROUP).iterrows()} if len(pearson) else {}
    )
    shown = ["regime"] + varying(df, GROUP[1:])
    panels = list(df.groupby(GROUP, sort=False, dropna=False))
    fig, axes = panel_grid(plt, len(panels), 4.2, 3.6)
    for ax, (key, g) in zip(axes, panels, strict=True):
        c = by_key.get(group_key(key))
        x, y = g.fid_mmd2.to_numpy(float), g.gain_control.to_numpy(float)
        ax.errorbar(
            x,
            y,
            yerr=error_bars(g.gain_control, g.gain_control_low, g.gain_control_high),
            fmt="o",
            capsize=3,
            label=f"corpora (n={len(g)})",
        )
        if len(g) >= 3 and np.ptp(x) > 0:  # a line through two points says nothing
            slope, intercept = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 20)
            ax.plot(xs, intercept + slope * xs, "-", color="C3", label=_r_text(c))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(describe(dict(zip(GROUP, key, strict=True)), shown), fontsize=10)
        ax.set_xlabel("MMD$^2$ (synthetic vs real)")
        ax.set_ylabel(f"controlled gain ({metric})")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    caption = (
        "MMD^2 between each synthetic corpus and the real rows of its regime (x) against that "
        f"corpus's controlled gain over duplicate_to_match (y, {confidence:.0%} paired interval), "
        f"one panel per {', '.join(shown)}; line: least-squares fit; legend: Pearson r across the "
        "panel's corpora, its Fisher-z interval (which assumes independent corpora) and p (the "
        "correlations table's p: permuted within generator where one has several corpora). "
        f"{len(df)} corpus points; {runs_range(df.n_gain_control)} paired runs per point "
        f"({over_text(df)})."
    )
    return Drawn(name, fig, "Fidelity (MMD) vs controlled gain", caption)


def mmd_figure(
    joined: pd.DataFrame, corr: pd.DataFrame, out: Path, metric: str, confidence: float = 0.95
) -> Figure | None:
    """`plot_mmd` written under out (None without MMD-gain points)."""
    drawn = plot_mmd(joined, corr, metric, confidence)
    return save(drawn, out) if isinstance(drawn, Drawn) else None
