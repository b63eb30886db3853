"""The `report` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from orchestrator.config.base import StrictModel

#: Trial metrics a report can be built on (columns of trials/results.parquet).
Metric = Literal[
    "test_micro_f1",
    "test_macro_f1",
    "test_samples_f1",
    "test_precision",
    "test_recall",
    "test_ndcg10",
    "val_micro_f1",
]


class ReportConfig(StrictModel):
    enabled: bool = Field(True, description="Run the report stage.")
    metric: Metric = Field(
        "test_micro_f1", description="Metric of gains, correlations and mixing curves."
    )
    bootstrap_samples: int = Field(2000, ge=100, description="Bootstrap resamples for CIs.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of intervals.")
    seed: int = Field(0, description="Seed of the bootstrap.")
