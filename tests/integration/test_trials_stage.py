"""The trials stage on a local Ray: real prepared patents, hand-made corpora, every family."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from planted import plant_manifest
from tiny_bert import build_tiny_bert
from typer.testing import CliRunner

from orchestrator.cli import app
from tasks.files import write_json_atomic

REGIME = "r40"
REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, source: Path, trials: dict) -> Path:
    tree = {
        "study": "tr",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "data": {
            "source": {"path": str(source), "min_good_records": 50, "limit": 1200},
            "labels": {"top_k": 6},
            "split": {"test_size": 60, "val_size": 40},
            "regimes": [{"name": REGIME, "size": 40}],
        },
        "generation": {
            "generators": [{"kind": "vllm", "name": "hand", "model": "embedded:smollm2-135m"}],
            "ratios": [1.0],
        },
        "trials": trials,
        "resources": {"runs_dir": str(tmp_path / "runs"), "num_cpus": 2},
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


def _hand_made_generate(run_dir: Path, n_corpora: int) -> None:
    """Corpora as generate writes them: held-back real patents relabelled as synthetic."""
    prep = run_dir / "prepare"
    pool = pd.read_parquet(prep / "train_pool.parquet")
    regime = pd.read_parquet(prep / "regimes" / f"{REGIME}.parquet")
    fresh = pool[~pool.id.isin(regime.id)].reset_index(drop=True)
    gen = run_dir / "generate"
    (gen / "corpora").mkdir(parents=True, exist_ok=True)
    entries = []
    for k, strategy in enumerate(["synthesis", "paraphrase"][:n_corpora]):
        part = fresh.iloc[k * 40 : (k + 1) * 40]
        cid = f"{REGIME}__hand__{strategy}__plain"
        pd.DataFrame(
            {
                "id": [f"{strategy[0]}{i}" for i in range(len(part))],
                "text": part.text.tolist(),
                "labels": [list(x) for x in part.labels],
                "source": "synthetic",
                "volume_rank": range(len(part)),
            }
        ).to_parquet(gen / "corpora" / f"{cid}.parquet", index=False)
        entries.append(
            {
                "corpus_id": cid,
                "regime": REGIME,
                "generator": "hand",
                "strategy": strategy,
                "variant": "plain",
                "rows": len(part),
                "removed": 0,
                "path": f"corpora/{cid}.parquet",
            }
        )
    write_json_atomic(gen / "corpora.json", entries)
    plant_manifest(run_dir, run_dir / "config.resolved.yaml", "generate")


def _prepared(tmp_path: Path, uspto_path: Path, trials: dict, n_corpora: int = 2) -> Path:
    cfg = _config(tmp_path, uspto_path, trials)
    res = CliRunner().invoke(app, ["prepare", str(cfg)])
    assert res.exit_code == 0, res.output
    _hand_made_generate(tmp_path / "runs" / "tr", n_corpora)
    return cfg


CHEAP = [
    {
        "kind": "frozen_head",
        "name": "head",
        "epochs": 30,
        "encoder": {"model": "embedded:minilm-l6", "max_length": 64},
    },
    {"kind": "tfidf_linear", "name": "tfidf"},
]


def test_cheap_families_every_arm_with_its_volume_control(tmp_path, uspto_path):
    trials = {
        "families": CHEAP,
        "arms": ["real_only", "real_plus_synthetic", "fixed_budget", "filtered", "ensemble"],
        "fixed_budget": {"budget": 60, "real_fractions": [0.25]},
        "ratios": [0.5],
        "resources": {"cpus": 1},
    }
    cfg = _prepared(tmp_path, uspto_path, trials)
    res = CliRunner().invoke(app, ["trials", str(cfg)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "tr" / "trials"
    df = pd.read_parquet(out / "results.parquet")
    assert set(df.status) == {"ok"}, df[["trial_id", "status", "reason"]]
    assert df.trial_id.is_unique
    for fam in ("head", "tfidf"):
        f = df[df.family == fam].set_index("trial_id")
        assert (f.arm == "real_only").sum() == 1
        assert f[f.arm == "real_only"].n_train.tolist() == [40]
        rps = f[f.arm == "real_plus_synthetic"]
        assert sorted(rps.n_train) == [60, 60] and set(rps.n_synthetic) == {20}
        fb = f[f.arm == "fixed_budget"]
        assert (
            set(fb.n_train) == {60} and set(fb.n_real) == {15} and set(fb.real_fraction) == {0.25}
        )
        ens = f[f.arm == "ensemble"]
        assert ens.n_train.tolist() == [80] and ens.n_synthetic.tolist() == [40]
        # Every augmented arm is controlled by a real-only mix of exactly its size.
        for _tid, ctl in f[f.arm == "duplicate_to_match"].iterrows():
            ensemble = f.loc[ctl.controls.split(",")[0]].arm == "ensemble"
            # An ensemble's control is an ensemble of two duplicate_to_match members of 60 rows.
            assert ctl.n_synthetic == 0 and ctl.n_real == (40 if ensemble else ctl.n_train)
            for aug in ctl.controls.split(","):
                assert f.loc[aug].n_train == ctl.n_train
        controlled = {a for c in f[f.arm == "duplicate_to_match"].controls for a in c.split(",")}
        assert controlled == set(
            f[f.arm.isin(["real_plus_synthetic", "fixed_budget", "filtered", "ensemble"])].index
        )
        assert f.test_micro_f1.between(0.05, 1).all() and f.test_ndcg10.between(0.05, 1).all()
    # An epoch budget: a head's steps grow with its mix (30 epochs of ceil(n / 32) batches;
    # ensembles: one model per member); TF-IDF takes none.
    assert set(df.budget) == {"epochs"} and df[df.family == "tfidf"].train_steps.isna().all()
    head = df[(df.family == "head") & (df.arm.isin(["real_only", "real_plus_synthetic"]))]
    assert (head.train_steps == 30 * np.ceil(head.n_train / 32)).all()
    # Checkpoints load without pickle and carry the val-chosen thresholds.
    from tasks.checkpoint import load_classifier, read_classifier_json

    one = df[(df.family == "tfidf") & (df.arm == "real_only")].iloc[0]
    clf = load_classifier(out / one.checkpoint)
    doc = read_classifier_json(out / one.checkpoint)
    assert doc["mix"]["n_train"] == 40 and len(clf.labels) == 6
    assert doc["metrics"]["test_micro_f1"] == pytest.approx(one.test_micro_f1)
    ens = df[(df.family == "head") & (df.arm == "ensemble")].iloc[0]
    assert sorted(p.name for p in (out / ens.checkpoint / "members").iterdir()) == [
        f"{REGIME}__hand__paraphrase__plain",
        f"{REGIME}__hand__synthesis__plain",
    ]
    # The ensemble checkpoint is one loadable (servable) classifier, with its recorded metrics.
    ens_clf = load_classifier(out / ens.checkpoint)
    assert ens_clf.family == "ensemble" and len(ens_clf.members) == 2
    ens_ctl = df[(df.family == "head") & (df.controls == ens.trial_id)].iloc[0]
    assert ens_ctl.arm == "duplicate_to_match" and ens_ctl.n_train == ens.n_train
    assert len(load_classifier(out / ens_ctl.checkpoint).members) == 2
    # Every trial leaves its test predictions for the report's document bootstrap.
    from tasks.artifacts import load_predictions

    pred = load_predictions(out / "predictions" / f"{ens.trial_id}.npz")
    assert pred["test_proba"].shape == (len(pred["test_ndcg"]), 6)
    assert pred["test_ndcg"].mean() == pytest.approx(ens.test_ndcg10, abs=1e-5)
    assert ens_clf.meta["metrics"]["test_micro_f1"] == pytest.approx(ens.test_micro_f1)
    assert json.loads((out / "numerics.json").read_text()) == []


def _hand_made_draws(run_dir: Path, draws: int) -> list[dict]:
    """One synthesis corpus per regime draw, as generate writes them (ids with the regime key)."""
    prep = run_dir / "prepare"
    pool = pd.read_parquet(prep / "train_pool.parquet")
    keys = [REGIME] + [f"{REGIME}-d{d}" for d in range(1, draws)]
    taken = set().union(*(pd.read_parquet(prep / "regimes" / f"{k}.parquet").id for k in keys))
    fresh = pool[~pool.id.isin(taken)].reset_index(drop=True)
    gen = run_dir / "generate"
    (gen / "corpora").mkdir(parents=True, exist_ok=True)
    entries = []
    for d, key in enumerate(keys):
        part = fresh.iloc[d * 40 : (d + 1) * 40]
        cid = f"{key}__hand__synthesis__plain"
        pd.DataFrame(
            {
                "id": [f"{key}-s{i}" for i in range(len(part))],
                "text": part.text.tolist(),
                "labels": [list(x) for x in part.labels],
                "source": "synthetic",
                "volume_rank": range(len(part)),
            }
        ).to_parquet(gen / "corpora" / f"{cid}.parquet", index=False)
        entries.append(
            {
                "corpus_id": cid,
                "regime": REGIME,
                "draw": d,
                "regime_key": key,
                "generator": "hand",
                "strategy": "synthesis",
                "variant": "plain",
                "rows": len(part),
                "removed": 0,
                "path": f"corpora/{cid}.parquet",
            }
        )
    write_json_atomic(gen / "corpora.json", entries)
    plant_manifest(run_dir, run_dir / "config.resolved.yaml", "generate")
    return entries


def test_two_regime_draws_each_train_on_their_own_real_rows(tmp_path, uspto_path):
    from config import load_config
    from tasks.trials.grid import expand_grid

    trials = {
        "families": [CHEAP[1]],
        "arms": ["real_only", "real_plus_synthetic", "filtered"],
        "seeds": [0],
        "resources": {"cpus": 1},
    }
    cfg = _config(tmp_path, uspto_path, trials)
    res = CliRunner().invoke(app, ["prepare", str(cfg), "data.regime_draws=2"])
    assert res.exit_code == 0, res.output
    entries = _hand_made_draws(tmp_path / "runs" / "tr", 2)
    res = CliRunner().invoke(app, ["trials", str(cfg), "data.regime_draws=2"])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "runs" / "tr" / "trials" / "results.parquet")
    assert set(df.status) == {"ok"}, df[["trial_id", "status", "reason"]]
    assert df.trial_id.is_unique and sorted(df.draw.unique()) == [0, 1]
    assert set(df.regime) == {REGIME}
    one, two = df[df.draw == 0], df[df.draw == 1]
    assert len(one) == len(two) and set(one.arm) == set(two.arm)
    assert two.trial_id.str.startswith(f"{REGIME}-d1-").all()
    assert set(two.generator) == {"", "hand"}
    assert two[two.arm == "real_only"].n_real.tolist() == [40]
    # Draw 0's ids are those of the same study without draws.
    single = expand_grid(load_config(cfg), corpora=[e for e in entries if e["draw"] == 0])
    plain = {c.trial_id for c in single if c.arm != "duplicate_to_match"}
    assert plain == set(one[one.arm != "duplicate_to_match"].trial_id)
    # Each draw trained on its own 40 real patents: the real-only classifiers differ.
    from tasks.checkpoint import load_classifier

    out = tmp_path / "runs" / "tr" / "trials"
    test = pd.read_parquet(tmp_path / "runs" / "tr" / "prepare" / "test.parquet")
    probs = [
        load_classifier(out / d[d.arm == "real_only"].checkpoint.iloc[0]).predict_proba(
            test.text.tolist()[:20]
        )
        for d in (one, two)
    ]
    assert probs[0].shape == probs[1].shape and not (probs[0] == probs[1]).all()


def test_each_frozen_head_embeds_with_its_own_encoder(tmp_path, uspto_path):
    """Two frozen heads whose encoders differ (MiniLM at 32 and 64 tokens): each trains on and
    records its own encoder, so their checkpoints, embeddings and probabilities differ."""
    from tasks.artifacts import load_predictions
    from tasks.checkpoint import load_classifier, read_classifier_json

    heads = [
        {"kind": "frozen_head", "name": f"head{n}", "epochs": 30,
         "encoder": {"model": "embedded:minilm-l6", "max_length": n}}
        for n in (32, 64)
    ]  # fmt: skip
    trials = {"families": heads, "arms": ["real_only"], "resources": {"cpus": 1}}
    cfg = _prepared(tmp_path, uspto_path, trials, n_corpora=1)
    res = CliRunner().invoke(app, ["trials", str(cfg)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "tr" / "trials"
    df = pd.read_parquet(out / "results.parquet").set_index("family")
    assert set(df.status) == {"ok"} and sorted(df.index) == ["head32", "head64"]
    test = pd.read_parquet(tmp_path / "runs" / "tr" / "prepare" / "test.parquet")
    texts = test.text.tolist()[:8]
    probs, embs = {}, {}
    for name, n in (("head32", 32), ("head64", 64)):
        ckpt = out / df.loc[name].checkpoint
        doc = read_classifier_json(ckpt)
        want = {"model": "embedded:minilm-l6", "max_length": n}
        want.update(backend="torch", quantize="none")
        assert doc["family_config"]["encoder"] == want
        clf = load_classifier(ckpt)
        probs[name] = load_predictions(out / "predictions" / f"{df.loc[name].trial_id}.npz")
        # The trial scored with the encoder it saved: its recorded test probabilities are the
        # checkpoint's own (float16 in the predictions file).
        np.testing.assert_allclose(
            probs[name]["test_proba"][:8], clf.predict_proba(texts), atol=2e-3
        )
        embs[name] = clf.embed(texts)
    assert not np.allclose(embs["head32"], embs["head64"], atol=1e-3)
    assert not np.allclose(probs["head32"]["val_proba"], probs["head64"]["val_proba"], atol=1e-3)


def test_a_rerun_reuses_the_trials_whose_key_is_unchanged(tmp_path, uspto_path):
    trials = {"families": [CHEAP[1]], "seeds": [0], "ratios": [0.5], "resources": {"cpus": 1}}
    cfg = _prepared(tmp_path, uspto_path, trials, n_corpora=1)
    res = CliRunner().invoke(app, ["trials", str(cfg)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "tr" / "trials"
    first = pd.read_parquet(out / "results.parquet").set_index("trial_id")
    assert len(first) == 3 and first.trial_key.str.len().eq(24).all()
    # A second seed: a new stage fingerprint, but seed 0's trials are the same trials.
    res = CliRunner().invoke(app, ["trials", str(cfg), "trials.seeds=[0,1]"])
    assert res.exit_code == 0, res.output
    again = pd.read_parquet(out / "results.parquet").set_index("trial_id")
    assert len(again) == 6 and set(again.status) == {"ok"}
    for tid, row in first.iterrows():
        assert again.loc[tid].trained_at == row.trained_at, f"{tid} was trained again"
        assert again.loc[tid].trial_key == row.trial_key
        assert (out / again.loc[tid].checkpoint / "classifier.json").is_file()
        assert (out / "predictions" / f"{tid}.npz").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["reused"] == 3 and manifest["rows"]["ok"] == 6


@pytest.mark.slow  # about 2.5 minutes on 2 shared cores: two driver runs
def test_resume_after_the_driver_is_killed(tmp_path, uspto_path):
    trials = {
        "families": [CHEAP[1]],
        "seeds": [0, 1, 2],
        "ratios": [0.5, 1.0],
        "resources": {"cpus": 1},
    }
    cfg = _prepared(tmp_path, uspto_path, trials, n_corpora=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "orchestrator", "trials", str(cfg)]
    work = tmp_path / "runs" / "tr" / ".work"
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    before: dict[str, float] = {}
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        markers = list(work.glob("trials-*/done/*/row.json"))
        if len(markers) >= 3:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    for m in work.glob("trials-*/done/*/row.json"):
        before[m.parent.name] = json.loads(m.read_text())["trained_at"]
    assert len(before) >= 3, "no trial finished before the kill"
    assert not (tmp_path / "runs" / "tr" / "trials" / "manifest.json").exists()

    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "runs" / "tr" / "trials" / "results.parquet")
    # 3 seeds x (real_only, 2 ratios, 2 controls): every trial exactly once, all finished.
    assert len(df) == 15 and df.trial_id.is_unique and set(df.status) == {"ok"}
    again = df.set_index("trial_id").trained_at
    for tid, stamp in before.items():
        assert again[tid] == stamp, f"{tid} was trained again after the resume"


@pytest.mark.slow
def test_finetune_in_the_grid_with_the_numerics_guard(tmp_path, uspto_path):
    tiny = build_tiny_bert(tmp_path / "tiny")
    trials = {
        "families": [
            {
                "kind": "finetune",
                "name": "tiny",
                "model": tiny,
                "max_length": 32,
                "epochs": 1,
                "batch_size": 16,
            },
            *CHEAP,
        ],
        "arms": ["real_only", "real_plus_synthetic"],
        "ratios": [1.0],
        "precisions": ["fp32", "bf16"],
        "attentions": ["sdpa"],
        "numerics_guard": {"max_abs_diff": 1e-9},
    }
    cfg = _prepared(tmp_path, uspto_path, trials, n_corpora=1)
    res = CliRunner().invoke(app, ["trials", str(cfg)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "tr" / "trials"
    df = pd.read_parquet(out / "results.parquet")
    assert set(df.status) == {"ok"}, df[["trial_id", "status", "reason"]]
    ft = df[df.family == "tiny"]
    assert len(ft) == 6 and set(ft.precision) == {"fp32", "bf16"}
    guard = {
        (r["precision"], r["attention"]): r for r in json.loads((out / "numerics.json").read_text())
    }
    # bf16 logits differ from fp32 eager by more than 1e-9: flagged, and the flag lands in results.
    assert guard[("bf16", "sdpa")]["flagged"] is True
    assert ft[ft.precision == "bf16"].numerics_flag.all()
    assert not df[df.family != "tiny"].numerics_flag.any()
