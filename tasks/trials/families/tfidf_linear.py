"""`tfidf_linear`: TF-IDF n-grams + one logistic regression per label (liblinear).

No row order and no step budget: liblinear solves each label to convergence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.checkpoint import TfidfLinearClassifier
from tasks.trials.families import register
from tasks.trials.families.base import FitJob, Fitted, TrialFamily


@register
class TfidfLinear(TrialFamily):
    kind = "tfidf_linear"
    # The two linear-model losses; focal/asymmetric have no counterpart in scikit-learn's models.
    losses = ("bce", "weighted_bce")

    def fit(self, job: FitJob) -> Fitted:
        from tasks.heads import train_tfidf_linear

        clf = train_tfidf_linear(
            job.texts, job.y, self.config, job.loss, job.seed, labels=job.labels, names=job.names
        )
        return Fitted(clf, job)

    @classmethod
    def load(
        cls,
        path: Path,
        doc: dict[str, Any],
        device: str | None,
        precision: str | None,
        common: dict[str, Any],
    ) -> TfidfLinearClassifier:
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        fc = doc.get("family_config", {})
        terms = json.loads((path / fc.get("vocabulary", "vocabulary.json")).read_text())
        tensors = load_file(str(path / fc.get("weights", "tfidf.safetensors")))
        vec = TfidfVectorizer(
            vocabulary={t: j for j, t in enumerate(terms)},
            ngram_range=tuple(fc["ngram_range"]),
            lowercase=fc["lowercase"],
            sublinear_tf=fc["sublinear_tf"],
            norm=fc["norm"],
            smooth_idf=fc["smooth_idf"],
            token_pattern=fc["token_pattern"],
            strip_accents=fc["strip_accents"],
            dtype=np.float32,
        )
        vec.idf_ = tensors["idf"].astype(np.float64)  # sklearn builds its transformer from idf_
        return TfidfLinearClassifier(vec, tensors["coef"], tensors["intercept"], **common)
