"""What a tracker logs, read from committed stage outputs: one `RunRecord` per study, stage run
and trial, each with a deterministic key (the tracker looks a run up by it before creating one).

Keys:
- study: the study name; the parent of its stage runs.
- stage: study, stage and the stage's fingerprint (a forced re-run of the same config finds the
  run it made before and updates it); the parent of that output's trials.
- trial: study, trial id and the row's `trial_key`, the digest of what the trial computed from
  (its cell, its family's settings, the inputs' fingerprints, the package version). A trial that
  a later output reuses (a seed added to the grid) keeps its key and so its run; a retrained one
  (new inputs, a new version) is a new run.

`digest()` covers everything logged: an unchanged record is skipped, a changed one updates its
run. Nothing here imports a tracking library.
"""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from config import StudyConfig
from orchestrator.cache import Manifest, RunStore, hash_file, hash_json

#: The trial columns that name its grid cell (the run's params), in results.parquet order.
CELL_PARAMS = (
    "regime",
    "draw",
    "arm",
    "ratio",
    "real_fraction",
    "ordering",
    "generator",
    "strategy",
    "variant",
    "family",
    "family_kind",
    "loss",
    "precision",
    "attention",
    "seed",
    "budget",
)
#: Trial columns logged as metrics besides the val_*/test_* scores.
COUNT_METRICS = ("n_train", "n_real", "n_synthetic", "train_steps", "train_seconds")
#: Stage files logged as artifacts: every top-level file of these kinds, plus per stage below.
ARTIFACT_SUFFIXES = (".json", ".md", ".html")
STAGE_ARTIFACTS = {
    "fidelity": ("summary.parquet",),
    "trials": ("results.parquet",),
    "report": ("figures",),
}
MAX_ARTIFACT_BYTES = 20 << 20  # a file above this stays in the run folder only

# Tag names, shared by every backend.
STUDY, KIND, KEY, DIGEST = "synthpat.study", "synthpat.kind", "synthpat.key", "synthpat.digest"
CELL = "synthpat.cell"
FINGERPRINT = "synthpat.stage_fingerprint"
NOTE = "synthpat.note"
GIT_COMMIT = "synthpat.git_commit"


@dataclass
class RunRecord:
    """One run to log: `parent` is the key of the run it nests under."""

    kind: str  # study | stage | trial
    key: str
    name: str
    parent: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # Step-wise metrics: name -> [(step, value)], e.g. a fine-tune's per-epoch validation.
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)  # name in the run -> file/folder
    failed: bool = False
    group: str | None = None  # runs that belong together (all seeds of one cell)
    start_ms: int | None = None
    end_ms: int | None = None

    def digest(self) -> str:
        """A hash of everything the record logs (artifacts by content)."""
        doc = asdict(self)
        doc["artifacts"] = {k: hash_file(p) for k, p in sorted(self.artifacts.items())}
        return hash_json(doc)


def run_key(*parts: Any) -> str:
    """The deterministic key of a run: a digest of the parts (hex, 32 characters; a valid W&B
    run id too)."""
    return hash_json([str(p) for p in parts])[:32]


def stage_records(
    cfg: StudyConfig, store: RunStore, stage: str, manifest: Manifest
) -> list[RunRecord]:
    """The records of one committed stage, parents first: the study, the stage run and (for
    the trials stage) one per row of results.parquet."""
    study = study_record(cfg)
    run = stage_record(cfg, store, stage, manifest, parent=study.key)
    out = [study, run]
    if stage == "trials":
        out.extend(trial_records(cfg, store.stage_dir("trials"), manifest, parent=run.key))
    return out


def study_record(cfg: StudyConfig) -> RunRecord:
    return RunRecord(
        kind="study",
        key=run_key("study", cfg.study),
        name=cfg.study,
        tags={**_common_tags(cfg, "study"), NOTE: f"synthpat study {cfg.study}"},
    )


