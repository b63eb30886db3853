"""Shared building blocks of the study config: the strict base model and path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo
from pydantic_core import to_jsonable_python


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


#: Marks a field that cannot change what a stage writes (how work is scheduled, where it runs,
#: how results are picked afterwards): `Field(..., json_schema_extra=NOT_FINGERPRINTED)`. A
#: stage's fingerprint leaves such fields out, so changing one re-runs nothing.
NOT_FINGERPRINTED: dict[str, bool] = {"fingerprint": False}


def fingerprinted(model_field: Any) -> bool:
    """Whether a pydantic field counts in fingerprints (not marked `NOT_FINGERPRINTED`)."""
    extra = model_field.json_schema_extra
    return not (isinstance(extra, dict) and extra.get("fingerprint") is False)


def fingerprint_view(value: Any) -> Any:
    """The JSON value of a config model (or list, dict, scalar) without its NOT_FINGERPRINTED
    fields, at every depth: what a stage's fingerprint hashes."""
    if isinstance(value, BaseModel):
        return {
            name: fingerprint_view(getattr(value, name))
            for name, info in type(value).model_fields.items()
            if fingerprinted(info)
        }
    if isinstance(value, list | tuple):
        return [fingerprint_view(v) for v in value]
    if isinstance(value, dict):
        return {str(k): fingerprint_view(v) for k, v in value.items()}
    return to_jsonable_python(value)


def value_at(root: BaseModel, path: str) -> Any:
    """The config value at a dotted path (`generation.ratios`); None where a section on the way
    is absent (a study without generation)."""
    value: Any = root
    for part in path.split("."):
        if value is None:
            return None
        if not isinstance(value, BaseModel) or part not in type(value).model_fields:
            raise KeyError(f"{path}: {part!r} is not a config field")
        value = getattr(value, part)
    return value
