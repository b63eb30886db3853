"""`ClassifierServer`: one loaded checkpoint, its labels and model card; no Ray in here.

The Serve deployment (`serve.app`) and the benchmark's unbatched baseline both wrap it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from config.trials import needs_cuda
from serve.metrics import ServeMetrics
from tasks.files import replace_dir

log = logging.getLogger(__name__)
#: Families whose inference runs in torch (an ensemble may hold such members): a GPU helps them.
TORCH_FAMILIES = ("finetune", "frozen_head", "setfit", "ensemble")


def serving_precision(family: str, stored: str, cuda: bool) -> str:
    """The trained precision where the hardware runs it well; fp32 otherwise.

    Only fine-tuned transformers have a precision to choose; fp16 matmuls on CPU are slow or
    missing, so a CPU replica runs fp16 checkpoints in fp32 (bf16 runs on CPU).
    """
    if family != "finetune":
        return "fp32"
    if not cuda and needs_cuda(stored):
        return "fp32"
    return stored


def serving_device(family: str, num_gpus: float, cuda: bool) -> str:
    """`cuda` where the replica was given a GPU (or a fraction) and the family runs in torch."""
    return "cuda" if family in TORCH_FAMILIES and num_gpus > 0 and cuda else "cpu"


class ClassifierServer:
    """One loaded checkpoint: model calls, label metadata and the model card. No Ray in here."""

    def __init__(self, spec: dict[str, Any], classifier: Any = None):
        self.spec = spec
        self.path = local_checkpoint(spec)
        doc = read_card(self.path)
        self.family = doc["family"]
        num_gpus = float(spec.get("num_gpus", 0))
        wants_gpu = self.family in TORCH_FAMILIES and num_gpus > 0
        cuda = _cuda_available() if wants_gpu else False
        if wants_gpu and not cuda:
            log.warning("num_gpus=%s but torch sees no CUDA device; serving on CPU", num_gpus)
        self.device = serving_device(self.family, num_gpus, cuda)
        self.precision = serving_precision(self.family, doc.get("precision", "fp32"), cuda)
        if classifier is None:
            classifier = load_any(self.path, device=self.device, precision=self.precision)
        self.classifier = classifier
        self.doc = doc
        self.trial_id = str(spec["trial_id"])
        self.codes = list(classifier.labels)
        self.names = list(classifier.names)
        self.thresholds = np.asarray(classifier.thresholds, dtype=np.float32)
        self.metrics = ServeMetrics()
        self.batching: dict[str, Any] = {}
        #: The HTTP front, set by the Serve deployment (serve.ingress.ingress_in_effect).
        self.ingress = "none"
        self.ready = True
        # Fine-tuned models and tokenizers are not safe to call from two threads at once.
        self._lock = threading.Lock()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """One model call over `texts`, counted for /metrics."""
        with self._lock:
            t0 = time.perf_counter()
            probs = self.classifier.predict_proba(list(texts))
            self.metrics.model_seconds.observe(time.perf_counter() - t0)
        self.metrics.model_calls.inc()
        self.metrics.batch_texts.observe(len(texts))
        return np.asarray(probs, dtype=np.float32)

    def label_infos(self) -> list[dict[str, Any]]:
        return [
            {"index": i, "code": c, "name": n, "threshold": float(t)}
            for i, (c, n, t) in enumerate(zip(self.codes, self.names, self.thresholds, strict=True))
        ]

    def model_info(self) -> dict[str, Any]:
        row = self.spec.get("row", {})
        metrics = {**self.doc.get("metrics", {})}
        metrics.update({k: v for k, v in row.items() if k.startswith(("val_", "test_"))})
        mix = {**self.doc.get("mix", {})}
        for key in ("regime", "arm", "ratio", "real_fraction", "generator", "strategy", "variant"):
            if key in row and key not in mix:
                mix[key] = row[key]
        return {
            "trial_id": self.trial_id,
            "family": self.family,
            "precision": self.precision,
            "device": self.device,
            "checkpoint": str(self.path),
            "select_metric": self.spec.get("select_metric", ""),
            "metrics": metrics,
            "mix": mix,
            "provenance": self.doc.get("provenance", {}),
            "batching": dict(self.batching),
            "ingress": self.ingress,
        }


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def card_file(folder: Path) -> Path:
    """The file that makes `folder` a classifier: synthpat.json of an exported folder
    (`synthpat export`), else a checkpoint's classifier.json."""
    from tasks.checkpoint import CLASSIFIER_JSON
    from tasks.export import EXPORT_JSON

    export = Path(folder) / EXPORT_JSON
    return export if export.is_file() else Path(folder) / CLASSIFIER_JSON


