"""`synthpat serve RUN_DIR --detach` and `synthpat serve --stop` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from demo_run import make_demo_run

from tasks.net import free_port

REPO = Path(__file__).resolve().parents[2]


def _synthpat(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "orchestrator", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_detach_classify_stop(tmp_path, uspto_path):
    demo = make_demo_run(tmp_path / "run", uspto_path, n_train=300, n_test=8)
    env = {**os.environ, "SYNTHPAT_SERVE_STATE": str(tmp_path / "state.json")}
    port = free_port()
    up = _synthpat("serve", str(demo.run_dir), "--detach", "--port", str(port), env=env)
    assert up.returncode == 0, up.stderr
    assert f"serving trial {demo.best_trial} at http://127.0.0.1:{port}" in up.stdout
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/classify",
            json={"texts": demo.test_texts[:2]},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["model"] == demo.best_trial
        again = _synthpat("serve", str(demo.run_dir), "--detach", "--port", str(port), env=env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = _synthpat("serve", "--stop", env=env)
    assert down.returncode == 0 and f"stopped http://127.0.0.1:{port}" in down.stdout
    assert not (tmp_path / "state.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert _synthpat("serve", "--stop", env=env).stdout.strip() == "none running"


def test_missing_run_dir_and_unknown_trial(tmp_path, uspto_path):
    env = dict(os.environ)
    missing = _synthpat("serve", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 2 and "no such run folder" in missing.stderr
    demo = make_demo_run(tmp_path / "run", uspto_path, n_train=200, n_test=4)
    bad = _synthpat("serve", str(demo.run_dir), "--checkpoint", "zz", env=env)
    assert bad.returncode == 1 and "'zz': no such trial_id" in bad.stderr
