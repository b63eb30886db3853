"""The warm forkserver for vLLM's engine core (`orchestrator.engine_fork`), without vLLM or Ray:
a child replays the environment of the process that started it, and comes with the preload."""

import json
import subprocess
import sys
import textwrap

from orchestrator import engine_fork

# Run in a fresh interpreter: a forkserver and its preload list are per process.
_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, runpy, sys
    from multiprocessing import context, forkserver
    from orchestrator.engine_fork import EnvReplayContext

    probe = sys.argv[1]
    multiprocessing.set_forkserver_preload(["email.mime.text"])
    forkserver.ensure_running()
    os.environ["SYNTHPAT_LATE"] = "set after the server started"
    for name, ctx in (("replay", EnvReplayContext()), ("plain", context.ForkServerContext())):
        p = ctx.Process(target=runpy.run_path, args=(probe,), kwargs={"run_name": name})
        p.start()
        p.join()
        assert p.exitcode == 0, p.exitcode
    print(json.dumps({"pid": os.getpid(), "email_here": "email.mime.text" in sys.modules}))
    """
)
_PROBE = textwrap.dedent(
    """
    import json, os, sys
    with open({out!r} + "." + __name__, "w") as f:
        json.dump({{"late": os.environ.get("SYNTHPAT_LATE"), "ppid": os.getppid(),
                   "preloaded": "email.mime.text" in sys.modules}}, f)
    """
)


def test_a_child_replays_the_starting_environment_and_has_the_preload(tmp_path):
    out = tmp_path / "probe"
    (tmp_path / "probe.py").write_text(_PROBE.format(out=str(out)))
    run = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "probe.py")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    parent = json.loads(run.stdout.strip().splitlines()[-1])
    replay = json.loads((tmp_path / "probe.replay").read_text())
    plain = json.loads((tmp_path / "probe.plain").read_text())
    assert replay["late"] == "set after the server started"
    assert plain["late"] is None  # what a forkserver child sees without the replay
    # Forked from the server (not the starter), with the server's imports already done.
    assert replay["ppid"] != parent["pid"] and replay["preloaded"]
    assert not parent["email_here"]


def test_a_failure_leaves_vllm_s_spawn_and_says_so(monkeypatch, caplog):
    def broken(_modules):
        raise OSError("no forkserver here")

    monkeypatch.setattr(engine_fork.multiprocessing, "set_forkserver_preload", broken)
    with caplog.at_level("WARNING", logger="orchestrator.engine_fork"):
        assert engine_fork.start() is False
    assert "forkserver not used (OSError: no forkserver here)" in caplog.text


def test_the_patch_keeps_vllm_s_own_side_effects_and_is_applied_once(monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("vllm.v1.engine.utils")
    fake.get_mp_context = lambda: calls.append("original") or "spawn-context"
    for name in ("vllm", "vllm.v1", "vllm.v1.engine"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "vllm.v1.engine.utils", fake)
    sys.modules["vllm.v1.engine"].utils = fake
    ctx = engine_fork.EnvReplayContext()
    engine_fork._patch_vllm(ctx)
    patched = fake.get_mp_context
    engine_fork._patch_vllm(ctx)
    assert fake.get_mp_context is patched
    assert patched() is ctx and calls == ["original"]
