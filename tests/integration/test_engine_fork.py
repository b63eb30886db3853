"""The warm forkserver in a real Ray actor with the real vLLM: the actor's setup hook starts it,
and vLLM's engine-core launcher then forks from it, with the actor's environment at that time."""

import json
import os
import textwrap

import pytest

from orchestrator import engine_fork

_PROBE = textwrap.dedent(
    """
    import json, os, sys
    with open({out!r}, "w") as f:
        json.dump({{"late": os.environ.get("SYNTHPAT_LATE"), "ppid": os.getppid(),
                   "preloaded": "vllm.v1.engine.core" in sys.modules}}, f)
    """
)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_vllm_s_engine_launcher_forks_from_the_warm_server_in_an_actor(local_ray, tmp_path):
    ray = local_ray
    probe = tmp_path / "probe.py"
    out = tmp_path / "probe.json"
    probe.write_text(_PROBE.format(out=str(out)))

    @ray.remote(num_cpus=1)
    class EngineLauncher:
        def launch(self, script: str) -> dict:
            import runpy

            import vllm.v1.engine.utils as engine_utils

            ctx = engine_utils.get_mp_context()  # what CoreEngineProcManager asks for
            os.environ["SYNTHPAT_LATE"] = "set by the actor before the launch"
            p = ctx.Process(target=runpy.run_path, args=(script,))
            p.start()
            p.join(60)
            return {"pid": os.getpid(), "ctx": type(ctx).__name__, "exitcode": p.exitcode}

    actor = EngineLauncher.options(runtime_env={"env_vars": engine_fork.setup_env()}).remote()
    seen = ray.get(actor.launch.remote(str(probe)), timeout=300)
    assert seen["ctx"] == "EnvReplayContext" and seen["exitcode"] == 0
    child = json.loads(out.read_text())
    assert child["late"] == "set by the actor before the launch"
    # Forked from the forkserver, which had imported the engine core before the launch.
    assert child["ppid"] != seen["pid"] and child["preloaded"]
    # Without the hook the actor's vLLM spawns, as before.
    ray.kill(actor)  # its CPU is the cluster's one
    plain = EngineLauncher.remote()
    assert ray.get(plain.launch.remote(str(probe)), timeout=300)["ctx"] == "SpawnContext"


def test_the_hook_is_ray_s_setup_hook_variable_naming_an_importable_function():
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR

    env = engine_fork.setup_env()
    assert env == {WORKER_PROCESS_SETUP_HOOK_ENV_VAR: "orchestrator.engine_fork.start"}
    module, _, name = env[WORKER_PROCESS_SETUP_HOOK_ENV_VAR].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is engine_fork.start
