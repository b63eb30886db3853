"""Sentence encoders on the CPU through ONNX Runtime: exported once per content hash, then reused.

`onnx_model_dir(source, quantize)` returns a folder holding `model.onnx` (the whole
sentence-transformers pipeline: transformer, pooling, normalization, so one session call gives
the sentence vectors), the tokenizer and `encoder.json`. It lives under
`cache_root()/onnx/<key>/`, the key hashing the source folder's bytes and the export settings:
a folder replaced by another model gets a new export, and a second load of the same one exports
nothing. A folder is written under a temp name and moved into place by `replace_dir`, so two
processes exporting at once both finish and one copy wins.

`OnnxEncoder` runs it with the slice of the `SentenceTransformer` interface that
`tasks.embeddings.encode_texts` uses (`encode`, `device`, `max_seq_length`,
`get_sentence_embedding_dimension`): texts sorted by length, passes of `batch_size`, padding to
the longest in a pass, truncation at `max_seq_length`, as sentence-transformers does.

Why not `SentenceTransformer(path, backend="onnx")`: that goes through optimum-onnx, whose
releases (0.1.0) require transformers < 4.58, and this project runs transformers 5. The export
here is `torch.onnx.export` (the torch.export-based exporter) and the int8 model
`onnxruntime.quantization.quantize_dynamic` with the settings of optimum's `avx2` preset
(unsigned 8-bit weights per channel, full range), the one sentence-transformers ships as
`model_quint8_avx2.onnx`: signed weights on a CPU without VNNI saturate in the u8 x s8 products
(measured on MiniLM, 64 patents, on AVX2: signed per-tensor weights gave a worst cosine to the
fp32 vectors of 0.90; unsigned per channel a worst of 0.988 and a mean of 0.994).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.embeddings import QUANTIZE
from tasks.files import replace_dir, write_json_atomic
from tasks.models import cache_root, resolve_model

#: Bumped when the export below changes, so older exports stop matching.
EXPORT_FORMAT = 1
ENCODER_JSON = "encoder.json"
PIPELINE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MODEL_FILE = "model.onnx"
#: Protobuf's limit on one ONNX file; a model over it keeps its weights beside it.
_PROTO_LIMIT = 1_800_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostDevice:
    """Where ONNX Runtime runs: the CPU. Reads like a torch.device (`.type`, `str()`)."""

    type: str = "cpu"

    def __str__(self) -> str:
        return self.type


def onnx_model_dir(source: str, quantize: str = "none") -> Path:
    """The cached ONNX export of a sentence-transformers folder (or hub id), made on first use.

    `quantize="int8"` quantizes the fp32 export (made first if missing) into its own folder.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r}; expected one of {QUANTIZE}")
    folder = _local_folder(source)
    content = folder_hash(folder)
    target = _export_root() / _export_key(content, quantize)
    if (target / ENCODER_JSON).is_file():
        return target
    log.info("exporting %s (quantize=%s) to ONNX in %s", folder, quantize, target)
    if quantize == "none":
        _write_export(target, lambda tmp: _export_fp32(folder, tmp, content))
    else:
        fp32 = onnx_model_dir(str(folder), "none")
        _write_export(target, lambda tmp: _export_int8(fp32, tmp))
    return target


def _export_root() -> Path:
    return cache_root() / "onnx"


def _export_key(content: str, quantize: str) -> str:
    settings = {"content": content, "quantize": quantize, "format": EXPORT_FORMAT}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def _local_folder(source: str) -> Path:
    resolved = resolve_model(source)
    if Path(resolved).is_dir():
        return Path(resolved)
    # A hub id (resolve_model refuses one when offline): its snapshot is a local folder too.
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(resolved))


_HASHES: dict[tuple, str] = {}


def folder_hash(folder: Path) -> str:
    """sha256 of every file's relative path and bytes under `folder` (sorted), memoized per
    process by the files' sizes and mtimes: a model folder's content identity."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stamp = (str(folder), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _HASHES:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(folder)).encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        _HASHES[stamp] = h.hexdigest()
    return _HASHES[stamp]


def _write_export(target: Path, write: Any) -> None:
    """Run `write(tmp)` into a fresh temp folder next to `target`, then move it into place;
    an export another process finished first is kept."""
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target, keep_existing=True)


def _pipeline(st: Any) -> Any:
    """A module from token tensors to sentence vectors: the SentenceTransformer's whole stack."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        # Named arguments, not **features: torch.export traces a fixed signature.
        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return self.st(features)["sentence_embedding"]

    return Pipeline().eval()


