"""SIGTERM / Ctrl-C stop a stage cleanly; a worker's children die with it (no Ray here)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from orchestrator import shutdown
from orchestrator.shutdown import Stopped, stop_message, stop_on_signals

REPO = Path(__file__).resolve().parents[2]


def test_exit_status_is_128_plus_the_signal():
    assert Stopped(signal.SIGTERM).exit_code == 143
    assert Stopped(signal.SIGINT).exit_code == 130
    assert str(Stopped(signal.SIGINT)) == "stopped by SIGINT"
    # Not an Exception: retry loops (`except Exception`) on the way let it through.
    assert not isinstance(Stopped(signal.SIGTERM), Exception)


def test_the_message_names_the_signal_the_stage_what_was_kept_and_how_to_resume():
    stop = Stopped(signal.SIGTERM)
    stop.stage, stop.kept = "trials", "8 finished trials"
    assert stop_message(stop) == (
        "stopped by SIGTERM in stage trials: kept 8 finished trials; "
        "run the same command again to resume"
    )
    bare = Stopped(signal.SIGINT)
    assert stop_message(bare) == (
        "stopped by SIGINT: nothing to keep; run the same command again to resume"
    )


def test_handlers_are_ours_inside_and_restored_outside(monkeypatch):
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is shutdown._handle
        assert signal.getsignal(signal.SIGINT) is shutdown._handle
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
        # Something (ray.init) puts its own handler in: reinstall puts ours back on top.
        signal.signal(signal.SIGTERM, lambda *a: None)
        shutdown.reinstall()
        assert signal.getsignal(signal.SIGTERM) is shutdown._handle
    assert signal.getsignal(signal.SIGTERM) is before
    signal.signal(signal.SIGTERM, lambda *a: None)
    shutdown.reinstall()  # outside: leaves the handler alone
    assert signal.getsignal(signal.SIGTERM) is not shutdown._handle
    signal.signal(signal.SIGTERM, before)


# A stage that writes a file a second and never ends, run by run_stage under the CLI's
# handler and top-level catch, as `synthpat run` does.
_STAGE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from config import load_config
    from orchestrator.cache import RunStore
    from orchestrator.shutdown import Stopped, leave, stop_on_signals
    from orchestrator.stages import StageGraph, run_stage
    from orchestrator.stages.base import Stage, console

    class Slow(Stage):
        name = "slow"
        fields = ("data.seed",)

        def kept(self, ctx):
            n = len(list(ctx.work_dir.glob("part-*")))
            return f"{n} parts"

        def run(self, ctx):
            for i in range(10_000):
                (ctx.work_dir / f"part-{i}").write_text("x")
                time.sleep(0.3)

    graph = StageGraph([Slow()], load_config(sys.argv[1]), RunStore(Path(sys.argv[2])))
    with stop_on_signals():
        try:
            run_stage(graph, "slow")
        except Stopped as stop:
            leave(stop, console.print)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_stage_records_the_attempt_and_exits_128_plus_signal(tmp_path, sig):
    script = tmp_path / "stage.py"
    script.write_text(_STAGE_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(REPO / "configs" / "quickstart.yaml"), str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(tmp_path.glob(".work/slow-*/part-*"))) < 2:
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=30)
    code = proc.returncode
    assert time.monotonic() - t0 < 5
    assert code == 128 + sig
    name = signal.Signals(sig).name
    assert f"stopped by {name} in stage slow: kept " in rest
    assert "run the same command again to resume" in rest
    assert "Traceback" not in rest
    (attempts,) = tmp_path.glob(".work/slow-*/attempts.json")
    entries = json.loads(attempts.read_text())
    assert [e["ended"] for e in entries] == ["stopped"]
    parts = len(list(attempts.parent.glob("part-*")))
    assert parts >= 2 and f"kept {parts} parts" in rest  # the work stays for the rerun


_PARENT_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, sys, time
    from orchestrator.shutdown import die_with_parent_hook

    def grandchild():
        time.sleep(600)

    def child():
        # The hook travels: this child's own children die with it too.
        p = mp.get_context("spawn").Process(target=grandchild)
        p.start()
        print("grandchild", p.pid, flush=True)
        time.sleep(600)

    if __name__ == "__main__":
        if sys.argv[1] == "hook":
            die_with_parent_hook()
        p = mp.get_context("spawn").Process(target=child)
        p.start()
        print("child", p.pid, flush=True)
        time.sleep(600)
    """
)


def _spawn_family(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    pids = [int(proc.stdout.readline().split()[1]) for _ in range(2)]
    return proc, pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_children_of_a_hooked_process_die_when_it_is_killed(tmp_path):
    proc, pids = _spawn_family(tmp_path, "hook")
    proc.kill()  # SIGKILL: no handler, no atexit
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)]


def test_without_the_hook_they_would_outlive_it(tmp_path):
    proc, pids = _spawn_family(tmp_path, "plain")
    proc.kill()
    proc.wait()
    time.sleep(1.0)
    try:
        assert all(_alive(p) for p in pids)  # orphans: what the hook is for
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
