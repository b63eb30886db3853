"""Tracking through real stages: a tiny real-only study (TF-IDF on real patents, local Ray) run
to its report, then run again up to date and forced: the MLflow store ends with exactly one run
per row of trials/results.parquet. W&B offline on planted outputs, where wandb is installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app

pytest.importorskip("mlflow")

STAGES = ("prepare", "trials", "report")


def _config(tmp_path: Path, source: Path, **tracking) -> Path:
    tree = {
        "study": "trk",
        "data": {
            "source": {"path": str(source), "min_good_records": 50, "limit": 600},
            "labels": {"top_k": 5},
            "split": {"test_size": 60, "val_size": 40},
            "regimes": [{"name": "r40", "size": 40}],
        },
        "trials": {
            "families": [{"kind": "tfidf_linear", "name": "tfidf"}],
            "arms": ["real_only"],
            "losses": ["bce", "focal"],
            "seeds": [0, 1],
            "resources": {"cpus": 1},
        },
        "report": {"bootstrap_samples": 200},
        "serve": {"smoke": False},
        "resources": {"runs_dir": str(tmp_path / "runs"), "num_cpus": 2},
    }
    if tracking:
        tree["tracking"] = tracking
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _run(cfg: Path, *flags: str) -> str:
    res = CliRunner().invoke(app, ["run", str(cfg), *flags])
    assert res.exit_code == 0, res.output
    return res.output


def _runs(run_dir: Path) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{run_dir / 'mlflow.db'}")
    try:
        return mlflow.search_runs(experiment_names=["trk"], output_format="pandas")
    finally:
        mlflow.set_tracking_uri(None)


def test_one_run_per_trial_through_reruns_and_force(tmp_path, uspto_path):
    cfg = _config(tmp_path, uspto_path)
    _run(cfg)
    run_dir = tmp_path / "runs" / "trk"
    results = pd.read_parquet(run_dir / "trials" / "results.parquet")
    # TF-IDF trains no focal loss: those two rows are `skipped`, and get a run all the same.
    assert len(results) == 4 and sorted(results.status) == ["ok", "ok", "skipped", "skipped"]

    runs = _runs(run_dir)
    trials = runs[runs["tags.synthpat.kind"] == "trial"].set_index("tags.synthpat.trial_id")
    assert sorted(trials.index) == sorted(results.trial_id)
    for r in results.itertuples():
        t = trials.loc[r.trial_id]
        assert t["tags.synthpat.status"] == r.status
        if r.status == "ok":
            assert t["metrics.test_micro_f1"] == pytest.approx(r.test_micro_f1)
        else:
            assert pd.isna(t["metrics.test_micro_f1"])
        assert (t["params.regime"], t["params.arm"], t["params.family"]) == (
            "r40",
            "real_only",
            "tfidf",
        )
        assert (t["params.loss"], t["params.seed"]) == (r.loss, str(r.seed))
        assert t["tags.synthpat.trial_key"] == r.trial_key
    # Two cells (one per loss), two seeds each.
    assert trials.groupby("tags.synthpat.cell").size().tolist() == [2, 2]
    stages = runs[runs["tags.synthpat.kind"] == "stage"].set_index("tags.synthpat.stage")
    assert sorted(stages.index) == sorted(STAGES)
    for stage in STAGES:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert stages.loc[stage, "tags.synthpat.stage_fingerprint"] == manifest["fingerprint"]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    report = {a.path for a in client.list_artifacts(stages.run_id["report"])}
    assert {"report.md", "report.html", "figures"} <= report
    assert len(runs) == len(results) + len(STAGES) + 1  # and the study's own run

    ids = set(runs.run_id)
    out = _run(cfg)  # every stage up to date: nothing logged
    assert "trials: up to date" in out and "tracking:" not in out
    assert set(_runs(run_dir).run_id) == ids
    out = _run(cfg, "--force")  # retrained, same keys: the same runs, updated
    # The stage and the two trained trials updated; the study and the skipped rows as they were.
    assert "tracking: trials logged to mlflow (0 new, 3 updated, 3 unchanged)" in out
    again = _runs(run_dir)
    assert set(again.run_id) == ids
    fresh = pd.read_parquet(run_dir / "trials" / "results.parquet").set_index("trial_id")
    t = again[again["tags.synthpat.kind"] == "trial"].set_index("tags.synthpat.trial_id")
    ok = fresh.index[fresh.status == "ok"]
    assert (t["metrics.test_micro_f1"][ok] - fresh.test_micro_f1[ok]).abs().max() < 1e-9


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_logs_each_run_once(tmp_path, monkeypatch):
    """The W&B path offline, on a committed trials stage planted by hand (no Ray)."""
    sys_path = str(Path(__file__).resolve().parents[1] / "unit")
    monkeypatch.syspath_prepend(sys_path)
    from test_tracking_runs import ROWS, Study

    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    study = Study(tmp_path, "tracking.backend=wandb")
    study.commit_trials(ROWS)
    study.track()
    wandb_dir = study.store.run_dir / "wandb"
    offline = sorted(p.name for p in (wandb_dir / "wandb").glob("offline-run-*"))
    ledger = json.loads((wandb_dir / "synthpat-logged.json").read_text())
    assert len(offline) == len(ROWS) + 2 == len(ledger)  # trials, the stage, the study
    assert {name.rsplit("-", 1)[1] for name in offline} == set(ledger)  # run id = key
    # Each trial's record (and only a trial's) carries its scores.
    scored = [p for p in (wandb_dir / "wandb").glob("offline-run-*/run-*.wandb")]
    assert sum(b"test_micro_f1" in p.read_bytes() for p in scored) == len(ROWS)
    study.track()  # nothing changed: no run reopened
    assert sorted(p.name for p in (wandb_dir / "wandb").glob("offline-run-*")) == offline
