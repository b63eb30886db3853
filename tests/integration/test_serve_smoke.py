"""The serve_smoke stage through run_stage: real prepare output, real trials folder, real Serve."""

from __future__ import annotations

import json
from pathlib import Path

from config import load_config
from orchestrator.cache import Manifest
from orchestrator.stages import STAGES, run_dir_for, run_stage, study_graph
from tasks.files import write_json_atomic

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def test_serve_smoke_is_last_stage():
    assert STAGES[-1].name == "serve_smoke"


def test_skips_without_trials_then_serves_two_test_patents(tmp_path, uspto_path):
    import ray
    from demo_run import make_demo_run

    here = [f"resources.runs_dir={tmp_path}", f"data.source.path={uspto_path}"]
    graph = study_graph(load_config(CONFIG, here))
    run_stage(graph, "prepare")
    # A study without trials has nothing to serve: the stage says so instead of failing.
    skipped = run_stage(
        study_graph(load_config(CONFIG, [*here, "trials.enabled=false"])), "serve_smoke"
    )
    assert skipped.rows == {"classified": 0}
    assert skipped.summary["status_note"] == "skipped: no trials output to serve"

    run_dir = run_dir_for(graph.cfg)
    demo = make_demo_run(run_dir, uspto_path, n_train=300, n_test=16)
    key = graph.key("trials")  # the demo run stands for a finished trials stage
    manifest = Manifest("trials", key.fingerprint, key.upstream, key.config, key.inputs, "0")
    write_json_atomic(run_dir / "trials" / "manifest.json", manifest.__dict__)
    try:
        done = run_stage(graph, "serve_smoke")  # trials now read: the fingerprint changed
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert done.rows == {"classified": 2}
    assert done.summary["status_note"].startswith(f"served {demo.best_trial}: ")
    smoke = json.loads((run_dir / "serve_smoke" / "smoke.json").read_text())
    assert smoke["trial_id"] == demo.best_trial
    assert len(smoke["docs"]) == 2 and len(smoke["response"]["predictions"]) == 2
    import pandas as pd

    test = pd.read_parquet(run_dir / "prepare" / "test.parquet")
    assert [d["text"] for d in smoke["docs"]] == list(test.text[:2])
