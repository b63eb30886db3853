"""The prepare stage's logic: records -> label space, deduplicated stratified splits, regimes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from config.data import regime_key
from tasks.labels import LabelSpace, build_label_space, doc_labels
from tasks.records import PatentRecord
from tasks.split import dedup_indices, draw_regimes, stratified_split


@dataclass
class PreparedData:
    labels: LabelSpace
    train_pool: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    regimes: dict[str, pd.DataFrame]  # regime key (tasks.split.regime_key) -> real rows
    summary: dict[str, Any] = field(default_factory=dict)


def records_frame(records: Sequence[PatentRecord], label_sets: Sequence[list[str]]) -> pd.DataFrame:
    """The table every stage reads: id, text, labels (codes in the label space), provenance."""
    return pd.DataFrame(
        {
            "id": [r.id for r in records],
            "text": [r.text for r in records],
            "labels": [list(ls) for ls in label_sets],
            "codes": [list(r.codes) for r in records],
            "source": "real",
        }
    )


def _label_stats(y: np.ndarray) -> dict[str, Any]:
    return {
        "docs": int(len(y)),
        "labels_present": int((y.sum(axis=0) > 0).sum()),
        "cardinality": round(float(y.sum(axis=1).mean()), 3) if len(y) else 0.0,
    }


def prepare_dataset(
    records: Sequence[PatentRecord],
    level: Literal["subclass", "group"],
    top_k: int,
    test_size: float | int,
    val_size: float | int,
    regimes: dict[str, int],
    seed: int,
    draws: int = 1,
) -> PreparedData:
    """Choose labels, drop unlabeled docs and duplicates, split, and draw nested regimes.

    `draws` independent draws of the regimes come from the one train pool (the val and test
    splits are the same for all); `regimes` of the result is keyed by `regime_key(name, draw)`.
    """
    space = build_label_space(records, level, top_k)
    allowed = set(space.codes)
    kept, label_sets, no_label = [], [], 0
    for r in records:
        labs = [lab for lab in doc_labels(r, level) if lab in allowed]
        if labs:
            kept.append(r)
            label_sets.append(labs)
        else:
            no_label += 1
    keep_idx, dup_pairs = dedup_indices([r.text for r in kept])
    kept = [kept[i] for i in keep_idx]
    label_sets = [label_sets[i] for i in keep_idx]
    frame = records_frame(kept, label_sets)
    y = space.encode(label_sets)
    pool_i, val_i, test_i = stratified_split(y, test_size, val_size, seed)
    pool = frame.iloc[pool_i].reset_index(drop=True)
    y_pool = y[pool_i]
    regime_rows: dict[str, np.ndarray] = {}
    covers: list[int] = []
    for d in range(draws):
        rows_d, cover_d = draw_regimes(y_pool, regimes, seed, draw=d)
        regime_rows.update({regime_key(name, d): idx for name, idx in rows_d.items()})
        covers.append(cover_d)
    regime_frames = {
        name: pool.iloc[idx].reset_index(drop=True) for name, idx in regime_rows.items()
    }

    per_split = {
        "train_pool": _label_stats(y_pool),
        "val": _label_stats(y[val_i]),
        "test": _label_stats(y[test_i]),
    }
    per_regime = {name: _label_stats(y_pool[idx]) for name, idx in regime_rows.items()}
    support_pool = y_pool.sum(axis=0)
    rare = [space.codes[j] for j in np.argsort(support_pool)[:5]]
    summary = {
        "labels": len(space),
        "level": level,
        "documents": len(frame),
        "dropped_no_label": no_label,
        "dropped_duplicates": len(dup_pairs),
        "splits": per_split,
        "regimes": per_regime,
        "regime_draws": draws,
        "label_cover_size": covers[0],
        "label_cover_sizes": covers,
        "rarest_pool_labels": {c: int(support_pool[space.index[c]]) for c in rare},
    }
    return PreparedData(
        space,
        pool,
        frame.iloc[val_i].reset_index(drop=True),
        frame.iloc[test_i].reset_index(drop=True),
        regime_frames,
        summary,
    )
