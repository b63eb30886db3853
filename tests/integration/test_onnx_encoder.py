"""The ONNX Runtime encoder: fp32 vectors equal torch's, one export per content hash, int8's cost.

One export of the embedded MiniLM (fp32, then int8) under a temporary SYNTHPAT_CACHE, shared by
the module's tests; the reuse test exports a tiny BERT folder of its own.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.embeddings import encode_texts, load_encoder

MODEL = "embedded:minilm-l6"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("synthpat-cache")
        mp.setenv("SYNTHPAT_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def abstracts(uspto_path) -> list[str]:
    df = pd.read_json(uspto_path, lines=True, nrows=64)
    df = df[df.abstract.str.len() > 0].head(16)
    return (df.title + ". " + df.abstract).tolist()


@pytest.fixture(scope="module")
def torch_vectors(abstracts) -> np.ndarray:
    return encode_texts(abstracts, load_encoder(MODEL, 256, backend="torch"))


def test_onnx_fp32_matches_torch_on_real_abstracts(cache, abstracts, torch_vectors):
    from tasks.onnx_encoder import OnnxEncoder

    enc = load_encoder(MODEL, 256, backend="auto")  # the CPU: ONNX
    assert isinstance(enc, OnnxEncoder) and enc.quantize == "none"
    assert enc.folder.parent == cache / "onnx"
    # Passes of 1, 3 and 8 texts pad differently; the vectors may not depend on it.
    for size in (1, 3, 8):
        got = encode_texts(abstracts, enc, batch_size=size)
        assert got.shape == (16, 384) and got.dtype == np.float32
        assert np.abs(got - torch_vectors).max() < 1e-4, size
    # Truncation at the token limit matches too (a text far past 256 tokens).
    long = [" ".join(abstracts) * 2]
    ref = encode_texts(long, load_encoder(MODEL, 256, backend="torch"))
    assert np.abs(encode_texts(long, enc) - ref).max() < 1e-4


def test_int8_runs_and_reports_its_difference(cache, abstracts, torch_vectors):
    enc = load_encoder(MODEL, 256, backend="onnx", quantize="int8")
    got = encode_texts(abstracts, enc)
    cos = (got * torch_vectors).sum(axis=1)
    diff = np.abs(got - torch_vectors).max()
    print(f"int8 vs torch fp32: mean cosine {cos.mean():.4f}, min {cos.min():.4f}, max abs {diff}")
    # Measured on these 16 abstracts: mean cosine 0.994, min 0.992, max abs 0.026.
    assert cos.mean() > 0.98 and cos.min() > 0.95
    assert diff > 1e-3  # really quantized, not the fp32 model again
    meta = json.loads((enc.folder / "encoder.json").read_text())
    assert meta["quantize"] == "int8"
    fp32 = load_encoder(MODEL, 256, backend="onnx").folder
    assert (
        enc.folder != fp32
        and (enc.folder / "model.onnx").stat().st_size < (fp32 / "model.onnx").stat().st_size
    )


def test_export_is_made_once_per_content(tmp_path, monkeypatch):
    from tiny_bert import build_tiny_bert

    import tasks.onnx_encoder as onnx_encoder

    monkeypatch.setenv("SYNTHPAT_CACHE", str(tmp_path / "cache"))
    calls = []
    real_export = onnx_encoder._export_fp32

    def counted(folder, tmp, content):
        calls.append(folder)
        real_export(folder, tmp, content)

    monkeypatch.setattr(onnx_encoder, "_export_fp32", counted)
    model = build_tiny_bert(tmp_path / "tiny")
    first = onnx_encoder.onnx_model_dir(model)
    stamp = first.stat().st_mtime_ns
    texts = ["wheelchair ramp device", "hearing sound ear"]
    vecs = encode_texts(texts, load_encoder(model, 32, backend="onnx"))
    assert len(calls) == 1
    ref = encode_texts(texts, load_encoder(model, 32, backend="torch"))
    assert np.abs(vecs - ref).max() < 1e-4
    # Loaded again (a new process reads the same folder): no second export.
    onnx_encoder._HASHES.clear()
    assert onnx_encoder.onnx_model_dir(model) == first and len(calls) == 1
    assert first.stat().st_mtime_ns == stamp
    assert not list(first.parent.glob(".*tmp-*"))  # no temp folder left behind
    # Another model in the same folder (new weights, new vocabulary): a new export.
    build_tiny_bert(tmp_path / "tiny", extra_words=("zebra",))
    second = onnx_encoder.onnx_model_dir(model)
    assert second != first and len(calls) == 2


def test_embed_texts_keeps_each_backend_in_its_own_cache(cache, tmp_path, abstracts):
    import orchestrator.embeddings as emb
    from config.fidelity import EncoderConfig

    onnx, torch = EncoderConfig(backend="onnx"), EncoderConfig()
    a = emb.embed_texts(abstracts[:4], onnx, tmp_path, use_ray=False)
    b = emb.embed_texts(abstracts[:4], torch, tmp_path, use_ray=False)
    assert np.abs(a - b).max() < 1e-4
    assert emb.cache_stats(tmp_path, onnx) == {"vectors": 4, "shards": 1}
    assert emb.cache_stats(tmp_path, torch) == {"vectors": 4, "shards": 1}
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_frozen_head_trained_on_onnx_is_served_by_onnx(cache, tmp_path, abstracts):
    from serve.server import ClassifierServer
    from tasks.checkpoint import FrozenHeadClassifier, save_classifier
    from tasks.onnx_encoder import OnnxEncoder

    rng = np.random.default_rng(0)
    labels = ["A01B", "G06F", "H01L"]
    head = {"w": rng.normal(size=(3, 384)).astype(np.float32), "b": np.zeros(3, np.float32)}
    clf = FrozenHeadClassifier(
        head, MODEL, 256, encoder_backend="onnx", labels=labels, names=labels
    )
    path = str(save_classifier(tmp_path / "ckpt", clf))
    server = ClassifierServer({"checkpoint": path, "trial_id": "t", "num_gpus": 0})
    got = server.predict_proba(abstracts[:6])
    assert isinstance(server.classifier.encoder, OnnxEncoder)
    as_torch = FrozenHeadClassifier(
        head, MODEL, 256, encoder_backend="torch", labels=labels, names=labels
    )
    np.testing.assert_allclose(got, as_torch.predict_proba(abstracts[:6]), atol=1e-4)
