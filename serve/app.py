"""The Ray Serve application: a plain `ClassifierServer` and a batched FastAPI ingress around it.

`build_app(cfg, selection)` binds `ClassifierDeployment` with the checkpoint the selection names.
Texts from concurrent requests are pooled by `@serve.batch` into one model call; batch size and
wait change at runtime through the deployment's `user_config`.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from serve.api import ApiMetrics, ApiSettings, create_api
from serve.select import Selection


def serving_precision(family: str, stored: str, cuda: bool) -> str:
    """The trained precision where the hardware runs it well; fp32 otherwise.

    Only fine-tuned transformers have a precision to choose; fp16 matmuls on CPU are slow or
    missing, so a CPU replica runs fp16 checkpoints in fp32 (bf16 runs on CPU).
    """
    if family != "finetune":
        return "fp32"
    if not cuda and stored == "fp16":
        return "fp32"
    return stored


class ClassifierServer:
    """One loaded checkpoint: model calls, label metadata and the model card. No Ray in here."""

    def __init__(self, spec: dict[str, Any], classifier: Any = None):
        from tasks.checkpoint import load_classifier, read_classifier_json

        self.spec = spec
        self.path = Path(spec["checkpoint"])
        doc = read_classifier_json(self.path)
        self.family = doc["family"]
        cuda = _cuda_available() if self.family == "finetune" else False
        self.precision = serving_precision(self.family, doc.get("precision", "fp32"), cuda)
        if classifier is None:
            device = "cuda" if cuda and spec.get("num_gpus", 0) > 0 else None
            classifier = load_classifier(self.path, device=device, precision=self.precision)
        self.classifier = classifier
        self.doc = doc
        self.trial_id = str(spec["trial_id"])
        self.codes = list(classifier.labels)
        self.names = list(classifier.names)
        self.thresholds = np.asarray(classifier.thresholds, dtype=np.float32)
        self.metrics = ApiMetrics()
        self.batching: dict[str, Any] = {}
        self.ready = True
        # Fine-tuned models and tokenizers are not safe to call from two threads at once.
        self._lock = threading.Lock()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """One model call over `texts`, counted for /metrics."""
        with self._lock:
            probs = self.classifier.predict_proba(list(texts))
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
            "checkpoint": str(self.path),
            "select_metric": self.spec.get("select_metric", ""),
            "metrics": metrics,
            "mix": mix,
            "provenance": self.doc.get("provenance", {}),
            "batching": dict(self.batching),
        }


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@serve.deployment
@serve.ingress()
class ClassifierDeployment:
    """A Serve replica: FastAPI around a `ClassifierServer`, texts batched across requests."""

    def __init__(self, spec: dict[str, Any], settings: ApiSettings):
        self.server = ClassifierServer(spec)
        self.settings = settings

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self.server, self.infer, self.settings)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Runtime batching knobs: `max_batch_size`, `batch_wait_timeout_s`."""
        if "max_batch_size" in user_config:
            self._predict_one.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self._predict_one.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))
        self.server.batching = {
            "max_batch_size": self._predict_one._get_max_batch_size(),
            "batch_wait_timeout_s": self._predict_one._get_batch_wait_timeout_s(),
        }

    async def infer(self, texts: list[str]) -> np.ndarray:
        """Each text joins the shared batch queue; the request waits for all of its texts."""
        rows = await asyncio.gather(*(self._predict_one(t) for t in texts))
        return np.stack(rows)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _predict_one(self, texts: list[str]) -> list[np.ndarray]:
        # The model runs in a worker thread so the event loop keeps accepting requests (and
        # filling the next batch) meanwhile.
        probs = await asyncio.to_thread(self.server.predict_proba, texts)
        return list(probs)


def deployment_options(cfg: Any) -> dict[str, Any]:
    """Replica resources, autoscaling and batching from a `ServeConfig`."""
    auto = cfg.autoscaling
    return {
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "autoscaling_config": {
            "min_replicas": auto.min_replicas,
            "max_replicas": auto.max_replicas,
            "initial_replicas": max(auto.min_replicas, 1),
            "target_ongoing_requests": auto.target_ongoing_requests,
        },
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "user_config": {
            "max_batch_size": cfg.max_batch_size,
            "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
        },
    }


def build_app(cfg: Any, selection: Selection, api_key: str | None = None) -> Any:
    """The bound Serve application for `selection` under `cfg` (a `ServeConfig`)."""
    spec = {
        "checkpoint": str(selection.path.resolve()),
        "trial_id": selection.trial_id,
        "select_metric": selection.metric,
        "row": selection.row,
        "num_gpus": cfg.num_gpus,
    }
    settings = ApiSettings.from_serve_config(cfg, api_key)
    return ClassifierDeployment.options(**deployment_options(cfg)).bind(spec, settings)
