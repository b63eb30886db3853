"""A stage and the static graph of stages: fingerprints, states, skip, run and commit.

Each stage declares once what it reads and which config can change what it writes:

- `reads`: the stages whose outputs it reads. A stage that the config disables is left out
  (a study without generation has no `generate` input).
- `fields`: dotted config paths (`"trials"`, `"generation.ratios"`). Inside them, fields marked
  `NOT_FINGERPRINTED` in the schema (scheduling, where results go) do not count.
- `external_inputs`: files outside the run folder whose bytes count (the real patents).

A stage's fingerprint hashes those three and the package version, with each input stage's
fingerprint computed the same way from the config, so the whole graph's fingerprints are known
before anything runs: `run` skips what is up to date, `status` says why a stage is stale, and
`plan` says what a run would do. All three go through `StageGraph`.

A stage's time is kept across attempts: a run that is killed or fails and is started again
resumes the same work folder, and the manifest records the finishing attempt's seconds and the
total of every attempt that led to the output (`AttemptLog`).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from config import StudyConfig
from config.base import fingerprint_view, value_at
from orchestrator.cache import Manifest, RunStore, hash_file, hash_json, now
from orchestrator.console import console, stage_output
from orchestrator.shutdown import Stopped, as_stop
from orchestrator.tracking import track_stage
from tasks.files import write_json_atomic

#: The attempts record, in the stage's work folder (`RunStore.work_dir`): that folder holds the
#: work that later attempts at the same fingerprint reuse, and is removed once the stage succeeds.
ATTEMPTS = "attempts.json"
#: How often a running attempt rewrites its entry. A killed attempt counts up to its last write,
#: so its time is short by less than this.
HEARTBEAT_S = 15.0


@dataclass
class StageContext:
    """What a stage's `run` gets: the config, where to write, and the upstream outputs."""

    cfg: StudyConfig
    store: RunStore
    out_dir: Path  # temporary folder; becomes runs/<study>/<stage>/ on success
    work_dir: Path  # persistent across killed attempts with the same fingerprint (resume)
    fingerprint: str
    inputs: tuple[str, ...] = ()  # the stages it reads that this config enables
    force: bool = False  # `--force`: redo everything, reuse nothing from a previous output

    def input_dir(self, stage: str) -> Path:
        if stage not in self.inputs:
            raise ValueError(f"stage input {stage!r} is not among this run's inputs {self.inputs}")
        return self.store.stage_dir(stage)


@dataclass
class StageOutput:
    rows: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class Stage:
    """A stage: subclasses set `name`, `reads` and `fields` and implement `run`."""

    name: str = ""
    reads: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def enabled(self, cfg: StudyConfig) -> bool:
        return True

    def external_inputs(self, cfg: StudyConfig) -> dict[str, Path]:
        """Files outside the run folder whose content the outputs depend on."""
        return {}

    def run(self, ctx: StageContext) -> StageOutput:
        raise NotImplementedError

    def kept(self, ctx: StageContext) -> str:
        """What a stopped attempt leaves for the next one to reuse ("8 finished trials"), for
        the stop message; "" when nothing."""
        return ""


@dataclass(frozen=True)
class StageKey:
    """What a stage's fingerprint is made of, and the fingerprint."""

    config: dict[str, Any]
    upstream: dict[str, str]  # input stage -> its fingerprint
    inputs: dict[str, str]  # external input -> sha256 of its bytes
    fingerprint: str


@dataclass
class StageState:
    """What `status` and `plan` show about one stage."""

    stage: str
    state: str  # done | stale | missing | disabled
    manifest: Manifest | None
    reason: str = ""


