"""vLLM's engine core forked from a warm server instead of spawned cold, inside a Ray actor.

In a Ray actor vLLM starts its engine-core process with `spawn` (it forces it: forking a process
that runs Ray's threads is unsafe), so that fresh interpreter imports torch and vLLM again, ~17 s
on 2 cores, after the actor's own import of the same modules: one after the other. Run as the
actor's worker-process setup hook (`setup_env`), `start` launches Python's forkserver at once,
before the actor imports anything, with the engine core's modules as its preload; its import
then runs beside the actor's, on the other core. The engine core is forked from that server: a
process of its own, single-threaded, with no Ray in it, so the fork is the kind that vLLM makes
outside Ray anyway (it forks by default, after importing the same modules).

Lifetimes: the server asks for SIGKILL when the actor dies (`orchestrator.forkserver_guard`, its
first preload), and each child when the server dies, so a killed actor leaves neither behind.
Ray gives a worker one setup hook: the job's own (a local run's `die_with_parent_hook`) is
passed in THEN and run after ours.

What a forked child does not get from a forkserver is the parent's environment as it is at the
fork: the server's is the actor's at start-up. vLLM and ray.data.llm set variables in the actor
before starting the engine core, so each child process replays the actor's whole environment,
read when the process is started, before its target runs.

Written by hand because nothing in vLLM or Ray offers it: vLLM's start methods are `fork` and
`spawn` only (VLLM_WORKER_MULTIPROC_METHOD), and Ray has no per-actor setup hook in its public
API (a runtime env's `worker_process_setup_hook` is read for the job only; the variable it sets
for workers is what `setup_env` sets here). Where either has changed, `start` leaves vLLM as it
is (spawn) and says so in the actor's log.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
from multiprocessing import context as mp_context
from typing import Any

log = logging.getLogger(__name__)

# What the engine-core child imports before it serves: the module of its target
# (EngineCoreProc.run_engine_core), the one-process executor and vLLM's CPU worker (built in the
# engine core when the worker runs there). The model's own module is not known here. First, the
# guard that makes the server die with the actor (`orchestrator.forkserver_guard`).
PRELOAD = (
    "orchestrator.forkserver_guard",
    "vllm.v1.engine.core",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.worker.cpu_worker",
)
HOOK = f"{__name__}.start"
#: The hook that the worker would have run without ours (a worker gets one): `start` runs it.
THEN = "SYNTHPAT_SETUP_HOOK_THEN"


def setup_env(then: str | None = None) -> dict[str, str]:
    """The env vars that make a Ray worker process run `start` as it starts, and then the hook
    `then` (an import path: the job's own, which this one replaces; see
    `orchestrator.ray_runtime.job_setup_hook`). {} where this Ray has no such variable (then
    vLLM spawns as before)."""
    try:
        from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR
    except ImportError:
        return {}
    return {WORKER_PROCESS_SETUP_HOOK_ENV_VAR: HOOK, **({THEN: then} if then else {})}


class _EnvReplayProcess(mp_context.ForkServerProcess):
    """A forkserver process that runs with the starting process's environment and dies with
    the server (which dies with the process that started it)."""

    def start(self) -> None:
        self._start_environ = dict(os.environ)
        super().start()

    def run(self) -> None:
        from orchestrator.shutdown import tie_to_parent

        tie_to_parent()  # to the server
        os.environ.clear()
        os.environ.update(self._start_environ)
        super().run()


class EnvReplayContext(mp_context.ForkServerContext):
    """The forkserver start method with `_EnvReplayProcess` as its Process."""

    Process = _EnvReplayProcess


def start(preload: tuple[str, ...] = PRELOAD) -> bool:
    """Start the warm forkserver and point vLLM's engine-core launcher at it; True if done.

    Runs in the actor's process before anything imports vLLM, so the server's import overlaps
    the actor's. Any failure leaves vLLM's own spawn in place."""
    try:
        multiprocessing.set_forkserver_preload(list(preload))
        from multiprocessing import forkserver

        forkserver.ensure_running()
        _patch_vllm(EnvReplayContext())
    except Exception as e:  # noqa: BLE001 - an optimisation: never a reason to fail the actor
        name = type(e).__name__
        log.warning("engine core: forkserver not used (%s: %s); vLLM spawns it", name, e)
        done = False
    else:
        done = True
    _run_then()
    return done


def _run_then() -> None:
    """The hook this one replaced (THEN), if any; its failure fails the worker, as it would."""
    then = os.environ.get(THEN)
    if then:
        module, _, name = then.rpartition(".")
        getattr(importlib.import_module(module), name)()


def _patch_vllm(ctx: EnvReplayContext) -> None:
    """Make vLLM's engine-core launcher (`vllm.v1.engine.utils.get_mp_context`) return `ctx`.

    The original still runs first for what it does besides choosing the method (it sets
    RAY_ADDRESS and VLLM_WORKER_MULTIPROC_METHOD in the environment, which the child replays)."""
    import vllm.v1.engine.utils as engine_utils

    original = engine_utils.get_mp_context
    if getattr(original, "_synthpat_forkserver", False):
        return

    def get_mp_context() -> Any:
        original()
        return ctx

    get_mp_context._synthpat_forkserver = True  # type: ignore[attr-defined]
    engine_utils.get_mp_context = get_mp_context
