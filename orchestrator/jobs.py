"""Ray Jobs submission: ship the project as the job's working dir and run a study on a cluster."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

# Never ship these to the cluster: environments, results, caches.
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache", "bench/out"]


def build_entrypoint(config: str, overrides: list[str]) -> str:
    """The command the job runs on the head node."""
    return " ".join(
        ["python", "-m", "orchestrator", "run", shlex.quote(config), *map(shlex.quote, overrides)]
    )


def submit_study(
    address: str,
    config: Path,
    overrides: list[str],
    project_dir: Path,
    pip: list[str] | None = None,
    wait: bool = False,
    timeout_s: float = 3600,
) -> tuple[str, str]:
    """Submit `synthpat run CONFIG` as a Ray job; return (job id, final or current status).

    The config path is made relative to the project folder, which becomes the job's working dir,
    so the cluster sees the same tree as the laptop.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    project_dir = project_dir.resolve()
    try:
        rel = config.resolve().relative_to(project_dir)
    except ValueError:
        raise ValueError(
            f"config {config} must be inside the project folder {project_dir} to be shipped"
        ) from None
    runtime_env: dict = {"working_dir": str(project_dir), "excludes": EXCLUDES}
    if pip:
        runtime_env["pip"] = pip
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=build_entrypoint(str(rel), overrides), runtime_env=runtime_env
    )
    status = client.get_job_status(job_id)
    if wait:
        deadline = time.monotonic() + timeout_s
        while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            if time.monotonic() > deadline:
                break
            time.sleep(2)
            status = client.get_job_status(job_id)
    return job_id, str(status)
