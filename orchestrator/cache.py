"""The stage cache: fingerprints, manifests and atomic stage outputs.

One mechanism for every stage. A stage's fingerprint hashes the config subset it reads, the
fingerprints of the stages it depends on, the content of external input files and the package
version. A stage whose manifest carries the current fingerprint is up to date and skipped. A stage
writes into a temporary folder that is renamed into place only after its manifest is written, so a
killed run never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def _package_version() -> str:
    from orchestrator import __version__

    return __version__


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


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` through a temp file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


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
    started_at: float = 0.0
    seconds: float = 0.0

    @classmethod
    def read(cls, stage_dir: Path) -> Manifest | None:
        path = stage_dir / MANIFEST
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            return None


@dataclass
class StageState:
    """What `status` shows about one stage."""

    stage: str
    state: str  # "done", "stale", "missing"
    manifest: Manifest | None
    reason: str = ""


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

    def fingerprint(
        self,
        stage: str,
        config: dict[str, Any],
        upstream: Iterable[str],
        inputs: dict[str, Path] | None = None,
    ) -> tuple[str, dict[str, str], dict[str, str]]:
        """Fingerprint of a stage from its config subset, upstream manifests and input files."""
        up: dict[str, str] = {}
        for name in upstream:
            m = self.manifest(name)
            if m is None:
                raise RuntimeError(f"stage {stage} needs stage {name}, which has not run")
            up[name] = m.fingerprint
        in_hashes = {k: hash_file(Path(p)) for k, p in sorted((inputs or {}).items())}
        fp = hash_json(
            {
                "stage": stage,
                "config": config,
                "upstream": up,
                "inputs": in_hashes,
                "version": _package_version(),
            }
        )
        return fp, up, in_hashes

    def is_up_to_date(self, stage: str, fingerprint: str) -> bool:
        m = self.manifest(stage)
        return m is not None and m.fingerprint == fingerprint

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
        old = None
        if final.exists():
            old = self.run_dir / f".{stage}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def states(self, order: list[str], deps: dict[str, tuple[str, ...]]) -> list[StageState]:
        """Each stage: done, stale (an upstream changed since it ran) or missing."""
        out: list[StageState] = []
        for stage in order:
            m = self.manifest(stage)
            if m is None:
                out.append(StageState(stage, "missing", None))
                continue
            reason = ""
            for up in deps.get(stage, ()):
                um = self.manifest(up)
                if um is None or m.upstream.get(up) != um.fingerprint:
                    reason = f"{up} changed since it ran"
                    break
            out.append(StageState(stage, "stale" if reason else "done", m, reason))
        return out


def now() -> float:
    return time.time()
