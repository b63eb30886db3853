"""The `synthpat` command line. Validation runs before any Ray or model import."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from config import ConfigError, StudyConfig, load_config

if TYPE_CHECKING:
    from orchestrator.cache import Manifest

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigArg = Annotated[Path, typer.Argument(help="Study config (YAML).")]
Overrides = Annotated[
    list[str] | None, typer.Argument(help="key=value overrides, e.g. data.seed=3")
]
Force = Annotated[bool, typer.Option("--force", help="Re-run even if up to date.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Show Ray, vLLM and library output live (it is always in runs/<study>/logs/).",
    ),
]


def _load(config: Path, overrides: list[str] | None) -> StudyConfig:
    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _run_config(run_dir: Path, overrides: list[str] | None = None) -> StudyConfig:
    """The config a run folder last ran with, pointed back at this folder (it may have moved)."""
    resolved = run_dir / "config.resolved.yaml"
    if not resolved.is_file():
        typer.echo(f"{run_dir}: not a run folder (no config.resolved.yaml)", err=True)
        raise typer.Exit(2)
    here = [f"study={run_dir.name}", f"resources.runs_dir={run_dir.resolve().parent}"]
    return _load(resolved, [*(overrides or []), *here])


def _write_resolved(cfg: StudyConfig) -> Path:
    from config.loader import dump_config
    from orchestrator.stages import run_dir_for

    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.resolved.yaml").write_text(dump_config(cfg))
    return run_dir


def _run(cfg: StudyConfig, names: list[str], force: bool, verbose: bool = False) -> None:
    from orchestrator.console import configure
    from orchestrator.shutdown import Stopped, as_stop, leave, stop_on_signals
    from orchestrator.stages import run_dir_for, run_stage, study_graph
    from orchestrator.stages.base import console

    configure(verbose=verbose)
    _write_resolved(cfg)
    graph = study_graph(cfg)
    # SIGTERM / Ctrl-C: the stage stops, keeps what it wrote, and the command exits 128 + signal.
    with stop_on_signals():
        for name in names or [s.name for s in graph.stages]:
            if not graph.enabled(name):
                typer.echo(f"{name}: disabled in config, skipped", err=True)
                continue
            try:
                run_stage(graph, name, force=force)
            except (ValueError, FileNotFoundError, RuntimeError) as exc:
                log = run_dir_for(cfg) / "logs" / f"{name}.log"
                where = f" (the libraries' output: {log})" if log.exists() else ""
                typer.echo(f"{name}: failed: {exc}{where}", err=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt as exc:
                leave(as_stop(exc) or Stopped(signal.SIGINT), console.print)


@app.command()
def validate(config: ConfigArg, overrides: Overrides = None) -> None:
    """Check a config; print every error with its field path, exit 2 if any."""
    cfg = _load(config, overrides)
    typer.echo(f"{config}: ok (study {cfg.study!r})")


@app.command()
def plan(
    config: ConfigArg,
    overrides: Overrides = None,
    pilot: Annotated[
        Path | None,
        typer.Option(
            help="A finished run (e.g. runs/quickstart) whose report measured the "
            "variance components; without it, stated defaults."
        ),
    ] = None,
    detect: Annotated[
        float | None, typer.Option(help="Also say how many draws x seeds detect this gain.")
    ] = None,
) -> None:
    """Generation rows, trials, GPU-hours and the power of the verdict, before anything runs."""
    from orchestrator.cache import RunStore
    from orchestrator.plan import plan_study, print_plan
    from orchestrator.plan_power import power_plan, print_power
    from orchestrator.stages import run_dir_for, study_graph
    from tasks.artifacts import load_corpora

    cfg = _load(config, overrides)
    run_dir = run_dir_for(cfg)
    store = RunStore(run_dir)
    states = study_graph(cfg, store).states(store) if run_dir.is_dir() else []
    # Corpora that an up-to-date generate stage wrote make the trial count exact.
    done = {s.stage for s in states if s.state == "done"}
    generated = load_corpora(store.stage_dir("generate")) if "generate" in done else None
    print_plan(cfg, plan_study(cfg, generated))
    if states:
        _print_states(states, f"synthpat run would, against {run_dir}", would_run=True)
    try:
        lines = power_plan(cfg, pilot, detect)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"plan: {exc}", err=True)
        raise typer.Exit(2) from None
    print_power(lines, detect, len({ln.regime for ln in lines}))


@app.command()
def prepare(
    config: ConfigArg, overrides: Overrides = None, force: Force = False, verbose: Verbose = False
) -> None:
    """Load, validate and split the real patents; draw the low-resource regimes."""
    _run(_load(config, overrides), ["prepare"], force, verbose)


@app.command()
def generate(
    config: ConfigArg, overrides: Overrides = None, force: Force = False, verbose: Verbose = False
) -> None:
    """Generate, filter and write the synthetic corpora (resumes a killed run)."""
    _run(_load(config, overrides), ["generate"], force, verbose)


@app.command()
def fidelity(
    config: ConfigArg, overrides: Overrides = None, force: Force = False, verbose: Verbose = False
) -> None:
    """Score every synthetic corpus: MMD with a p-value, Frechet, PRDC, diversity, leakage."""
    _run(_load(config, overrides), ["fidelity"], force, verbose)


@app.command()
def trials(
    config: ConfigArg, overrides: Overrides = None, force: Force = False, verbose: Verbose = False
) -> None:
    """Run the classifier grid on Ray Tune (resumes a killed run without re-running trials)."""
    _run(_load(config, overrides), ["trials"], force, verbose)


@app.command()
def report(
    target: Annotated[
        Path, typer.Argument(help="A run folder (runs/<study>) or a study config (YAML).")
    ],
    overrides: Overrides = None,
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Write report.md and report.html: controlled gains, correlations, mixing, numerics."""
    cfg = _run_config(target, overrides) if target.is_dir() else _load(target, overrides)
    from orchestrator.stages import run_dir_for

    _run(cfg, ["report"], force, verbose)
    typer.echo(str(run_dir_for(cfg) / "report" / "report.html"))


