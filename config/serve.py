"""The `serve` section: the Ray Serve application that exposes the best classifier."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import NOT_FINGERPRINTED, StrictModel
from config.trials import TrialsConfig


class AutoscalingConfig(StrictModel):
    min_replicas: int = Field(1, ge=0, description="Fewest replicas.")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        32, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}"
            )
        return self


class ServeConfig(StrictModel):
    host: str = Field(
        "127.0.0.1",
        description="Bind address; loopback unless told otherwise.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    port: int = Field(
        8000, ge=1, le=65535, description="HTTP port.", json_schema_extra=NOT_FINGERPRINTED
    )
    ingress: Literal["auto", "haproxy", "proxy"] = Field(
        "auto",
        description="The HTTP front: haproxy (Ray Serve's throughput mode: replicas serve HTTP, "
        "HAProxy forwards; its stats and metrics listeners bind every interface), proxy (Serve's "
        "Python HTTP proxy), auto (haproxy where Ray Serve finds its binary, else proxy). Takes "
        "effect where synthpat starts Ray; a joined cluster keeps what its `ray start` was given.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    api_key_env: str | None = Field(
        None,
        description="Name of an env var holding the API key; requests then need X-API-Key.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    max_batch_size: int = Field(
        32,
        ge=1,
        description="Most texts per batched model call.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, description="Wait to fill a batch.", json_schema_extra=NOT_FINGERPRINTED
    )
    max_texts: int = Field(64, ge=1, description="Most texts per request.")
    max_text_chars: int = Field(20000, ge=1, description="Longest text accepted.")
    oversize_text: Literal["truncate", "reject"] = Field(
        "truncate", description="Truncate (and say so) or reject (413) over-long texts."
    )
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body.")
    max_ongoing_requests: int = Field(
        128,
        ge=1,
        description="Requests a replica holds at once; caps how full a batch gets.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    num_cpus: float = Field(
        1, gt=0, description="CPUs per replica.", json_schema_extra=NOT_FINGERPRINTED
    )
    num_gpus: float = Field(
        0, ge=0, description="GPUs per replica.", json_schema_extra=NOT_FINGERPRINTED
    )
    autoscaling: AutoscalingConfig = Field(
        AutoscalingConfig(),
        description="Replica autoscaling.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    select_metric: str | None = Field(
        None,
        pattern=r"^val_",
        description="Validation metric that picks the served checkpoint (val_*: nothing is chosen "
        "on test); unset: the trials' select_metric, so the served trial is the trials' best.",
    )
    smoke: bool = Field(
        True,
        description="Run the serve smoke test at the end of `synthpat run`.",
        json_schema_extra=NOT_FINGERPRINTED,
    )

    @model_validator(mode="after")
    def _batching(self) -> ServeConfig:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests} is below "
                f"max_batch_size={self.max_batch_size}: batches could never fill"
            )
        return self

    def resolve_select_metric(self, trials: TrialsConfig | None = None) -> str:
        """The metric that picks the served checkpoint: `serve.select_metric` when set, else
        `trials.select_metric` (its default without a trials section)."""
        if self.select_metric is not None:
            return self.select_metric
        if trials is not None:
            return trials.select_metric
        return TrialsConfig.model_fields["select_metric"].default