def read_card(folder: Path) -> dict[str, Any]:
    """The classifier document of a checkpoint or an exported folder."""
    from tasks.checkpoint import read_classifier_json
    from tasks.export import is_export, read_export_json

    return read_export_json(folder) if is_export(folder) else read_classifier_json(folder)


def load_any(folder: Path, device: str | None = None, precision: str | None = None) -> Any:
    """A checkpoint's or an exported folder's classifier."""
    from tasks.checkpoint import load_classifier
    from tasks.export import is_export, load_export

    loader = load_export if is_export(folder) else load_classifier
    return loader(folder, device=device, precision=precision)


def server_spec(
    selection: Any, num_gpus: float = 0, storage_path: str | None = None
) -> dict[str, Any]:
    """What a replica needs to build its `ClassifierServer` from a `Selection` (plain data).

    With `storage_path` (a cluster's shared storage, `resources.storage_path`) the checkpoint is
    copied there too, and a replica on a node without the run's folder loads that copy."""
    local = Path(selection.path).resolve()
    spec = {
        "checkpoint": str(local),
        "trial_id": selection.trial_id,
        "select_metric": selection.metric,
        "row": selection.row,
        "num_gpus": num_gpus,
    }
    if storage_path:
        from tasks.storage import storage_uri

        spec["checkpoint_uri"] = stage_checkpoint(local, storage_uri(storage_path))
    return spec


def _checkpoint_digest(folder: Path) -> str:
    """A short id of a checkpoint folder's contents: its files' names and sizes, and the card."""
    import hashlib

    files = sorted(
        (str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file()
    )
    blob = repr(files).encode() + card_file(folder).read_bytes()
    return hashlib.sha256(blob).hexdigest()[:12]


def stage_checkpoint(folder: Path, storage_path: str) -> str:
    """Copy a checkpoint folder to `<storage_path>/serve/<name>-<digest>` once; return its URI.

    Content-addressed, so a copy already there is the same checkpoint and is not sent again."""
    import pyarrow.fs as pafs

    uri = f"{storage_path.rstrip('/')}/serve/{folder.name}-{_checkpoint_digest(folder)}"
    fs, root = pafs.FileSystem.from_uri(uri)
    card = card_file(folder)
    if fs.get_file_info(f"{root}/{card.name}").type == pafs.FileType.NotFound:
        # The top card (classifier.json, an export's synthpat.json) last: a copy that has it
        # is complete.
        fs.create_dir(root)
        for p in sorted(folder.rglob("*"), key=lambda p: p == card):
            if p.is_file():
                dest = f"{root}/{p.relative_to(folder).as_posix()}"
                fs.create_dir(dest.rsplit("/", 1)[0])
                pafs.copy_files(str(p), dest, destination_filesystem=fs)
    return uri


def local_checkpoint(spec: dict[str, Any]) -> Path:
    """The checkpoint folder on this node: the run's own, or a copy of `checkpoint_uri`."""
    local = Path(spec["checkpoint"])
    if card_file(local).is_file() or not spec.get("checkpoint_uri"):
        return local
    import tempfile

    import pyarrow.fs as pafs

    uri = spec["checkpoint_uri"]
    target = Path(tempfile.gettempdir()) / "synthpat-serve" / uri.rstrip("/").rsplit("/", 1)[1]
    if not card_file(target).is_file():
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        fs, root = pafs.FileSystem.from_uri(uri)
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
            if info.type == pafs.FileType.File:
                dest = staging / info.path[len(root) :].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(info.path, str(dest), source_filesystem=fs)
        if not card_file(staging).is_file():
            raise FileNotFoundError(f"{uri}: no classifier card (an incomplete checkpoint copy)")
        # Another replica on this node may have won the race: its copy is the same checkpoint.
        replace_dir(staging, target, keep_existing=True)
    log.info("checkpoint %s loaded from %s", local, uri)
    return target
