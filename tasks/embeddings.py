"""Sentence embeddings of patent text with a sentence-transformers encoder (no Ray here).

`load_encoder` resolves the model source (`embedded:minilm-l6`, a local folder, or a hub id) and
the backend: sentence-transformers on torch, or ONNX Runtime on the CPU (`tasks.onnx_encoder`,
exported once per content hash); `resolve_backend` is the rule (`auto`: ONNX on the CPU, torch on
CUDA). `encode_texts` turns texts into L2-normalized float32 vectors with either. `encoder_key`
names an encoder configuration for content-addressed caching: the same key and text always give
the same vector, and vectors of different backends or quantizations never share a key.
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


BACKENDS = ("auto", "torch", "onnx")
QUANTIZE = ("none", "int8")


def _on_cpu(device: Any) -> bool:
    return device is None or str(device).startswith("cpu")


def resolve_backend(backend: str, device: Any = None, quantize: str = "none") -> str:
    """The backend that runs an encoder (`torch` or `onnx`) on `device` (None: the CPU).

    `auto` is ONNX Runtime on the CPU and torch on CUDA. `onnx` runs on the CPU only (the
    onnxruntime package has no CUDA provider), and `quantize=int8` only with ONNX.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {BACKENDS}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r}; expected one of {QUANTIZE}")
    cpu = _on_cpu(device)
    resolved = ("onnx" if cpu else "torch") if backend == "auto" else backend
    if resolved == "onnx" and not cpu:
        raise ValueError(
            f"backend=onnx runs on the CPU, not on device={device}; use backend=auto or torch"
        )
    if quantize != "none" and resolved != "onnx":
        raise ValueError(
            f"quantize={quantize} needs the ONNX backend (backend=onnx or auto on the CPU); "
            f"backend={backend} on device={device or 'cpu'} runs torch"
        )
    return resolved


def encoder_device(encoder: Any) -> str:
    """Where an `EncoderConfig`'s Ray Data actors run: `cuda` when given GPUs, else `cpu`."""
    return "cuda" if encoder.num_gpus_per_actor > 0 else "cpu"


def config_encoder_key(encoder: Any) -> str:
    """`encoder_key` of an `EncoderConfig`, its backend resolved for where its actors run."""
    backend = resolve_backend(encoder.backend, encoder_device(encoder), encoder.quantize)
    return encoder_key(encoder.model, encoder.max_length, backend, encoder.quantize)


def encoder_key(model: str, max_length: int, backend: str = "torch", quantize: str = "none") -> str:
    """A short stable id of an encoder configuration (model identity, token limit, the backend
    that runs it, format).

    For a local folder the identity is its files' names and sizes plus config.json, so a folder
    replaced by another model gets a new key; embedded and hub models are named by their source.
    `backend` is a resolved one (`torch` or `onnx`, see `resolve_backend`); torch keys are the
    ones from before the ONNX backend existed, so caches written then stay valid.
    """
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend={backend!r}: resolve it first (torch or onnx)")
    ident: dict[str, Any] = {"model": model, "max_length": max_length, "fmt": EMBEDDING_FORMAT}
    if backend != "torch" or quantize != "none":
        from tasks.onnx_encoder import EXPORT_FORMAT

        ident.update(backend=backend, quantize=quantize, export=EXPORT_FORMAT)
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


def load_encoder(
    model: str,
    max_length: int,
    device: str | None = None,
    backend: str = "torch",
    quantize: str = "none",
) -> Any:
    """An encoder for a config model source; never reaches a hub when offline.

    `backend` as in `resolve_backend`; `torch` (the default here and in the config) gives a
    SentenceTransformer (what a SetFit body trains), config paths pass the config's. `onnx` gives an
    `OnnxEncoder`, exported on first use (`quantize=int8`: its dynamically quantized copy).
    """
    from tasks.models import resolve_model

    if resolve_backend(backend, device, quantize) == "onnx":
        from tasks.onnx_encoder import load_onnx_encoder

        return load_onnx_encoder(model, max_length, quantize)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(resolve_model(model), device=device or "cpu")
    st.max_seq_length = max_length
    return st


#: How much padding a length-aware pass may add, as a share of its texts' real tokens.
PAD_SLACK = 0.15


def length_passes(lengths: Sequence[int], most: int, slack: float = PAD_SLACK) -> list[list[int]]:
    """Indices of texts (by their token `lengths`) in forward passes of similar lengths.

    Sorted by length, a pass grows while it has fewer than `most` texts and padding each of its
    texts to the longest adds at most `slack` of their real tokens. On a CPU every padded token
    costs what a real one does: a Serve batch of 16 mixed-length patents in passes of 8 ran at
    ~19 texts/s a core, one text a pass at ~26, passes of similar lengths at ~34 (BENCHMARKS.md).
    A sort with fixed-size passes (sentence-transformers' `encode`) pads freely where lengths are
    far apart, as in a small batch; this cut is ours."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    passes: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        n = max(1, int(lengths[i]))  # the longest so far: the sort is ascending
        if cur and (len(cur) >= most or (len(cur) + 1) * n > (1 + slack) * (real + n)):
            passes.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += n
    if cur:
        passes.append(cur)
    return passes


def token_lengths(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[int]:
    """Tokens of each text as the encoder sees it (special tokens in, cut at `max_length`)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return [len(x) for x in ids]


def encode_texts(
    texts: Sequence[str], encoder: Any, batch_size: int | None = None, progress: bool = False
) -> np.ndarray:
    """Embed texts with a loaded encoder: (n, dim) float32, each row of unit length.

    `batch_size`: texts per forward pass (sentence-transformers sorts them by length first);
    None picks `forward_batch_size` for the encoder's device, and on a CPU cuts the passes by
    length (`length_passes`) so that they pad little."""
    if len(texts) == 0:
        dim = encoder.get_sentence_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    texts = list(texts)
    size = batch_size or forward_batch_size(encoder.device)
    tokenizer = getattr(encoder, "tokenizer", None)
    if batch_size is not None or not _on_cpu(encoder.device) or tokenizer is None:
        vecs = encoder.encode(
            texts,
            batch_size=size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
        return np.asarray(vecs, dtype=np.float32)
    lengths = token_lengths(tokenizer, texts, encoder.max_seq_length)
    passes = length_passes(lengths, size)
    out: np.ndarray | None = None
    from tqdm.auto import tqdm

    for idx in tqdm(passes, desc="embedding", unit="pass", disable=not progress):
        vecs = encoder.encode(
            [texts[i] for i in idx],
            batch_size=len(idx),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        if out is None:
            out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
        out[idx] = vecs
    assert out is not None
    return out
