"""The stage graph: how every stage is fingerprinted, skipped, run and committed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from config import StudyConfig
from orchestrator.cache import Manifest, RunStore, now

console = Console(stderr=True, soft_wrap=True)


@dataclass
class StageContext:
    """What a stage's `run` gets: the config, where to write, and the upstream outputs."""

    cfg: StudyConfig
    store: RunStore
    out_dir: Path  # temporary folder; becomes runs/<study>/<stage>/ on success
    work_dir: Path  # persistent across killed attempts with the same fingerprint (resume)
    fingerprint: str

    def input_dir(self, stage: str) -> Path:
        return self.store.stage_dir(stage)


@dataclass
class StageOutput:
    rows: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class Stage:
    """A stage: subclasses set `name` and `depends_on` and implement the three methods."""

    name: str = ""
    depends_on: tuple[str, ...] = ()

    def enabled(self, cfg: StudyConfig) -> bool:
        return True

    def config_subset(self, cfg: StudyConfig) -> dict[str, Any]:
        """The part of the config this stage's outputs depend on."""
        raise NotImplementedError

    def external_inputs(self, cfg: StudyConfig) -> dict[str, Path]:
        """Files outside the run folder whose content the outputs depend on."""
        return {}

    def run(self, ctx: StageContext) -> StageOutput:
        raise NotImplementedError


def run_dir_for(cfg: StudyConfig) -> Path:
    base = cfg.resources.runs_dir or Path.cwd() / "runs"
    return Path(base) / cfg.study


def run_stage(stage: Stage, cfg: StudyConfig, force: bool = False) -> Manifest:
    """Run one stage unless its manifest is up to date; return its manifest."""
    store = RunStore(run_dir_for(cfg))
    subset = stage.config_subset(cfg)
    fp, upstream, inputs = store.fingerprint(
        stage.name, subset, stage.depends_on, stage.external_inputs(cfg)
    )
    if not force and store.is_up_to_date(stage.name, fp):
        manifest = store.manifest(stage.name)
        assert manifest is not None
        console.print(f"[green]{stage.name}: up to date[/green] ({_rows(manifest.rows)})")
        return manifest
    console.print(f"[bold]{stage.name}[/bold]: running")
    tmp = store.begin(stage.name)
    started, t0 = now(), time.perf_counter()
    ctx = StageContext(cfg, store, tmp, store.work_dir(stage.name, fp), fp)
    out = stage.run(ctx)
    manifest = Manifest(
        stage=stage.name,
        fingerprint=fp,
        upstream=upstream,
        config=subset,
        inputs=inputs,
        package_version=_version(),
        rows=out.rows,
        summary=out.summary,
        started_at=started,
        seconds=round(time.perf_counter() - t0, 3),
    )
    store.commit(stage.name, tmp, manifest)
    _clear_work(ctx.work_dir)
    console.print(
        f"[green]{stage.name}: done[/green] in {manifest.seconds:.1f}s ({_rows(manifest.rows)})"
    )
    return manifest


def _clear_work(work_dir: Path) -> None:
    import shutil

    shutil.rmtree(work_dir, ignore_errors=True)


def _version() -> str:
    from orchestrator import __version__

    return __version__


def _rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in rows.items()) or "no rows"
