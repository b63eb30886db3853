"""Embeddings for every stage: Ray Data batched encoder actors plus a content-addressed cache.

`embed_texts(texts, encoder, cache_dir)` returns one vector per text, in order. Each vector is
addressed by sha256(encoder key, text), so a text already embedded by any stage or trial with the
same encoder is read from the cache, never embedded again. The cache is a folder of shards
`<encoder_key>/<shard>.keys.npy` (32-byte text digests) + `<shard>.vecs.npy` (float32 rows); a
shard is written vectors first and keys last, each through a rename, so a shard with keys is
complete and concurrent writers never corrupt each other (a duplicate row in two shards is
harmless). Missing texts are embedded by Ray Data actors (`map_batches` with a callable class)
when Ray is up, else in this process. The encoder's resolved backend (`encoder.backend`: torch by
default, ONNX Runtime on the CPU when asked) is part of the key; an ONNX model is exported before
the actors start (once per content hash, `tasks.onnx_encoder`), so they load it instead of each
exporting it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from config.fidelity import EncoderConfig
from tasks.embeddings import encoder_device
from tasks.files import save_npy_atomic


def embedding_cache_dir(run_dir: Path) -> Path:
    """The shared embedding cache of one study run: runs/<study>/cache/embeddings/."""
    return Path(run_dir) / "cache" / "embeddings"


class _EncodeBatches:
    """A Ray Data actor: loads the encoder once, then embeds the batches it is sent."""

    def __init__(
        self,
        model: str,
        max_length: int,
        forward_batch_size: int | None,
        device: str,
        backend: str = "torch",
        quantize: str = "none",
    ):
        from tasks.embeddings import load_encoder

        self.encoder = load_encoder(model, max_length, device, backend, quantize)
        self.forward_batch_size = forward_batch_size  # None: the device's default

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tasks.embeddings import encode_texts

        vecs = encode_texts([str(t) for t in batch["text"]], self.encoder, self.forward_batch_size)
        return {"i": batch["i"], "embedding": vecs}


def _export_once(encoder: EncoderConfig) -> None:
    """Make the ONNX export here, before the actors start, where the backend is ONNX."""
    from tasks.embeddings import resolve_backend

    if resolve_backend(encoder.backend, encoder_device(encoder), encoder.quantize) == "onnx":
        from tasks.onnx_encoder import onnx_model_dir

        onnx_model_dir(encoder.model, encoder.quantize)


def encode_with_ray(texts: Sequence[str], encoder: EncoderConfig) -> np.ndarray:
    """Embed texts with Ray Data batched actors (Ray must be initialized); rows in input order."""
    import ray.data

    _export_once(encoder)

    ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(
        _EncodeBatches,
        fn_constructor_kwargs={
            "model": encoder.model,
            "max_length": encoder.max_length,
            "forward_batch_size": encoder.forward_batch_size,
            "device": encoder_device(encoder),
            "backend": encoder.backend,
            "quantize": encoder.quantize,
        },
        batch_size=encoder.batch_size,
        compute=ray.data.ActorPoolStrategy(size=encoder.concurrency),
        num_cpus=encoder.num_cpus_per_actor,
        num_gpus=encoder.num_gpus_per_actor,
    )
    order: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        order.append(np.asarray(batch["i"], dtype=np.int64))
        parts.append(np.asarray(batch["embedding"], dtype=np.float32))
    # Ray Data does not promise order across actors; the carried index restores it.
    idx = np.concatenate(order)
    vecs = np.concatenate(parts)
    out = np.empty_like(vecs)
    out[idx] = vecs
    return out


def encode_local(texts: Sequence[str], encoder: EncoderConfig) -> np.ndarray:
    """Embed texts in this process (no Ray): the path for unit tests and Ray-less callers."""
    from tasks.embeddings import encode_texts, load_encoder

    enc, device = encoder, encoder_device(encoder)
    model = load_encoder(enc.model, enc.max_length, device, enc.backend, enc.quantize)
    return encode_texts(texts, model, encoder.forward_batch_size, progress=len(texts) > 256)


class EmbeddingCache:
    """Content-addressed vectors of one encoder configuration under `cache_dir/<encoder_key>/`."""

    def __init__(self, cache_dir: Path, key: str):
        self.key = key
        self.dir = Path(cache_dir) / key
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: list[Path] = []

    def refresh(self) -> None:
        """Index every complete shard (those whose keys file exists)."""
        self._index.clear()
        self._shards = sorted(self.dir.glob("*.keys.npy")) if self.dir.is_dir() else []
        for s, path in enumerate(self._shards):
            for row, k in enumerate(np.load(path)):
                self._index.setdefault(bytes(k), (s, row))

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, vectors of the found keys in order, or None when none is found)."""
        self.refresh()
        hits = [self._index.get(bytes(k)) for k in keys]
        found = np.array([h is not None for h in hits], dtype=bool)
        if not found.any():
            return found, None
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for pos, h in enumerate(hits):
            if h is not None:
                by_shard.setdefault(h[0], []).append((pos, h[1]))
        out: np.ndarray | None = None
        pos_of = np.cumsum(found) - 1  # position of each found key among the found ones
        for s, pairs in by_shard.items():
            vecs = np.load(_vecs_path(self._shards[s]), mmap_mode="r")
            if out is None:
                out = np.empty((int(found.sum()), vecs.shape[1]), dtype=np.float32)
            rows = np.array([r for _, r in pairs])
            out[pos_of[[p for p, _ in pairs]]] = vecs[rows]
        return found, out

    def add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """Write one new shard (vectors first, keys last; each through a rename)."""
        if len(keys) == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = uuid.uuid4().hex[:16]
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        save_npy_atomic(self.dir / f"{shard}.vecs.npy", vecs)
        save_npy_atomic(self.dir / f"{shard}.keys.npy", np.asarray(keys, dtype="S32"))