def _export_fp32(folder: Path, tmp: Path, content: str) -> None:
    """Export the folder's sentence-transformers pipeline to `tmp/model.onnx` (fp32)."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    tokenizer = st.tokenizer
    sample = tokenizer(
        ["A sample text to trace the encoder with.", "A shorter one."],
        padding=True,
        return_tensors="pt",
    )
    names = [k for k in tokenizer.model_input_names if k in sample]
    unknown = set(names) - set(PIPELINE_INPUTS)
    if unknown or "input_ids" not in names:
        raise ValueError(
            f"{folder}: its tokenizer gives {names}; the ONNX export takes {PIPELINE_INPUTS} "
            "(set the encoder's backend: torch)"
        )
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    params = sum(p.numel() * p.element_size() for p in st.parameters())
    # The exporter logs every op registry it skips (torchvision's) as a warning; they are noise.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on axis names and pytree specs
            program = torch.onnx.export(
                _pipeline(st),
                (),
                kwargs={k: sample[k] for k in names},
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_shapes={k: {0: batch, 1: seq} for k in names},
                dynamo=True,
                verbose=False,
            )
        program.save(str(tmp / MODEL_FILE), external_data=params > _PROTO_LIMIT)
    except Exception as e:
        raise RuntimeError(
            f"ONNX export of {folder} failed ({type(e).__name__}: {e}); set the encoder's "
            "backend: torch to run it with sentence-transformers"
        ) from e
    finally:
        quiet.setLevel(level)
    tokenizer.save_pretrained(str(tmp))
    write_json_atomic(
        tmp / ENCODER_JSON,
        {
            "source": str(folder),
            "content": content,
            "format": EXPORT_FORMAT,
            "quantize": "none",
            "inputs": names,
            "dimension": int(_dimension(st)),
            "torch": torch.__version__,
        },
    )


def _dimension(st: Any) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension; older ones lack the new name
    return (getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension)()


def _export_int8(fp32: Path, tmp: Path) -> None:
    """Dynamic int8 quantization of an fp32 export's MatMul weights (the `avx2` preset)."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = json.loads((fp32 / ENCODER_JSON).read_text())
    external = any(p.suffix != ".onnx" and p.name.startswith(MODEL_FILE) for p in fp32.iterdir())
    quantize_dynamic(
        str(fp32 / MODEL_FILE),
        str(tmp / MODEL_FILE),
        weight_type=QuantType.QUInt8,
        per_channel=True,
        reduce_range=False,
        op_types_to_quantize=["MatMul"],
        use_external_data_format=external,
    )
    for p in fp32.iterdir():  # the tokenizer files
        if p.is_file() and p.name != ENCODER_JSON and not p.name.startswith(MODEL_FILE):
            shutil.copy2(p, tmp / p.name)
    write_json_atomic(tmp / ENCODER_JSON, {**meta, "quantize": "int8", "from": str(fp32)})


def _intra_op_threads() -> int:
    """ONNX Runtime's threads: OMP_NUM_THREADS where set (Ray sets it to an actor's CPUs, and
    torch honours it; ONNX Runtime's own pool does not read it), else 0 (every core)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


class OnnxEncoder:
    """An exported sentence encoder run by ONNX Runtime on the CPU (see the module docstring)."""

    backend = "onnx"

    def __init__(self, folder: Path | str, max_seq_length: int):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / ENCODER_JSON).read_text())
        self.quantize = self.meta["quantize"]
        self.max_seq_length = int(max_seq_length)
        self.device = HostDevice()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _intra_op_threads()
        self.session = ort.InferenceSession(
            str(self.folder / MODEL_FILE), opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = list(self.meta["inputs"])

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.meta["dimension"])

    def _forward(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="np",
        )
        feed = {k: np.asarray(enc[k], dtype=np.int64) for k in self._inputs}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)

    def encode(
        self,
        sentences: Sequence[str],
        batch_size: int = 32,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """(n, dim) float32 vectors in input order; longest texts first, as sentence-transformers
        orders its passes (`convert_to_numpy` is accepted for its signature: always numpy)."""
        from tqdm.auto import tqdm

        texts = [str(t) for t in sentences]
        dim = self.get_sentence_embedding_dimension()
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="onnx batches", disable=not show_progress_bar):
            rows = order[start : start + batch_size]
            out[rows] = self._forward([texts[i] for i in rows])
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_onnx_encoder(source: str, max_length: int, quantize: str = "none") -> OnnxEncoder:
    """An `OnnxEncoder` of a config model source, exporting it first where no export exists."""
    return OnnxEncoder(onnx_model_dir(source, quantize), max_length)
