"""Stage outputs planted by hand (a generate stage without vLLM, a finished trials stage) get
the manifest the stage graph expects of them, so the stages that read them run."""

from __future__ import annotations

from pathlib import Path

from config import StudyConfig, load_config
from orchestrator.cache import Manifest, RunStore
from orchestrator.stages import study_graph
from tasks.files import write_json_atomic


def plant_manifest(
    run_dir: Path, config: StudyConfig | Path, stage: str, overrides: list[str] | None = None
) -> Manifest:
    """Write `run_dir/<stage>/manifest.json` with the fingerprint that `config` (with
    `overrides`) gives the stage, as if the stage had made what the test put there."""
    cfg = config if isinstance(config, StudyConfig) else load_config(config, overrides or [])
    key = study_graph(cfg, RunStore(run_dir)).key(stage)
    m = Manifest(stage, key.fingerprint, key.upstream, key.config, key.inputs, "planted")
    write_json_atomic(Path(run_dir) / stage / "manifest.json", m.__dict__)
    return m
