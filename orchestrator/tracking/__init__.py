"""Experiment tracking: every stage run and every trial logged to MLflow (or W&B), post hoc.

`run_stage` calls `track_stage` once a stage's manifest is committed; a stage that is up to
date logs nothing. What is logged is read back from the committed outputs (the manifest,
trials/results.parquet, the trials' checkpoints), never from a running stage, and each run is
found by a deterministic key before one is created (`records.py` says what the keys are), so
resuming, re-running or forcing a stage adds no duplicate run. Tracking must never cost a
study its results: any error is one warning line and the study goes on.

Ray-free; the tracking libraries are imported only when something is logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rich.markup import escape

from config import StudyConfig
from orchestrator.cache import Manifest, RunStore
from orchestrator.console import console
from orchestrator.tracking.mlflow_store import (
    LogCounts,
    MlflowTracker,
    artifacts_beside,
    default_store,
)
from orchestrator.tracking.records import RunRecord, stage_records
from orchestrator.tracking.wandb_store import WandbTracker, wandb_mode


class Tracker(Protocol):
    def log(self, records: list[RunRecord]) -> LogCounts: ...


def build_tracker(cfg: StudyConfig, run_dir: Path) -> Tracker | None:
    """The tracker `cfg.tracking` asks for (None for `backend: none`)."""
    t = cfg.tracking
    experiment = t.experiment or cfg.study
    if t.backend == "none":
        return None
    if t.backend == "wandb":
        return WandbTracker(experiment, Path(run_dir) / "wandb", wandb_mode(t.wandb_mode))
    if t.uri is None:
        uri, artifacts = default_store(run_dir)
    else:
        uri, artifacts = t.uri, artifacts_beside(t.uri)
    return MlflowTracker(uri, experiment, artifacts)


def tracking_uri(cfg: StudyConfig, run_dir: Path) -> str:
    """The MLflow URI that a study logs to (what `mlflow ui --backend-store-uri` takes)."""
    return cfg.tracking.uri or default_store(run_dir)[0]


def track_stage(cfg: StudyConfig, store: RunStore, stage: str, manifest: Manifest) -> None:
    """Log a committed stage (and, for trials, each trial) to the configured tracker.

    Never raises: a tracking error is one warning line; the stage's outputs stand."""
    backend = cfg.tracking.backend
    if backend == "none":
        return
    try:
        tracker = build_tracker(cfg, store.run_dir)
        if tracker is None:
            return
        counts = tracker.log(stage_records(cfg, store, stage, manifest))
    except Exception as exc:  # noqa: BLE001 - tracking must not fail a study
        msg = escape(" ".join(str(exc).split())[:300])
        console.print(
            f"[yellow]tracking: {stage} not logged to {backend} ({type(exc).__name__}: {msg})"
            "[/yellow]",
            highlight=False,
        )
        return
    console.print(f"[dim]tracking: {stage} logged to {backend} ({counts})[/dim]", highlight=False)


def track_study(cfg: StudyConfig, store: RunStore) -> None:
    """Log every committed stage of a run folder (a study that ran with tracking off)."""
    from orchestrator.stages import STAGES

    for stage in STAGES:
        manifest = store.manifest(stage.name)
        if manifest is not None:
            track_stage(cfg, store, stage.name, manifest)


__all__ = [
    "LogCounts",
    "MlflowTracker",
    "RunRecord",
    "Tracker",
    "WandbTracker",
    "build_tracker",
    "stage_records",
    "track_stage",
    "track_study",
    "tracking_uri",
]
