"""The content-addressed embedding cache: addresses, partial hits, order, shards."""

import numpy as np
import pytest

from orchestrator.embeddings import EmbeddingCache
from tasks.embeddings import encoder_key, text_keys


def test_text_keys_depend_on_text_and_encoder():
    k1 = text_keys("enc-a", ["x", "y", "x"])
    k2 = text_keys("enc-b", ["x"])
    assert k1.dtype == np.dtype("S32") and len(k1) == 3
    assert k1[0] == k1[2] and k1[0] != k1[1]
    assert k1[0] != k2[0]


def test_encoder_key_changes_with_token_limit_and_folder(tmp_path):
    assert encoder_key("embedded:minilm-l6", 256) == encoder_key("embedded:minilm-l6", 256)
    assert encoder_key("embedded:minilm-l6", 256) != encoder_key("embedded:minilm-l6", 128)
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    before = encoder_key(str(tmp_path), 64)
    (tmp_path / "config.json").write_text('{"hidden_size": 16}')
    assert encoder_key(str(tmp_path), 64) != before


def test_cache_returns_hits_in_request_order_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    texts = [f"text {i}" for i in range(10)]
    keys = text_keys("k", texts)
    vecs = rng.normal(size=(10, 4)).astype(np.float32)
    cache = EmbeddingCache(tmp_path, "k")
    cache.add(keys[:4], vecs[:4])
    cache.add(keys[6:], vecs[6:])
    # A second instance sees what the first wrote (another stage or trial).
    other = EmbeddingCache(tmp_path, "k")
    query = keys[[9, 0, 5, 3, 7]]
    found, got = other.lookup(query)
    assert found.tolist() == [True, True, False, True, True]
    np.testing.assert_array_equal(got, vecs[[9, 0, 3, 7]])
    assert len(list((tmp_path / "k").glob("*.keys.npy"))) == 2


def test_cache_miss_everywhere_and_other_encoder_is_separate(tmp_path):
    keys = text_keys("k", ["a", "b"])
    EmbeddingCache(tmp_path, "k").add(keys, np.ones((2, 3), np.float32))
    found, got = EmbeddingCache(tmp_path, "other").lookup(keys)
    assert found.tolist() == [False, False] and got is None


def test_shard_without_keys_file_is_ignored(tmp_path):
    # A writer killed between the vectors and the keys leaves no visible shard.
    (tmp_path / "k").mkdir()
    np.save(tmp_path / "k" / "dead.vecs.npy", np.ones((1, 3), np.float32))
    found, got = EmbeddingCache(tmp_path, "k").lookup(text_keys("k", ["a"]))
    assert found.tolist() == [False] and got is None


def test_encoder_key_differs_by_backend_and_quantization():
    from config.fidelity import EncoderConfig
    from tasks.embeddings import config_encoder_key

    torch_key = encoder_key("embedded:minilm-l6", 256)
    assert encoder_key("embedded:minilm-l6", 256, "torch", "none") == torch_key
    onnx_key = encoder_key("embedded:minilm-l6", 256, "onnx", "none")
    int8_key = encoder_key("embedded:minilm-l6", 256, "onnx", "int8")
    assert len({torch_key, onnx_key, int8_key}) == 3
    # A config's key is its resolved backend's: the default torch keeps the keys from before
    # the ONNX backend; auto is ONNX on the CPU, torch on a GPU.
    assert config_encoder_key(EncoderConfig()) == torch_key
    assert config_encoder_key(EncoderConfig(backend="auto")) == onnx_key
    assert config_encoder_key(EncoderConfig(backend="auto", num_gpus_per_actor=0.5)) == torch_key
    assert config_encoder_key(EncoderConfig(backend="auto", quantize="int8")) == int8_key
    with pytest.raises(ValueError, match="resolve it first"):
        encoder_key("embedded:minilm-l6", 256, "auto")


@pytest.mark.parametrize(
    "backend, device, quantize, expected",
    [
        ("auto", None, "none", "onnx"),
        ("auto", "cpu", "int8", "onnx"),
        ("auto", "cuda", "none", "torch"),
        ("torch", "cpu", "none", "torch"),
        ("onnx", "cpu", "int8", "onnx"),
    ],
)
def test_resolve_backend(backend, device, quantize, expected):
    from tasks.embeddings import resolve_backend

    assert resolve_backend(backend, device, quantize) == expected


@pytest.mark.parametrize(
    "backend, device, quantize, message",
    [
        ("torch", "cpu", "int8", "quantize=int8 needs the ONNX backend"),
        ("auto", "cuda:0", "int8", "quantize=int8 needs the ONNX backend"),
        ("onnx", "cuda", "none", "backend=onnx runs on the CPU"),
        ("tensorrt", "cpu", "none", "backend='tensorrt'; expected one of"),
        ("onnx", "cpu", "int4", "quantize='int4'; expected one of"),
    ],
)
def test_resolve_backend_refuses_what_cannot_run(backend, device, quantize, message):
    from tasks.embeddings import resolve_backend

    with pytest.raises(ValueError, match=message):
        resolve_backend(backend, device, quantize)
