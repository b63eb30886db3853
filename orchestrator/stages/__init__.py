"""The stages in run order. Each module defines one `Stage` subclass."""

from __future__ import annotations

from config import StudyConfig
from orchestrator.cache import RunStore
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


def study_graph(cfg: StudyConfig, store: RunStore | None = None) -> StageGraph:
    """The stage graph of a study config: what `run`, `status` and `plan` all use.

    `store`: the run folder (default: the config's `runs/<study>`)."""
    return StageGraph(STAGES, cfg, store or RunStore(run_dir_for(cfg)))


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
