"""The study config: one pydantic schema tree, loaded from YAML with key=value overrides."""

from config.base import ConfigError, StrictModel
from config.loader import load_config, parse_overrides
from config.study import StudyConfig

__all__ = ["ConfigError", "StrictModel", "StudyConfig", "load_config", "parse_overrides"]
