"""Checkpoint round trips for every family: same probabilities, labels, thresholds and meta."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_bert import build_tiny_bert

from tasks.checkpoint import (
    EnsembleClassifier,
    FinetuneClassifier,
    FrozenHeadClassifier,
    TfidfLinearClassifier,
    load_classifier,
    save_classifier,
)

TEXTS = [
    "a wheelchair with a motorized lift",
    "hearing aid signal processing circuit",
    "braille display with piezo actuators",
]
LABELS = ["A61G", "H04R", "G09B"]
NAMES = ["transport for patients", "loudspeakers", "educational appliances"]


def _common(meta=None):
    return {"labels": LABELS, "names": NAMES, "thresholds": [0.3, 0.5, 0.7], "meta": meta or {}}


def tiny_bert(tmp_path, n_labels=3):
    from transformers import AutoTokenizer, BertForSequenceClassification

    words = tuple(w for t in TEXTS for w in t.split())
    folder = build_tiny_bert(tmp_path / "tiny-bert", extra_words=words)
    return (
        BertForSequenceClassification.from_pretrained(
            folder, num_labels=n_labels, problem_type="multi_label_classification"
        ),
        AutoTokenizer.from_pretrained(folder),
    )


def test_finetune_round_trip(tmp_path):
    model, tok = tiny_bert(tmp_path)
    meta = {"precision": "fp32", "attention": "eager", "mix": {"arm": "real_only"}}
    clf = FinetuneClassifier(model, tok, max_length=32, **_common(meta))
    p0, e0 = clf.proba_and_embed(TEXTS)
    out = save_classifier(tmp_path / "ck", clf, metrics={"test_micro_f1": 0.5})
    assert (out / "model" / "model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))
    back = load_classifier(out)
    assert isinstance(back, FinetuneClassifier)
    np.testing.assert_allclose(back.predict_proba(TEXTS), p0, atol=1e-5)
    np.testing.assert_allclose(back.embed(TEXTS), e0, atol=1e-5)
    assert e0.shape == (3, 32) and p0.shape == (3, 3)
    assert back.labels == LABELS and back.names == NAMES
    np.testing.assert_allclose(back.thresholds, [0.3, 0.5, 0.7])
    assert back.meta["mix"] == {"arm": "real_only"}
    assert back.meta["metrics"]["test_micro_f1"] == 0.5
    assert back.meta["trust_remote_code"] is False


def test_frozen_head_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    head = {
        "w1": rng.normal(size=(8, 4)),
        "b1": rng.normal(size=8),
        "w2": rng.normal(size=(3, 8)),
        "b2": rng.normal(size=3),
    }
    clf = FrozenHeadClassifier(
        head, "embedded:minilm-l6", 128, encoder_backend="torch", **_common()
    )
    x = rng.normal(size=(5, 4)).astype(np.float32)
    p = clf.proba_from_embeddings(x)
    # Hand computation of the MLP head.
    h = np.maximum(x @ head["w1"].T + head["b1"], 0)
    expected = 1 / (1 + np.exp(-(h @ head["w2"].T + head["b2"])))
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    out = save_classifier(tmp_path / "ck", clf)
    doc = json.loads((out / "classifier.json").read_text())
    assert doc["family"] == "frozen_head"
    assert doc["family_config"]["encoder"] == {
        "model": "embedded:minilm-l6",
        "max_length": 128,
        "backend": "torch",
        "quantize": "none",
    }
    back = load_classifier(out)
    assert isinstance(back, FrozenHeadClassifier) and back.kind == "mlp"
    assert (back.encoder_backend, back.encoder_quantize) == ("torch", "none")
    np.testing.assert_allclose(back.proba_from_embeddings(x), p, rtol=1e-6)
    # The device reaches the encoder, loaded at first use (a GPU replica passes "cuda").
    placed = load_classifier(out, device="cpu")
    assert placed.device == "cpu" and placed._encoder is None
    assert placed.encoder.device.type == "cpu"


def test_frozen_head_checkpoint_without_encoder_backend_loads_the_defaults(tmp_path):
    # classifier.json from before the ONNX backend: the encoder has only model and max_length.
    head = {"w": np.ones((3, 4)), "b": np.zeros(3)}
    out = save_classifier(tmp_path / "ck", FrozenHeadClassifier(head, "m", 64, **_common()))
    doc = json.loads((out / "classifier.json").read_text())
    doc["family_config"]["encoder"] = {"model": "m", "max_length": 64}
    (out / "classifier.json").write_text(json.dumps(doc))
    back = load_classifier(out)
    assert (back.encoder_backend, back.encoder_quantize) == ("torch", "none")
    assert (back.encoder_model, back.encoder_max_length) == ("m", 64)


def test_tfidf_round_trip(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32).fit(TEXTS)
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(3, len(vec.vocabulary_)))
    clf = TfidfLinearClassifier(vec, coef, np.array([0.1, -0.2, 0.3]), **_common())
    p0 = clf.predict_proba(TEXTS + ["unseen words only"])
    out = save_classifier(tmp_path / "ck", clf)
    assert {p.name for p in out.iterdir()} == {
        "classifier.json",
        "tfidf.safetensors",
        "vocabulary.json",
    }
    back = load_classifier(out)
    np.testing.assert_allclose(back.predict_proba(TEXTS + ["unseen words only"]), p0, rtol=1e-5)
    np.testing.assert_allclose(back.embed(TEXTS), clf.embed(TEXTS), rtol=1e-5)
    hits = p0[:3] >= np.array([0.3, 0.5, 0.7])
    assert back.predict(TEXTS) == [[LABELS[j] for j in np.flatnonzero(r)] for r in hits]


def _tfidf(seed: int) -> TfidfLinearClassifier:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(dtype=np.float32).fit(TEXTS)
    coef = np.random.default_rng(seed).normal(size=(3, len(vec.vocabulary_)))
    return TfidfLinearClassifier(vec, coef, np.zeros(3), **_common())


def test_ensemble_round_trip_is_the_members_mean(tmp_path):
    a, b = _tfidf(1), _tfidf(2)
    ens = EnsembleClassifier({"syn": a, "para": b}, **_common({"mix": {"arm": "ensemble"}}))
    p = ens.predict_proba(TEXTS)
    np.testing.assert_allclose(p, (a.predict_proba(TEXTS) + b.predict_proba(TEXTS)) / 2, rtol=1e-6)
    emb = ens.embed(TEXTS)
    assert emb.shape == (3, a.embed(TEXTS).shape[1] + b.embed(TEXTS).shape[1])
    # Unit members side by side, scaled by 1/sqrt(2): unit norm again, cosine = mean cosine.
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    out = save_classifier(tmp_path / "ck", ens, metrics={"test_micro_f1": 0.25})
    assert sorted(p.name for p in (out / "members").iterdir()) == ["para", "syn"]
    back = load_classifier(out)
    assert isinstance(back, EnsembleClassifier) and list(back.members) == ["syn", "para"]
    np.testing.assert_allclose(back.predict_proba(TEXTS), p, rtol=1e-5)
    np.testing.assert_allclose(back.thresholds, [0.3, 0.5, 0.7])
    assert back.meta["metrics"]["test_micro_f1"] == 0.25
    assert back.predict(TEXTS) == ens.predict(TEXTS)


def test_ensemble_refuses_members_with_other_labels():
    other = _tfidf(1)
    other.labels = ["X", "Y", "Z"]
    with pytest.raises(ValueError, match="member 'b'"):
        EnsembleClassifier({"a": _tfidf(2), "b": other}, **_common())


def test_load_refuses_unknown_family(tmp_path):
    (tmp_path / "classifier.json").write_text(
        json.dumps({"family": "pickle", "labels": [], "names": [], "thresholds": []})
    )
    with pytest.raises(ValueError, match="family='pickle'"):
        load_classifier(tmp_path)
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        load_classifier(tmp_path / "missing")


def test_finetune_predictions_keep_input_order_across_length_sorted_passes(tmp_path):
    model, tok = tiny_bert(tmp_path)
    clf = FinetuneClassifier(model, tok, max_length=32, batch_size=2, **_common())
    # Lengths out of order and more texts than one pass: the passes run sorted by length.
    texts = [TEXTS[1], TEXTS[0] + " " + TEXTS[2], TEXTS[2], TEXTS[0], "lift"]
    probs, embs = clf.proba_and_embed(texts)
    for i, t in enumerate(texts):
        p1, e1 = clf.proba_and_embed([t])
        np.testing.assert_allclose(probs[i], p1[0], atol=1e-5)
        np.testing.assert_allclose(embs[i], e1[0], atol=1e-5)
    assert not np.allclose(probs[0], probs[2])  # the rows really differ, so order is tested


def test_forward_batch_size_is_small_on_cpu_and_large_on_gpu():
    import torch

    from tasks.embeddings import CPU_FORWARD_BATCH, GPU_FORWARD_BATCH, forward_batch_size

    assert forward_batch_size("cpu") == forward_batch_size(torch.device("cpu")) == CPU_FORWARD_BATCH
    assert forward_batch_size("cuda:0") == forward_batch_size(torch.device("cuda")) == 64
    assert CPU_FORWARD_BATCH < GPU_FORWARD_BATCH
