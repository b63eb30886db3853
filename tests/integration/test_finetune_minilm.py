"""The embedded MiniLM fine-tuned for real (a 22M-parameter model: seconds, not milliseconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tiny_bert import LABELS, make_texts

from config.trials import FinetuneFamily
from tasks.checkpoint import load_classifier, save_classifier
from tasks.finetune import train_finetune


def make_data(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    texts, label_sets = make_texts(n, seed)
    y = np.array([[c in s for c in LABELS] for s in label_sets], dtype=np.float32)
    return texts, y


def family(model: str, **settings) -> FinetuneFamily:
    defaults = {"max_length": 24, "epochs": 12, "learning_rate": 3e-3, "batch_size": 8}
    return FinetuneFamily(model=model, **{**defaults, **settings})


def test_train_finetune_embedded_minilm(tmp_path: Path):
    """One epoch of the embedded MiniLM (22M parameters) on 16 short texts, then a round trip."""
    x, y = make_data(16, seed=6)
    fam = family("embedded:minilm-l6", max_length=16, epochs=1, learning_rate=5e-5)
    clf = train_finetune(
        fam, x, y, x[:8], y[:8], LABELS, "weighted_bce", "fp32", "sdpa", 0, tmp_path
    )
    assert clf.model.config.hidden_size == 384 and clf.model.config.num_labels == 3
    assert clf.model.config.problem_type == "multi_label_classification"
    p = clf.predict_proba(x[:4])
    loaded = load_classifier(save_classifier(tmp_path / "minilm", clf))
    np.testing.assert_allclose(loaded.predict_proba(x[:4]), p, atol=1e-5)
