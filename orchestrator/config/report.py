"""The `report` section."""

from __future__ import annotations

from pydantic import Field

from orchestrator.config.base import StrictModel


class ReportConfig(StrictModel):
    enabled: bool = Field(True, description="Run the report stage.")
    bootstrap_samples: int = Field(2000, ge=100, description="Bootstrap resamples for CIs.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of intervals.")
    seed: int = Field(0, description="Seed of the bootstrap.")
