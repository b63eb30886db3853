"""The numerics guard: logits under each precision x attention against fp32 eager, before a grid.

A FlashAttention-2 + bf16 artefact once passed for a model collapse; comparing logits on one fixed
batch costs seconds and catches such a pair before a whole grid trains on it. All models share
the reference's weights (the classification head included), so a difference is numerics only.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from config.trials import needs_cuda
from tasks.models import resolve_model

REFERENCE = ("fp32", "eager")
#: FlashAttention-2 kernels take fp16/bf16 tensors only: an fp32 pair of it cannot run.
HALF_ONLY_ATTENTION = "attention=flash_attention_2 runs in fp16 or bf16, not precision=fp32"
GUARD_LABELS = 8


def skip_reason(precision: str, attention: str, device: str) -> str | None:
    """Why this machine cannot run the pair, or None when it can."""
    import torch

    cuda = device.startswith("cuda")
    if (precision, attention) == ("fp32", "flash_attention_2"):
        return HALF_ONLY_ATTENTION
    if not cuda and (why := needs_cuda(precision, attention)):
        return f"{why} (device={device})"
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        return "attention=flash_attention_2 needs the flash-attn package, not installed"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        return f"precision=bf16 is not supported by this GPU ({torch.cuda.get_device_name()})"
    return None


def _load(folder: str, attention: str, dtype: Any, trust_remote_code: bool) -> Any:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh head's "newly initialized" notice is expected
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            folder,
            num_labels=GUARD_LABELS,
            problem_type="multi_label_classification",
            attn_implementation=attention,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def _logits(model: Any, batch: dict[str, Any]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(**batch).logits.float().cpu().numpy()


def numerics_guard(
    model: str,
    precisions: Sequence[str],
    attentions: Sequence[str],
    texts: Sequence[str],
    max_length: int,
    max_abs_diff: float,
    device: str = "cpu",
    *,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per requested (precision, attention): its logits' largest difference from fp32 eager.

    Rows: `precision, attention, max_abs_diff, mean_abs_diff, flagged, skipped_reason`. A pair
    this machine cannot run is skipped with the reason; a pair whose logits differ by more than
    `max_abs_diff` (or are not finite) is flagged. The reference pair reports 0.
    """
    import torch
    from transformers import AutoTokenizer

    if not texts:
        raise ValueError("numerics_guard needs at least one text for its fixed batch")
    folder = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    # Padding on purpose: masked positions are where attention implementations differ most.
    batch = tok(
        list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    ).to(device)
    torch.manual_seed(seed)
    ref_model = _load(folder, "eager", torch.float32, trust_remote_code)
    _scale_head(ref_model, seed)
    ref_model.to(device).eval()
    state = ref_model.state_dict()
    reference = _logits(ref_model, batch)
    del ref_model
    rows = []
    for precision in dict.fromkeys(precisions):
        for attention in dict.fromkeys(attentions):
            rows.append(
                _compare(
                    folder, precision, attention, state, batch, reference, max_abs_diff, device,
                    trust_remote_code,
                )
            )  # fmt: skip
    return rows


def _compare(
    folder: str,
    precision: str,
    attention: str,
    state: dict[str, Any],
    batch: dict[str, Any],
    reference: np.ndarray,
    max_abs_diff: float,
    device: str,
    trust_remote_code: bool,
) -> dict[str, Any]:
    import torch

    row: dict[str, Any] = {"precision": precision, "attention": attention}
    reason = skip_reason(precision, attention, device)
    if reason is None and (precision, attention) == REFERENCE:
        return {**row, "max_abs_diff": 0.0, "mean_abs_diff": 0.0, "flagged": False,
                "skipped_reason": None}  # fmt: skip
    if reason is None:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        try:
            candidate = _load(folder, attention, dtype, trust_remote_code)
        except (ValueError, ImportError) as err:  # e.g. a model without an sdpa implementation
            reason = f"attention={attention} unavailable for this model: {err}"
    if reason is not None:
        return {**row, "max_abs_diff": None, "mean_abs_diff": None, "flagged": False,
                "skipped_reason": reason}  # fmt: skip
    candidate.load_state_dict(state)  # same weights as the reference, cast to `dtype`
    candidate.to(device).eval()
    try:
        logits = _logits(candidate, batch)
    except RuntimeError as err:  # a kernel refusing this pair: report it, keep the others
        return {**row, "max_abs_diff": None, "mean_abs_diff": None, "flagged": False,
                "skipped_reason": f"forward failed: {err}"}  # fmt: skip
    diff = np.abs(logits - reference)
    worst = float(diff.max()) if np.isfinite(diff).all() else math.inf
    return {
        **row,
        "max_abs_diff": worst,
        "mean_abs_diff": float(diff.mean()) if math.isfinite(worst) else math.inf,
        "flagged": not worst <= max_abs_diff,
        "skipped_reason": None,
    }


def _scale_head(model: Any, seed: int) -> None:
    """Give the fresh head unit-scale weights, so logits have the scale of a trained head.

    The default 0.02-std init makes logits tiny and every difference look harmless.
    """
    import torch

    head = model.get_output_embeddings() or getattr(model, "classifier", None)
    linear = head if isinstance(head, torch.nn.Linear) else None
    if linear is None and head is not None:
        linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        linear = linears[-1] if linears else None
    if linear is None:
        return
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(linear.weight.shape, generator=gen) / math.sqrt(linear.in_features)
        linear.weight.copy_(w)
        if linear.bias is not None:
            linear.bias.zero_()


def flagged_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(precision, attention) pairs the guard flagged."""
    return [(r["precision"], r["attention"]) for r in rows if r["flagged"]]
