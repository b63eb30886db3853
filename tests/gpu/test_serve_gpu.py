"""Checkpoints served on CUDA: a fine-tuned one in its trained precision (bf16), a frozen head's
encoder and a SetFit body on the GPU, each matching the CPU's answers."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_bf16_checkpoint_served_on_cuda(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from serve.server import ClassifierServer
    from tasks.checkpoint import FinetuneClassifier, save_classifier
    from tasks.models import resolve_model

    source = resolve_model("embedded:minilm-l6")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=4, problem_type="multi_label_classification"
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    labels = ["A01B", "G06F", "H01L", "B65D"]
    clf = FinetuneClassifier(
        model,
        tokenizer,
        128,
        labels=labels,
        names=labels,
        thresholds=0.5,
        meta={"precision": "bf16", "attention": "sdpa"},
    )
    path = save_classifier(tmp_path / "ckpt", clf)
    texts = ["A semiconductor device with a gate electrode.", "A carton with a dispenser."]

    gpu = ClassifierServer({"checkpoint": str(path), "trial_id": "t", "num_gpus": 1})
    assert gpu.precision == "bf16"
    param = next(gpu.classifier.model.parameters())
    assert param.device.type == "cuda" and param.dtype == torch.bfloat16
    got = gpu.predict_proba(texts)

    model.eval()
    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        ref = torch.sigmoid(model(**enc).logits.float()).numpy()
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got, ref, atol=0.02)  # bf16 vs fp32: a few 1e-3 apart


def test_frozen_head_encoder_served_on_cuda(tmp_path):
    from serve.server import ClassifierServer
    from tasks.checkpoint import FrozenHeadClassifier, save_classifier

    rng = np.random.default_rng(0)
    head = {"w": rng.normal(size=(3, 384)).astype(np.float32), "b": np.zeros(3, np.float32)}
    labels = ["A01B", "G06F", "H01L"]
    clf = FrozenHeadClassifier(head, "embedded:minilm-l6", 128, labels=labels, names=labels)
    path = str(save_classifier(tmp_path / "ckpt", clf))
    texts = ["A semiconductor device with a gate electrode.", "A carton with a dispenser."] * 40

    gpu = ClassifierServer({"checkpoint": path, "trial_id": "t", "num_gpus": 0.5})
    cpu = ClassifierServer({"checkpoint": path, "trial_id": "t", "num_gpus": 0})
    got = gpu.predict_proba(texts)
    assert gpu.device == "cuda" and gpu.classifier.encoder.device.type == "cuda"
    assert cpu.classifier.encoder.device.type == "cpu"
    np.testing.assert_allclose(got, cpu.predict_proba(texts), atol=1e-4)  # both fp32


def test_setfit_body_served_on_cuda(tmp_path):
    from serve.server import ClassifierServer
    from tasks.checkpoint import save_classifier
    from tasks.embeddings import load_encoder
    from tasks.setfit_family import SetFitClassifier

    rng = np.random.default_rng(1)
    labels = ["A01B", "G06F", "H01L"]
    body = load_encoder("embedded:minilm-l6", 64)  # a SetFit body as trained: on the CPU
    coef = rng.normal(size=(3, 384)).astype(np.float32)
    clf = SetFitClassifier(body, coef, np.zeros(3), 64, labels=labels, names=labels)
    path = str(save_classifier(tmp_path / "ckpt", clf))
    texts = ["A semiconductor device with a gate electrode.", "A carton with a dispenser."] * 40

    gpu = ClassifierServer({"checkpoint": path, "trial_id": "t", "num_gpus": 0.5})
    cpu = ClassifierServer({"checkpoint": path, "trial_id": "t", "num_gpus": 0})
    assert gpu.device == "cuda" and gpu.classifier.body.device.type == "cuda"
    assert cpu.classifier.body.device.type == "cpu"
    np.testing.assert_allclose(gpu.predict_proba(texts), cpu.predict_proba(texts), atol=1e-4)
