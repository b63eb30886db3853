"""Report figures (matplotlib, Agg backend): the records and helpers every figure shares.

Every figure is drawn by a `plot_*` function that returns a `Drawn` (the open matplotlib figure
and its caption; tests count its panels and lines) and written by `save` as `<name>.png`
(embedded in report.html) and `<name>.svg` (linked from report.md); the `*_figure` functions do
both. A figure with nothing meaningful to show is a `NoFigure` with the reason the report prints
in its place. The figures: `figures_gains` (gain per corpus, gain vs ratio, MMD vs gain),
`figures_mixing` (fixed budget, retrieval proxy), `figures_labels` (per-label F1 of the served
model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Figure:
    """A written figure: PNG (`path`, embedded in report.html), SVG (linked from report.md) and
    the caption that says what it was computed over."""

    name: str
    path: Path
    title: str
    caption: str
    svg: Path


@dataclass(frozen=True)
class NoFigure:
    """A figure left out, and why (the report says so in its place)."""

    name: str
    reason: str


@dataclass
class Drawn:
    """A drawn, not yet written figure (`fig`: a matplotlib Figure, open until `save`)."""

    name: str
    fig: Any
    title: str
    caption: str


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here: `import tasks.report` stays fast)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def save(drawn: Drawn, out: Path) -> Figure:
    """Write `<name>.png` and `<name>.svg` under out and close the matplotlib figure."""
    plt = pyplot()
    png, svg = out / f"{drawn.name}.png", out / f"{drawn.name}.svg"
    try:
        drawn.fig.savefig(png, dpi=110, metadata={"Software": None})
        # Text kept as text (searchable, a tenth of the size of glyph paths); a fixed hash salt
        # and no date make a re-run's SVG byte-identical.
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": drawn.name}):
            drawn.fig.savefig(svg, metadata={"Date": None, "Creator": None})
    finally:
        plt.close(drawn.fig)
    return Figure(drawn.name, png, drawn.title, drawn.caption, svg)


def save_or_skip(drawn: Drawn | NoFigure, out: Path) -> Figure | NoFigure:
    return save(drawn, out) if isinstance(drawn, Drawn) else drawn


def error_bars(mean: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Asymmetric error bar lengths; no bar where the interval is undefined (one seed)."""
    lo = (mean - low).to_numpy(dtype=float)
    hi = (high - mean).to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([lo, hi]), nan=0.0).clip(min=0)


def runs_range(n: pd.Series) -> str:
    n = pd.to_numeric(n, errors="coerce").dropna()
    if n.empty:
        return "0"
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def over_text(df: pd.DataFrame, col: str = "over") -> str:
    """What the points' estimates vary over ("1 draw x 3 seeds, 40 test documents")."""
    if col not in df or df[col].dropna().empty:
        return "runs"
    return "; ".join(dict.fromkeys(str(v) for v in df[col].dropna()))


def counts_text(df: pd.DataFrame) -> str:
    """How many cells and paired runs a gain figure's points rest on; cells without a
    duplicate_to_match control (fixed-budget arms) show the raw gain only and are named apart."""
    has = pd.to_numeric(df.n_gain_control, errors="coerce").fillna(0) > 0
    text = (
        f"{int(has.sum())} cells with a control; {runs_range(df.n_gain_control[has])} paired runs "
        f"per point ({over_text(df[has])})"
    )
    if (~has).any():
        arms = ", ".join(dict.fromkeys(df.arm[~has].astype(str)))
        text += f"; {int((~has).sum())} cells without a control ({arms}): raw gain only"
    return text + "."


def finite(v: Any) -> bool:
    return isinstance(v, int | float | np.floating) and math.isfinite(float(v))


def group_key(values: Any) -> tuple:
    """A group key with NaN as None, so keys from two groupbys compare equal."""
    vals = values if isinstance(values, tuple) else (values,)
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in vals)


def varying(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """The columns of `cols` that take more than one value in df (what a label must name)."""
    return [c for c in cols if c in df and df[c].astype(str).nunique() > 1]


def describe(key: dict[str, Any], cols: list[str]) -> str:
    parts = []
    for c in cols:
        v = key.get(c)
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            continue
        parts.append(f"ratio {v:g}" if c == "ratio" else str(v))
    return ", ".join(parts)


def cell_label(row: pd.Series) -> str:
    corpus = "/".join(x for x in (row.generator, row.strategy, row.variant) if x) or "ensemble"
    extra = []
    if finite(row.ratio):
        extra.append(f"r={row.ratio:g}")
    if finite(row.real_fraction):
        extra.append(f"real={row.real_fraction:.0%}")
    if row.ordering != "shuffled":
        extra.append(row.ordering)
    arm = "" if row.arm == "real_plus_synthetic" else f"{row.arm}: "
    return f"{arm}{corpus}" + (f" ({', '.join(extra)})" if extra else "")


def panel_grid(plt: Any, n: int, width: float, height: float, cols: int = 3):
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]
