"""Request and response models of the classification API (`/v1`), published in its OpenAPI spec.

Types are checked by pydantic (strict: a number is not a text, extra fields are refused); the
limits that come from the config (texts per request, characters per text) are checked by
`check_texts`, so one schema serves every deployment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ClassifyRequest(BaseModel):
    """Texts to label; `top_k` and `threshold` override the tuned per-label thresholds."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] = Field(
        ..., description="Patent texts (title and abstract), one prediction each."
    )
    top_k: int | None = Field(
        None, ge=1, description="Return at most this many labels per text, highest first."
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="One probability threshold for every label instead of the tuned ones.",
    )


class LabelScore(BaseModel):
    code: str = Field(..., description="Label code, e.g. a CPC subclass like G06F.")
    name: str = Field(..., description="Human-readable label name.")
    probability: float = Field(..., description="Model probability of the label.")


class Prediction(BaseModel):
    labels: list[LabelScore] = Field(..., description="Predicted labels, highest first.")
    truncated: bool = Field(False, description="The text was cut to the length limit.")
    chars_used: int = Field(..., description="Characters of the text the model saw.")


class ClassifyResponse(BaseModel):
    model: str = Field(..., description="Trial id of the serving checkpoint.")
    predictions: list[Prediction]
    warnings: list[str] = Field(default_factory=list, description="E.g. which texts were cut.")


class LabelInfo(BaseModel):
    index: int
    code: str
    name: str
    threshold: float = Field(..., description="Tuned probability threshold of the label.")


class LabelsResponse(BaseModel):
    labels: list[LabelInfo]


class ModelInfo(BaseModel):
    trial_id: str
    family: str
    precision: str = Field(..., description="Precision the model runs in on this replica.")
    device: str = Field("cpu", description="Where the model runs on this replica: cpu or cuda.")
    checkpoint: str = Field(..., description="Checkpoint folder served.")
    select_metric: str
    metrics: dict = Field(default_factory=dict, description="The trial's validation/test metrics.")
    mix: dict = Field(default_factory=dict, description="The training mix (arm, regime, ratio).")
    provenance: dict = Field(default_factory=dict)
    batching: dict = Field(default_factory=dict, description="Current max_batch_size and wait.")
    ingress: str = Field(
        "none",
        description="The HTTP front this replica runs behind: haproxy, direct (replicas serve "
        "HTTP behind Ray's proxy), proxy (Ray's proxy), none (no Ray Serve).",
    )


class Health(BaseModel):
    status: Literal["ok", "loading"]


class ErrorBody(BaseModel):
    detail: str | list = Field(..., description="What was wrong with the request.")


class TextLimitError(ValueError):
    """A request that breaks a configured limit; `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def check_texts(
    texts: list[str], max_texts: int, max_chars: int, oversize: Literal["truncate", "reject"]
) -> tuple[list[str], list[bool]]:
    """Texts ready for the model and which were truncated, or `TextLimitError` naming the field."""
    if not texts:
        raise TextLimitError("texts: the list is empty; send at least one text")
    if len(texts) > max_texts:
        raise TextLimitError(
            f"texts: {len(texts)} texts, the limit is {max_texts} per request", status=413
        )
    out, cut = [], []
    for i, text in enumerate(texts):
        if not text.strip():
            raise TextLimitError(f"texts[{i}]: empty or whitespace-only text")
        # JSON may carry lone surrogates ("\\ud800") that tokenizers cannot encode: replace them.
        text = text.encode("utf-8", "replace").decode("utf-8")
        if len(text) > max_chars:
            if oversize == "reject":
                raise TextLimitError(
                    f"texts[{i}]: {len(text)} characters, the limit is {max_chars}", status=413
                )
            out.append(text[:max_chars])
            cut.append(True)
        else:
            out.append(text)
            cut.append(False)
    return out, cut
