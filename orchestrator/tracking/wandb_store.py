"""Records into Weights & Biases: the run id is the record's key, so `resume="allow"` reopens
the same run (offline too: `wandb sync` uploads every offline folder of one id into one run).

An offline run cannot be looked up, so a ledger beside the offline folders
(`<runs>/<study>/wandb/synthpat-logged.json`: key -> digest) says what was logged: an
unchanged record is skipped, a changed one resumes its run. Seeds of one cell share a `group`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from orchestrator.tracking.mlflow_store import LogCounts
from orchestrator.tracking.records import RunRecord
from tasks.files import write_json_atomic

LEDGER = "synthpat-logged.json"


def wandb_mode(configured: str | None) -> str:
    """`tracking.wandb_mode`, else `WANDB_MODE`, else online only with an API key."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbTracker:
    """Logs records to the W&B project `project`; local files under `directory`."""

    def __init__(self, project: str, directory: Path, mode: str):
        self.project = project
        self.directory = Path(directory)
        self.mode = mode

    def log(self, records: list[RunRecord]) -> LogCounts:
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        ledger_path = self.directory / LEDGER
        ledger = _read(ledger_path)
        counts = LogCounts()
        for record in records:
            digest = record.digest()
            if ledger.get(record.key) == digest:
                counts.unchanged += 1
                continue
            if record.key in ledger:
                counts.updated += 1
            else:
                counts.created += 1
            run = wandb.init(
                project=self.project,
                id=record.key,
                resume="allow",
                name=record.name,
                group=record.group,
                job_type=record.kind,
                dir=str(self.directory),
                mode=self.mode,
                config={**record.params, "synthpat": dict(record.tags)},
                tags=[record.kind, *_short_tags(record)],
                reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
            try:
                _write(wandb, run, record)
            finally:
                run.finish(exit_code=1 if record.failed else 0)
            ledger[record.key] = digest
            write_json_atomic(ledger_path, ledger)  # after each run: a kill loses one at most
        return counts


def _write(wandb: Any, run: Any, record: RunRecord) -> None:
    # Curves by step, in step order (W&B steps only go forward); the final figures as the
    # run's summary, the value the runs table shows.
    by_step: dict[int, dict[str, float]] = {}
    for name, points in record.curves.items():
        for step, v in points:
            by_step.setdefault(step, {})[name] = v
    for step in sorted(by_step):
        run.log(by_step[step], step=step)
    run.summary.update(record.metrics)
    if record.artifacts:
        art = wandb.Artifact(f"{record.kind}-{record.key[:12]}", type=record.kind)
        for name, path in record.artifacts.items():
            if path.is_dir():
                art.add_dir(str(path), name=name)
            else:
                art.add_file(str(path), name=name)
        run.log_artifact(art)


def _short_tags(record: RunRecord) -> list[str]:
    keep = ("synthpat.study", "synthpat.stage", "synthpat.status")
    return [str(record.tags[k])[:64] for k in keep if record.tags.get(k)]


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