class StageGraph:
    """The stages of one study config, in run order, with their fingerprints."""

    def __init__(self, stages: list[Stage], cfg: StudyConfig, store: RunStore | None = None):
        self.stages = stages
        self.cfg = cfg
        # Where an external input is not on this machine (a run folder copied elsewhere), its
        # hash as the stage's manifest recorded it stands in; the stage itself cannot re-run.
        self.store = store
        self._by_name = {s.name: s for s in stages}
        for s in stages:
            unknown = [r for r in s.reads if r not in self._by_name]
            if unknown:
                raise ValueError(f"stage {s.name} reads unknown stage(s) {unknown}")
        self._keys: dict[str, StageKey] = {}

    def stage(self, name: str) -> Stage:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown stage {name!r}; stages: {list(self._by_name)}") from None

    def enabled(self, name: str) -> bool:
        return self.stage(name).enabled(self.cfg)

    def inputs(self, name: str) -> tuple[str, ...]:
        """The stages `name` reads that this config runs."""
        return tuple(r for r in self.stage(name).reads if self.enabled(r))

    def config_view(self, name: str) -> dict[str, Any]:
        """The part of the config that can change the stage's output."""
        return {p: fingerprint_view(value_at(self.cfg, p)) for p in self.stage(name).fields}

    def key(self, name: str) -> StageKey:
        """The stage's fingerprint from the config alone (input stages' fingerprints too)."""
        if name not in self._keys:
            stage = self.stage(name)
            config = self.config_view(name)
            upstream = {up: self.key(up).fingerprint for up in self.inputs(name)}
            files = stage.external_inputs(self.cfg)
            inputs = {k: self._input_hash(name, k, Path(p)) for k, p in sorted(files.items())}
            fp = hash_json(
                {
                    "stage": name,
                    "config": config,
                    "upstream": upstream,
                    "inputs": inputs,
                    "version": _version(),
                }
            )
            self._keys[name] = StageKey(config, upstream, inputs, fp)
        return self._keys[name]

    def _input_hash(self, stage: str, key: str, path: Path) -> str:
        if path.exists():
            return hash_file(path)
        recorded = self.store.manifest(stage) if self.store is not None else None
        if recorded is not None and key in recorded.inputs:
            return recorded.inputs[key]
        raise FileNotFoundError(f"{path}: input `{key}` of stage {stage} not found")

    @cached_property
    def _order(self) -> list[str]:
        return [s.name for s in self.stages]

    def states(self, store: RunStore) -> list[StageState]:
        """Each stage: done, stale (with why), missing or disabled by this config."""
        out = []
        for name in self._order:
            m = store.manifest(name)
            if not self.enabled(name):
                out.append(StageState(name, "disabled", m, "disabled in config"))
            elif m is None:
                out.append(StageState(name, "missing", None))
            else:
                reason = self.stale_reason(name, m)
                out.append(StageState(name, "stale" if reason else "done", m, reason))
        return out

    def stale_reason(self, name: str, manifest: Manifest) -> str:
        """Why a stage's output does not match the config ("" when it does)."""
        key = self.key(name)
        if manifest.fingerprint == key.fingerprint:
            return ""
        changed = _changed_paths(manifest.config, key.config)
        if changed:
            more = " ..." if len(changed) > 4 else ""
            return "config changed: " + ", ".join(changed[:4]) + more
        for up, fp in key.upstream.items():
            if manifest.upstream.get(up) != fp:
                return f"{up} changed since it ran"
        if set(manifest.upstream) != set(key.upstream):
            return f"inputs are now {sorted(key.upstream)}, it ran with {sorted(manifest.upstream)}"
        for k, h in key.inputs.items():
            if manifest.inputs.get(k) != h:
                return f"input file {k} changed"
        return "ran with another synthpat version"


def _changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two config views differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            p = f"{prefix}.{k}" if prefix else str(k)
            out.extend(_changed_paths(old.get(k), new.get(k), p))
        return out
    return [] if old == new else [prefix or "(root)"]


class AttemptLog:
    """This attempt's entry in its stage's attempts record, kept current while the stage runs.

    An entry is `{started_at, seconds, ended}`. It is written when the attempt starts and, while
    `ended` is `running`, rewritten every HEARTBEAT_S by a daemon thread; an exception records
    `failed`, a stop by SIGTERM or Ctrl-C (`orchestrator.shutdown.Stopped`) `stopped`, with the
    exact seconds. An entry still `running` when the next attempt
    starts belonged to a killed process (SIGKILL, a lost machine): it becomes `killed` and counts
    the seconds of its last write, up to its last heartbeat, never more than it ran. The total is
    every attempt at this fingerprint since the stage last succeeded, the ones whose work the
    output reuses; a trials output's reuse of another output's trials is not counted here (that
    time is in the manifest of the output that trained them).
    """

    def __init__(self, work_dir: Path):
        self.path = work_dir / ATTEMPTS
        self.earlier = [
            {**a, "ended": "killed"} if a["ended"] == "running" else a
            for a in read_attempts(self.path)
        ]
        self.started_at = now()
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._write("running")
        self._beat = threading.Thread(target=self._heartbeat, name="stage-heartbeat", daemon=True)
        self._beat.start()

    def done(self) -> list[dict[str, Any]]:
        """Stop beating; every attempt's entry, this one `done`, for the manifest."""
        self._stop_beating()
        return self._entries("done")

    def failed(self, ended: str = "failed") -> None:
        """Stop beating and record this attempt as `ended` (`failed`, `stopped`) with its time,
        for the next one."""
        self._stop_beating()
        try:
            self._write(ended)
        except OSError as exc:  # the stage's own error is the one to raise
            console.print(f"[yellow]{self.path}: attempt time not recorded ({exc})")

    def _entries(self, ended: str) -> list[dict[str, Any]]:
        seconds = round(time.perf_counter() - self._t0, 3)
        return [*self.earlier, {"started_at": self.started_at, "seconds": seconds, "ended": ended}]

    def _write(self, ended: str) -> None:
        write_json_atomic(self.path, self._entries(ended))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write("running")
            except OSError as exc:  # the stage goes on; only a kill from now on counts short
                console.print(f"[yellow]{self.path}: attempt time no longer recorded ({exc})")
                return

    def _stop_beating(self) -> None:
        self._stop.set()
        self._beat.join()