def stage_record(
    cfg: StudyConfig, store: RunStore, stage: str, manifest: Manifest, parent: str | None
) -> RunRecord:
    """A stage run: its config view as params; rows, timings and numeric summary figures (the
    fidelity measures per corpus) as metrics; its small files as artifacts."""
    metrics: dict[str, float] = {f"rows.{k}": float(v) for k, v in manifest.rows.items()}
    metrics["seconds"] = float(manifest.seconds)
    if manifest.total_seconds is not None:
        metrics["total_seconds"] = float(manifest.total_seconds)
    metrics["attempts"] = float(max(1, len(manifest.attempts)))
    for k, v in manifest.summary.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            metrics[f"summary.{k}"] = float(v)
    folder = store.stage_dir(stage)
    if stage == "fidelity":
        metrics.update(_fidelity_metrics(folder))
    tags = {
        **_common_tags(cfg, "stage"),
        "synthpat.stage": stage,
        FINGERPRINT: manifest.fingerprint,
        "synthpat.package_version": manifest.package_version,
        **{f"synthpat.upstream.{up}": fp for up, fp in manifest.upstream.items()},
    }
    note = _note(manifest.summary)
    if note:
        tags[NOTE] = note
    end = manifest.started_at + manifest.seconds
    return RunRecord(
        kind="stage",
        key=run_key("stage", cfg.study, stage, manifest.fingerprint),
        name=stage,
        parent=parent,
        params=flatten(manifest.config),
        metrics=metrics,
        tags=tags,
        artifacts=_stage_artifacts(folder, stage),
        group=f"{cfg.study}/stages",
        start_ms=_ms(manifest.started_at) if manifest.started_at else None,
        end_ms=_ms(end) if manifest.started_at else None,
    )


def trial_records(
    cfg: StudyConfig, trials_dir: Path, manifest: Manifest, parent: str | None
) -> list[RunRecord]:
    """One record per row of `trials_dir/results.parquet`: the cell as params, the scores and
    training curves as metrics, the checkpoint's classifier.json as an artifact."""
    from tasks.artifacts import SCORE_COLUMNS, TrialRow, load_results

    table = load_results(trials_dir)
    columns = set(table.columns)
    out = []
    for values in table.to_dict("records"):
        row = TrialRow.from_dict(values)
        cell = {c: getattr(row, c) for c in CELL_PARAMS if c in columns}
        params = {k: _param(v) for k, v in cell.items() if v is not None}
        group = cell_key({k: v for k, v in params.items() if k != "seed"})
        metrics = {}
        for name in (*SCORE_COLUMNS, *COUNT_METRICS):
            v = getattr(row, name, None)
            if name in columns and isinstance(v, int | float) and not isinstance(v, bool):
                metrics[name] = float(v)
        tags = {
            **_common_tags(cfg, "trial"),
            "synthpat.trial_id": row.trial_id,
            "synthpat.status": row.status,
            "synthpat.trial_key": row.trial_key,
            FINGERPRINT: manifest.fingerprint,
            CELL: group,
            "synthpat.numerics_flag": str(bool(row.numerics_flag)).lower(),
        }
        for name in ("reason", "controls"):
            if getattr(row, name):
                tags[f"synthpat.{name}"] = str(getattr(row, name))
        ckpt = trials_dir / row.checkpoint if row.checkpoint else None
        doc_path = ckpt / "classifier.json" if ckpt is not None else None
        has_doc = doc_path is not None and doc_path.is_file()
        end_ms = _ms(row.trained_at) if row.trained_at else None
        start_ms = None
        if row.trained_at and row.train_seconds is not None:
            start_ms = _ms(row.trained_at - row.train_seconds)
        # An older table without trial keys: the stage output stands in for what it computed.
        identity = row.trial_key or manifest.fingerprint
        out.append(
            RunRecord(
                kind="trial",
                key=run_key("trial", cfg.study, row.trial_id, identity),
                name=row.trial_id,
                parent=parent,
                params=params,
                metrics=metrics,
                curves=read_curves(ckpt) if ckpt is not None else {},
                tags=tags,
                artifacts={"classifier.json": doc_path} if has_doc else {},
                failed=row.status == "failed",
                group=group,
                start_ms=start_ms,
                end_ms=end_ms,
            )
        )
    return out


