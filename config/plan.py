"""The `plan` section: per-item GPU costs that `synthpat plan` turns into a GPU-hour estimate."""

from __future__ import annotations

from pydantic import Field

from config.base import StrictModel


class PlanConfig(StrictModel):
    generation_gpu_seconds_per_row: dict[str, float] = Field(
        {},
        description="GPU-seconds to generate one row, by generator name (measure with "
        "bench/generation.py on the target GPU); generators not listed use the default.",
    )
    default_generation_gpu_seconds_per_row: float = Field(
        0.0, ge=0, description="GPU-seconds per row for generators not listed."
    )
    trial_gpu_seconds: dict[str, float] = Field(
        {}, description="GPU-seconds of one trial, by classifier family name."
    )
    default_trial_gpu_seconds: float = Field(
        0.0, ge=0, description="GPU-seconds per trial for families not listed."
    )
    fidelity_gpu_seconds_per_1k_rows: float = Field(
        0.0, ge=0, description="GPU-seconds to embed 1,000 texts in the fidelity stage."
    )
    gpu_hour_usd: float | None = Field(
        None, gt=0, description="Price of one GPU-hour; the plan then prints a cost."
    )