@app.command()
def run(
    config: ConfigArg,
    overrides: Overrides = None,
    force: Force = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to run on (auto, ray://host:10001).")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run every enabled stage in order, skipping those that are up to date."""
    extra = [f"resources.address={address}"] if address else []
    _run(_load(config, [*(overrides or []), *extra]), [], force, verbose)


@app.command()
def submit(
    config: ConfigArg,
    overrides: Overrides = None,
    address: Annotated[
        str, typer.Option(help="Ray Jobs address, e.g. http://127.0.0.1:8265.")
    ] = "http://127.0.0.1:8265",
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish.")] = False,
    runs_dir: Annotated[
        str, typer.Option(help="Where runs/<study> goes on the cluster's head node.")
    ] = "~/synthpat/runs",
    env: Annotated[
        list[str] | None,
        typer.Option(
            help="A variable to pass to the job with its value from here, e.g. --env HF_TOKEN "
            "--env SYNTHPAT_API_KEY (repeatable)."
        ),
    ] = None,
) -> None:
    """Submit `synthpat run CONFIG` as a Ray job, shipping this project as its working dir."""
    from orchestrator.jobs import cluster_overrides, job_env, submit_study

    try:
        env_vars = job_env(env or [])
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    cfg = _load(config, overrides)  # fail here, not on the cluster, on a bad config
    extra, notes = cluster_overrides(cfg, overrides or [], Path.cwd(), runs_dir)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    job_id, status, log_tail = submit_study(
        address, config, [*(overrides or []), *extra], Path.cwd(), env_vars=env_vars, wait=wait
    )
    typer.echo(f"job {job_id}: {status}")
    if log_tail:
        typer.echo(f"last lines of the job's log:\n{log_tail}", err=True)
    if wait and status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="runs/<study> folder.")]) -> None:
    """Which stages are done, stale or missing, with row counts and timings."""
    from orchestrator.cache import RunStore
    from orchestrator.stages import study_graph

    if not run_dir.is_dir():
        typer.echo(f"{run_dir}: no such run folder", err=True)
        raise typer.Exit(2)
    cfg = _run_config(run_dir)
    store = RunStore(run_dir)
    _print_states(study_graph(cfg, store).states(store), f"synthpat status: {run_dir}")


