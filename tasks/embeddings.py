"""Sentence embeddings of patent text with a sentence-transformers encoder (no Ray here).

`load_encoder` resolves the model source (`embedded:minilm-l6`, a local folder, or a hub id) and
`encode_texts` turns texts into L2-normalized float32 vectors. `encoder_key` names an encoder
configuration for content-addressed caching: the same key and text always give the same vector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped when the way vectors are computed changes, so old cache entries stop matching.
EMBEDDING_FORMAT = 1

#: Texts per forward pass where the caller does not say. On a CPU small passes are faster: the
#: MiniLM encoder on 2 cores, 512 real abstracts at up to 256 tokens, sorted by length: 42 texts/s
#: at 8 per pass, 37 at 32, 33 at 64; one Serve batch of 32 mixed lengths: 41 at 8 per pass, 23
#: as one pass (BENCHMARKS.md). A pass pads every text to its longest, attention grows with the
#: square of that length, and a CPU has no idle lanes for a big batch to fill. A GPU has them.
CPU_FORWARD_BATCH = 8
GPU_FORWARD_BATCH = 64


def forward_batch_size(device: Any) -> int:
    """The default texts per forward pass on a device (`cpu`, `cuda:0`, a torch.device)."""
    return CPU_FORWARD_BATCH if str(device).startswith("cpu") else GPU_FORWARD_BATCH


def encoder_key(model: str, max_length: int) -> str:
    """A short stable id of an encoder configuration (model identity, token limit, format).

    For a local folder the identity is its files' names and sizes plus config.json, so a folder
    replaced by another model gets a new key; embedded and hub models are named by their source.
    """
    ident: dict[str, Any] = {"model": model, "max_length": max_length, "fmt": EMBEDDING_FORMAT}
    path = Path(model).expanduser()
    if not model.startswith("embedded:") and path.is_dir():
        ident["files"] = sorted(
            (str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file()
        )
        cfg = path / "config.json"
        ident["config"] = cfg.read_text() if cfg.is_file() else ""
    blob = json.dumps(ident, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def text_keys(key: str, texts: Sequence[str]) -> np.ndarray:
    """One 32-byte sha256 per text, salted with the encoder key: the cache address of a vector."""
    salt = key.encode() + b"\0"
    digests = [hashlib.sha256(salt + t.encode("utf-8")).digest() for t in texts]
    return np.array(digests, dtype="S32")


def load_encoder(model: str, max_length: int, device: str | None = None) -> Any:
    """A SentenceTransformer for a config model source; never reaches a hub when offline."""
    from sentence_transformers import SentenceTransformer

    from tasks.models import resolve_model

    st = SentenceTransformer(resolve_model(model), device=device or "cpu")
    st.max_seq_length = max_length
    return st


def encode_texts(
    texts: Sequence[str], encoder: Any, batch_size: int | None = None, progress: bool = False
) -> np.ndarray:
    """Embed texts with a loaded encoder: (n, dim) float32, each row of unit length.

    `batch_size`: texts per forward pass (sentence-transformers sorts them by length first);
    None picks `forward_batch_size` for the encoder's device."""
    if len(texts) == 0:
        dim = encoder.get_sentence_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    vecs = encoder.encode(
        list(texts),
        batch_size=batch_size or forward_batch_size(encoder.device),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=progress,
    )
    return np.asarray(vecs, dtype=np.float32)
