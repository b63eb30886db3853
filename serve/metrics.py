"""Prometheus metrics of one served model: HTTP requests (counted by `serve.api`) and model calls
(counted by `serve.server`). Neither module imports the other; both import this one."""

from __future__ import annotations


class ServeMetrics:
    """Prometheus counters and histograms in a registry of their own (one per server instance)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "synthpat_http_requests",
            "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "synthpat_http_request_seconds",
            "HTTP request latency by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.model_calls = Counter(
            "synthpat_model_calls", "Batched model calls.", registry=self.registry
        )
        self.model_seconds = Histogram(
            "synthpat_model_call_seconds",
            "Seconds per model call.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "synthpat_model_batch_texts",
            "Texts per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
