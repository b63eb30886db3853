"""embed_texts with the embedded MiniLM: local path, Ray Data actors, and the cache."""

import numpy as np

import orchestrator.embeddings as emb
from config.fidelity import EncoderConfig

TEXTS = [
    "A wheelchair with motorized wheels and a joystick controller.",
    "A hearing aid with a directional microphone array.",
    "A wheelchair with motorized wheels and a joystick controller.",
    "Etching a semiconductor wafer with a plasma.",
]


def test_local_then_ray_share_one_cache(tmp_path, monkeypatch):
    enc = EncoderConfig(batch_size=8)
    local = emb.embed_texts(TEXTS, enc, tmp_path, use_ray=False)
    assert local.shape == (4, 384) and local.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(local, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(local[0], local[2])
    assert emb.cache_stats(tmp_path, enc) == {"vectors": 3, "shards": 1}

    # Everything is cached now: computing anything would be a bug.
    def _no_compute(texts, encoder):
        raise AssertionError(f"re-embedded {len(texts)} texts")

    monkeypatch.setattr(emb, "encode_local", _no_compute)
    again = emb.embed_texts(TEXTS[::-1], enc, tmp_path, use_ray=False)
    np.testing.assert_array_equal(again, local[::-1])
    monkeypatch.undo()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024 * 1024)
    try:
        new = ["A braille display with refreshable pins."]
        fresh = emb.embed_texts([*new, *TEXTS], enc, tmp_path)  # Ray is up: actors
        np.testing.assert_array_equal(fresh[1:], local)
        assert emb.cache_stats(tmp_path, enc) == {"vectors": 4, "shards": 2}
        # The actor's vectors equal this process's vectors for the same text.
        other = tmp_path / "other"
        via_ray = emb.embed_texts(TEXTS[:2], enc, other)
        np.testing.assert_allclose(via_ray, local[:2], atol=1e-5)
        np.testing.assert_allclose(
            fresh[0], emb.embed_texts(new, enc, tmp_path / "third", use_ray=False)[0], atol=1e-5
        )
    finally:
        ray.shutdown()


def test_length_passes_give_the_vectors_of_one_text_at_a_time():
    """encode_texts on a CPU (passes cut by length) gives each text's vector alone."""
    from tasks.embeddings import encode_texts, load_encoder

    minilm = load_encoder("embedded:minilm-l6", 128)
    long = "A semiconductor device with a gate electrode on a substrate and a channel."
    texts = ["A gate electrode.", "word " * 90, long, "x", "word " * 30]
    got = encode_texts(texts, minilm)
    want = np.stack([encode_texts([t], minilm, batch_size=1)[0] for t in texts])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
