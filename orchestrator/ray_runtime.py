"""One place that starts or joins Ray, for every stage and for `synthpat serve`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from config.resources import ResourcesConfig
from orchestrator.shutdown import SETUP_HOOK, guard_from_ray, reinstall
from serve.ingress import Ingress, ray_env
from tasks.storage import storage_uri

# storage_uri is a pure path function (serving needs it too); it is re-exported for Ray callers.
#: Marks the environment of a local run's processes: each dies with its parent (see
#: orchestrator/startup/sitecustomize.py).
DIE_WITH_PARENT = "SYNTHPAT_DIE_WITH_PARENT"

__all__ = ["cluster_address", "ensure_ray", "job_setup_hook", "storage_uri"]

#: The worker-process setup hook of the Ray that `ensure_ray` started here (None: none, or a
#: joined cluster's). A worker gets one hook: an actor that sets its own runs this one after it.
_job_hook: list[str] = []


def job_setup_hook() -> str | None:
    """The setup hook that this process's Ray runs in every worker, as an import path."""
    return _job_hook[0] if _job_hook else None


def cluster_address(resources: ResourcesConfig | None = None) -> str | None:
    """The cluster to join (`resources.address`, else RAY_ADDRESS as `ray job submit` sets it),
    or None: synthpat starts a local Ray, which cannot grow."""
    return (resources.address if resources else None) or os.environ.get("RAY_ADDRESS")


def ensure_ray(resources: ResourcesConfig | None = None, ingress: Ingress = "auto") -> None:
    """Join the configured cluster, or start a local Ray, unless Ray is already up.

    `resources.address` (or RAY_ADDRESS, set by `ray job submit`) joins an existing cluster; on a
    laptop a local Ray with `resources.num_cpus` starts, dashboard off, usage stats off, its
    Serve set up for `ingress` (`serve.ingress`: Serve reads it only where Ray starts).
    """
    import ray

    guard_from_ray()  # later ray.init calls (ray.data.llm's) keep the stop handlers too
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    resources = resources or ResourcesConfig()
    address = cluster_address(resources)
    env: dict = {
        "env_vars": {
            k: os.environ[k]
            for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SYNTHPAT_CACHE")
            if k in os.environ
        }
    }
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # The processes the run's workers start die with them (vLLM's engine core and model
        # workers): nothing outlives a driver killed by any signal. Local only: on a cluster the
        # hook would need this package on every node before any worker could start.
        env["worker_process_setup_hook"] = SETUP_HOOK
        _job_hook[:] = [SETUP_HOOK]
        # "local": never join a cluster that `ray start` left on this machine (ray.init() with
        # no address would, through /tmp/ray/ray_current_cluster, and then refuse num_cpus).
        with _local_ray_env(ray_env(ingress)):
            ray.init(
                address="local",
                num_cpus=resources.num_cpus,
                include_dashboard=False,
                runtime_env=env,
                log_to_driver=True,
            )
    # ray.init replaced the SIGTERM handler (and its core worker put a native one under it).
    reinstall()


@contextlib.contextmanager
def _local_ray_env(extra: dict[str, str]) -> Iterator[None]:
    """The environment that the local Ray's processes start with (they copy it at `ray.init`):
    `orchestrator/startup/sitecustomize.py` on PYTHONPATH and SYNTHPAT_DIE_WITH_PARENT=1, so
    every Python process of the run dies with its parent, and `extra` (Serve's settings). This
    process's own environment is restored afterwards: nothing it starts later (a detached
    server) is tied to it."""
    startup = str(Path(__file__).resolve().parent / "startup")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", DIE_WITH_PARENT, *extra)}
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([startup, *([path] if path else [])])
    os.environ[DIE_WITH_PARENT] = "1"
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
