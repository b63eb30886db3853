"""A stage's time across attempts: failed and killed attempts count toward the manifest's total."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config import load_config
from config.loader import dump_config
from orchestrator.cache import Manifest, RunStore
from orchestrator.cli import app, stage_seconds
from orchestrator.stages import STAGES, StageGraph, base, run_stage, study_graph
from orchestrator.stages.base import ATTEMPTS, Stage, StageOutput, read_attempts

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


class Flaky(Stage):
    """Fails its first `failures` runs; each run takes at least `seconds`."""

    name = "flaky"
    fields = ("data.seed",)

    def __init__(self, failures: int = 0, seconds: float = 0.05):
        self.failures, self.seconds, self.calls = failures, seconds, 0
        self.seen: list[dict] = []

    def run(self, ctx):
        self.calls += 1
        deadline = time.perf_counter() + self.seconds
        while time.perf_counter() < deadline:
            time.sleep(0.01)
        self.seen = read_attempts(ctx.work_dir / ATTEMPTS)
        if self.calls <= self.failures:
            raise RuntimeError("boom")
        (ctx.out_dir / "out.txt").write_text("ok")
        return StageOutput(rows={"n": 1})


def _graph(tmp_path: Path, stage: Stage) -> StageGraph:
    return StageGraph([stage], load_config(QUICKSTART), RunStore(tmp_path))


def test_one_attempt_records_its_seconds_as_the_total_and_leaves_no_record(tmp_path):
    graph = _graph(tmp_path, Flaky())
    m = run_stage(graph, "flaky")
    assert [a["ended"] for a in m.attempts] == ["done"]
    assert m.seconds >= 0.05 and m.total_seconds == m.seconds == m.attempts[0]["seconds"]
    assert m.started_at == m.attempts[0]["started_at"]
    assert Manifest.read(tmp_path / "flaky").attempts == m.attempts  # written, and read back
    assert not list((tmp_path / ".work").glob(f"flaky-*/{ATTEMPTS}"))  # removed with the work dir


def test_a_failed_attempt_counts_toward_the_next_ones_total(tmp_path):
    stage = Flaky(failures=1, seconds=0.1)
    graph = _graph(tmp_path, stage)
    with pytest.raises(RuntimeError, match="boom"):
        run_stage(graph, "flaky")
    (record,) = (tmp_path / ".work").glob(f"flaky-*/{ATTEMPTS}")
    (failed,) = read_attempts(record)
    assert failed["ended"] == "failed" and failed["seconds"] >= 0.1
    stage.seconds = 0.05
    m = run_stage(graph, "flaky")
    assert [a["ended"] for a in m.attempts] == ["failed", "done"]
    assert m.attempts[0] == failed
    assert m.seconds == m.attempts[1]["seconds"] >= 0.05
    assert m.total_seconds == pytest.approx(failed["seconds"] + m.seconds, abs=1e-3)
    assert m.total_seconds >= 0.15


def test_a_running_attempt_rewrites_its_entry_as_it_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "HEARTBEAT_S", 0.02)
    stage = Flaky(seconds=0.3)
    m = run_stage(_graph(tmp_path, stage), "flaky")
    (entry,) = stage.seen  # what a kill at the end of `run` would have left
    assert entry["ended"] == "running" and 0.2 < entry["seconds"] <= m.seconds


def test_a_killed_attempt_counts_up_to_its_last_heartbeat(tmp_path):
    """SIGKILL a process in the middle of a stage: the next attempt's total includes its time."""
    script = textwrap.dedent(
        f"""
        import json, os, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from orchestrator.stages import base
        from test_stage_attempts import Flaky, _graph
        from pathlib import Path

        base.HEARTBEAT_S = 0.02

        class Killed(Flaky):
            def run(self, ctx):
                record = ctx.work_dir / base.ATTEMPTS
                while json.loads(record.read_text())[-1]["seconds"] < 0.2:
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGKILL)

        base.run_stage(_graph(Path({str(tmp_path)!r}), Killed()), "flaky")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -9
    m = run_stage(_graph(tmp_path, Flaky()), "flaky")
    assert [a["ended"] for a in m.attempts] == ["killed", "done"]
    assert 0.2 <= m.attempts[0]["seconds"] < 5
    assert m.total_seconds == pytest.approx(m.attempts[0]["seconds"] + m.seconds, abs=1e-3)


def test_a_bad_attempts_record_restarts_the_count(tmp_path):
    graph = _graph(tmp_path, Flaky())
    work = graph.store.work_dir("flaky", graph.key("flaky").fingerprint)
    (work / ATTEMPTS).write_text('{"not": "a list"}')
    m = run_stage(graph, "flaky")
    assert [a["ended"] for a in m.attempts] == ["done"]


def test_stage_seconds_shows_the_total_and_reads_old_manifests():
    old = Manifest("prepare", "f", {}, {}, {}, "0", seconds=12.34)  # before attempts existed
    assert stage_seconds(old) == "12.3"
    one = Manifest("prepare", "f", {}, {}, {}, "0", seconds=2.0, total_seconds=2.0)
    one.attempts = [{"started_at": 0.0, "seconds": 2.0, "ended": "done"}]
    assert stage_seconds(one) == "2.0"
    three = Manifest("trials", "f", {}, {}, {}, "0", seconds=5.0, total_seconds=65.5)
    three.attempts = [{"ended": "killed"}, {"ended": "failed"}, {"ended": "done"}]
    assert stage_seconds(three) == "65.5 (3 attempts)"


def test_an_old_manifest_file_without_the_attempt_fields_still_reads(tmp_path):
    d = tmp_path / "prepare"
    d.mkdir()
    fields = {"stage": "prepare", "fingerprint": "f", "upstream": {}, "config": {}, "inputs": {}}
    (d / "manifest.json").write_text(json.dumps({**fields, "package_version": "0", "seconds": 3.5}))
    m = Manifest.read(d)
    assert m is not None and m.attempts == [] and m.total_seconds is None
    assert stage_seconds(m) == "3.5"


def test_status_shows_the_total_and_the_attempt_count(tmp_path):
    src = tmp_path / "patents.jsonl"
    src.write_text('{"id": "x"}\n')
    run_dir = tmp_path / "runs" / "quickstart"
    cfg = load_config(
        QUICKSTART, [f"data.source.path={src}", f"resources.runs_dir={run_dir.parent}"]
    )
    run_dir.mkdir(parents=True)
    (run_dir / "config.resolved.yaml").write_text(dump_config(cfg))
    store = RunStore(run_dir)
    graph = study_graph(cfg, store)
    for stage in STAGES:
        k = graph.key(stage.name)
        m = Manifest(stage.name, k.fingerprint, k.upstream, k.config, k.inputs, "0", seconds=4.0)
        if stage.name == "generate":
            m.attempts = [{"started_at": 0.0, "seconds": 600.0, "ended": "killed"}] * 2 + [
                {"started_at": 0.0, "seconds": 4.0, "ended": "done"}
            ]
            m.total_seconds = 1204.0
        store.commit(stage.name, store.begin(stage.name), m)
    res = CliRunner().invoke(app, ["status", str(run_dir)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = {ln.split("│")[1].strip(): ln for ln in res.output.splitlines() if ln.count("│") > 3}
    assert "1204.0 (3 attempts)" in lines["generate"]
    assert "4.0" in lines["prepare"] and "attempts" not in lines["prepare"]
