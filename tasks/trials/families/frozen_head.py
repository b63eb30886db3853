"""`frozen_head`: a linear or MLP head on a frozen sentence encoder's embeddings.

The stage embeds every text once per distinct encoder (the shared embedding cache); each
frozen-head family reads the vectors of its own `encoder` (resolved by the stage: the family's,
else the fidelity stage's, else the default) and records that encoder in its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.checkpoint import FrozenHeadClassifier
from tasks.trials.families import register
from tasks.trials.families.base import FitJob, Fitted, Scores, TrialFamily


@register
class FrozenHead(TrialFamily):
    kind = "frozen_head"

    def steps_per_epoch(self, rows: int) -> int | None:
        from tasks.mixes import steps_per_epoch

        return steps_per_epoch(rows, self.config.batch_size)

    def needs_embeddings(self) -> bool:
        return True

    @property
    def encoder(self) -> Any:
        if self.config.encoder is None:
            raise ValueError(
                f"family {self.name}: no encoder resolved (the stage sets the family's, the "
                "fidelity stage's or the default encoder before trials run)"
            )
        return self.config.encoder

    def fit(self, job: FitJob) -> Fitted:
        from tasks.heads import train_frozen_head

        if job.embeddings is None:
            raise ValueError(f"family {self.name} trains on embeddings; none were given")
        taken = [0]

        def count(_epoch: int, _rows: np.ndarray) -> None:
            taken[0] += 1

        head = train_frozen_head(
            job.embeddings(job.texts),
            job.y,
            self.config,
            job.loss,
            job.seed,
            blocks=job.blocks,
            threads=job.settings.threads,
            steps=job.steps,
            on_step=count,
        )
        enc = self.encoder
        clf = FrozenHeadClassifier(
            head,
            enc.model,
            int(enc.max_length),
            encoder_backend=enc.backend,
            encoder_quantize=enc.quantize,
            labels=job.labels,
            names=job.names,
        )
        return Fitted(clf, job, steps=taken[0])

    def predict(self, fitted: Fitted, texts: list[str]) -> Scores:
        # The trial's texts were embedded by the stage: no encoder forward pass here.
        assert fitted.job.embeddings is not None
        clf = fitted.classifier
        x = fitted.job.embeddings(texts)
        return clf.proba_from_embeddings(x), clf.embed_from_embeddings(x)

    @classmethod
    def load(
        cls,
        path: Path,
        doc: dict[str, Any],
        device: str | None,
        precision: str | None,
        common: dict[str, Any],
    ) -> FrozenHeadClassifier:
        from safetensors.numpy import load_file

        fc = doc.get("family_config", {})
        head = load_file(str(path / fc.get("weights", "head.safetensors")))
        enc = fc["encoder"]
        return FrozenHeadClassifier(
            head,
            enc["model"],
            int(enc["max_length"]),
            device=device,
            # Checkpoints from before the ONNX backend were trained on torch's vectors.
            encoder_backend=enc.get("backend", "torch"),
            encoder_quantize=enc.get("quantize", "none"),
            **common,
        )
