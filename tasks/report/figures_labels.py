"""Per-label F1 of the served model on the test split, labels sorted by F1 beside their
training support, so the long tail shows.

The served model is the trial the serve stage picks (`serve.select.select_checkpoint`: the
highest validation metric among finished trials with a checkpoint); the report stage finds it
and `served_labels` reads its test decisions (trials/predictions/<trial_id>.npz) against the
prepare stage's test labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.report.figures import Drawn, Figure, NoFigure, pyplot, save


@dataclass(frozen=True)
class ServedLabels:
    """The served trial's per-label test F1 and supports, in label order."""

    trial_id: str
    select_metric: str
    select_value: float
    n_candidates: int  # finished trials with a checkpoint it was chosen among
    codes: list[str]
    f1: np.ndarray  # NaN where a label has no test positive and no prediction
    test_support: np.ndarray  # test documents carrying the label
    train_support: np.ndarray | None  # real training patents of its regime draw carrying it
    n_test: int
    regime_key: str = ""
    n_train_real: int = 0
    n_synthetic: int = 0
    cell: dict[str, Any] = field(default_factory=dict)


def per_label_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 per label column; NaN where the label is neither true nor predicted in any row."""
    from sklearn.metrics import f1_score

    return np.asarray(
        f1_score(y_true, y_pred, average=None, zero_division=np.nan), dtype=float
    )  # fmt: skip


def served_labels(
    trials_dir: Path,
    prepare_dir: Path,
    row: dict[str, Any],
    select_metric: str,
    n_candidates: int,
) -> ServedLabels:
    """The per-label test F1 of the trial of `row` (its results.parquet row), with the real
    training support of its regime draw. Raises FileNotFoundError or ValueError (the report
    prints the message in the figure's place)."""
    from config.data import regime_key
    from tasks.artifacts import load_labels, load_predictions, load_split, predictions_path

    tid = str(row["trial_id"])
    path = predictions_path(trials_dir, tid)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the served trial {tid} has no predictions file")
    arrays = load_predictions(path)
    space = load_labels(prepare_dir)
    test = load_split(prepare_dir, "test")
    y = space.encode([list(v) for v in test["labels"]]).astype(bool)
    if "test_pred" in arrays:
        pred = np.asarray(arrays["test_pred"], dtype=bool)
    else:
        proba = np.asarray(arrays["test_proba"], dtype=np.float32)
        pred = proba >= np.asarray(arrays["thresholds"], dtype=np.float32)[None, :]
    if pred.shape != y.shape:
        raise ValueError(
            f"{path}: test decisions of shape {pred.shape}, but the test split is {y.shape} "
            "(documents x labels)"
        )
    key = regime_key(str(row.get("regime", "")), int(row.get("draw") or 0))
    train = None
    n_real = 0
    try:
        real = load_split(prepare_dir, key)
        train = space.encode([list(v) for v in real["labels"]]).sum(0).astype(int)
        n_real = len(real)
    except FileNotFoundError:
        pass  # the figure then shows test support only, and says so
    cell = {
        k: row.get(k)
        for k in ("regime", "arm", "ratio", "real_fraction", "generator", "strategy", "family")
    }
    cell["loss"] = row.get("loss")
    n_syn = row.get("n_synthetic")
    return ServedLabels(
        trial_id=tid,
        select_metric=select_metric,
        select_value=float(row.get(select_metric, math.nan)),
        n_candidates=n_candidates,
        codes=list(space.codes),
        f1=per_label_f1(y, pred),
        test_support=y.sum(0).astype(int),
        train_support=train,
        n_test=len(y),
        regime_key=key,
        n_train_real=n_real,
        n_synthetic=int(n_syn) if n_syn is not None and not pd.isna(n_syn) else 0,
        cell=cell,
    )


def _cell_text(cell: dict[str, Any]) -> str:
    parts = []
    for k, v in cell.items():
        if v is None or v == "" or (isinstance(v, float) and not math.isfinite(v)):
            continue
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def plot_label_f1(served: ServedLabels) -> Drawn | NoFigure:
    """Bars: per-label test F1, sorted; second axis: training and test support per label."""
    name = "label_f1"
    scored = np.flatnonzero(np.isfinite(served.f1))
    if not len(scored):
        return NoFigure(name, f"trial {served.trial_id}: no label has a test positive")
    plt = pyplot()
    order = scored[np.argsort(-served.f1[scored], kind="stable")]
    x = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.0 + 0.16 * len(order)), 4.4))
    ax.bar(x, served.f1[order], color="C0", alpha=0.8, label="test F1")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 on test (val-tuned thresholds)")
    ax.set_xticks(x, [served.codes[i] for i in order], rotation=90, fontsize=7)
    ax.set_xlim(-0.7, len(order) - 0.3)
    sup = ax.twinx()
    counts = [served.test_support[order]]
    if served.train_support is not None:
        train = served.train_support[order]
        counts.append(train)
        sup.plot(x, train, "o", color="k", ms=4, label=f"train support ({served.regime_key})")
    sup.plot(x, served.test_support[order], "x", color="C3", ms=4, label="test support")
    top = max(int(np.max(c)) for c in counts)
    if top > 50:  # a long tail next to a head of hundreds: log, with 0 still drawable
        sup.set_yscale("symlog", linthresh=1)
    sup.set_ylim(bottom=0)
    sup.set_ylabel("documents with the label")
    handles = ax.get_legend_handles_labels()[0] + sup.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    ax.set_title(f"served model {served.trial_id}: per-label F1", fontsize=10)
    fig.tight_layout()
    return Drawn(name, fig, "Per-label F1 of the served model", _caption(served, order))


def _caption(served: ServedLabels, order: np.ndarray) -> str:
    n_labels = len(served.codes)
    left_out = n_labels - len(order)
    value = f" ({served.select_value:.3f})" if math.isfinite(served.select_value) else ""
    if served.train_support is None:
        train = "Training support unknown (no prepared regime table): test support only."
    else:
        tail = int((served.train_support[order] < 5).sum())
        syn = (
            f"; its {served.n_synthetic} synthetic rows are not counted"
            if served.n_synthetic
            else ""
        )
        train = (
            f"Dots: real training patents carrying the label in regime draw "
            f"{served.regime_key} ({served.n_train_real} patents{syn}); {tail} of the "
            f"{len(order)} plotted labels have fewer than 5."
        )
    skipped = (
        f" {left_out} of {n_labels} labels have no test positive and no prediction (F1 undefined) "
        "and are left out."
        if left_out
        else ""
    )
    cell = _cell_text(served.cell)
    return (
        f"Per-label F1 on the test split ({served.n_test} documents) of the served model, trial "
        f"{served.trial_id}{f' ({cell})' if cell else ''}: the trial the serve stage picks, the "
        f"highest {served.select_metric}{value} among {served.n_candidates} finished trials "
        f"with a checkpoint (chosen on validation, never on test). One trial, one seed: no "
        f"interval. Bars: F1 per label with the trial's val-tuned thresholds, sorted; crosses: "
        f"test documents carrying the label. {train}{skipped}"
    )


def label_f1_figure(served: ServedLabels, out: Path) -> Figure | NoFigure:
    """`plot_label_f1` written under out, or why it was left out."""
    drawn = plot_label_f1(served)
    return save(drawn, out) if isinstance(drawn, Drawn) else drawn
