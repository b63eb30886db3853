"""The numerics guard: skips what the machine cannot run, measures and flags the rest."""

from __future__ import annotations

import math

import pytest
from test_finetune import one_thread, tiny_model  # noqa: F401  (fixtures)

from tasks.numerics import flagged_pairs, numerics_guard, skip_reason

TEXTS = [
    "wheelchair with a ramp and a seat",
    "hearing device",
    "braille reader with the tactile pin system and a method for the reader",
]


def test_skip_reasons_on_cpu_name_the_field():
    assert skip_reason("fp16", "sdpa", "cpu") == (
        "precision=fp16 with attention=sdpa needs CUDA (device=cpu)"
    )
    assert "attention=flash_attention_2 needs CUDA" in skip_reason(
        "bf16", "flash_attention_2", "cpu"
    )
    assert skip_reason("bf16", "sdpa", "cpu") is None
    assert skip_reason("fp32", "eager", "cpu") is None
    # FlashAttention-2 kernels take half precision only, on any device.
    for device in ("cpu", "cuda"):
        assert skip_reason("fp32", "flash_attention_2", device) == (
            "attention=flash_attention_2 runs in fp16 or bf16, not precision=fp32"
        )


def test_a_pair_whose_forward_fails_is_reported_not_fatal(tiny_model, monkeypatch):  # noqa: F811
    import tasks.numerics as numerics

    real = numerics._logits
    calls = []

    def failing_second(model, batch):
        calls.append(1)
        if len(calls) == 2:  # the reference passes, the candidate's kernel refuses
            raise RuntimeError("kernel refused the dtype")
        return real(model, batch)

    monkeypatch.setattr(numerics, "_logits", failing_second)
    rows = numerics_guard(tiny_model, ["fp32", "bf16"], ["sdpa"], TEXTS, 16, 0.05)
    by_pair = {(r["precision"], r["attention"]): r for r in rows}
    assert by_pair["fp32", "sdpa"]["skipped_reason"] == "forward failed: kernel refused the dtype"
    assert by_pair["fp32", "sdpa"]["flagged"] is False
    assert by_pair["bf16", "sdpa"]["max_abs_diff"] is not None  # the others still measured


def test_guard_measures_and_flags_against_fp32_eager(tiny_model):  # noqa: F811
    rows = numerics_guard(
        tiny_model,
        ["fp32", "bf16", "fp16"],
        ["eager", "sdpa"],
        TEXTS,
        max_length=16,
        max_abs_diff=1e-4,
    )
    by_pair = {(r["precision"], r["attention"]): r for r in rows}
    assert list(by_pair) == [
        ("fp32", "eager"),
        ("fp32", "sdpa"),
        ("bf16", "eager"),
        ("bf16", "sdpa"),
        ("fp16", "eager"),
        ("fp16", "sdpa"),
    ]
    assert by_pair["fp32", "eager"]["max_abs_diff"] == 0.0
    assert by_pair["fp32", "sdpa"]["max_abs_diff"] < 1e-5  # same math, another kernel
    for attention in ("eager", "sdpa"):
        bf16 = by_pair["bf16", attention]
        assert 1e-4 < bf16["max_abs_diff"] < 0.5 and bf16["flagged"] is True
        assert bf16["mean_abs_diff"] <= bf16["max_abs_diff"]
        fp16 = by_pair["fp16", attention]
        assert fp16["skipped_reason"] == (
            f"precision=fp16 with attention={attention} needs CUDA (device=cpu)"
        )
        assert fp16["max_abs_diff"] is None and fp16["flagged"] is False
    assert flagged_pairs(rows) == [("bf16", "eager"), ("bf16", "sdpa")]
    # A looser tolerance lets bf16 through.
    loose = numerics_guard(tiny_model, ["bf16"], ["sdpa"], TEXTS, 16, max_abs_diff=0.5)
    assert loose[0]["flagged"] is False and math.isfinite(loose[0]["max_abs_diff"])


def test_guard_needs_texts(tiny_model):  # noqa: F811
    with pytest.raises(ValueError, match="at least one text"):
        numerics_guard(tiny_model, ["fp32"], ["eager"], [], 16, 0.05)


@pytest.mark.parametrize(
    ("precisions", "attentions", "culprit"),
    [(["fp32", "fp16"], ["sdpa"], "fp16"), (["bf16"], ["eager", "flash_attention_2"], "flash")],
)
def test_config_refuses_cuda_only_numerics_naming_both_fields(precisions, attentions, culprit):
    from pydantic import ValidationError

    from config.trials import TrialsConfig

    fams = [{"kind": "tfidf_linear"}]
    with pytest.raises(ValidationError) as err:
        TrialsConfig(families=fams, precisions=precisions, attentions=attentions)
    msg = str(err.value)
    assert f"precisions={precisions}" in msg and f"attentions={attentions}" in msg
    assert culprit in msg and "trials.resources.gpus=0" in msg
    # Allowed with a GPU, or when CUDA-only cells may be skipped.
    TrialsConfig(families=fams, precisions=precisions, attentions=attentions, allow_cuda_only=True)
    gpu = {"cpus": 1, "gpus": 1}
    TrialsConfig(families=fams, precisions=precisions, attentions=attentions, resources=gpu)


def test_multi_worker_fine_tunes_need_whole_gpus():
    from pydantic import ValidationError

    from config.trials import TrialsConfig

    fams = [{"kind": "finetune", "name": "big", "model": "m", "num_workers": 2}]
    with pytest.raises(
        ValidationError, match=r"gpus=0.5 with num_workers > 1 in families \['big'\]"
    ):
        TrialsConfig(families=fams, resources={"gpus": 0.5})
    TrialsConfig(families=fams, resources={"gpus": 1})  # a GPU per worker
    TrialsConfig(families=fams)  # CPU workers (gloo)
    one = [{**fams[0], "num_workers": 1}]
    TrialsConfig(families=one, resources={"gpus": 0.5})  # one rank can share a GPU
