"""The `report` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from config.base import NOT_FINGERPRINTED, StrictModel

#: Test metrics a report can be built on (columns of trials/results.parquet).
Metric = Literal[
    "test_micro_f1",
    "test_macro_f1",
    "test_samples_f1",
    "test_precision",
    "test_recall",
    "test_ndcg10",
]
#: Cell keys a pre-registered headline may name (and a verdict names its cell by).
HEADLINE_KEYS = (
    "arm",
    "ratio",
    "real_fraction",
    "ordering",
    "generator",
    "strategy",
    "variant",
    "family",
    "loss",
    "precision",
    "attention",
)


class ReportConfig(StrictModel):
    enabled: bool = Field(
        True, description="Run the report stage.", json_schema_extra=NOT_FINGERPRINTED
    )
    metric: Metric = Field(
        "test_micro_f1",
        description="Test metric of gains, correlations and mixing curves (only reported: "
        "nothing is chosen on it).",
    )
    select_metric: Literal["val_micro_f1"] = Field(
        "val_micro_f1",
        description="Validation metric every choice is made on (verdict cell, baselines, best "
        "corpus, fixed-budget optimum).",
    )
    headline: dict[str, Any] | None = Field(
        None,
        description="Pre-register the verdict cell instead of choosing it on validation, e.g. "
        "{family: tfidf-lr, strategy: paraphrase, ratio: 1.0}: the keys must name exactly one "
        "augmented cell per regime; the verdict then needs no adjustment for the choice.",
    )
    pool_run_variance: bool = Field(
        True,
        description="Pool the seed (or draw) variance of controlled gains over a family's cells "
        "(one variance per family, as an ANOVA's residual): with 2-3 seeds a cell's own has 1-2 "
        "degrees of freedom (docs/statistics.md).",
    )
    bootstrap_samples: int = Field(
        2000, ge=100, description="Bootstrap resamples of the test documents."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of intervals.")
    seed: int = Field(0, description="Seed of the document bootstrap and permutation tests.")

    @field_validator("headline")
    @classmethod
    def _headline_keys(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            bad = sorted(set(v) - set(HEADLINE_KEYS))
            if bad or not v:
                raise ValueError(
                    f"unknown keys {bad}; a headline names a cell by {list(HEADLINE_KEYS)}"
                )
        return v
