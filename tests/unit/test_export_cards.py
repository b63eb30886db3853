"""`synthpat export` without Ray or real models: cards and their Hub metadata, the TF-IDF skops
round trip, corpora as a dataset folder, serve resolving an export, and the Hub's error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from export_run import (
    CORPUS,
    NAMES,
    VERDICT_SENTENCE,
    build_run,
    save_checkpoint,
    tfidf_classifier,
    trial,
)
from tiny_bert import LABELS
from typer.testing import CliRunner

from orchestrator.cli import app
from tasks.checkpoint import load_classifier
from tasks.export import (
    EXPORT_JSON,
    ExportError,
    export_classifier,
    export_run,
    load_export,
    read_export_json,
)
from tasks.export.cards import model_card_data
from tasks.export.context import run_context, trial_context
from tasks.export.dataset_card import dataset_configs
from tasks.export.hub import HubError, hub_token
from tasks.export.model import finetune_config_fields

TEXTS = ["a wheelchair lift with a ramp", "cochlear hearing device", "braille pin reader", "the"]


@pytest.fixture
def run(tmp_path):
    run = build_run(
        tmp_path,
        [
            trial("t-best", "tfidf-lr", "tfidf_linear", 0.61),
            trial("t-other", "tfidf-lr", "tfidf_linear", 0.42, seed=1),
        ],
    )
    save_checkpoint(run, "t-best", tfidf_classifier(0))
    save_checkpoint(run, "t-other", tfidf_classifier(1))
    return run


def _export(run, out, tid="t-best"):
    from tasks.artifacts import load_results

    df = load_results(run / "trials")
    row = df[df.trial_id == tid].iloc[0].to_dict()
    row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
    return export_run(run, out, run / "trials" / "checkpoints" / tid, row, trial={})


def _yaml(readme: str) -> dict:
    return yaml.safe_load(readme.split("---\n")[1])


def test_tfidf_skops_round_trip_gives_the_checkpoints_probabilities(run, tmp_path):
    import skops.io as sio

    out = tmp_path / "export"
    result = _export(run, out)
    assert (result.family, result.corpora) == ("tfidf_linear", [CORPUS])
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.joblib"))
    assert sio.get_untrusted_types(file=out / "model.skops") == []
    pipe = sio.load(out / "model.skops", trusted=[])
    want = load_classifier(run / "trials" / "checkpoints" / "t-best").predict_proba(TEXTS)
    np.testing.assert_allclose(pipe.predict_proba(TEXTS), want, atol=1e-6)
    back = load_export(out)
    np.testing.assert_allclose(back.predict_proba(TEXTS), want, atol=1e-6)
    assert back.labels == LABELS and back.names == NAMES
    # thresholds.json is in label order (the columns of predict_proba), not sorted by code.
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert list(thresholds) == LABELS
    np.testing.assert_allclose(list(thresholds.values()), [0.3, 0.4, 0.5])
    np.testing.assert_allclose(back.thresholds, [0.3, 0.4, 0.5])


def test_model_card_metadata_parses_and_quotes_the_report(run, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "export"
    _export(run, out)
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "sklearn" and data["pipeline_tag"] == "text-classification"
    assert data["model_format"] == "skops" and data["model_file"] == "model.skops"
    assert {"skops", "synthetic-data", "patents"} <= set(data["tags"])
    assert data["datasets"] == ["uspto-tiny", "synthpat-tiny-synthetic-corpora"]
    results = {r.metric_name: r for r in card.data.eval_results}
    assert results["test micro-F1"].metric_value == pytest.approx(0.21)
    assert results["test micro-F1"].dataset_split == "test"
    assert results["validation micro-F1"].metric_value == pytest.approx(0.61)
    assert data["model-index"][0]["name"] == "synthpat-tiny-t-best"
    text = card.text
    assert VERDICT_SENTENCE in text and "one of the verdict cell's runs" in text
    assert "[0.100, 0.300]" in text  # the cell's interval from report/tables/aggregate
    assert "+0.010" in text and "[-0.020, +0.040]" in text  # its controlled gain
    assert f"`{CORPUS}`" in text and "too_short 2" in text and "(10 real" not in text
    assert "20 real, 10 synthetic" in text
    for code, name, t in zip(LABELS, NAMES, ["0.300", "0.400", "0.500"], strict=True):
        assert f"| `{code}` | {name} | {t} |" in text


def test_card_without_report_says_so_and_has_no_interval(run, tmp_path):
    import shutil

    shutil.rmtree(run / "report")
    out = tmp_path / "export"
    _export(run, out)
    text = (out / "README.md").read_text()
    assert "no interval" in text and "has no verdict for this regime" in text


def test_dataset_card_configs_load_splits_and_list_the_provenance(run, tmp_path):
    from huggingface_hub import DatasetCard

    out = tmp_path / "export"
    _export(run, out)
    folder = out / "corpora"
    card = DatasetCard.load(folder / "README.md")
    configs = card.data.to_dict()["configs"]
    assert configs == [
        {
            "config_name": CORPUS,
            "data_files": [{"split": "train", "path": f"{CORPUS}/train.parquet"}],
            "default": True,
        },
        {
            "config_name": f"{CORPUS}__removed",
            "data_files": [{"split": "removed", "path": f"{CORPUS}/removed.parquet"}],
        },
    ]
    import pandas as pd

    assert len(pd.read_parquet(folder / CORPUS / "train.parquet")) == 6
    assert set(pd.read_parquet(folder / CORPUS / "removed.parquet")["filter"]) == {"too_short"}
    text = card.text
    assert "`abc123def456`" in text  # prompt template hash
    assert "temperature 0.8" in text and "top_k 50" in text and "max_tokens 128" in text
    assert "| too_short | 2 |" in text and "min_words=20" in text
    assert "0.0512" in text and "1.250" in text  # MMD^2, Frechet
    assert "label-name mentions: 0.125" in text and "max 0.633" in text  # leakage audit


def test_dataset_configs_default_is_the_named_corpus_else_the_first():
    entries = [{"corpus_id": "a", "removed_rows": 0}, {"corpus_id": "b", "removed_rows": 3}]
    assert [c.get("default") for c in dataset_configs(entries, "b")] == [None, True, None]
    assert [c["config_name"] for c in dataset_configs(entries, "b")] == ["a", "b", "b__removed"]
    assert dataset_configs(entries, "zz")[0]["default"] is True


def test_model_card_data_for_a_real_only_finetune_names_the_base_model(run):
    doc = {
        "family": "finetune",
        "labels": LABELS,
        "names": NAMES,
        "thresholds": [0.5] * 3,
        "mix": {"n_synthetic": 0, "corpus_id": ""},
        "metrics": {"val_micro_f1": 0.5},
        "provenance": {"model": "embedded:minilm-l6"},
        "family_config": {"max_length": 64},
        "trial": {"trial_id": "t"},
    }
    ctx = trial_context(run_context(run), {"trial_id": "t", "regime": "r20"}, doc)
    data = model_card_data(doc, ctx, "me/corpora").to_dict()
    assert data["library_name"] == "transformers"
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["datasets"] == ["uspto-tiny"]  # trained on no corpus: no synthetic dataset
    assert "synthetic-data" not in data["tags"]


def test_finetune_config_fields_use_codes_and_thresholds():
    doc = {"labels": LABELS, "names": NAMES, "thresholds": [0.1, 0.2, 0.3]}
    fields = finetune_config_fields(doc)
    assert fields["problem_type"] == "multi_label_classification"
    assert fields["id2label"] == {"0": "A61G", "1": "H04R", "2": "G09B"}
    assert fields["label2id"] == {"A61G": 0, "H04R": 1, "G09B": 2}
    assert fields["thresholds"] == {"A61G": 0.1, "H04R": 0.2, "G09B": 0.3}


def test_ensemble_is_refused_naming_the_trial_flag(tmp_path):
    ck = tmp_path / "ens"
    ck.mkdir()
    doc = {
        "family": "ensemble",
        "labels": LABELS,
        "names": NAMES,
        "thresholds": [0.5] * 3,
        "family_config": {"members": ["r20__a__synthesis__plain", "r20__b__synthesis__plain"]},
    }
    (ck / "classifier.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match=r"is an ensemble .*--trial TRIAL_ID"):
        export_classifier(ck, tmp_path / "out", {"trial_id": "t-ens"})
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_non_empty_folder(run, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        _export(run, out)


def test_cli_exports_the_trial_serve_selects_and_trial_picks_another(run, tmp_path):
    from serve.select import select_checkpoint

    runner = CliRunner()
    res = runner.invoke(app, ["export", str(run), "--to", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    doc = read_export_json(tmp_path / "a")
    assert doc["trial"]["trial_id"] == select_checkpoint(run).trial_id == "t-best"
    assert doc["trial"]["chosen_by"] == "select_metric" and doc["trial"]["n_candidates"] == 2
    assert "among 2 with a checkpoint" in (tmp_path / "a" / "README.md").read_text()
    res = runner.invoke(
        app, ["export", str(run), "--to", str(tmp_path / "b"), "--trial", "t-other"]
    )
    assert res.exit_code == 0, res.output
    assert read_export_json(tmp_path / "b")["trial"]["trial_id"] == "t-other"
    res = runner.invoke(app, ["export", str(run), "--to", str(tmp_path / "c"), "--trial", "zz"])
    assert res.exit_code == 1 and "--trial 'zz': no such trial_id" in res.output


def test_serve_resolves_an_exported_folder(run, tmp_path):
    from serve.select import select_checkpoint
    from serve.server import ClassifierServer, server_spec

    out = tmp_path / "export"
    _export(run, out)
    sel = select_checkpoint(out)
    assert (sel.trial_id, sel.path, sel.value) == ("t-best", out, pytest.approx(0.61))
    assert sel.row["family"] == "tfidf-lr"
    srv = ClassifierServer(server_spec(sel))
    want = load_classifier(run / "trials" / "checkpoints" / "t-best").predict_proba(TEXTS)
    np.testing.assert_allclose(srv.predict_proba(TEXTS), want, atol=1e-6)
    assert [lab["threshold"] for lab in srv.label_infos()] == pytest.approx([0.3, 0.4, 0.5])
    info = srv.model_info()
    assert info["family"] == "tfidf_linear" and info["mix"]["corpus_id"] == CORPUS
    with pytest.raises(ValueError, match="an export of trial 't-best' only"):
        select_checkpoint(out, trial_id="t-other")


def test_push_refused_offline_and_without_a_token(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        hub_token("me/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    from huggingface_hub import constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    # No saved login either (huggingface_hub reads the path it resolved at import).
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HubError, match="no Hugging Face token"):
        hub_token("me/model")
    with pytest.raises(HubError, match="expected owner/name"):
        hub_token("model")
    res = CliRunner().invoke(
        app, ["export", str(run), "--to", str(tmp_path / "x"), "--push-to-hub", "me/model"]
    )
    assert res.exit_code == 1 and "no Hugging Face token" in res.output
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_export_json_records_the_exported_layout(run, tmp_path):
    out = tmp_path / "export"
    _export(run, out)
    doc = json.loads((out / EXPORT_JSON).read_text())
    assert doc["family_config"] == {
        "format": "skops",
        "steps": ["tfidf", "clf"],
        "weights": "model.skops",
    }
    assert doc["trial"]["row"]["trial_id"] == "t-best"
    assert doc["mix"]["corpus_id"] == CORPUS
