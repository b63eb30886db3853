"""CUDA numerics: the guard (bf16/fp16, sdpa/flash_attention_2), bf16 fine-tuning, DeepSpeed.

Skipped without CUDA (tests/conftest.py); run on a GPU machine with `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from tiny_bert import LABELS, build_tiny_bert, make_texts

from tasks.finetune import train_finetune
from tasks.numerics import numerics_guard

pytestmark = pytest.mark.gpu

HAS_FLASH = importlib.util.find_spec("flash_attn") is not None
TEXTS = [
    "A wheelchair with a motorized lift and a folding ramp for vans.",
    "Hearing aid.",
    "A refreshable braille display with piezoelectric pins driven by a screen reader.",
    "A cochlear implant electrode array with a sound processor worn behind the ear.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def _data(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    texts, label_sets = make_texts(n, seed)
    y = np.array([[code in s for code in LABELS] for s in label_sets], dtype=np.float32)
    return texts, y


class Family:
    def __init__(self, model: str, deepspeed=None, epochs: int = 10):
        self.model, self.max_length, self.epochs = model, 24, epochs
        self.learning_rate, self.batch_size = 3e-3, 8
        self.deepspeed, self.trust_remote_code = deepspeed, False


def test_guard_on_cuda_measures_every_pair_it_can_run():
    rows = numerics_guard(
        "embedded:minilm-l6",
        ["fp32", "bf16", "fp16"],
        ["eager", "sdpa", "flash_attention_2"],
        TEXTS,
        max_length=64,
        max_abs_diff=0.05,
        device="cuda",
    )
    by_pair = {(r["precision"], r["attention"]): r for r in rows}
    assert len(by_pair) == 9
    for precision in ("fp32", "bf16", "fp16"):
        for attention in ("eager", "sdpa"):
            row = by_pair[precision, attention]
            assert row["skipped_reason"] is None, row
            assert np.isfinite(row["max_abs_diff"]), row
    assert by_pair["fp32", "sdpa"]["max_abs_diff"] < 1e-3
    assert by_pair["bf16", "sdpa"]["max_abs_diff"] < 0.5
    for precision in ("fp32", "bf16", "fp16"):
        flash = by_pair[precision, "flash_attention_2"]
        if HAS_FLASH and precision != "fp32":
            assert flash["skipped_reason"] is None and np.isfinite(flash["max_abs_diff"])
        elif not HAS_FLASH:
            assert "flash-attn package" in flash["skipped_reason"]


@pytest.mark.parametrize(
    ("precision", "attention"),
    [
        ("bf16", "sdpa"),
        ("fp16", "sdpa"),
        pytest.param(
            "bf16",
            "flash_attention_2",
            marks=pytest.mark.skipif(not HAS_FLASH, reason="flash-attn not installed"),
        ),
    ],
)
def test_finetune_on_cuda_learns(tiny, tmp_path, precision, attention):
    x, y = _data(192, 1)
    vx, vy = _data(32, 2)
    history: list[dict] = []
    clf = train_finetune(
        Family(tiny), x, y, vx, vy, LABELS, "bce", precision, attention, 0, tmp_path,
        report=lambda e, m: history.append(m), device="cuda",
    )  # fmt: skip
    assert next(clf.model.parameters()).device.type == "cuda"
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_micro_f1"] >= 0.8


def test_deepspeed_zero2_on_cuda_bf16(tiny, tmp_path):
    from config.trials import DeepSpeedConfig

    os.environ["DS_ACCELERATOR"] = "cuda"
    x, y = _data(192, 3)
    vx, vy = _data(32, 4)
    history: list[dict] = []
    clf = train_finetune(
        Family(tiny, deepspeed=DeepSpeedConfig(zero_stage=2)), x, y, vx, vy, LABELS, "bce",
        "bf16", "sdpa", 0, tmp_path, report=lambda e, m: history.append(m), device="cuda",
    )  # fmt: skip
    assert len(history) == 10 and history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert clf.predict_proba(vx).shape == (32, 3)


def test_fit_finetune_on_a_gpu_worker(tiny, tmp_path):
    import pandas as pd
    import ray

    from config.trials import FinetuneFamily
    from orchestrator.train import fit_finetune

    texts, label_sets = make_texts(192, 5)
    train = pd.DataFrame({"text": texts, "labels": label_sets})
    texts, label_sets = make_texts(32, 6)
    val = pd.DataFrame({"text": texts, "labels": label_sets})
    family = FinetuneFamily(model=tiny, max_length=24, epochs=10, learning_rate=3e-3, batch_size=8)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        clf = fit_finetune(
            family, train, val, LABELS, "bce", "bf16", "sdpa", 0, tmp_path / "cache",
            tmp_path / "runs", gpus_per_worker=1.0, device="cuda",
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert clf.meta["train_history"][-1]["val_micro_f1"] >= 0.8
    assert next(clf.model.parameters()).device.type == "cuda"
