"""What trials read: the shared evaluation sets, each cell's rows, embeddings, settings.

The stage builds one `TrialInputs` and ships it once (one object-store put for the whole grid);
each trial takes its cell's view of it (`TrialInputs.for_cell`): its regime draw's real rows,
its corpora, their per-row fidelity and kept ids, and its family's encoder's embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from tasks.artifacts import CorpusId
from tasks.trials.grid import MixKey, TrialCell

if TYPE_CHECKING:
    from tasks.trials.families import TrialFamily


def label_matrix(df: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Multi-hot (n, L) float32 matrix of a table's `labels` column in the order of `labels`
    (scikit-learn's MultiLabelBinarizer; codes outside `labels` are ignored)."""
    from tasks.labels import multi_hot

    if "labels" not in df.columns or "text" not in df.columns:
        raise ValueError(f"table needs columns text and labels, has {list(df.columns)}")
    return multi_hot([list(v) for v in df["labels"]], list(labels)).astype(np.float32)


@dataclass(frozen=True)
class TrialSettings:
    """How one trial runs, never what it computes: its resources and scratch locations."""

    cpus: float = 1.0  # per trial, or per Ray Train worker of a fine-tune
    gpus: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)
    threads: int | None = None  # torch intra-op threads of in-process training; None: torch's
    storage_dir: str = ""  # where this trial's Ray Train run writes (a folder or a URI)


class EncoderKey(NamedTuple):
    """A sentence encoder as far as its vectors go: the same key, the same embeddings."""

    model: str
    max_length: int
    # As configured (`auto` too): int8 vectors are another encoder's; fp32 ONNX and torch agree
    # within 1e-4, and the on-disk cache keys them apart by the resolved backend anyway.
    backend: str = "torch"
    quantize: str = "none"

    @classmethod
    def of(cls, encoder: Any) -> EncoderKey:
        return cls(
            str(encoder.model), int(encoder.max_length), str(encoder.backend), encoder.quantize
        )


@dataclass(frozen=True)
class Embeddings:
    """One encoder's vectors of every text the stage's trials read (computed once)."""

    key: EncoderKey
    index: Mapping[str, int]  # text -> row of `vectors`
    vectors: np.ndarray

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.vectors[[self.index[t] for t in texts]]


@dataclass(frozen=True)
class EvalData:
    """What every trial shares: the label space and the sets it is scored on."""

    labels: list[str]
    names: list[str]
    val: pd.DataFrame
    test: pd.DataFrame
    retrieval: pd.DataFrame | None = None  # ranked documents; None: the test set itself
    thresholds: str = "per_label_where_supported"
    threshold_min_positives: int = 5  # per_label_where_supported: val positives for a label's own
    retrieval_k: int = 10
    cache_dir: str = ""  # tokenization cache (fine-tunes)

    def y(self, df: pd.DataFrame) -> np.ndarray:
        return label_matrix(df, self.labels)

    def score_sets(self) -> dict[str, list[str]]:
        """The texts a trial scores: val, test and the retrieval documents."""
        sets = {"val": self.val["text"].tolist(), "test": self.test["text"].tolist()}
        if self.retrieval is not None:
            sets["retrieval"] = self.retrieval["text"].tolist()
        return sets


@dataclass(frozen=True)
class CellData:
    """One cell's rows: what its mixes are built from."""

    real: pd.DataFrame  # its regime draw's real rows
    corpora: Mapping[str, pd.DataFrame]  # its corpus (or an ensemble's members)
    fidelity: Mapping[str, Mapping[str, float]]  # corpus -> row id -> score (curricula)
    keep_ids: Mapping[MixKey, frozenset[str]]  # the filtered arm's kept synthetic ids
    embeddings: Embeddings | None = None  # its family's encoder's, when it reads embeddings


@dataclass
class TrialInputs:
    """Everything the grid's trials read, shipped once (`tune.with_parameters`)."""

    shared: EvalData
    real: dict[str, pd.DataFrame]  # regime key (TrialCell.regime_key) -> real rows
    corpora: dict[str, pd.DataFrame] = field(default_factory=dict)  # corpus_id -> synthetic
    embeddings: dict[EncoderKey, Embeddings] = field(default_factory=dict)
    fidelity: dict[str, dict[str, float]] = field(default_factory=dict)
    keep_ids: dict[MixKey, frozenset[str]] = field(default_factory=dict)

    def for_cell(self, cell: TrialCell, family: TrialFamily | None = None) -> CellData:
        """`cell`'s view; the embeddings of `family`'s encoder when it reads embeddings."""
        ids = cell.corpus_ids
        emb = None
        if family is not None and family.needs_embeddings():
            key = EncoderKey.of(family.encoder)
            if key not in self.embeddings:
                raise ValueError(
                    f"family {family.name} needs embeddings of {key.model} "
                    f"(max_length={key.max_length}); none were computed"
                )
            emb = self.embeddings[key]
        return CellData(
            real=self.real[cell.regime_key],
            corpora={c: self.corpora[c] for c in ids},
            fidelity={c: self.fidelity[c] for c in ids if c in self.fidelity},
            keep_ids={k: v for k, v in self.keep_ids.items() if k.corpus_id in ids},
            embeddings=emb,
        )

    def texts(self) -> list[str]:
        """Every distinct text a trial may embed, sorted (the order of `Embeddings.vectors`)."""
        s = self.shared
        frames = [*self.real.values(), *self.corpora.values(), s.val, s.test]
        if s.retrieval is not None:
            frames.append(s.retrieval)
        return sorted({str(t) for df in frames for t in df.text})


def row_fidelity(inputs: TrialInputs, emb: Embeddings) -> dict[str, dict[str, float]]:
    """Per synthetic row: cosine similarity to its regime draw's real centroid (higher: closer)."""
    out = {}
    for cid, syn in inputs.corpora.items():
        key = CorpusId.parse(cid).regime_key  # the draw it was generated from
        real = inputs.real.get(key)
        if real is None or syn.empty:
            continue
        centroid = emb(real.text.tolist()).mean(0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        x = emb(syn.text.tolist())
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        out[cid] = dict(zip(syn.id.astype(str), (x @ centroid).astype(float), strict=True))
    return out
