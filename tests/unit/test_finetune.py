"""The finetune family: cached tokenization, the numerics refusal and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_bert import LABELS, build_tiny_bert, make_texts

from config.trials import FinetuneFamily
from tasks.checkpoint import load_classifier, save_classifier
from tasks.finetune import check_numerics, predict_cached, tokenize_cached, train_finetune


def family(model: str, **settings) -> FinetuneFamily:
    """A fine-tune family of a tiny model with a fast schedule (`settings` override it)."""
    defaults = {"max_length": 24, "epochs": 12, "learning_rate": 3e-3, "batch_size": 8}
    return FinetuneFamily(model=model, **{**defaults, **settings})


def make_data(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts whose labels are exactly the word groups they contain (one or two labels each)."""
    texts, label_sets = make_texts(n, seed)
    y = np.array([[c in s for c in LABELS] for s in label_sets], dtype=np.float32)
    return texts, y


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and spinning threads stall a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_tokenize_cached_writes_once_and_reuses(tiny_model, tmp_path):
    texts = ["wheelchair with a ramp", "hearing device", "braille reader with the pin"]
    first = tokenize_cached(tiny_model, texts, 16, tmp_path)
    keys = list((tmp_path / "tokens").iterdir())
    assert len(keys) == 1 and (keys[0] / "input_ids.npy").is_file()
    assert first["input_ids"].shape == (3, 7)  # [CLS] + 5 words + [SEP] is the longest
    assert first["attention_mask"].sum(1).tolist() == [6, 4, 7]
    again = tokenize_cached(tiny_model, texts, 16, tmp_path)
    assert isinstance(again["input_ids"], np.memmap)  # read back, not tokenized again
    np.testing.assert_array_equal(again["input_ids"], first["input_ids"])
    tokenize_cached(tiny_model, texts, 4, tmp_path)  # another max_length is another entry
    short = tokenize_cached(tiny_model, texts, 4, tmp_path)
    assert short["input_ids"].shape == (3, 4)
    assert len(list((tmp_path / "tokens").iterdir())) == 2


@pytest.mark.parametrize(
    ("precision", "attention"), [("fp16", "sdpa"), ("bf16", "flash_attention_2")]
)
def test_cuda_only_numerics_refused_on_cpu_naming_both_fields(precision, attention):
    with pytest.raises(ValueError) as err:
        check_numerics(precision, attention, "cpu")
    assert f"precision={precision}" in str(err.value)
    assert f"attention={attention}" in str(err.value)
    check_numerics("bf16", "sdpa", "cpu")  # runs on this CPU
    check_numerics("fp16", "flash_attention_2", "cuda:0")


def test_train_finetune_learns_separable_labels(tiny_model, tmp_path):
    train_x, train_y = make_data(192, seed=1)
    val_x, val_y = make_data(32, seed=2)
    epochs: list[tuple[int, dict]] = []
    clf = train_finetune(
        family(tiny_model),
        train_x,
        train_y,
        val_x,
        val_y,
        LABELS,
        loss="bce",
        precision="fp32",
        attention="eager",
        seed=0,
        cache_dir=tmp_path,
        report=lambda e, m: epochs.append((e, dict(m))),
    )
    assert [e for e, _ in epochs] == list(range(1, 13))
    assert all(m["samples"] == 192 for _, m in epochs)
    assert epochs[-1][1]["train_loss"] < 0.2 * epochs[0][1]["train_loss"]
    assert epochs[-1][1]["val_micro_f1"] >= 0.95
    assert clf.labels == LABELS and clf.meta["precision"] == "fp32"
    proba, emb = predict_cached(clf, tiny_model, val_x, tmp_path)
    assert proba.shape == (32, 3) and emb.shape == (32, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # The cached path and the classifier's own tokenization agree.
    np.testing.assert_allclose(proba, clf.predict_proba(val_x), atol=1e-5)
    np.testing.assert_allclose(emb, clf.embed(val_x), atol=1e-5)
    assert (clf.predict(["hearing cochlear device"])[0]) == ["H04R"]


def test_train_finetune_same_seed_same_model(tiny_model, tmp_path):
    x, y = make_data(24, seed=3)
    fam = family(tiny_model, epochs=2)
    runs = [
        train_finetune(fam, x, y, x[:8], y[:8], LABELS, "asymmetric", "fp32", "sdpa", 7, tmp_path)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].predict_proba(x), runs[1].predict_proba(x))
    other = train_finetune(
        fam, x, y, x[:8], y[:8], LABELS, "asymmetric", "fp32", "sdpa", 8, tmp_path
    )
    assert not np.allclose(other.predict_proba(x), runs[0].predict_proba(x))


