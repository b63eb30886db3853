"""One place that starts or joins Ray, for every stage and for `synthpat serve`."""

from __future__ import annotations

import os

from config.resources import ResourcesConfig
from tasks.storage import storage_uri

# storage_uri is a pure path function (serving needs it too); it is re-exported for Ray callers.
__all__ = ["cluster_address", "ensure_ray", "storage_uri"]


def cluster_address(resources: ResourcesConfig | None = None) -> str | None:
    """The cluster to join (`resources.address`, else RAY_ADDRESS as `ray job submit` sets it),
    or None: synthpat starts a local Ray, which cannot grow."""
    return (resources.address if resources else None) or os.environ.get("RAY_ADDRESS")


def ensure_ray(resources: ResourcesConfig | None = None) -> None:
    """Join the configured cluster, or start a local Ray, unless Ray is already up.

    `resources.address` (or RAY_ADDRESS, set by `ray job submit`) joins an existing cluster; on a
    laptop a local Ray with `resources.num_cpus` starts, dashboard off, usage stats off.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    resources = resources or ResourcesConfig()
    address = cluster_address(resources)
    env = {
        "env_vars": {
            k: os.environ[k]
            for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SYNTHPAT_CACHE")
            if k in os.environ
        }
    }
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # "local": never join a cluster that `ray start` left on this machine (ray.init() with
        # no address would, through /tmp/ray/ray_current_cluster, and then refuse num_cpus).
        ray.init(
            address="local",
            num_cpus=resources.num_cpus,
            include_dashboard=False,
            runtime_env=env,
            log_to_driver=True,
        )