def _print_states(states: list, title: str, would_run: bool = False) -> None:
    """One row per stage: its state against the config, rows, seconds (`stage_seconds`), a note.

    `would_run`: label stale and missing stages as what `synthpat run` would do (the plan)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("stage", "state", "seconds", "rows", "note"):
        t.add_column(col)
    for st in states:
        m = st.manifest
        color = {"done": "green", "stale": "yellow", "missing": "red", "disabled": "dim"}[st.state]
        label = st.state
        if would_run:
            label = {"done": "up to date", "stale": "runs", "missing": "runs"}.get(label, label)
        rows = ", ".join(f"{k}={v}" for k, v in (m.rows if m else {}).items())
        note = st.reason or (m.summary.get("status_note", "") if m else "")
        t.add_row(
            st.stage,
            f"[{color}]{label}[/{color}]",
            stage_seconds(m) if m else "",
            rows,
            str(note),
        )
    Console().print(t)


def stage_seconds(m: Manifest) -> str:
    """A stage's seconds over every attempt that made its output, with the count when more than
    one; a manifest from before attempts were recorded is one attempt of `seconds`."""
    total = m.total_seconds if m.total_seconds is not None else m.seconds
    n = len(m.attempts) or 1
    return f"{total:.1f}" + (f" ({n} attempts)" if n > 1 else "")


@app.command()
def serve(
    run_dir: Annotated[
        Path | None, typer.Argument(help="runs/<study> folder whose trials to serve.")
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="Serve this trial_id instead of the best one.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (serve.host: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (serve.port: 8000).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the detached server.")] = False,
    ready_file: Annotated[
        Path | None,
        typer.Option(hidden=True, help="Write the URL here once serving (set by --detach)."),
    ] = None,
) -> None:
    """Serve the best trial's classifier with Ray Serve: POST /v1/classify, GET /v1/model."""
    from orchestrator.ray_runtime import ensure_ray
    from orchestrator.shutdown import Stopped, as_stop, leave, stop_on_signals
    from serve.launch import serve_forever, start_detached, stop_detached

    if stop:
        record = stop_detached()
        typer.echo(f"stopped {record['url']} (pid {record['pid']})" if record else "none running")
        return
    if run_dir is None or not run_dir.is_dir():
        typer.echo(f"RUN_DIR {run_dir}: no such run folder", err=True)
        raise typer.Exit(2)
    try:
        if detach:
            # The background process is this same command in the foreground: it starts Ray the
            # way every stage does, and serves.
            foreground = [sys.executable, "-m", "orchestrator", "serve"]
            record = start_detached(run_dir, checkpoint, host, port, command=foreground)
            url, pid = record["url"], record["pid"]
            typer.echo(f"serving trial {record['trial_id']} at {url} (pid {pid})")
            typer.echo("stop it with: synthpat serve --stop")
        else:
            # SIGTERM / Ctrl-C, even during start-up: Serve and Ray shut down, exit 128 + signal.
            with stop_on_signals():
                try:
                    serve_forever(
                        run_dir,
                        checkpoint,
                        host,
                        port,
                        ensure_ray=ensure_ray,
                        ready_file=ready_file,
                    )
                except KeyboardInterrupt as exc:
                    stopped = as_stop(exc) or Stopped(signal.SIGINT)
                    leave(
                        stopped, typer.echo, f"serve: stopped by {stopped.signal_name}; shut down"
                    )
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError) as exc:
        typer.echo(f"serve: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="runs/<study> folder to export from.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write (created; must be empty).")],
    trial: Annotated[
        str | None, typer.Option(help="Export this trial_id instead of the one serve picks.")
    ] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            help="Upload to this Hub model repo (owner/name); the corpora go to the dataset "
            "repo owner/name-synthetic-corpora."
        ),
    ] = None,
) -> None:
    """Write the served (or --trial) classifier and every synthetic corpus as Hugging Face
    folders with model and dataset cards."""
    from serve.launch import load_run_settings
    from serve.select import candidates, select_checkpoint, trials_dir
    from tasks.artifacts import load_results
    from tasks.export import ExportError, export_run
    from tasks.export.hub import HubError, corpora_repo, hub_token, push_export

    if not run_dir.is_dir():
        typer.echo(f"RUN_DIR {run_dir}: no such run folder", err=True)
        raise typer.Exit(2)
    try:
        if push_to_hub:
            hub_token(push_to_hub)  # no token or no network: say so before exporting
        metric = load_run_settings(run_dir).select_metric
        sel = select_checkpoint(run_dir, metric, trial, flag="--trial")
        chosen = {"select_metric": metric, "select_value": sel.value}
        if trial is None:
            n = len(candidates(load_results(trials_dir(run_dir)), metric))
            chosen.update(chosen_by="select_metric", n_candidates=n)
        else:
            chosen.update(chosen_by="trial")
        result = export_run(
            run_dir,
            to,
            sel.path,
            sel.row,
            trial=chosen,
            dataset_repo=corpora_repo(push_to_hub) if push_to_hub else None,
        )
        typer.echo(
            f"exported trial {result.trial_id} ({result.family}) to {result.folder}; "
            f"{len(result.corpora)} corpora in {result.folder / 'corpora'}"
        )
        if push_to_hub:
            for url in push_export(result.folder, push_to_hub):
                typer.echo(f"pushed {url}")
    except (ExportError, HubError, ValueError, FileNotFoundError, FileExistsError) as exc:
        typer.echo(f"export: {exc}", err=True)
        raise typer.Exit(1) from None


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
