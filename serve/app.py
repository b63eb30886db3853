"""The Ray Serve application: a plain `ClassifierServer` and a batched FastAPI ingress around it.

`build_app(cfg, selection)` binds `ClassifierDeployment` with the checkpoint the selection names.
Texts from concurrent requests are pooled by `@serve.batch` into one model call; batch size and
wait change at runtime through the deployment's `user_config`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from serve.api import ApiSettings, create_api
from serve.ingress import ingress_in_effect
from serve.select import Selection
from serve.server import ClassifierServer, server_spec


@serve.deployment
@serve.ingress()
class ClassifierDeployment:
    """A Serve replica: FastAPI around a `ClassifierServer`, texts batched across requests."""

    def __init__(self, spec: dict[str, Any], settings: ApiSettings):
        self.server = ClassifierServer(spec)
        self.server.ingress = ingress_in_effect()
        self.settings = settings
        # One model thread: torch's intra-op pool belongs to the calling thread, so a rotating
        # executor would create (and spin) several pools on the same cores.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self.server, self.infer, self.settings)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Runtime batching knobs: `max_batch_size`, `batch_wait_timeout_s`."""
        if "max_batch_size" in user_config:
            self._predict_one.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self._predict_one.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))
        self.server.batching = {
            "max_batch_size": self._predict_one._get_max_batch_size(),
            "batch_wait_timeout_s": self._predict_one._get_batch_wait_timeout_s(),
        }

    async def infer(self, texts: list[str]) -> np.ndarray:
        """Each text joins the shared batch queue; the request waits for all of its texts."""
        rows = await asyncio.gather(*(self._predict_one(t) for t in texts))
        return np.stack(rows)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _predict_one(self, texts: list[str]) -> list[np.ndarray]:
        # The model runs in a worker thread so the event loop keeps accepting requests (and
        # filling the next batch) meanwhile.
        loop = asyncio.get_running_loop()
        probs = await loop.run_in_executor(self._model_thread, self.server.predict_proba, texts)
        return list(probs)


def deployment_options(cfg: Any) -> dict[str, Any]:
    """Replica resources, autoscaling and batching from a `ServeConfig`."""
    auto = cfg.autoscaling
    return {
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "autoscaling_config": {
            "min_replicas": auto.min_replicas,
            "max_replicas": auto.max_replicas,
            "initial_replicas": max(auto.min_replicas, 1),
            "target_ongoing_requests": auto.target_ongoing_requests,
        },
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "user_config": {
            "max_batch_size": cfg.max_batch_size,
            "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
        },
    }


def build_app(
    cfg: Any, selection: Selection, api_key: str | None = None, storage_path: str | None = None
) -> Any:
    """The bound Serve application for `selection` under `cfg` (a `ServeConfig`); with
    `storage_path` (shared storage) replicas on other nodes load the checkpoint from there."""
    spec = server_spec(selection, cfg.num_gpus, storage_path)
    settings = ApiSettings.from_serve_config(cfg, api_key)
    return ClassifierDeployment.options(**deployment_options(cfg)).bind(spec, settings)


def app_from_args(args: dict[str, str]) -> Any:
    """Builder for Serve config files (`serve run serve.app:app_from_args run_dir=DIR`).

    `args`: `run_dir` (required), `checkpoint` (a trial id). Deployed this way (`serve deploy`),
    a changed `user_config` (max_batch_size, batch_wait_timeout_s) reconfigures the live replicas
    in place; `serve.run` of a rebuilt app replaces them instead.
    """
    from serve.launch import api_key_from_env, load_run_settings
    from serve.select import select_checkpoint

    if "run_dir" not in args:
        raise ValueError("app_from_args: args need run_dir (a runs/<study> folder)")
    run = load_run_settings(args["run_dir"])
    selection = select_checkpoint(args["run_dir"], run.select_metric, args.get("checkpoint"))
    return build_app(run.serve, selection, api_key_from_env(run.serve), run.resources.storage_path)
