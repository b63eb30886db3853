"""SIGTERM stops a real `synthpat` run cleanly: status 143 within 30 s, one line saying what was
kept and that the same command resumes, no traceback, and the rerun resumes from what was kept.

Each run is a process group of its own, signalled the two ways a run meets: the whole group (as
`timeout` and Slurm do, so Ray's own processes get it too) and the driver alone."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
from run_processes import (
    EXIT_WITHIN_S,
    Run,
    assert_clean_stop,
    listening,
    marked_processes,
    study,
    synthpat,
)
from tiny_bert import build_tiny_bert


def _finetune_study(tmp_path: Path, uspto_path: Path) -> Path:
    tiny = build_tiny_bert(tmp_path / "tiny")
    trials = {
        "families": [
            {"kind": "tfidf_linear", "name": "tfidf"},
            # Two Ray Train workers (DDP on gloo), ~1 s an epoch here: long enough to be stopped
            # in the middle, short enough for the rerun to train the rest in minutes.
            {
                "kind": "finetune",
                "name": "tiny",
                "model": tiny,
                "max_length": 32,
                "epochs": 40,
                "batch_size": 4,
                "num_workers": 2,
            },
        ],  # fmt: skip
        "arms": ["real_only"],
        "seeds": [0, 1, 2],
        "precisions": ["fp32"],
        "attentions": ["sdpa"],
        "numerics_guard": {"enabled": False},
        "resources": {"cpus": 0.5},
    }
    cfg = study(tmp_path, uspto_path, trials=trials, generation=False)
    assert synthpat(tmp_path, "prepare", str(cfg)).returncode == 0
    return cfg


def _done(run_dir: Path) -> dict[str, str]:
    out = {}
    for m in run_dir.glob(".work/trials-*/done/*/row.json"):
        out[m.parent.name] = json.loads(m.read_text())["trained_at"]
    return out


def _training(run: Run) -> bool:
    return any("TrainWorker" in p for p in marked_processes(run.mark))


@pytest.mark.slow  # two trials runs with Ray Train fine-tunes: about 6 minutes on 2 cores
@pytest.mark.parametrize("target", ["group", "driver"])
def test_sigterm_during_a_finetune_keeps_the_finished_trials(tmp_path, uspto_path, target):
    cfg = _finetune_study(tmp_path, uspto_path)
    run_dir = tmp_path / "runs" / "stop"
    run = Run(tmp_path, ["trials", str(cfg)])
    try:
        run.wait_for(lambda: len(_done(run_dir)) >= 1 and _training(run), 300,
                     "a finished trial and a fine-tune running")  # fmt: skip
        before = _done(run_dir)
        (run.signal_group if target == "group" else run.signal_driver)(signal.SIGTERM)
        assert_clean_stop(run, "trials", run_dir, kept="")
        n = len(_done(run_dir))
        assert n >= len(before)
        assert f"kept {n} finished trial" in run.output()
    finally:
        run.kill_leftovers()
    res = synthpat(tmp_path, "trials", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_parquet(run_dir / "trials" / "results.parquet").set_index("trial_id")
    assert len(df) == 6 and set(df.status) == {"ok"}, df[["status", "reason"]]
    for tid, stamp in before.items():
        assert df.loc[tid].trained_at == stamp, f"{tid} was trained again after the stop"


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_sigterm_stops_a_foreground_server(tmp_path, uspto_path, when):
    from demo_run import make_demo_run

    from tasks.net import free_port

    demo = make_demo_run(tmp_path / "demo", uspto_path, n_train=200, n_test=4)
    port = free_port()
    run = Run(tmp_path, ["serve", str(demo.run_dir), "--port", str(port)])
    try:
        if when == "serving":
            run.wait_for(lambda: "serving trial" in run.output(), 300, "the server's URL")
            # The default front on Linux: HAProxy, on loopback like the replicas behind it.
            assert "front: haproxy)" in run.output(), run.output()[-3000:]
            assert listening(run.mark, "haproxy", port) == ["127.0.0.1"]
        else:  # Ray is up, Serve not yet: the stop lands inside start_server
            run.wait_for(lambda: any("raylet" in p for p in marked_processes(run.mark)), 120,
                         "a raylet")  # fmt: skip
        run.signal_driver(signal.SIGTERM)
        code, took = run.wait(60)
        out = run.output()
        assert code == 143, out[-3000:]
        assert took < EXIT_WITHIN_S, f"exit took {took:.1f}s"
        assert "serve: stopped by SIGTERM; shut down" in out, out[-3000:]
        assert "Traceback" not in out and "SIGTERM received" not in out, out[-3000:]
        left, _ = run.wait_no_leftovers(10)
        assert not left, left
    finally:
        run.kill_leftovers()


@pytest.mark.slow  # a server started, then killed: about 30 s
def test_sigkill_of_a_serving_driver_leaves_nothing_running(tmp_path, uspto_path):
    """SIGKILL to the server's process alone: Ray, Serve's actors and HAProxy (a native child
    of an actor, tied to it by `serve.ingress`'s wrapper) go too, and the port is free."""
    from demo_run import make_demo_run

    from tasks.net import free_port

    demo = make_demo_run(tmp_path / "demo", uspto_path, n_train=200, n_test=4)
    port = free_port()
    run = Run(tmp_path, ["serve", str(demo.run_dir), "--port", str(port)])
    try:
        run.wait_for(lambda: "serving trial" in run.output(), 300, "the server's URL")
        assert listening(run.mark, "haproxy", port) == ["127.0.0.1"]
        run.signal_driver(signal.SIGKILL)
        code, _ = run.wait(30)
        assert code == -signal.SIGKILL
        left, _ = run.wait_no_leftovers(10)
        assert not left, left
        assert _bindable(port)  # no HAProxy left holding it
    finally:
        run.kill_leftovers()


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    return True


@pytest.mark.slow  # a trials run killed during a fine-tune, then the rest: about 6 minutes
def test_sigkill_to_the_group_during_a_finetune_leaves_nothing_running(tmp_path, uspto_path):
    cfg = _finetune_study(tmp_path, uspto_path)
    run_dir = tmp_path / "runs" / "stop"
    run = Run(tmp_path, ["trials", str(cfg)])
    try:
        run.wait_for(lambda: len(_done(run_dir)) >= 1 and _training(run), 300,
                     "a finished trial and a fine-tune running")  # fmt: skip
        before = _done(run_dir)
        run.signal_group(signal.SIGKILL)
        run.wait(30)
        # Ray's workers, the Train controller and workers, Tune's trial actors: all gone in 10 s.
        left, took = run.wait_no_leftovers(10)
        assert not left, left
        print(f"trials: nothing left {took:.1f}s after SIGKILL")
    finally:
        run.kill_leftovers()
    res = synthpat(tmp_path, "trials", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_parquet(run_dir / "trials" / "results.parquet").set_index("trial_id")
    assert len(df) == 6 and set(df.status) == {"ok"}, df[["status", "reason"]]
    for tid, stamp in before.items():
        assert df.loc[tid].trained_at == stamp, f"{tid} was trained again after the kill"


@pytest.mark.slow  # a generation first (one engine start), then fidelity twice: about 1.5 minutes
def test_sigterm_to_the_group_during_fidelity(tmp_path, uspto_path):
    cfg = study(tmp_path, uspto_path, fidelity=True)
    for stage in ("prepare", "generate"):
        res = synthpat(tmp_path, stage, str(cfg))
        assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "runs" / "stop"
    run = Run(tmp_path, ["fidelity", str(cfg)])
    try:
        run.wait_for(lambda: bool(list(run_dir.glob(".work/fidelity-*/attempts.json"))), 120,
                     "the fidelity attempt")  # fmt: skip
        run.signal_group(signal.SIGTERM)
        assert_clean_stop(run, "fidelity", run_dir)
    finally:
        run.kill_leftovers()
    res = synthpat(tmp_path, "fidelity", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((run_dir / "fidelity" / "manifest.json").read_text())
    assert [a["ended"] for a in manifest["attempts"]] == ["stopped", "done"]


@pytest.mark.slow  # prepare, TF-IDF trials, report, then serve_smoke twice: about 40 s
def test_sigterm_to_the_group_during_serve_smoke(tmp_path, uspto_path):
    trials = {"families": [{"kind": "tfidf_linear", "name": "tfidf"}], "arms": ["real_only"],
              "seeds": [0], "numerics_guard": {"enabled": False}}  # fmt: skip
    cfg = study(tmp_path, uspto_path, trials=trials, generation=False, smoke=True)
    run_dir = tmp_path / "runs" / "stop"
    run = Run(tmp_path, ["run", str(cfg)])
    try:
        run.wait_for(lambda: bool(list(run_dir.glob(".work/serve_smoke-*/attempts.json"))), 300,
                     "the serve_smoke attempt")  # fmt: skip
        run.signal_group(signal.SIGTERM)
        assert_clean_stop(run, "serve_smoke", run_dir)
    finally:
        run.kill_leftovers()
    res = synthpat(tmp_path, "run", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((run_dir / "serve_smoke" / "manifest.json").read_text())
    assert [a["ended"] for a in manifest["attempts"]] == ["stopped", "done"]