def test_train_finetune_bf16_keeps_fp32_weights_and_saves(tiny_model, tmp_path):
    import torch

    x, y = make_data(24, seed=4)
    clf = train_finetune(
        family(tiny_model, epochs=2),
        x,
        y,
        x[:8],
        y[:8],
        LABELS,
        "focal",
        "bf16",
        "sdpa",
        0,
        tmp_path,
    )
    assert next(clf.model.parameters()).dtype == torch.float32
    assert clf.meta["precision"] == "bf16" and clf.meta["attention"] == "sdpa"
    clf.meta["train_history"] = [
        {"epoch": 1, "train_loss": 0.7, "val_micro_f1": 0.2},
        {"epoch": 2, "train_loss": 0.4, "val_micro_f1": 0.5},
    ]
    path = save_classifier(tmp_path / "ckpt", clf)
    loaded = load_classifier(path, precision="fp32")
    np.testing.assert_allclose(loaded.predict_proba(x), clf.predict_proba(x), atol=1e-5)
    # The training curve travels with the checkpoint: tracking logs it step by step.
    assert loaded.meta["train_history"] == clf.meta["train_history"]
    from orchestrator.tracking.records import read_curves

    assert read_curves(path) == {
        "train/train_loss": [(1, 0.7), (2, 0.4)],
        "train/val_micro_f1": [(1, 0.2), (2, 0.5)],
    }


def test_train_finetune_rejects_mismatched_labels(tiny_model, tmp_path):
    x, y = make_data(8, seed=5)
    with pytest.raises(ValueError, match="train_y has shape"):
        train_finetune(
            family(tiny_model), x, y[:, :2], x, y, LABELS, "bce", "fp32", "eager", 0, tmp_path
        )


def test_epoch_sums_reduce_on_the_groups_device(tmp_path):
    """The epoch's sums go through the default group on the device its backend reduces on (a
    gloo group here; an NCCL group on GPU workers takes CUDA tensors only, tests/gpu)."""
    import torch.distributed as dist

    from tasks.finetune import _mean_across, _sum_across, collective_device

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        assert collective_device() == "cpu"
        assert _sum_across(7, distributed=True) == 7.0
        assert _mean_across(9.0, 3, distributed=True) == 3.0
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("workers", [1, 2])
def test_finetune_family_trains_through_its_injected_trainer(tiny_model, tmp_path, workers):
    """A multi-worker family hands its `FinetuneJob` to the trainer it was built with (the stage
    passes Ray Train); a one-worker one trains in this process, on the trial's threads, without
    it. The trial's scores are the checkpoint's own."""
    import pandas as pd
    import torch

    from tasks.artifacts import load_predictions
    from tasks.finetune import FinetuneJob, train_in_process
    from tasks.trials.families import build_family
    from tasks.trials.grid import TrialCell
    from tasks.trials.inputs import EvalData, TrialInputs, TrialSettings
    from tasks.trials.recipe import CLASSIFIER, PREDICTIONS, read_row, run_trial

    def table(n: int, seed: int) -> pd.DataFrame:
        texts, sets = make_texts(n, seed)
        return pd.DataFrame(
            {"id": [f"{seed}-{i}" for i in range(n)], "text": texts, "labels": sets}
        )

    real, val, test = table(40, 1), table(16, 2), table(12, 3)
    inputs = TrialInputs(EvalData(LABELS, LABELS, val=val, test=test, cache_dir=str(tmp_path)),
                         real={"r40": real})  # fmt: skip
    calls = []

    def trainer(job: FinetuneJob, settings: TrialSettings):
        calls.append((job, settings))
        return train_in_process(job, settings)

    cell = TrialCell("r40", "real_only", "ft", "finetune", "bce", "fp32", "eager", 0, 40, 40)
    cell.assign_id()
    fam = build_family(family(tiny_model, epochs=2, num_workers=workers), trainer=trainer)
    threads = torch.get_num_threads()
    try:
        row = run_trial(cell, fam, inputs, TrialSettings(cpus=2, threads=1), tmp_path / "t")
        if workers == 1:
            assert calls == [] and torch.get_num_threads() == 1
        else:
            ((job, settings),) = calls
            assert settings.cpus == 2 and job.train_y.shape == (40, 3)
            assert job.val_y.shape == (16, 3) and set(job.score_sets) == {"val", "test"}
    finally:
        torch.set_num_threads(threads)
    assert row.status == "ok" and row.train_steps == 2 * 5  # 40 rows in batches of 8
    assert read_row(tmp_path / "t") == row
    clf = load_classifier(tmp_path / "t" / CLASSIFIER)
    pred = load_predictions(tmp_path / "t" / PREDICTIONS)
    np.testing.assert_allclose(pred["test_proba"], clf.predict_proba(test.text.tolist()), atol=2e-3)


