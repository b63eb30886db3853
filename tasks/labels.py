"""The label space: which codes are classes, their names, and multi-hot encoding."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tasks.cpc_names import label_name
from tasks.records import PatentRecord, main_group_of


def multi_hot(label_sets: Sequence[Sequence[str]], codes: Sequence[str]) -> np.ndarray:
    """0/1 matrix (n_docs, len(codes)), column j for codes[j]; codes outside `codes` are ignored."""
    from sklearn.preprocessing import MultiLabelBinarizer

    known = set(codes)
    # Unknown codes are dropped first: the binarizer would warn about each one.
    kept = [[lab for lab in labels if lab in known] for labels in label_sets]
    return MultiLabelBinarizer(classes=list(codes)).fit_transform(kept)


@dataclass(frozen=True)
class LabelSpace:
    codes: tuple[str, ...]
    names: tuple[str, ...]
    support: tuple[int, ...]  # documents per label before splitting

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.codes)}

    def __len__(self) -> int:
        return len(self.codes)

    def encode(self, label_sets: Sequence[Sequence[str]]) -> np.ndarray:
        """Multi-hot matrix (n_docs, n_labels) of float32; codes outside the space are ignored."""
        return multi_hot(label_sets, self.codes).astype(np.float32)

    def to_json(self) -> list[dict]:
        return [
            {"index": i, "code": c, "name": n, "support": s}
            for i, (c, n, s) in enumerate(zip(self.codes, self.names, self.support, strict=True))
        ]

    @classmethod
    def from_json(cls, items: list[dict]) -> LabelSpace:
        items = sorted(items, key=lambda d: d["index"])
        return cls(
            codes=tuple(d["code"] for d in items),
            names=tuple(d["name"] for d in items),
            support=tuple(int(d["support"]) for d in items),
        )


def doc_labels(record: PatentRecord, level: Literal["subclass", "group"]) -> list[str]:
    """A record's labels at the chosen level (group level reads the raw `codes`)."""
    if level == "subclass":
        return list(record.labels)
    return sorted({g for c in record.codes if (g := main_group_of(c))})


def build_label_space(
    records: Sequence[PatentRecord], level: Literal["subclass", "group"], top_k: int
) -> LabelSpace:
    """The top-K labels by document frequency; ties broken by code so the space is stable."""
    counts = Counter(lab for r in records for lab in doc_labels(r, level))
    if not counts:
        raise ValueError(f"data.labels.level={level}: no record has a label at that level")
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    return LabelSpace(
        codes=tuple(c for c, _ in top),
        names=tuple(label_name(c) for c, _ in top),
        support=tuple(n for _, n in top),
    )
