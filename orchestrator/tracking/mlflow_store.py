"""Records into MLflow: find-or-create each run by its key tag, then log what changed.

One experiment per study by default; in it a study run, its stage runs nested under it, and
each trial nested under the trials stage run that last logged it (the MLflow UI's tree). The
key tag is set when the run is created (one insert), the digest tag last, so a pass that dies
half-way leaves a run that the next pass finds and completes rather than duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.tracking.records import DIGEST, GIT_COMMIT, KEY, NOTE, STUDY, RunRecord

# MLflow's limits on one log_batch call and on a value.
_PARAMS_TAGS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_MAX_PARAM = 6000
_MAX_TAG = 8000
_SQLITE = "sqlite:///"


@dataclass
class LogCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.created} new, {self.updated} updated, {self.unchanged} unchanged"


def default_store(run_dir: Path) -> tuple[str, str]:
    """The embedded store of a run folder: (tracking URI, artifact location)."""
    run_dir = Path(run_dir).resolve()
    return f"sqlite:///{run_dir / 'mlflow.db'}", (run_dir / "mlartifacts").as_uri()


def artifacts_beside(uri: str) -> str | None:
    """Artifacts of a SQLite store sit beside its file; a server picks its own (None)."""
    if uri.startswith(_SQLITE):
        return (Path(uri[len(_SQLITE) :]).resolve().parent / "mlartifacts").as_uri()
    return None


class MlflowTracker:
    """Logs records to one MLflow experiment at `uri` (created with `artifact_location`)."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location

    def log(self, records: list[RunRecord]) -> LogCounts:
        """Log every record (parents first); return what was created, updated or left."""
        from mlflow import MlflowClient

        _check_reachable(self.uri)
        counts = LogCounts()
        with _quiet():
            if self.uri.startswith(_SQLITE):
                _new_sqlite_store(Path(self.uri[len(_SQLITE) :]))
            client = MlflowClient(tracking_uri=self.uri)
            exp_id = self._experiment(client)
            studies = {r.tags.get(STUDY) for r in records} - {None}
            found = {k: run for s in studies for k, run in _runs_by_key(client, exp_id, s).items()}
            ids: dict[str, str] = {}
            for record in records:
                run = found.get(record.key)
                digest = record.digest()
                parent = ids.get(record.parent) if record.parent else None
                # Unchanged, unless it now nests under another run (a new trials output's).
                same = run is not None and run.data.tags.get(DIGEST) == digest
                if same and parent not in (None, run.data.tags.get("mlflow.parentRunId")):
                    same = False
                if same:
                    ids[record.key] = run.info.run_id
                    counts.unchanged += 1
                    continue
                if run is None:
                    run_id = client.create_run(
                        exp_id,
                        start_time=record.start_ms,
                        tags={KEY: record.key, STUDY: record.tags[STUDY]},
                        run_name=record.name,
                    ).info.run_id
                    known: dict[str, str] = {}
                    counts.created += 1
                else:
                    run_id, known = run.info.run_id, dict(run.data.params)
                    counts.updated += 1
                ids[record.key] = run_id
                _write(client, run_id, record, known, parent, digest)
        return counts

    def _experiment(self, client: Any) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            return client.create_experiment(
                self.experiment, artifact_location=self.artifact_location
            )
        if exp.lifecycle_stage == "deleted":  # a deleted experiment keeps its name: restore it
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id


def _write(
    client: Any,
    run_id: str,
    record: RunRecord,
    known: dict[str, str],
    parent: str | None,
    digest: str,
) -> None:
    """Params not yet on the run (MLflow params cannot change), metrics, curves, tags,
    artifacts and the end status; the digest tag last."""
    from mlflow.entities import Metric, Param, RunTag

    params = [
        Param(k, v[:_MAX_PARAM]) for k, v in record.params.items() if _key(k) and k not in known
    ]
    ts = record.end_ms or record.start_ms or 0
    metrics = [Metric(k, v, ts, 0) for k, v in record.metrics.items() if _key(k)]
    for name, points in record.curves.items():
        metrics.extend(Metric(name, v, ts, step) for step, v in points if _key(name))
    tags = dict(record.tags)
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    if record.tags.get(GIT_COMMIT):
        tags["mlflow.source.git.commit"] = record.tags[GIT_COMMIT]
    if record.tags.get(NOTE):
        tags["mlflow.note.content"] = record.tags[NOTE]
    tag_list = [RunTag(k, str(v)[:_MAX_TAG]) for k, v in tags.items() if _key(k)]
    for i in range(0, len(params), _PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=params[i : i + _PARAMS_TAGS_PER_BATCH])
    for i in range(0, len(tag_list), _PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=tag_list[i : i + _PARAMS_TAGS_PER_BATCH])
    for i in range(0, len(metrics), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _METRICS_PER_BATCH])
    for name, path in record.artifacts.items():
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=name)
        else:
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FAILED" if record.failed else "FINISHED", record.end_ms)
    client.set_tag(run_id, DIGEST, digest)


def _runs_by_key(client: Any, exp_id: str, study: str) -> dict[str, Any]:
    """Every active run of the study in the experiment, by its key tag (all pages)."""
    out: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs(
            [exp_id],
            filter_string=f"tags.`{STUDY}` = '{study}'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            key = run.data.tags.get(KEY)
            if key is not None:
                out.setdefault(key, run)
        token = page.token
        if not token:
            return out


#: An empty store made by this process, copied for each new one: creating the tables runs
#: MLflow's whole migration history (a second or more on 2 cores), a copy takes milliseconds.
_EMPTY_STORE: list[Path] = []


def _new_sqlite_store(path: Path) -> None:
    """Create the SQLite file at `path` unless it exists, as a copy of an empty store."""
    if path.exists():
        return
    from mlflow import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    if not (_EMPTY_STORE and _EMPTY_STORE[0].is_file()):
        empty = Path(tempfile.mkdtemp(prefix="synthpat-mlflow-")) / "empty.db"
        MlflowClient(f"{_SQLITE}{empty}").search_experiments()  # creates the tables
        _EMPTY_STORE[:] = [empty]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.copyfile(_EMPTY_STORE[0], tmp)
    os.replace(tmp, path)  # never a half-copied store at `path`


def _check_reachable(uri: str) -> None:
    """Fail in seconds on a server that does not answer, not after MLflow's minutes of
    retries."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as exc:
        raise ConnectionError(f"no MLflow server answers at {uri} ({exc})") from None


def _key(name: str) -> bool:
    return 0 < len(name) <= 250


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and Alembic's INFO lines (creating the database tables) off the terminal."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
