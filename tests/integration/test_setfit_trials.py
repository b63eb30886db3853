"""A SetFit real_only trial through the trials stage on a local Ray, then served by Ray Serve."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app


def _config(tmp_path: Path, source: Path) -> Path:
    tree = {
        "study": "sf",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "data": {
            "source": {"path": str(source), "min_good_records": 50, "limit": 1200},
            "labels": {"top_k": 6},
            "split": {"test_size": 60, "val_size": 40},
            "regimes": [{"name": "r40", "size": 40}],
        },
        "trials": {
            # One pair of each kind per row: 80 pairs, 5 body steps of MiniLM at 64 tokens.
            "families": [
                {
                    "kind": "setfit",
                    "name": "sf",
                    "max_length": 64,
                    "num_iterations": 1,
                    "arms": ["real_only"],
                }
            ],
            "arms": ["real_only", "real_plus_synthetic"],
            "losses": ["bce", "focal"],
            "resources": {"cpus": 1},
        },
        "resources": {"runs_dir": str(tmp_path / "runs"), "num_cpus": 2},
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


def test_setfit_real_only_trial_runs_and_its_checkpoint_serves(tmp_path, uspto_path):
    import ray

    from config.serve import ServeConfig
    from serve.launch import start_server, stop_server
    from tasks.checkpoint import load_classifier
    from tasks.net import free_port

    cfg = _config(tmp_path, uspto_path)
    for stage in ("prepare", "trials"):
        res = CliRunner().invoke(app, [stage, str(cfg)])
        assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "sf" / "trials"
    df = pd.read_parquet(out / "results.parquet")
    # No generation, and the family runs real_only only, with its own head whatever the
    # study's losses: one trial.
    assert sorted(zip(df.arm, df.loss, df.status, strict=True)) == [("real_only", "bce", "ok")]
    row = df[df.status == "ok"].iloc[0]
    assert row.family == "sf" and row.n_train == 40 and row.n_synthetic == 0
    assert row.precision == "fp32" and row.attention == "none"
    assert 0 < row.val_micro_f1 <= 1 and 0 < row.test_ndcg10 <= 1
    ckpt = out / row.checkpoint if not Path(row.checkpoint).is_absolute() else Path(row.checkpoint)
    doc = json.loads((ckpt / "classifier.json").read_text())
    assert doc["family"] == "setfit" and doc["provenance"]["train_steps"] == 5
    assert (ckpt / "body" / "model.safetensors").is_file() and not list(ckpt.rglob("*.pkl"))

    test = pd.read_parquet(tmp_path / "runs" / "sf" / "prepare" / "test.parquet")
    texts = test.text.tolist()[:4]
    offline = load_classifier(ckpt)
    try:
        serve_cfg = ServeConfig(select_metric="val_micro_f1")
        running = start_server(
            tmp_path / "runs" / "sf", serve_cfg, host="127.0.0.1", port=free_port()
        )
        r = httpx.post(
            f"{running.url}/v1/classify", json={"texts": texts, "threshold": 0.0}, timeout=60.0
        )
        info = httpx.get(f"{running.url}/v1/model", timeout=30.0).json()
    finally:
        stop_server()
        ray.shutdown()
    assert r.status_code == 200, r.text
    assert running.trial_id == row.trial_id and info["family"] == "setfit"
    probs = offline.predict_proba(texts)
    for want, pred in zip(probs, r.json()["predictions"], strict=True):
        by_code = {lab["code"]: lab["probability"] for lab in pred["labels"]}
        got = np.array([by_code[c] for c in offline.labels])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