def read_curves(checkpoint: Path) -> dict[str, list[tuple[int, float]]]:
    """A trial's training curves where its checkpoint records them: `train_history` (a list
    of per-epoch metric dicts) in classifier.json, at the top or under `metrics`, or a
    `train_history.json` beside it. Curve names get a `train/` prefix so a curve's last point
    never stands in for the trial's final `val_micro_f1`."""
    history: Any = None
    doc_path = checkpoint / "classifier.json"
    if doc_path.is_file():
        doc = json.loads(doc_path.read_text())
        history = doc.get("train_history") or doc.get("metrics", {}).get("train_history")
    if history is None and (checkpoint / "train_history.json").is_file():
        history = json.loads((checkpoint / "train_history.json").read_text())
    curves: dict[str, list[tuple[int, float]]] = {}
    for i, point in enumerate(history if isinstance(history, list) else []):
        if not isinstance(point, dict):
            continue
        step = int(point.get("step", point.get("epoch", i + 1)))
        for k, v in point.items():
            if k not in ("step", "epoch") and isinstance(v, int | float) and math.isfinite(v):
                curves.setdefault(f"train/{k}", []).append((step, float(v)))
    return curves


def cell_key(params: dict[str, str]) -> str:
    """A readable key of a grid cell (`regime=r48,arm=real_only,...`), shared by its seeds."""
    return ",".join(f"{k}={v}" for k, v in params.items() if v != "")


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A config view as dotted params; lists as JSON text."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if not prefix:
        return {}
    if isinstance(tree, list):
        return {prefix: json.dumps(tree, default=str, sort_keys=True)}
    return {prefix: _param(tree)}


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout this package runs from; None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = res.stdout.strip()
    return commit if res.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _common_tags(cfg: StudyConfig, kind: str) -> dict[str, str]:
    from orchestrator import __version__

    tags = {STUDY: cfg.study, KIND: kind, "synthpat.version": __version__}
    commit = git_commit()
    if commit:
        tags[GIT_COMMIT] = commit
    return tags


def _fidelity_metrics(folder: Path) -> dict[str, float]:
    """Each corpus's fidelity measures from summary.parquet: `<corpus_id>/<measure>`."""
    import pandas as pd

    path = folder / "summary.parquet"
    if not path.is_file():
        return {}
    table = pd.read_parquet(path)
    if "corpus_id" not in table.columns:
        return {}
    out = {}
    numeric = [c for c in table.select_dtypes("number").columns if c != "draw"]
    for _, r in table.iterrows():
        for c in numeric:
            if pd.notna(r[c]):
                out[f"{_metric_name(str(r.corpus_id))}/{c}"] = float(r[c])
    return out


def _stage_artifacts(folder: Path, stage: str) -> dict[str, Path]:
    out = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix in ARTIFACT_SUFFIXES:
                out[p.name] = p
    for name in STAGE_ARTIFACTS.get(stage, ()):
        p = folder / name
        if p.exists():
            out[name] = p
    return {k: p for k, p in out.items() if p.is_dir() or p.stat().st_size <= MAX_ARTIFACT_BYTES}


def _note(summary: dict[str, Any]) -> str:
    parts = []
    if isinstance(summary.get("status_note"), str):
        parts.append(summary["status_note"])
    verdict = summary.get("verdict")
    if isinstance(verdict, list):
        parts.extend(str(v) for v in verdict)
    return "\n".join(p for p in parts if p)


def _metric_name(name: str) -> str:
    # MLflow allows letters, digits, `_ - . /` and spaces in metric names.
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return repr(value)  # 1.0, as the grid writes a ratio, not 1
    return str(value)


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
