"""Shared building blocks of the study config: the strict base model and path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every problem with its field path."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} config error(s){where}:\n{lines}")


class StrictModel(BaseModel):
    """Every config model forbids unknown keys, so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def _resolve_against_config_dir(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir") if info is not None else None
    value = Path(value).expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


#: A filesystem path; relative paths resolve against the folder of the config file that names them.
ConfigPath = Annotated[Path, AfterValidator(_resolve_against_config_dir)]