def test_head_learning_rate_applies_to_the_parameters_the_checkpoint_lacks(tiny_model, tmp_path):
    """The new classifier (missing from the checkpoint) gets `head_learning_rate`; the body keeps
    `learning_rate`; without it there is one group. With the body frozen at a zero rate, only
    the head moves in training."""
    import torch

    from tasks.finetune import load_for_training, train_finetune
    from tasks.finetune_engine import param_groups

    model, fresh = load_for_training(tiny_model, LABELS, "eager", False)
    assert fresh == {"classifier.weight", "classifier.bias"}
    (one,) = param_groups(model, family(tiny_model), fresh)
    assert one["lr"] == 3e-3 and len(one["params"]) == len(list(model.parameters()))
    body, head = param_groups(model, family(tiny_model, head_learning_rate=0.1), fresh)
    assert (body["lr"], head["lr"]) == (3e-3, 0.1)
    assert {id(p) for p in head["params"]} == {
        id(model.classifier.weight),
        id(model.classifier.bias),
    }

    texts, y = make_data(24, 0)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    fam = family(tiny_model, epochs=2, learning_rate=1e-12, head_learning_rate=0.05)
    clf = train_finetune(fam, texts, y, texts[:4], y[:4], LABELS, "bce", "fp32",
                         "eager", 0, tmp_path)  # fmt: skip
    moved = {n for n, p in clf.model.named_parameters()
             if not torch.allclose(p.detach(), start[n], atol=1e-6)}  # fmt: skip
    assert moved == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_last_validation_is_the_val_scoring_of_the_returned_model(
    tiny_model, tmp_path, precision
):
    """The last validation pass hands its val probabilities and embeddings to the trial's
    scoring, which then skips val; they equal scoring the returned model afresh. In bf16 the
    validation runs under autocast, the scoring in fp32: nothing is handed over."""
    x, y = make_data(40, seed=5)
    vx, vy = x[:12], y[:12]
    kept: dict = {}
    clf = train_finetune(
        family(tiny_model, epochs=3, validate_every=2), x, y, vx, vy, LABELS, "bce", precision,
        "sdpa", 0, tmp_path, final_val=kept,
    )  # fmt: skip
    if precision != "fp32":
        assert kept == {}
        return
    p, e = kept["val"]
    fresh_p, fresh_e = predict_cached(clf, tiny_model, vx, tmp_path)
    np.testing.assert_allclose(p, fresh_p, atol=1e-6)
    np.testing.assert_allclose(e, fresh_e, atol=1e-6)
