"""The SetFit family: a sentence-transformers body fine-tuned contrastively on pairs of training
rows, then a one-vs-rest logistic head on its embeddings (Tunstall et al., "Efficient Few-Shot
Learning Without Prompts", 2022; the `setfit` package does both phases).

SetFit builds its own training pairs: two rows sharing a label are a positive pair, others a
negative one, `num_iterations` of each per row, drawn in the package's own fixed order. So the
mix's row ordering (shuffled or a curriculum) does not apply to this family, and its only loss is
the contrastive one plus the head's logistic loss (`bce` in the grid).

Checkpoint (`tasks.checkpoint`): `body/` is the fine-tuned body as a sentence-transformers folder
(safetensors), `head.safetensors` the head's `coef` (L, d) and `intercept` (L,). SetFit's own
`save_pretrained` pickles the head with joblib; that is never used here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.checkpoint import Classifier
from tasks.heads import CONSTANT_LOGIT

if TYPE_CHECKING:
    from config.trials import SetFitFamily


class SetFitClassifier(Classifier):
    """A SetFit model: the fine-tuned body's unit-length embedding, then one logistic regression
    per label (`coef` (L, d), `intercept` (L,)), evaluated in numpy."""

    family = "setfit"

    def __init__(
        self,
        body: Any,
        coef: np.ndarray,
        intercept: np.ndarray,
        max_length: int,
        model_source: str = "",
        **kw,
    ):
        super().__init__(**kw)
        self.body = body
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        self.max_length = int(max_length)
        self.model_source = model_source
        self.steps_trained: int | None = None  # body steps, set by train_setfit

    def embed(self, texts: list[str]) -> np.ndarray:
        from tasks.embeddings import encode_texts

        return encode_texts(list(texts), self.body)

    def proba_from_embeddings(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        return expit(x @ self.coef.T + self.intercept).astype(np.float32)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.proba_from_embeddings(self.embed(texts))

    def proba_and_embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = self.embed(texts)
        return self.proba_from_embeddings(x), x

    def family_config(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "model": self.model_source,
            "body": "body",
            "weights": "head.safetensors",
        }

    def save_weights(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        self.body.save(str(directory / "body"), create_model_card=False, safe_serialization=True)
        save_file(
            {
                "coef": np.ascontiguousarray(self.coef),
                "intercept": np.ascontiguousarray(self.intercept),
            },
            str(directory / "head.safetensors"),
        )


def load_setfit(
    path: Path, fc: dict[str, Any], device: str | None, common: dict[str, Any]
) -> SetFitClassifier:
    """A setfit checkpoint folder back to a classifier; the body on `device` (None: the CPU)."""
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    body = SentenceTransformer(str(path / fc.get("body", "body")), device=device or "cpu")
    body.max_seq_length = int(fc["max_length"])
    head = load_file(str(path / fc.get("weights", "head.safetensors")))
    return SetFitClassifier(
        body,
        head["coef"],
        head["intercept"],
        int(fc["max_length"]),
        model_source=str(fc.get("model", "")),
        **common,
    )


def train_setfit(
    texts: list[str],
    y: np.ndarray,
    cfg: SetFitFamily,
    seed: int,
    threads: int | None = None,
    device: str = "cpu",
    **common: Any,
) -> SetFitClassifier:
    """Fine-tune the body on contrastive pairs of `texts`, fit the one-vs-rest head on `y` (n, L).

    `cfg`: the family's body, token limit, pairs, steps, learning rate and head settings.
    Deterministic given `seed` on a CPU. `threads` bounds torch's intra-op threads (the trial's
    CPUs). `common`: labels, names (and thresholds, meta) of the classifier.
    """
    import datasets
    import setfit
    import torch
    from transformers.trainer_callback import ProgressCallback

    from tasks.models import resolve_model

    if threads:
        torch.set_num_threads(max(1, int(threads)))
    # Trial logs: no per-step progress bars from datasets, transformers' Trainer or setfit.
    datasets.disable_progress_bars()
    setfit.logging.set_verbosity_warning()
    y = np.asarray(y)
    model = setfit.SetFitModel.from_pretrained(
        resolve_model(cfg.model),
        multi_target_strategy="one-vs-rest",
        head_params={"C": cfg.C, "max_iter": cfg.head_max_iter},
        normalize_embeddings=True,  # the head sees the unit vectors `embed` returns
        device=device,
    )
    model.model_body.max_seq_length = cfg.max_length
    train = datasets.Dataset.from_dict(
        {"text": list(texts), "label": [[int(v) for v in row] for row in y]}
    )
    with tempfile.TemporaryDirectory() as out:
        args = setfit.TrainingArguments(
            output_dir=out,
            batch_size=cfg.batch_size,
            num_epochs=cfg.body_epochs,
            num_iterations=cfg.num_iterations,
            max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
            body_learning_rate=cfg.body_learning_rate,
            seed=seed,
            save_strategy="no",
            report_to="none",
            show_progress_bar=False,
        )
        trainer = setfit.Trainer(model=model, args=args, train_dataset=train)
        trainer.st_trainer.remove_callback(ProgressCallback)
        trainer.train()
    body = model.model_body
    # Newer sentence-transformers renamed get_sentence_embedding_dimension (kept, deprecated).
    dim = getattr(body, "get_embedding_dimension", body.get_sentence_embedding_dimension)()
    coef, intercept = _head_arrays(model.model_head, y, dim)
    clf = SetFitClassifier(body, coef, intercept, cfg.max_length, model_source=cfg.model, **common)
    clf.steps_trained = int(trainer.st_trainer.state.global_step)
    return clf


def _head_arrays(head: Any, y: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """`coef` (L, d) and `intercept` (L,) of a fitted one-vs-rest logistic head; a label with one
    class only in `y` (scikit-learn keeps a constant predictor for it) gets a constant logit."""
    n_labels = y.shape[1]
    coef = np.zeros((n_labels, dim), dtype=np.float32)
    intercept = np.zeros(n_labels, dtype=np.float32)
    for j, est in enumerate(head.estimators_):
        if hasattr(est, "coef_"):
            coef[j] = est.coef_[0]
            intercept[j] = est.intercept_[0]
        else:
            intercept[j] = CONSTANT_LOGIT if y[:, j].max() > 0 else -CONSTANT_LOGIT
    return coef, intercept
