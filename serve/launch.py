"""Start, stop and detach the serving application.

Serving never decides where Ray runs: the caller starts or joins it and hands that in
(`synthpat serve` and the serve_smoke stage pass `orchestrator.ray_runtime.ensure_ray`, the one
function that does it for every stage). `start_server` deploys on that Ray and returns once
/readyz answers; `serve_forever` holds it until SIGTERM. `start_detached` runs the caller's
foreground serve command in a new session that holds the local Ray and Serve until
`stop_detached` sends it SIGTERM; a small JSON state file records its pid and URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from config.resources import ResourcesConfig
from config.serve import ServeConfig
from tasks.files import write_text_atomic

APP_NAME = "synthpat"
#: The file a detached server writes, once ready, into the run folder: its URL and trial.
READY_FILE = ".serve-ready.json"
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    url: str
    trial_id: str
    checkpoint: str
    #: The HTTP front the replicas run behind (`serve.ingress.ingress_in_effect`).
    ingress: str = "proxy"


@dataclass(frozen=True)
class RunSettings:
    """What serving takes from the config a run was made with (the defaults without one)."""

    serve: ServeConfig
    resources: ResourcesConfig
    select_metric: str


def api_key_from_env(cfg: ServeConfig) -> str | None:
    """The API key named by `serve.api_key_env`, or None; an unset variable is an error."""
    if not cfg.api_key_env:
        return None
    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        raise ValueError(f"serve.api_key_env={cfg.api_key_env!r}: that variable is not set")
    return key


def start_server(
    run_dir: Path | str,
    cfg: ServeConfig,
    checkpoint: str | None = None,
    host: str | None = None,
    port: int | None = None,
    *,
    select_metric: str | None = None,
    storage_path: str | None = None,
    connect_ray: Callable[[], object] | None = None,
    timeout_s: float = 180.0,
) -> Running:
    """Pick the checkpoint, deploy it behind Serve's HTTP proxy on host:port, wait until ready.

    `select_metric`: the run's resolved metric (`RunSettings.select_metric`); None resolves `cfg`
    alone. `connect_ray` starts or joins Ray once the checkpoint is known to exist (so a wrong
    `checkpoint` fails before Ray starts); without it Ray must already be up in this process.
    `storage_path`: shared storage that replicas on other nodes load the checkpoint from.
    """
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.select import select_checkpoint

    metric = select_metric or cfg.resolve_select_metric()
    selection = select_checkpoint(run_dir, metric, checkpoint)
    host = host or cfg.host
    port = port or cfg.port
    if connect_ray is not None:
        connect_ray()
    if not ray.is_initialized():
        # serve.start would call a bare ray.init(), which joins any cluster `ray start` left on
        # this machine: where Ray runs is the caller's decision.
        raise RuntimeError("start_server: Ray is not running in this process; start or join it")
    serve.start(http_options={"host": host, "port": port})
    app = build_app(cfg, selection, api_key_from_env(cfg), storage_path)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    wait_ready(url, timeout_s)
    ingress = _model_info(url, api_key_from_env(cfg)).get("ingress", "proxy")
    if cfg.ingress == "haproxy" and ingress != "haproxy":
        log.warning(
            "serve.ingress=haproxy, but the replicas run behind %s: Serve takes its front from "
            "the environment its Ray started with (RAY_SERVE_ENABLE_HA_PROXY=1 and "
            "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 on every node's `ray start`)",
            ingress,
        )
    return Running(url, selection.trial_id, str(selection.path), ingress)


def _model_info(url: str, api_key: str | None) -> dict[str, Any]:
    import httpx

    from serve.api import API_KEY_HEADER

    headers = {API_KEY_HEADER: api_key} if api_key else {}
    return httpx.get(f"{url}/v1/model", headers=headers, timeout=30.0).json()


class _NotReady(Exception):
    """/readyz answered, but not 200 (yet)."""


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    """Poll `url`/readyz until it answers 200, or raise TimeoutError naming the URL."""
    import httpx
    from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

    def probe() -> None:
        r = httpx.get(f"{url}/readyz", timeout=5.0)
        if r.status_code != 200:
            raise _NotReady(f"HTTP {r.status_code}")

    try:
        Retrying(
            retry=retry_if_exception_type((httpx.HTTPError, _NotReady)),
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(0.5),
        )(probe)
    except RetryError as err:
        last = err.last_attempt.exception()
        why = str(last) if isinstance(last, _NotReady) else type(last).__name__
        raise TimeoutError(f"{url}/readyz: not ready after {timeout_s:.0f}s ({why})") from None


def _poll(probe: Callable[[], T], timeout_s: float, every_s: float) -> T:
    """Call `probe` every `every_s` until it returns something truthy, at most `timeout_s`; its
    last result (falsy: time ran out). An exception from `probe` ends the wait at once."""
    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    return Retrying(
        retry=retry_if_result(lambda result: not result),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(every_s),
        retry_error_callback=lambda state: state.outcome.result(),
    )(probe)


def stop_server() -> None:
    """Delete the app and shut Serve down on the connected Ray (never `ray stop`)."""
    from ray import serve

    try:
        serve.delete(APP_NAME)
    finally:
        serve.shutdown()


def state_path() -> Path:
    """Where a detached server records its pid and URL (SYNTHPAT_SERVE_STATE overrides)."""
    given = os.environ.get("SYNTHPAT_SERVE_STATE")
    return Path(given) if given else Path.home() / ".cache" / "synthpat" / "serve.json"


def start_detached(
    run_dir: Path | str,
    checkpoint: str | None,
    host: str | None,
    port: int | None,
    *,
    command: Sequence[str],
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Run the server in a background process of its own session; return its state record.

    `command` is the caller's foreground serve command (`python -m orchestrator serve`): it gets
    RUN_DIR, the given flags and `--ready-file FILE`, and must write FILE once serving (as
    `serve_forever` does), so that the process which starts Ray is the one that serves."""
    state = state_path()
    if state.is_file():
        old = json.loads(state.read_text())
        if _alive(old.get("pid", -1)):
            raise RuntimeError(f"a server is already running ({old['url']}, pid {old['pid']})")
    run_dir = Path(run_dir).resolve()
    log = run_dir / "serve.log"
    ready = run_dir / READY_FILE
    ready.unlink(missing_ok=True)  # a crashed server's leftover would read as ready at once
    cmd = [*command, str(run_dir)]
    for flag, value in (("--checkpoint", checkpoint), ("--host", host), ("--port", port)):
        if value is not None:
            cmd += [flag, str(value)]
    cmd += ["--ready-file", str(ready)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=Path.cwd()
        )

    def ready_record() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}; see {log}")
        return json.loads(ready.read_text()) if ready.is_file() else None

    record = _poll(ready_record, timeout_s, 0.5)
    if not record:
        os.killpg(proc.pid, signal.SIGTERM)
        raise TimeoutError(f"the server was not ready after {timeout_s:.0f}s; see {log}")
    record = {**record, "pid": proc.pid, "log": str(log)}
    ready.unlink()
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(record, indent=2) + "\n")
    return record


