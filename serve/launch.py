"""Start, stop and detach the serving application.

`start_server` deploys on the Ray this process runs (it starts a local one when none is up) and
returns once /readyz answers. `--detach` runs `python -m serve.launch` in a new session that holds
the local Ray and Serve until `stop_detached` sends it SIGTERM; a small JSON state file records
its pid and URL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP_NAME = "synthpat"


@dataclass(frozen=True)
class Running:
    url: str
    trial_id: str
    checkpoint: str


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on `host` now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def api_key_from_env(cfg: Any) -> str | None:
    """The API key named by `serve.api_key_env`, or None; an unset variable is an error."""
    if not cfg.api_key_env:
        return None
    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        raise ValueError(f"serve.api_key_env={cfg.api_key_env!r}: that variable is not set")
    return key


def start_server(
    run_dir: Path | str,
    cfg: Any,
    checkpoint: str | None = None,
    host: str | None = None,
    port: int | None = None,
    resources: Any = None,
    timeout_s: float = 180.0,
) -> Running:
    """Pick the checkpoint, deploy it behind Serve's HTTP proxy on host:port, wait until ready."""
    from ray import serve

    from orchestrator.ray_runtime import ensure_ray
    from serve.app import build_app
    from serve.select import select_checkpoint

    selection = select_checkpoint(run_dir, cfg.select_metric, checkpoint)
    host = host or cfg.host
    port = port or cfg.port
    ensure_ray(resources)
    serve.start(http_options={"host": host, "port": port})
    storage = getattr(resources, "storage_path", None)
    app = build_app(cfg, selection, api_key_from_env(cfg), storage)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    wait_ready(url, timeout_s)
    return Running(url=url, trial_id=selection.trial_id, checkpoint=str(selection.path))


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    """Poll `url`/readyz until it answers 200, or raise TimeoutError naming the URL."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=5.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise TimeoutError(f"{url}/readyz: not ready after {timeout_s:.0f}s ({last})")


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
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Run the server in a background process of its own session; return its state record."""
    state = state_path()
    if state.is_file():
        old = json.loads(state.read_text())
        if _alive(old.get("pid", -1)):
            raise RuntimeError(f"a server is already running ({old['url']}, pid {old['pid']})")
    run_dir = Path(run_dir).resolve()
    log = run_dir / "serve.log"
    cmd = [sys.executable, "-m", "serve.launch", str(run_dir)]
    for flag, value in (("--checkpoint", checkpoint), ("--host", host), ("--port", port)):
        if value is not None:
            cmd += [flag, str(value)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=Path.cwd()
        )
    ready = run_dir / ".serve-ready.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}; see {log}")
        if ready.is_file():
            record = {**json.loads(ready.read_text()), "pid": proc.pid, "log": str(log)}
            ready.unlink()
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps(record, indent=2) + "\n")
            return record
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise TimeoutError(f"the server was not ready after {timeout_s:.0f}s; see {log}")


def stop_detached(timeout_s: float = 60.0) -> dict[str, Any] | None:
    """SIGTERM the detached server and wait for it; None when none is recorded."""
    state = state_path()
    if not state.is_file():
        return None
    record = json.loads(state.read_text())
    pid = int(record.get("pid", -1))
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        if _alive(pid):
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


def load_run_settings(run_dir: Path | str) -> tuple[Any, Any]:
    """(serve, resources) sections of the config a run was made with, or the defaults."""
    from config import load_config
    from config.resources import ResourcesConfig
    from config.serve import ServeConfig

    path = Path(run_dir) / "config.resolved.yaml"
    if path.is_file():
        cfg = load_config(path, [])
        return cfg.serve, cfg.resources
    return ServeConfig(), ResourcesConfig()


def serve_forever(
    run_dir: Path | str,
    checkpoint: str | None = None,
    host: str | None = None,
    port: int | None = None,
    ready_file: Path | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C, then shut Serve and this process's Ray down."""
    import ray

    run_dir = Path(run_dir)
    serve_cfg, resources = load_run_settings(run_dir)
    running = start_server(run_dir, serve_cfg, checkpoint, host, port, resources)
    if ready_file is not None:
        ready_file.write_text(json.dumps(running.__dict__))
    print(f"serving trial {running.trial_id} at {running.url} (docs: {running.url}/docs)")
    print(f"  curl -s {running.url}/v1/classify -H 'content-type: application/json' \\")
    print('       -d \'{"texts": ["A semiconductor device with a gate electrode"]}\'', flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    while not stop["now"]:
        time.sleep(0.5)
    stop_server()
    ray.shutdown()


def _main(argv: list[str]) -> None:
    """`python -m serve.launch RUN_DIR [--checkpoint ID] [--host H] [--port P]` (detached mode)."""
    import argparse

    parser = argparse.ArgumentParser(prog="serve.launch")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    ready = args.run_dir.resolve() / ".serve-ready.json"
    serve_forever(args.run_dir, args.checkpoint, args.host, args.port, ready_file=ready)


if __name__ == "__main__":
    _main(sys.argv[1:])
