"""`setfit`: a sentence-transformers body fine-tuned on contrastive pairs, then a logistic head
(`tasks.setfit_family`). It draws its own pairs, so the mix's ordering does not apply, and its
head is its own loss: it runs `bce` whatever the study's loss axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.trials.families import register
from tasks.trials.families.base import FitJob, Fitted, TrialFamily


@register
class SetFit(TrialFamily):
    kind = "setfit"
    own_losses = ("bce",)

    def fit(self, job: FitJob) -> Fitted:
        from tasks.setfit_family import train_setfit

        clf = train_setfit(
            job.texts,
            job.y,
            self.config,
            job.seed,
            threads=job.settings.threads,
            labels=job.labels,
            names=job.names,
        )
        return Fitted(clf, job, steps=clf.steps_trained)

    @classmethod
    def load(
        cls,
        path: Path,
        doc: dict[str, Any],
        device: str | None,
        precision: str | None,
        common: dict[str, Any],
    ) -> Any:
        from tasks.setfit_family import load_setfit

        return load_setfit(path, doc.get("family_config", {}), device, common)