def _vecs_path(keys_path: Path) -> Path:
    return keys_path.with_name(keys_path.name.replace(".keys.npy", ".vecs.npy"))


def embed_texts(
    texts: list[str], encoder: EncoderConfig, cache_dir: Path, *, use_ray: bool | None = None
) -> np.ndarray:
    """Embeddings of `texts` (n, dim) float32 in order, computing only texts not yet cached.

    `use_ray=None` uses Ray Data actors when Ray is initialized and this process otherwise.
    """
    from tasks.embeddings import config_encoder_key, text_keys

    if use_ray is None:
        use_ray = _ray_is_up()
    cache = EmbeddingCache(cache_dir, config_encoder_key(encoder))
    keys = text_keys(cache.key, texts)
    found, cached = cache.lookup(keys)
    missing = np.flatnonzero(~found)
    new_vecs: np.ndarray | None = None
    if len(missing):
        # A text repeated within the request is embedded once.
        uniq_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
        todo = [texts[i] for i in missing[first]]
        encode = encode_with_ray if use_ray else encode_local
        uniq_vecs = encode(todo, encoder)
        cache.add(uniq_keys, uniq_vecs)
        new_vecs = uniq_vecs[inverse.reshape(-1)]
    parts = [v for v in (cached, new_vecs) if v is not None]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    if cached is not None:
        out[found] = cached
    if new_vecs is not None:
        out[missing] = new_vecs
    return out


def _ray_is_up() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return bool(ray.is_initialized())


def cache_stats(cache_dir: Path, encoder: EncoderConfig) -> dict[str, Any]:
    """How many vectors and shards the cache holds for an encoder (for logs and tests)."""
    from tasks.embeddings import config_encoder_key

    cache = EmbeddingCache(cache_dir, config_encoder_key(encoder))
    cache.refresh()
    return {"vectors": len(cache._index), "shards": len(cache._shards)}
