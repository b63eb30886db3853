import json
import subprocess
import sys
import textwrap
from pathlib import Path

from orchestrator.cache import Manifest, RunStore


def _manifest(stage, fp, upstream=None):
    return Manifest(stage, fp, upstream or {}, {}, {}, "0", {"rows": 1})


def test_commit_is_atomic_and_replaces(tmp_path):
    store = RunStore(tmp_path / "run")
    tmp = store.begin("prepare")
    (tmp / "a.txt").write_text("one")
    store.commit("prepare", tmp, _manifest("prepare", "f1"))
    assert (store.stage_dir("prepare") / "a.txt").read_text() == "one"
    tmp2 = store.begin("prepare")
    (tmp2 / "a.txt").write_text("two")
    store.commit("prepare", tmp2, _manifest("prepare", "f2"))
    assert (store.stage_dir("prepare") / "a.txt").read_text() == "two"
    assert store.manifest("prepare").fingerprint == "f2"
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["prepare"]


def test_fingerprint_changes_with_config_inputs_and_upstream(tmp_path):
    store = RunStore(tmp_path)
    src = tmp_path / "in.txt"
    src.write_text("x")
    fp1, _, _ = store.fingerprint("prepare", {"k": 1}, [], {"source": src})
    assert store.fingerprint("prepare", {"k": 1}, [], {"source": src})[0] == fp1
    assert store.fingerprint("prepare", {"k": 2}, [], {"source": src})[0] != fp1
    src.write_text("y")
    assert store.fingerprint("prepare", {"k": 1}, [], {"source": src})[0] != fp1
    tmp = store.begin("prepare")
    store.commit("prepare", tmp, _manifest("prepare", "up1"))
    d1, up, _ = store.fingerprint("generate", {}, ["prepare"])
    assert up == {"prepare": "up1"}
    tmp = store.begin("prepare")
    store.commit("prepare", tmp, _manifest("prepare", "up2"))
    assert store.fingerprint("generate", {}, ["prepare"])[0] != d1


def test_states_mark_downstream_stale(tmp_path):
    store = RunStore(tmp_path)
    store.commit("prepare", store.begin("prepare"), _manifest("prepare", "p1"))
    store.commit(
        "generate", store.begin("generate"), _manifest("generate", "g1", {"prepare": "p1"})
    )
    deps = {"prepare": (), "generate": ("prepare",), "trials": ("generate",)}
    st = {s.stage: s.state for s in store.states(["prepare", "generate", "trials"], deps)}
    assert st == {"prepare": "done", "generate": "done", "trials": "missing"}
    store.commit("prepare", store.begin("prepare"), _manifest("prepare", "p2"))
    st = {s.stage: s.state for s in store.states(["prepare", "generate", "trials"], deps)}
    assert st["generate"] == "stale"


def test_killed_write_leaves_nothing_that_looks_complete(tmp_path):
    """SIGKILL a process in the middle of a stage write: no stage folder, no manifest."""
    repo = Path(__file__).resolve().parents[2]
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(repo)!r})
        from orchestrator.cache import RunStore
        store = RunStore({str(tmp_path)!r})
        tmp = store.begin("prepare")
        (tmp / "half.parquet").write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    store = RunStore(tmp_path)
    assert not store.stage_dir("prepare").exists()
    assert store.manifest("prepare") is None
    leftovers = list(tmp_path.glob(".prepare.tmp-*"))
    assert len(leftovers) == 1
    store.begin("prepare")  # the next attempt sweeps what the killed one left
    assert leftovers[0].exists() is False


def test_corrupt_manifest_reads_as_missing(tmp_path):
    d = tmp_path / "prepare"
    d.mkdir()
    (d / "manifest.json").write_text("{trunc")
    assert Manifest.read(d) is None
    (d / "manifest.json").write_text(json.dumps({"stage": "prepare"}))
    assert Manifest.read(d) is None
