"""The warm forkserver in a real Ray actor with the real vLLM: the actor's setup hook starts it,
and vLLM's engine-core launcher then forks from it, with the actor's environment at that time."""

import json
import os
import textwrap
import time

import psutil
import pytest

from orchestrator import engine_fork

_PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    with open({out!r} + ".tmp", "w") as f:
        json.dump({{"late": os.environ.get("SYNTHPAT_LATE"), "ppid": os.getppid(),
                   "pid": os.getpid(), "preloaded": "vllm.v1.engine.core" in sys.modules}}, f)
    os.rename({out!r} + ".tmp", {out!r})
    time.sleep(600)  # an engine core serving, until its actor goes
    """
)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield ray
    ray.shutdown()


def _wait_for(path, timeout_s: float = 120) -> dict:
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < timeout_s, f"no {path.name} after {timeout_s} s"
        time.sleep(0.2)
    return json.loads(path.read_text())


def _gone(pids, timeout_s: float = 10) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        alive = [p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]  # fmt: skip
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_vllm_s_engine_launcher_forks_from_the_warm_server_in_an_actor(local_ray, tmp_path):
    ray = local_ray
    probe = tmp_path / "probe.py"
    out = tmp_path / "probe.json"
    probe.write_text(_PROBE.format(out=str(out)))

    @ray.remote(num_cpus=1)
    class EngineLauncher:
        def launch(self, script: str) -> dict:
            import runpy
            from multiprocessing import forkserver
            from multiprocessing.process import BaseProcess

            import vllm.v1.engine.utils as engine_utils

            ctx = engine_utils.get_mp_context()  # what CoreEngineProcManager asks for
            os.environ["SYNTHPAT_LATE"] = "set by the actor before the launch"
            self.p = ctx.Process(target=runpy.run_path, args=(script,))
            self.p.start()
            return {
                "pid": os.getpid(),
                "ctx": type(ctx).__name__,
                "server": forkserver._forkserver._forkserver_pid,
                # The run's own hook, which ours replaced, ran after it.
                "then_ran": getattr(BaseProcess.start, "_dies_with_parent", False),
            }

    env = engine_fork.setup_env(then="orchestrator.shutdown.die_with_parent_hook")
    actor = EngineLauncher.options(runtime_env={"env_vars": env}).remote()
    seen = ray.get(actor.launch.remote(str(probe)), timeout=300)
    assert seen["ctx"] == "EnvReplayContext" and seen["then_ran"]
    child = _wait_for(out)
    assert child["late"] == "set by the actor before the launch"
    # Forked from the forkserver, which had imported the engine core before the launch.
    assert child["ppid"] == seen["server"] != seen["pid"] and child["preloaded"]
    # A killed actor leaves neither the server nor the engine core forked from it.
    ray.kill(actor)
    assert _gone([seen["pid"], seen["server"], child["pid"]])

    # Without the hook the actor's vLLM spawns, as before.
    out.unlink()
    plain = EngineLauncher.remote()
    assert ray.get(plain.launch.remote(str(probe)), timeout=300)["ctx"] == "SpawnContext"
    psutil.Process(_wait_for(out)["pid"]).kill()
    ray.kill(plain)


def test_the_hook_is_ray_s_setup_hook_variable_naming_an_importable_function():
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR

    env = engine_fork.setup_env()
    assert env == {WORKER_PROCESS_SETUP_HOOK_ENV_VAR: "orchestrator.engine_fork.start"}
    module, _, name = env[WORKER_PROCESS_SETUP_HOOK_ENV_VAR].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is engine_fork.start
    then = engine_fork.setup_env(then="orchestrator.shutdown.die_with_parent_hook")
    assert then[engine_fork.THEN] == "orchestrator.shutdown.die_with_parent_hook"
