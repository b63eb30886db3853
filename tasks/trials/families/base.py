"""The interface every classifier family implements, and what a fit gets and gives back.

A family is one class (`TrialFamily`) keyed by its config's `kind`: how it trains on one mix
(`fit`), how a trial scores texts with what it trained (`predict`), how its checkpoint is
written and read (`save`, `load`), and what the grid and the scheduler need to know of it
(`losses`, `numerics`, `steps_per_epoch`, `needs_gpu`, `needs_embeddings`, `train_workers`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from tasks.checkpoint import Classifier
    from tasks.trials.inputs import Embeddings, TrialSettings

Scores = tuple[np.ndarray, np.ndarray]  # (probabilities (n, L), document embeddings (n, d))


@dataclass(frozen=True)
class FitJob:
    """One model's training rows and the cell's settings: what `TrialFamily.fit` reads."""

    texts: list[str]
    y: np.ndarray  # (n, L) multi-hot, columns in label order
    blocks: np.ndarray  # the ordering's block of each row (tasks.mixes)
    labels: list[str]
    names: list[str]
    loss: str
    seed: int
    precision: str
    attention: str
    steps: int | None  # exact optimizer steps; None: the family's epochs
    settings: TrialSettings
    val_texts: list[str] = field(default_factory=list)  # per-epoch validation (fine-tunes)
    val_y: np.ndarray | None = None
    #: Text sets the trial will score (val, test, retrieval), for families that score them
    #: where they trained (a fine-tune's Ray Train worker holds the GPU; the trial does not).
    score_sets: Mapping[str, list[str]] = field(default_factory=dict)
    embeddings: Embeddings | None = None  # the family's encoder's vectors (needs_embeddings)
    cache_dir: str = ""  # tokenization cache


@dataclass
class Fitted:
    """A trained classifier, the job it came from, and scores computed while training."""

    classifier: Classifier
    job: FitJob
    steps: int | None = None  # optimizer steps it trained; None: no steps (TF-IDF)
    scored: dict[tuple[str, ...], Scores] = field(default_factory=dict)


#: Runs a family's training somewhere other than this process (a fine-tune: Ray Train workers);
#: injected by the orchestrator so that tasks/ never imports Ray.
Trainer = Callable[..., Any]


class TrialFamily(ABC):
    """One classifier family of the grid, built from its config model (`config.trials`)."""

    kind: ClassVar[str] = ""
    #: Grid losses it can train with; None: all. Others are skipped with the reason.
    losses: ClassVar[tuple[str, ...] | None] = None
    #: Losses it always runs, replacing the study's loss axis (its own head); None: the axis.
    own_losses: ClassVar[tuple[str, ...] | None] = None
    #: Whether the precision x attention axes apply (transformer training); else fp32/none.
    numerics: ClassVar[bool] = False

    def __init__(self, config: Any, trainer: Trainer | None = None):
        self.config = config
        self.trainer = trainer

    @property
    def name(self) -> str:
        return str(self.config.name)

    def steps_per_epoch(self, rows: int) -> int | None:
        """Optimizer steps of one epoch over `rows`; None: no step budget applies."""
        return None

    def needs_gpu(self) -> bool:
        """Whether its training uses the trial's GPUs (others get none, so none sits idle)."""
        return False

    def needs_embeddings(self) -> bool:
        """Whether it trains on the stage's precomputed embeddings (`encoder`)."""
        return False

    @property
    def encoder(self) -> Any:
        """The sentence encoder (`EncoderConfig`) whose embeddings it reads, if any."""
        return None

    def train_workers(self) -> int:
        """Ray Train workers one trial drives; 0: it trains in the trial's own process."""
        return 0

    @abstractmethod
    def fit(self, job: FitJob) -> Fitted:
        """Train one model on `job`'s rows."""

    def predict(self, fitted: Fitted, texts: list[str]) -> Scores:
        """Probabilities and embeddings of `texts`: scores computed while training when there
        are some for exactly these texts, else the classifier's own forward pass."""
        hit = fitted.scored.get(tuple(texts))
        return hit if hit is not None else fitted.classifier.proba_and_embed(list(texts))

    @classmethod
    def save(cls, classifier: Classifier, directory: Path) -> None:
        """Write the classifier's weight files into `directory` (classifier.json is common)."""
        classifier.save_weights(directory)

    @classmethod
    @abstractmethod
    def load(
        cls,
        path: Path,
        doc: dict[str, Any],
        device: str | None,
        precision: str | None,
        common: dict[str, Any],
    ) -> Classifier:
        """A checkpoint folder back to a classifier; `doc` is its classifier.json, `common` the
        labels, names, thresholds and meta every classifier takes."""
