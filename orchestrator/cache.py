"""The stage cache: fingerprints, manifests and atomic stage outputs.

One mechanism for every stage (what a fingerprint covers: orchestrator/stages/base.py). A stage
whose manifest carries the current fingerprint is up to date and skipped. A stage writes into a
temporary folder that is renamed into place only after its manifest is written, so a killed run
never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.files import replace_dir, write_json_atomic

MANIFEST = "manifest.json"


def hash_json(obj: Any) -> str:
    """Stable sha256 of a JSON-serializable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, or of every file under a folder (sorted by relative path)."""
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


@dataclass
class Manifest:
    stage: str
    fingerprint: str
    upstream: dict[str, str]
    config: dict[str, Any]
    inputs: dict[str, str]
    package_version: str
    rows: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0  # this attempt's start (epoch seconds)
    seconds: float = 0.0  # this attempt's
    # Every attempt at this fingerprint up to this output, this one last: `{started_at, seconds,
    # ended}` (orchestrator/stages/base.py says what a killed one counts). Older manifests have
    # neither field: one attempt of `seconds`.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    total_seconds: float | None = None

    @classmethod
    def read(cls, stage_dir: Path) -> Manifest | None:
        path = stage_dir / MANIFEST
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            return None


class RunStore:
    """The folder of one study run: runs/<study>/<stage>/..."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def work_dir(self, stage: str, fingerprint: str) -> Path:
        """A persistent scratch folder for resumable stages, keyed by the stage's fingerprint."""
        path = self.run_dir / ".work" / f"{stage}-{fingerprint[:16]}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def manifest(self, stage: str) -> Manifest | None:
        return Manifest.read(self.stage_dir(stage))

    def begin(self, stage: str) -> Path:
        """A fresh temporary folder to write a stage's outputs into."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.sweep(stage)
        tmp = self.run_dir / f".{stage}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        return tmp

    def sweep(self, stage: str) -> None:
        """Remove temporary folders left by killed runs of a stage."""
        for leftover in self.run_dir.glob(f".{stage}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.run_dir.glob(f".{stage}.old-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def commit(self, stage: str, tmp: Path, manifest: Manifest) -> Path:
        """Write the manifest into `tmp` last, then swap `tmp` into place."""
        write_json_atomic(tmp / MANIFEST, manifest.__dict__)
        final = self.stage_dir(stage)
        replace_dir(tmp, final)  # a killed swap leaves `.<stage>.old-*`, swept by `begin`
        return final


def now() -> float:
    return time.time()
