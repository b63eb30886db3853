"""Ray Jobs submission: ship the project as the job's working dir and run a study on a cluster."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import StudyConfig

# Never ship these to the cluster: environments, results, caches.
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache", "bench/out"]


#: Where a submitted study writes runs/<study> on the cluster's head node: a persistent folder, not
#: the job's temporary copy of the working dir (which Ray deletes when the job ends).
DEFAULT_CLUSTER_RUNS_DIR = "~/synthpat/runs"


def cluster_overrides(
    cfg: StudyConfig, overrides: list[str], project_dir: Path, runs_dir: str
) -> tuple[list[str], list[str]]:
    """Overrides that make a config mean the same on the cluster; and notes for the user.

    Paths inside the project travel with the working dir. A data path outside it does not: it is
    passed as an absolute path, which must exist on the cluster (true on a local cluster; on a
    cloud cluster put the data inside the project or on shared storage).
    """
    given = {o.split("=", 1)[0].strip() for o in overrides}
    extra: list[str] = []
    notes: list[str] = []
    if "resources.runs_dir" not in given:
        extra.append(f"resources.runs_dir={runs_dir}")
        notes.append(f"runs go to {runs_dir}/{cfg.study} on the cluster's head node")
    src = cfg.data.source.path.resolve()
    if "data.source.path" not in given and not src.is_relative_to(project_dir.resolve()):
        extra.append(f"data.source.path={src}")
        notes.append(
            f"data.source.path {src} is outside the project folder and is not shipped: "
            "it must exist at that path on the cluster"
        )
    return extra, notes


def use_ray_auth_token_if_available() -> bool:
    """Send Ray's auth token with Jobs requests when one is at hand and no mode was chosen.

    `ray start` turns token auth on by itself when ~/.ray/auth_token exists, but a client process
    with RAY_AUTH_MODE unset sends no token and gets 401. Follow the same rule as the head: an
    explicit RAY_AUTH_MODE wins; otherwise a token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token means token mode. Must run before Ray reads its config (first import).
    """
    if "RAY_AUTH_MODE" in os.environ:
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def job_env(names: list[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The job's environment variables: each name's value from this machine's environment
    (secrets such as HF_TOKEN or SYNTHPAT_API_KEY stay off the command line and out of configs).
    """
    environ = os.environ if environ is None else environ
    missing = [n for n in names if n not in environ]
    if missing:
        raise ValueError(f"--env {', '.join(missing)}: not set in this environment")
    bad = [n for n in names if not n or "=" in n]
    if bad:
        raise ValueError(f"--env {bad[0]!r}: give a variable's name (its value is read from here)")
    return {n: environ[n] for n in names}


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
    env_vars: dict[str, str] | None = None,
    wait: bool = False,
    timeout_s: float = 3600,
    agent_wait_s: float = 120,
) -> tuple[str, str, str]:
    """Submit `synthpat run CONFIG` as a Ray job; return (job id, status, log tail if it failed).

    The config path is made relative to the project folder, which becomes the job's working dir,
    so the cluster sees the same tree as the laptop.
    """
    use_ray_auth_token_if_available()
    from ray.job_submission import JobStatus, JobSubmissionClient
    from tenacity import (
        Retrying,
        retry_if_exception,
        retry_if_result,
        stop_after_delay,
        wait_fixed,
    )

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
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    client = JobSubmissionClient(address)
    # A head that has just come up answers HTTP before its job agent has registered ("No
    # available agent to submit job"): retry that, and only that, for a while; then the error.
    submit = Retrying(
        retry=retry_if_exception(
            lambda e: isinstance(e, RuntimeError) and "No available agent" in str(e)
        ),
        stop=stop_after_delay(agent_wait_s),
        wait=wait_fixed(2),
        reraise=True,
    )
    job_id = submit(
        client.submit_job,
        entrypoint=build_entrypoint(str(rel), overrides),
        runtime_env=runtime_env,
    )
    if wait:
        # Past `timeout_s` the last status is returned; the job keeps running on the cluster.
        ended = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        status = Retrying(
            retry=retry_if_result(lambda s: s not in ended),
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(2),
            retry_error_callback=lambda state: state.outcome.result(),
        )(client.get_job_status, job_id)
    else:
        status = client.get_job_status(job_id)
    tail = ""
    if status in {JobStatus.FAILED, JobStatus.STOPPED}:
        tail = "\n".join(client.get_job_logs(job_id).splitlines()[-40:])
    return job_id, str(status), tail