def read_attempts(path: Path) -> list[dict[str, Any]]:
    """The entries of an attempts record; none where it is missing or not one (it is only a
    record of time: a bad one restarts the count rather than failing the stage)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if not isinstance(entries, list):
        return []
    return [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("seconds"), int | float)
        and isinstance(e.get("ended"), str)
    ]


def run_dir_for(cfg: StudyConfig) -> Path:
    base = cfg.resources.runs_dir or Path.cwd() / "runs"
    return Path(base) / cfg.study


def run_stage(graph: StageGraph, name: str, force: bool = False) -> Manifest:
    """Run one stage unless its manifest is up to date; return its manifest."""
    stage, cfg = graph.stage(name), graph.cfg
    store = graph.store or RunStore(run_dir_for(cfg))
    for up in graph.inputs(name):
        # An input must be what this config makes: a stage run on a stale input would record
        # the config's fingerprint for outputs made from something else.
        up_manifest = store.manifest(up)
        if up_manifest is None:
            raise RuntimeError(f"stage {name} needs stage {up}, which has not run")
        if up_manifest.fingerprint != graph.key(up).fingerprint:
            raise RuntimeError(
                f"stage {name} needs stage {up}, which is stale "
                f"({graph.stale_reason(up, up_manifest)}); run `synthpat {up}` first, or "
                "`synthpat run`, which runs every stage in order"
            )
    key = graph.key(name)
    manifest = store.manifest(name)
    if not force and manifest is not None and manifest.fingerprint == key.fingerprint:
        console.print(f"[green]{name}: up to date[/green] ({_rows(manifest.rows)})")
        return manifest
    why = graph.stale_reason(name, manifest) if manifest is not None else "not run yet"
    console.print(f"[bold]{name}[/bold]: running ({'forced' if force else why})")
    tmp = store.begin(name)
    work = store.work_dir(name, key.fingerprint)
    attempt = AttemptLog(work)
    ctx = StageContext(cfg, store, tmp, work, key.fingerprint, graph.inputs(name), force)
    log = store.run_dir / "logs" / f"{name}.log"
    try:
        with stage_output(log, name):
            out = stage.run(ctx)
        attempts = attempt.done()
        manifest = Manifest(
            stage=name,
            fingerprint=key.fingerprint,
            upstream=key.upstream,
            config=key.config,
            inputs=key.inputs,
            package_version=_version(),
            rows=out.rows,
            summary=out.summary,
            started_at=attempt.started_at,
            seconds=attempts[-1]["seconds"],
            attempts=attempts,
            total_seconds=round(sum(a["seconds"] for a in attempts), 3),
        )
        store.commit(name, tmp, manifest)
    except KeyboardInterrupt as exc:
        stop = as_stop(exc) or Stopped(signal.SIGINT)  # a Ctrl-C without the CLI's handler
        attempt.failed("stopped")
        stop.stage, stop.kept = name, _kept(stage, ctx)
        raise stop from None
    except BaseException:
        attempt.failed()
        raise
    _clear_work(ctx.work_dir)
    with stage_output(log, f"{name} (tracking)"):  # MLflow's and alembic's lines: the log
        track_stage(cfg, store, name, manifest)  # committed: log it (warns, never raises)
    took = f"{manifest.seconds:.1f}s"
    if len(attempts) > 1:
        took += f" ({len(attempts)} attempts, {manifest.total_seconds:.1f}s in all)"
    console.print(f"[green]{name}: done[/green] in {took} ({_rows(manifest.rows)})")
    return manifest


def _kept(stage: Stage, ctx: StageContext) -> str:
    try:
        return stage.kept(ctx)
    except Exception as exc:  # the stop message must not fail: say so instead
        return f"(could not tell what: {exc})"


def _clear_work(work_dir: Path) -> None:
    import shutil

    shutil.rmtree(work_dir, ignore_errors=True)


def _version() -> str:
    from orchestrator import __version__

    return __version__


def _rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in rows.items()) or "no rows"
