"""The stages in run order. Each module defines one `Stage` subclass."""

from __future__ import annotations

from config import StudyConfig
from orchestrator.stages.base import (
    Stage,
    StageContext,
    StageGraph,
    StageOutput,
    StageState,
    run_dir_for,
    run_stage,
)
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


def study_graph(cfg: StudyConfig) -> StageGraph:
    """The stage graph of a study config: what `run`, `status` and `plan` all use."""
    return StageGraph(STAGES, cfg)


__all__ = [
    "STAGES",
    "Stage",
    "StageContext",
    "StageGraph",
    "StageOutput",
    "StageState",
    "run_dir_for",
    "run_stage",
    "study_graph",
]
