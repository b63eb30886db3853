"""`synthpat export` of real checkpoints (a tiny BERT fine-tuned here, frozen-head and SetFit
models on it as a sentence encoder, TF-IDF), loaded back with the Hugging Face tools: the
pipeline's probabilities equal the project's classifier's, the corpora load with `datasets`,
the cards parse, and serve resolves the exported folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_run import (
    CORPUS,
    NAMES,
    build_run,
    save_checkpoint,
    tfidf_classifier,
    trial,
)
from tiny_bert import LABELS, build_tiny_bert, make_texts
from typer.testing import CliRunner

from orchestrator.cli import app
from tasks.checkpoint import load_classifier

MAX_LENGTH = 16  # shorter than most texts below: the export must truncate where training did
THRESHOLDS = [0.3, 0.45, 0.6]
#: Wheelchair words within the first MAX_LENGTH tokens, hearing and braille words after them.
LONG = "wheelchair lift ramp seat " * 4 + "hearing cochlear braille tactile pin reader " * 6
TEXTS = [
    LONG,
    "wheelchair lift ramp seat device with a the system method for and hearing ear sound",
    "hearing cochlear sound ear device",
    "braille",
    *make_texts(5, 11)[0],
]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def _finetune(tiny_model: str, cache: Path):
    from config.trials import FinetuneFamily
    from tasks.finetune import train_finetune

    texts, label_sets = make_texts(48, 1)
    y = np.array([[c in s for c in LABELS] for s in label_sets], dtype=np.float32)
    fam = FinetuneFamily(
        model=tiny_model, max_length=MAX_LENGTH, epochs=6, learning_rate=3e-3, batch_size=8
    )
    clf = train_finetune(
        fam, texts, y, texts[:8], y[:8], LABELS, "bce", "fp32", "sdpa", 0, cache, names=NAMES
    )
    clf.thresholds = np.asarray(THRESHOLDS, dtype=np.float32)
    return clf


def _frozen_head(tiny_model: str, kind: str):
    from tasks.checkpoint import FrozenHeadClassifier

    rng = np.random.default_rng(3)
    head = (
        {"w": rng.normal(size=(3, 32)), "b": rng.normal(size=3)}
        if kind == "linear"
        else {
            "w1": rng.normal(size=(16, 32)),
            "b1": rng.normal(size=16),
            "w2": rng.normal(size=(3, 16)),
            "b2": rng.normal(size=3),
        }
    )
    return FrozenHeadClassifier(
        head, tiny_model, MAX_LENGTH, labels=LABELS, names=NAMES, thresholds=THRESHOLDS
    )


def _setfit(tiny_model: str):
    from tasks.embeddings import load_encoder
    from tasks.setfit_family import SetFitClassifier

    rng = np.random.default_rng(4)
    body = load_encoder(tiny_model, MAX_LENGTH)
    return SetFitClassifier(
        body,
        rng.normal(size=(3, 32)),
        rng.normal(size=3),
        MAX_LENGTH,
        model_source=tiny_model,
        labels=LABELS,
        names=NAMES,
        thresholds=THRESHOLDS,
    )


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("export-run")
    rows = [
        trial("t-ft", "tiny-ft", "finetune", 0.7, attention="sdpa"),
        trial("t-head", "tiny-head", "frozen_head", 0.5),
        trial("t-mlp", "tiny-head", "frozen_head", 0.4, seed=1),
        trial("t-setfit", "tiny-setfit", "setfit", 0.3, arm="real_only", ratio=None),
        trial("t-tfidf", "tfidf-lr", "tfidf_linear", 0.2),
    ]
    run = build_run(root, rows)
    save_checkpoint(run, "t-ft", _finetune(tiny_model, root / "cache"))
    save_checkpoint(run, "t-head", _frozen_head(tiny_model, "linear"))
    save_checkpoint(run, "t-mlp", _frozen_head(tiny_model, "mlp"))
    save_checkpoint(run, "t-setfit", _setfit(tiny_model), corpus=False)
    save_checkpoint(run, "t-tfidf", tfidf_classifier())
    return run


def _cli_export(run: Path, out: Path, trial_id: str | None = None) -> Path:
    args = ["export", str(run), "--to", str(out)] + (["--trial", trial_id] if trial_id else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def _reference(run: Path, trial_id: str) -> np.ndarray:
    return load_classifier(run / "trials" / "checkpoints" / trial_id).predict_proba(TEXTS)


def test_finetune_export_pipeline_gives_the_served_probabilities(run, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoConfig, pipeline

    out = _cli_export(run, tmp_path / "ft")  # the best on validation: t-ft
    assert json.loads((out / "synthpat.json").read_text())["trial"]["trial_id"] == "t-ft"
    config = AutoConfig.from_pretrained(out)
    assert config.problem_type == "multi_label_classification"
    assert config.id2label == dict(enumerate(LABELS))
    assert config.label2id == {c: i for i, c in enumerate(LABELS)}
    assert config.thresholds == pytest.approx(dict(zip(LABELS, THRESHOLDS, strict=True)))
    clf = pipeline(
        "text-classification",
        model=str(out),
        top_k=None,
        function_to_apply="sigmoid",
        truncation=True,
        device="cpu",
    )
    assert clf.tokenizer.model_max_length == MAX_LENGTH
    scored = clf(TEXTS)
    got = np.array([[{s["label"]: s["score"] for s in row}[c] for c in LABELS] for row in scored])
    want = _reference(run, "t-ft")
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The long text really was cut: untruncated it scores differently.
    assert len(clf.tokenizer(LONG)["input_ids"]) > MAX_LENGTH
    whole = {s["label"]: s["score"] for s in clf([LONG], truncation=False)[0]}
    assert np.abs(np.array([whole[c] for c in LABELS]) - want[0]).max() > 1e-2

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert {r.metric_name for r in card.data.eval_results} >= {
        "test micro-F1",
        "validation micro-F1",
    }
    assert "truncation=True" in card.text

    # serve resolves the folder and serves the same probabilities
    from serve.select import select_checkpoint
    from serve.server import ClassifierServer, server_spec

    srv = ClassifierServer(server_spec(select_checkpoint(out)))
    assert srv.trial_id == "t-ft" and srv.family == "finetune"
    np.testing.assert_allclose(srv.predict_proba(TEXTS), want, atol=1e-5)


def test_corpora_load_with_datasets(run, tmp_path):
    import datasets

    out = _cli_export(run, tmp_path / "ft")
    corpora = out / "corpora"
    ds = datasets.load_dataset(str(corpora))
    assert list(ds) == ["train"] and ds["train"].num_rows == 6
    assert ds["train"][0]["id"] == f"{CORPUS}__000000"
    assert ds["train"][0]["prompt_hash"] == "abc123def456"
    by_name = datasets.load_dataset(str(corpora), CORPUS)
    assert by_name["train"]["text"] == ds["train"]["text"]
    removed = datasets.load_dataset(str(corpora), f"{CORPUS}__removed")
    assert list(removed) == ["removed"] and set(removed["removed"]["filter"]) == {"too_short"}


@pytest.mark.parametrize("trial_id", ["t-head", "t-mlp"])
def test_frozen_head_round_trip(run, tmp_path, trial_id):
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    from tasks.export import load_export

    out = _cli_export(run, tmp_path / trial_id, trial_id)
    want = _reference(run, trial_id)
    np.testing.assert_allclose(load_export(out).predict_proba(TEXTS), want, atol=1e-5)
    # The card's recipe: sentence-transformers + the safetensors head, no synthpat.
    encoder = SentenceTransformer(str(out))
    assert encoder.max_seq_length == MAX_LENGTH
    head = load_file(str(out / "head.safetensors"))
    x = encoder.encode(TEXTS, normalize_embeddings=True)
    z = (
        x @ head["w"].T + head["b"]
        if "w" in head
        else np.maximum(x @ head["w1"].T + head["b1"], 0) @ head["w2"].T + head["b2"]
    )
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), want, atol=1e-5)
    doc = json.loads((out / "synthpat.json").read_text())
    assert doc["family_config"]["head"] == ("linear" if trial_id == "t-head" else "mlp")


def test_setfit_round_trip(run, tmp_path):
    from tasks.export import load_export, setfit_model

    out = _cli_export(run, tmp_path / "setfit", "t-setfit")
    want = _reference(run, "t-setfit")
    np.testing.assert_allclose(load_export(out).predict_proba(TEXTS), want, atol=1e-5)
    model = setfit_model(out)
    np.testing.assert_allclose(np.asarray(model.predict_proba(TEXTS)), want, atol=1e-5)
    assert not list(out.rglob("*.pkl"))
    text = (out / "README.md").read_text()
    assert "trained on real patents only" in text


def test_tfidf_skops_round_trip(run, tmp_path):
    import skops.io as sio

    out = _cli_export(run, tmp_path / "tfidf", "t-tfidf")
    pipe = sio.load(out / "model.skops", trusted=sio.get_untrusted_types(file=out / "model.skops"))
    np.testing.assert_allclose(pipe.predict_proba(TEXTS), _reference(run, "t-tfidf"), atol=1e-6)
