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
