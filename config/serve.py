"""The `serve` section: the Ray Serve application that exposes the best classifier."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import StrictModel


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
    host: str = Field("127.0.0.1", description="Bind address; loopback unless told otherwise.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    api_key_env: str | None = Field(
        None, description="Name of an env var holding the API key; requests then need X-API-Key."
    )
    max_batch_size: int = Field(32, ge=1, description="Most texts per batched model call.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="Wait to fill a batch.")
    max_texts: int = Field(64, ge=1, description="Most texts per request.")
    max_text_chars: int = Field(20000, ge=1, description="Longest text accepted.")
    oversize_text: Literal["truncate", "reject"] = Field(
        "truncate", description="Truncate (and say so) or reject (413) over-long texts."
    )
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body.")
    max_ongoing_requests: int = Field(
        128, ge=1, description="Requests a replica holds at once; caps how full a batch gets."
    )
    num_cpus: float = Field(1, gt=0, description="CPUs per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica.")
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    select_metric: str = Field(
        "val_micro_f1",
        pattern=r"^val_",
        description="Validation metric that picks the checkpoint (val_*: nothing is chosen on "
        "test).",
    )
    smoke: bool = Field(True, description="Run the serve smoke test at the end of `synthpat run`.")

    @model_validator(mode="after")
    def _batching(self) -> ServeConfig:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests} is below "
                f"max_batch_size={self.max_batch_size}: batches could never fill"
            )
        return self
