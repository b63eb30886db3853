"""Checkpoint selection, text limits, precision choice and the serve config's rules."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from config.serve import ServeConfig
from serve.schemas import TextLimitError, check_texts
from serve.select import select_checkpoint
from serve.server import serving_device, serving_precision


def _trials(tmp_path, rows):
    tdir = tmp_path / "trials"
    for r in rows:
        if r.get("checkpoint"):
            d = tdir / r["checkpoint"]
            d.mkdir(parents=True)
            (d / "classifier.json").write_text("{}")
    tdir.mkdir(exist_ok=True)
    pd.DataFrame.from_records(rows).to_parquet(tdir / "results.parquet")
    return tmp_path


ROWS = [
    {"trial_id": "b", "status": "ok", "val_micro_f1": 0.7, "checkpoint": "checkpoints/b"},
    {"trial_id": "a", "status": "ok", "val_micro_f1": 0.7, "checkpoint": "checkpoints/a"},
    {"trial_id": "c", "status": "ok", "val_micro_f1": 0.5, "checkpoint": "checkpoints/c"},
    {"trial_id": "d", "status": "failed", "val_micro_f1": 0.9, "checkpoint": None},
    {"trial_id": "e", "status": "ok", "val_micro_f1": float("nan"), "checkpoint": "checkpoints/e"},
]


def test_best_by_metric_ties_to_smaller_id(tmp_path):
    sel = select_checkpoint(_trials(tmp_path, ROWS))
    assert (sel.trial_id, sel.value) == ("a", 0.7)
    assert sel.path == tmp_path / "trials" / "checkpoints" / "a"


def test_explicit_trial_and_errors(tmp_path):
    run = _trials(tmp_path, ROWS)
    assert select_checkpoint(run, trial_id="c").trial_id == "c"
    with pytest.raises(ValueError, match="'zz': no such trial_id"):
        select_checkpoint(run, trial_id="zz")
    with pytest.raises(ValueError, match="'d': the trial has no checkpoint"):
        select_checkpoint(run, trial_id="d")
    with pytest.raises(ValueError, match="select_metric='val_nope'"):
        select_checkpoint(run, metric="val_nope")
    with pytest.raises(FileNotFoundError, match="run the trials stage first"):
        select_checkpoint(tmp_path / "empty")


def test_no_usable_trial(tmp_path):
    with pytest.raises(ValueError, match="no finished trial"):
        select_checkpoint(_trials(tmp_path, ROWS[3:4]))


def test_check_texts_limits():
    texts, cut = check_texts(["abc", "abcdefgh"], 4, 5, "truncate")
    assert texts == ["abc", "abcde"] and cut == [False, True]
    for args, status, needle in [
        (([], 4, 5, "truncate"), 422, "empty"),
        ((["a"] * 5, 4, 5, "truncate"), 413, "5 texts"),
        ((["a", "\t"], 4, 5, "truncate"), 422, "texts[1]"),
        ((["abcdefgh"], 4, 5, "reject"), 413, "texts[0]: 8 characters"),
    ]:
        with pytest.raises(TextLimitError, match=re.escape(needle)) as info:
            check_texts(*args)
        assert info.value.status == status


def test_lone_surrogate_replaced():
    texts, _ = check_texts(["a\ud800b"], 4, 50, "truncate")
    assert texts == ["a?b"]
    texts[0].encode("utf-8")  # would raise with the surrogate left in


def test_serving_precision():
    assert serving_precision("tfidf_linear", "bf16", cuda=True) == "fp32"
    assert serving_precision("finetune", "fp16", cuda=False) == "fp32"
    assert serving_precision("finetune", "fp16", cuda=True) == "fp16"
    assert serving_precision("finetune", "bf16", cuda=False) == "bf16"


def test_serving_device():
    # A GPU replica runs every torch family on CUDA (a frozen head's encoder, SetFit's body too).
    for family in ("finetune", "frozen_head", "setfit", "ensemble"):
        assert serving_device(family, num_gpus=1, cuda=True) == "cuda"
        assert serving_device(family, num_gpus=0.25, cuda=True) == "cuda"
        assert serving_device(family, num_gpus=0, cuda=True) == "cpu"
        assert serving_device(family, num_gpus=1, cuda=False) == "cpu"
    assert serving_device("tfidf_linear", num_gpus=1, cuda=True) == "cpu"


def test_serve_config_rules():
    with pytest.raises(ValidationError, match="max_ongoing_requests=8 is below max_batch_size=32"):
        ServeConfig(max_ongoing_requests=8)
    with pytest.raises(ValidationError, match="min_replicas=3 is above max_replicas=2"):
        ServeConfig(autoscaling={"min_replicas": 3, "max_replicas": 2})
    with pytest.raises(ValidationError, match="oversize_text"):
        ServeConfig(oversize_text="drop")


def test_select_metric_defaults_to_the_trials_one():
    from config import load_config

    quickstart = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    cfg = load_config(quickstart, ["trials.select_metric=val_macro_f1"])
    assert cfg.serve.select_metric is None
    assert cfg.serve.resolve_select_metric(cfg.trials) == "val_macro_f1"
    assert ServeConfig().resolve_select_metric(None) == "val_micro_f1"  # the trials default
    both = ["trials.select_metric=val_macro_f1", "serve.select_metric=val_micro_f1"]
    cfg = load_config(quickstart, both)
    assert cfg.serve.resolve_select_metric(cfg.trials) == "val_micro_f1"  # an explicit one wins
    with pytest.raises(ValidationError, match="select_metric"):
        ServeConfig(select_metric="test_micro_f1")  # nothing is chosen on test


def test_gpu_replica_places_a_frozen_heads_encoder(tmp_path, monkeypatch, caplog):
    """The replica's num_gpus reaches the frozen head's encoder; without CUDA it says so."""
    import numpy as np

    import serve.server as server_mod
    from serve.server import ClassifierServer
    from tasks.checkpoint import FrozenHeadClassifier, save_classifier

    head = {"w": np.zeros((2, 384), np.float32), "b": np.zeros(2, np.float32)}
    clf = FrozenHeadClassifier(
        head, "embedded:minilm-l6", 64, labels=["A01B", "G06F"], names=["a", "g"]
    )
    path = str(save_classifier(tmp_path / "ck", clf))
    spec = {"checkpoint": path, "trial_id": "t", "num_gpus": 0.5}

    monkeypatch.setattr(server_mod, "_cuda_available", lambda: True)
    srv = ClassifierServer(spec)  # the encoder loads at the first call, so no CUDA is touched
    assert srv.device == "cuda" and srv.classifier.device == "cuda"
    assert srv.model_info()["device"] == "cuda"

    monkeypatch.setattr(server_mod, "_cuda_available", lambda: False)
    with caplog.at_level("WARNING", logger="serve.server"):
        srv = ClassifierServer(spec)
    assert srv.device == "cpu" and srv.classifier.device == "cpu"
    assert "num_gpus=0.5 but torch sees no CUDA device; serving on CPU" in caplog.text
    assert ClassifierServer({**spec, "num_gpus": 0}).classifier.device == "cpu"
