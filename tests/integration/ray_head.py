"""A real `ray start --head` cluster on 127.0.0.1 for tests, stopped without touching others.

`ray stop` would stop every Ray instance on the machine, so the head runs with `--block` in its
own session and the test kills exactly that process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.net import free_port


@contextmanager
def ray_head(num_cpus: int = 2, timeout_s: float = 120) -> Iterator[str]:
    """Yield the Jobs address (http://127.0.0.1:<port>) of a fresh local head node."""
    ray_bin = Path(sys.executable).with_name("ray")
    gcs, dash = free_port(), free_port()
    # A short temp dir: Ray's socket paths must stay under the 107-character limit.
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    # Jobs run `python ...` from PATH, as on a cluster node whose environment is active: put this
    # interpreter's bin folder first, as activating the venv would.
    path = f"{ray_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": path}
    cmd = [
        str(ray_bin), "start", "--head", "--block", f"--port={gcs}",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--num-cpus={num_cpus}", "--include-dashboard=true", f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]  # fmt: skip
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except urllib.error.HTTPError:
                # The dashboard answers, but asks for Ray's auth token (token auth is on by
                # default once ~/.ray/auth_token exists): it is up.
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(
                        f"ray head did not come up: {(Path(temp) / 'head.log').read_text()}"
                    ) from None
                time.sleep(1)
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=30)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
