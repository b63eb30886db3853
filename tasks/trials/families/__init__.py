"""The classifier families, one module each, registered by their config's `kind`.

A new family is one module here (a `TrialFamily` subclass decorated with `@register`) plus its
config model in `config.trials`: the grid, the trial recipe, the scheduler and checkpoint
loading find it through `family_class(kind)`. Modules are found by listing this package, so
their top level must stay light (heavy imports inside the methods that need them).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from tasks.trials.families.base import FitJob, Fitted, Trainer, TrialFamily

__all__ = ["FitJob", "Fitted", "Trainer", "TrialFamily", "build_family", "family_class", "kinds"]

_REGISTRY: dict[str, type[TrialFamily]] = {}
_NOT_FAMILIES = {"base"}


def register(cls: type[TrialFamily]) -> type[TrialFamily]:
    """Class decorator: make a family findable by its `kind`."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__}: a family needs a `kind`")
    _REGISTRY[cls.kind] = cls
    return cls


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_FAMILIES:
            importlib.import_module(f"{__name__}.{info.name}")


def kinds() -> tuple[str, ...]:
    """Every registered family kind."""
    if not _REGISTRY:
        _discover()
    return tuple(sorted(_REGISTRY))


def family_class(kind: str) -> type[TrialFamily]:
    """The family class of a config `kind`."""
    if kind not in _REGISTRY:
        _discover()
    if kind not in _REGISTRY:
        raise ValueError(f"family kind {kind!r} is not known; expected one of {kinds()}")
    return _REGISTRY[kind]


def build_family(config: Any, trainer: Trainer | None = None) -> TrialFamily:
    """The family of a config model (`config.trials.Family`), with an optional injected
    `trainer` for families that train outside the trial's process."""
    return family_class(config.kind)(config, trainer)
