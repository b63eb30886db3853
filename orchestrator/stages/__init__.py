"""The stages in run order. Each module defines one `Stage` subclass."""

from __future__ import annotations

from orchestrator.stages.base import Stage, StageContext, StageOutput, run_dir_for, run_stage
from orchestrator.stages.fidelity import FidelityStage
from orchestrator.stages.generate import GenerateStage
from orchestrator.stages.prepare import PrepareStage
from orchestrator.stages.report import ReportStage
from orchestrator.stages.serve_smoke import ServeSmokeStage
from orchestrator.stages.trials import TrialsStage

STAGES: list[Stage] = [
    PrepareStage(),
    GenerateStage(),
    FidelityStage(),
    TrialsStage(),
    ReportStage(),  # after trials; the serve smoke test needs nothing from it
    ServeSmokeStage(),  # stays last: serves what the stages above produced
]


def stage_by_name(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")


__all__ = ["STAGES", "Stage", "StageContext", "StageOutput", "run_dir_for", "run_stage"]
