"""The content-addressed embedding cache: addresses, partial hits, order, shards."""

import numpy as np

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
