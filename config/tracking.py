"""The `tracking` section: where stages and trials are logged (MLflow by default, W&B optional).

Tracking records results after a stage has committed them and never changes what a stage
writes, so no field here counts in a fingerprint: switching the backend re-runs nothing.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from config.base import NOT_FINGERPRINTED, StrictModel

#: A URI scheme (`sqlite:`, `http:`, `databricks`): what MLflow reads as a tracking URI.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SQLITE = "sqlite:///"


class TrackingConfig(StrictModel):
    backend: Literal["mlflow", "wandb", "none"] = Field(
        "mlflow",
        description=(
            "Where each stage and trial is logged after the stage commits: `mlflow` (default; "
            "an embedded SQLite store unless `uri` says otherwise), `wandb` (the optional "
            "`synthpat[wandb]` extra; offline without credentials) or `none`."
        ),
        json_schema_extra=NOT_FINGERPRINTED,
    )
    uri: str | None = Field(
        None,
        description=(
            "MLflow tracking URI: `sqlite:///path/mlflow.db` (a relative path resolves against "
            "the config file's folder), `http://host:5000`, `databricks`. Default "
            "`sqlite:///<runs>/<study>/mlflow.db`, artifacts in `<runs>/<study>/mlartifacts`."
        ),
        json_schema_extra=NOT_FINGERPRINTED,
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        description="MLflow experiment, or W&B project; default the study name.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    wandb_mode: Literal["online", "offline"] | None = Field(
        None,
        description=(
            "W&B mode; default `WANDB_MODE` if set, else online with `WANDB_API_KEY` set and "
            "offline without (runs under <runs>/<study>/wandb; `wandb sync` uploads them)."
        ),
        json_schema_extra=NOT_FINGERPRINTED,
    )

    @field_validator("backend")
    @classmethod
    def _backend_installed(cls, value: str) -> str:
        # Checked when the config loads, so a study fails before its first stage, not after.
        if value == "wandb" and importlib.util.find_spec("wandb") is None:
            raise ValueError(
                "tracking.backend=wandb needs the `wandb` package, which is not installed: "
                "pip install 'synthpat[wandb]', or set tracking.backend to mlflow or none"
            )
        return value

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _SCHEME.match(value):
            raise ValueError(
                f"tracking.uri={value!r} is not a tracking URI: give a scheme, e.g. "
                "sqlite:///path/mlflow.db or http://host:5000"
            )
        base = (info.context or {}).get("base_dir")
        if value.startswith(_SQLITE) and base is not None:
            path = Path(value[len(_SQLITE) :]).expanduser()
            if not path.is_absolute():
                value = _SQLITE + str(Path(base) / path)
        return value

    @model_validator(mode="after")
    def _cross(self) -> TrackingConfig:
        if self.backend == "wandb" and self.uri is not None:
            raise ValueError(
                "tracking.uri is an MLflow setting that tracking.backend=wandb does not read "
                "(W&B reads WANDB_BASE_URL)"
            )
        return self
