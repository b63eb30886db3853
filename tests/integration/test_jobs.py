"""Ray Jobs submission against a real `ray start --head` on 127.0.0.1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ray_head import ray_head

REPO = Path(__file__).resolve().parents[2]


def _submit(address: str, config: str, runs_dir: Path, *overrides: str, timeout: int):
    cmd = [sys.executable, "-m", "orchestrator", "submit", config, *overrides,
           "--address", address, "--wait", "--runs-dir", str(runs_dir)]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_submitted_study_runs_on_the_cluster_and_writes_the_runs_dir(tmp_path, uspto_path):
    with ray_head(num_cpus=2) as address:
        res = _submit(address, "tests/data/jobs_prepare.yaml", tmp_path / "runs", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCEEDED" in res.stdout
    # The data lives outside the shipped project folder: the submitter says so.
    assert "is outside the project folder" in res.stderr
    manifest = json.loads((tmp_path / "runs/jobs-prepare/prepare/manifest.json").read_text())
    assert manifest["rows"]["regime:r40"] == 40


@pytest.mark.slow
def test_quickstart_end_to_end_as_a_ray_job(tmp_path, uspto_path):
    with ray_head(num_cpus=2, timeout_s=180) as address:
        res = _submit(address, "configs/quickstart.yaml", tmp_path / "runs", timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = tmp_path / "runs/quickstart"
    from orchestrator.stages import STAGES

    for stage in STAGES:
        assert (run_dir / stage.name / "manifest.json").is_file(), stage.name
