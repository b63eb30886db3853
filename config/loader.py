"""YAML loading, `key=value` overrides, and errors that name every bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.base import ConfigError
from config.study import StudyConfig


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """Parse `a.b.0.c=value` strings; values are read as YAML (`3`, `true`, `[1, 2]`)."""
    parsed: list[tuple[list[str], Any]] = []
    problems: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r}: expected key=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problems.append(f"override {item!r}: value is not valid YAML ({exc})")
            continue
        parsed.append((key.strip().split("."), value))
    if problems:
        raise ConfigError(problems)
    return parsed


def _apply(tree: dict, path: list[str], value: Any, raw_key: str) -> None:
    node: Any = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError([f"override {raw_key}: no list item {part!r}"])
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if node is None:
                    raise ConfigError([f"override {raw_key}: {part} is null"])
        else:
            raise ConfigError([f"override {raw_key}: {'.'.join(path[:i])} is not a section"])


def _format_loc(loc: tuple) -> str:
    # pydantic puts the union tag into the location of discriminated-union errors
    # (`generators.0.vllm.name`); keep it, it tells which variant was checked.
    return ".".join(str(p) for p in loc) or "<root>"


def load_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Load a study config; raise ConfigError listing every problem with its field path."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"], source)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"], source
        ) from None
    if not isinstance(tree, dict):
        raise ConfigError(["the top level must be a mapping of sections"], source)
    for keys, value in parse_overrides(overrides or []):
        _apply(tree, keys, value, ".".join(keys))
    try:
        return StudyConfig.model_validate(tree, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        problems = [f"{_format_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(problems, source) from None


def dump_config(cfg: StudyConfig) -> str:
    """The resolved config as YAML (paths absolute), written next to every run's outputs."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