def stop_detached(timeout_s: float = 60.0) -> dict[str, Any] | None:
    """SIGTERM the detached server and wait for it; None when none is recorded."""
    state = state_path()
    if not state.is_file():
        return None
    record = json.loads(state.read_text())
    pid = int(record.get("pid", -1))
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not _poll(lambda: not _alive(pid), timeout_s, 0.3):
            os.killpg(pid, signal.SIGKILL)  # its own session: only the server and its Ray
    state.unlink(missing_ok=True)
    return record


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def load_run_settings(run_dir: Path | str) -> RunSettings:
    """The serve and resources sections of the config a run was made with (or the defaults), and
    the metric that picks its served checkpoint."""
    from config import load_config

    path = Path(run_dir) / "config.resolved.yaml"
    if path.is_file():
        cfg = load_config(path, [])
        return RunSettings(cfg.serve, cfg.resources, cfg.serve.resolve_select_metric(cfg.trials))
    serve_cfg = ServeConfig()
    return RunSettings(serve_cfg, ResourcesConfig(), serve_cfg.resolve_select_metric())


def serve_forever(
    run_dir: Path | str,
    checkpoint: str | None = None,
    host: str | None = None,
    port: int | None = None,
    *,
    ensure_ray: Callable[[ResourcesConfig, str], object],
    ready_file: Path | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C, then shut Serve and this process's Ray down.

    Call it inside `orchestrator.shutdown.stop_on_signals()`: a stop signal, also one that lands
    while the server is still starting, raises `Stopped` here, and it is raised again once
    Serve and Ray are down (bounded: `shutdown.GRACE_S`), for the caller to exit 128 + signal.
    `ensure_ray(resources, ingress)` starts or joins Ray for the run's resources and its
    `serve.ingress`. `ready_file`, once
    serving, receives the URL and trial as JSON (how `start_detached` learns it is up)."""
    import ray

    run_dir = Path(run_dir)
    settings = load_run_settings(run_dir)
    try:
        running = start_server(
            run_dir,
            settings.serve,
            checkpoint,
            host,
            port,
            select_metric=settings.select_metric,
            storage_path=settings.resources.storage_path,
            connect_ray=lambda: ensure_ray(settings.resources, settings.serve.ingress),
        )
        if ready_file is not None:
            # Written whole, then renamed: the waiting parent never reads half a record.
            write_text_atomic(ready_file, json.dumps(running.__dict__))
        print(
            f"serving trial {running.trial_id} at {running.url} "
            f"(docs: {running.url}/docs; front: {running.ingress})"
        )
        print(f"  curl -s {running.url}/v1/classify -H 'content-type: application/json' \\")
        print(
            '       -d \'{"texts": ["A semiconductor device with a gate electrode"]}\'', flush=True
        )
        while True:
            time.sleep(0.5)
    finally:
        if ray.is_initialized():
            with contextlib.suppress(Exception):
                stop_server()
            ray.shutdown()
