"""Serve's HTTP front: which one `serve.ingress` picks, and the environment a local Ray gets."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from serve import ingress
from serve.ingress import private_folder, ray_env, resolve_ingress

#: Ray puts each HAProxy file in a folder named after the node id; HAProxy's socket path limit.
NODE_ID_CHARS, SOCKET_PATH_MAX = 56, 97


@pytest.fixture
def fake_haproxy(monkeypatch, tmp_path):
    """`sleep` standing in for HAProxy: the wrapper execs whatever binary it was made for."""
    monkeypatch.setattr(ingress, "haproxy_binary", lambda: "/bin/sleep")
    made: list[Path] = []
    yield made
    for folder in made:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def _env(made: list[Path], **environ: str) -> dict[str, str]:
    env = ray_env("haproxy", environ)
    folder = private_folder(env)
    if folder is not None:
        made.append(folder)
    return env


def test_auto_takes_haproxy_only_where_its_binary_is(fake_haproxy, monkeypatch):
    assert resolve_ingress("auto") == "haproxy"
    assert resolve_ingress("proxy") == "proxy"
    monkeypatch.setattr(ingress, "haproxy_binary", lambda: None)
    assert resolve_ingress("auto") == "proxy"
    with pytest.raises(ValueError, match="serve.ingress=haproxy: Ray Serve finds no HAProxy"):
        resolve_ingress("haproxy")
    with pytest.raises(ValueError, match="serve.ingress='nginx': choose one of auto, haproxy"):
        resolve_ingress("nginx")  # type: ignore[arg-type]


def test_the_proxy_and_a_users_own_choice_add_nothing(fake_haproxy, monkeypatch):
    assert ray_env("proxy", {}) == {}
    assert ray_env("auto", {"RAY_SERVE_ENABLE_HA_PROXY": "0"}) == {}
    assert ray_env("haproxy", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}) == {}
    monkeypatch.setattr(ingress, "haproxy_binary", lambda: None)
    assert ray_env("auto", {}) == {}  # no binary: the proxy


def test_haproxy_env_is_private_short_and_on_free_ports(fake_haproxy):
    env = _env(fake_haproxy)
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    folder = private_folder(env)
    assert folder is not None and stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key in ("SOCKET_PATH", "METRICS_SOCKET_PATH", "CONFIG_FILE_LOC", "SERVER_STATE_FILE"):
        path = Path(env[f"RAY_SERVE_HAPROXY_{key}"])
        assert path.parent == folder
        assert len(str(path)) + NODE_ID_CHARS + 1 <= SOCKET_PATH_MAX, path
    ports = {int(env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])}
    assert len(ports) == 2 and not ports & {8404, 9101}  # not Ray's fixed ones
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5
    # A setting the user made stays theirs.
    mine = _env(fake_haproxy, RAY_SERVE_HAPROXY_NBTHREAD="8")
    assert "RAY_SERVE_HAPROXY_NBTHREAD" not in mine and "RAY_SERVE_HAPROXY_BINARY_PATH" in mine


def test_the_wrapper_becomes_the_binary_and_dies_with_its_parent(fake_haproxy):
    wrapper = _env(fake_haproxy)["RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert os.access(wrapper, os.X_OK)
    # The parent stands in for Serve's HAProxyManager actor: it starts the wrapper and is killed.
    parent = subprocess.Popen(
        [sys.executable, "-c",
         f"import subprocess, time; p = subprocess.Popen([{wrapper!r}, '60']); "
         "print(p.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    deadline = time.monotonic() + 10
    while child.cmdline()[:1] != ["/bin/sleep"]:  # the exec chain: sh, python, then the binary
        assert time.monotonic() < deadline, child.cmdline()
        time.sleep(0.05)
    assert child.cmdline() == ["/bin/sleep", "60"] and child.ppid() == parent.pid
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    child.wait(10)  # psutil.TimeoutExpired if the binary outlived its parent
    assert not child.is_running()


def test_a_dead_processs_folder_is_swept_a_live_ones_kept(fake_haproxy):
    env = _env(fake_haproxy)
    tmp = private_folder(env).parent  # type: ignore[union-attr]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    gone = tmp / f"sph-{dead.stdout.strip()}-left"
    gone.mkdir()
    (gone / "admin.sock").touch()
    again = _env(fake_haproxy)
    assert not gone.exists()
    assert private_folder(env).is_dir() and private_folder(again).is_dir()  # type: ignore[union-attr]
