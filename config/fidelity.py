"""The `fidelity` section: encoder, MMD and the leakage audits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import NOT_FINGERPRINTED, StrictModel


class EncoderConfig(StrictModel):
    model: str = Field(
        "embedded:minilm-l6",
        description="Sentence encoder: `embedded:minilm-l6`, a local folder, or a hub id.",
    )
    batch_size: int = Field(
        64,
        ge=1,
        description="Texts per Ray Data batch sent to an actor.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    forward_batch_size: int | None = Field(
        None,
        ge=1,
        description="Texts per forward pass inside an actor, sorted by length; None: 8 on CPU "
        "(small passes are faster there), 64 on GPU.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    max_length: int = Field(256, ge=16, description="Encoder token limit per text.")
    concurrency: int = Field(
        1, ge=1, description="Ray Data encoder actors.", json_schema_extra=NOT_FINGERPRINTED
    )
    num_cpus_per_actor: float = Field(
        1, gt=0, description="CPUs per encoder actor.", json_schema_extra=NOT_FINGERPRINTED
    )
    num_gpus_per_actor: float = Field(
        0, ge=0, description="GPUs per encoder actor.", json_schema_extra=NOT_FINGERPRINTED
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        "torch",
        description="What runs the encoder: `torch` (sentence-transformers; the default: on a "
        "2-core AVX-512 Xeon it embeds 1.4-1.8x faster than ONNX Runtime, BENCHMARKS.md "
        "encoder), `onnx` (ONNX Runtime on the CPU; the model is exported once per content "
        "hash under the model cache; fp32 vectors match torch's within 1e-4), or `auto`: ONNX "
        "on the CPU, torch with num_gpus_per_actor > 0. Run bench/encoder.py on your CPU.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="`int8`: the ONNX model with dynamically quantized int8 weights (on real "
        "patents with MiniLM a mean cosine of ~0.994 to the fp32 vectors). Needs the ONNX "
        "backend: backend onnx, or auto on the CPU.",
    )

    @model_validator(mode="after")
    def _backend_fits_device(self) -> EncoderConfig:
        gpu = self.num_gpus_per_actor > 0
        if self.backend == "onnx" and gpu:
            raise ValueError(
                f"backend=onnx runs on the CPU; num_gpus_per_actor={self.num_gpus_per_actor} "
                "would hold GPUs it never uses (backend=auto runs torch on them)"
            )
        if self.quantize == "int8" and self.backend == "torch":
            raise ValueError(
                "quantize=int8 needs the ONNX backend; backend=torch runs sentence-transformers "
                "(use backend=onnx or auto, or quantize=none)"
            )
        if self.quantize == "int8" and gpu:
            raise ValueError(
                "quantize=int8 runs on ONNX Runtime on the CPU; num_gpus_per_actor="
                f"{self.num_gpus_per_actor} runs torch on a GPU (set num_gpus_per_actor=0 or "
                "quantize=none)"
            )
        return self


class MmdConfig(StrictModel):
    permutations: int = Field(1000, ge=0, description="Permutations of the MMD test.")
    bandwidth_multipliers: list[float] = Field(
        [1.0],
        min_length=1,
        description="Multiples of the median-heuristic bandwidth summed in the kernel.",
    )
    block_size: int = Field(2048, ge=64, description="Rows per kernel block (bounds memory).")
    linear_time_above: int = Field(
        50000, ge=2, description="Use the linear-time estimator when a side has more rows."
    )
    per_label_min_rows: int = Field(
        10, ge=2, description="Per-label MMD only where both sides have this many rows."
    )
    per_label_permutations: int = Field(
        200, ge=0, description="Permutations of each per-label MMD test."
    )

    @model_validator(mode="after")
    def _positive(self) -> MmdConfig:
        bad = [b for b in self.bandwidth_multipliers if b <= 0]
        if bad:
            raise ValueError(f"bandwidth_multipliers: each must be positive, got {bad}")
        return self


class FidelityConfig(StrictModel):
    enabled: bool = Field(
        True, description="Run the fidelity stage.", json_schema_extra=NOT_FINGERPRINTED
    )
    encoder: EncoderConfig = EncoderConfig()
    mmd: MmdConfig = MmdConfig()
    knn_k: int = Field(5, ge=1, description="k of the precision/recall/density/coverage measures.")
    copy_ngram: int = Field(8, ge=3, description="n of the n-gram copy rate.")
    keywords_per_label: int = Field(10, ge=1, description="Top real keywords audited per label.")
    # Not generation.filters.near_duplicate_threshold: that one removes rows before any corpus
    # is written, so at its value or above a filtered corpus scores (almost) 0 by construction.
    near_duplicate_rate_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Word-3-gram Jaccard at which the diversity measure near_duplicate_rate "
        "counts two rows of one corpus (synthetic or real) as near copies. A measure, not a "
        "filter; set it below generation.filters.near_duplicate_threshold to see how close the "
        "kept rows still are to each other.",
    )
    near_copy_similarity: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Cosine similarity to a real patent at which a synthetic row counts as a copy.",
    )
    seed: int = Field(0, description="Seed of permutations and subsampling.")
