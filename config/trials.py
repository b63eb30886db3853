"""The `trials` section: classifier families and the study grid run by Ray Tune."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from config.base import NOT_FINGERPRINTED, StrictModel
from config.fidelity import EncoderConfig

Precision = Literal["fp32", "bf16", "fp16"]
Attention = Literal["eager", "sdpa", "flash_attention_2"]
Loss = Literal["bce", "weighted_bce", "focal", "asymmetric", "distribution_balanced"]
Arm = Literal[
    "real_only",
    "duplicate_to_match",
    "real_plus_synthetic",
    "fixed_budget",
    "filtered",
    "ensemble",
]
#: The arms that train on synthetic rows (each compared with its duplicate_to_match control).
AUGMENTED_ARMS: tuple[Arm, ...] = ("real_plus_synthetic", "filtered", "fixed_budget", "ensemble")
Ordering = Literal["shuffled", "curriculum_real_first", "curriculum_fidelity"]

# fp16 matmuls and FlashAttention-2 kernels exist on CUDA only; bf16 also runs on CPU.
CUDA_ONLY_PRECISIONS: tuple[Precision, ...] = ("fp16",)
CUDA_ONLY_ATTENTIONS: tuple[Attention, ...] = ("flash_attention_2",)


def needs_cuda(precision: str | None, attention: str | None = None) -> str | None:
    """Why a precision/attention pair cannot run without CUDA, or None when it can.

    The reason names both fields given (a cell is a pair; either can be the culprit), e.g.
    "precision=fp16 with attention=sdpa needs CUDA"; pass None to ask about one field alone.
    """
    if precision not in CUDA_ONLY_PRECISIONS and attention not in CUDA_ONLY_ATTENTIONS:
        return None
    pair = (("precision", precision), ("attention", attention))
    return " with ".join(f"{k}={v}" for k, v in pair if v is not None) + " needs CUDA"


class DeepSpeedConfig(StrictModel):
    zero_stage: Literal[0, 1, 2, 3] = Field(1, description="DeepSpeed ZeRO stage.")


class FinetuneFamily(StrictModel):
    kind: Literal["finetune"] = "finetune"
    name: str = Field("finetune", description="Family name in reports.")
    model: str = Field(
        "embedded:minilm-l6", description="`embedded:minilm-l6`, a local folder, or a hub id."
    )
    max_length: int = Field(256, ge=16, description="Token limit per document.")
    epochs: int = Field(3, ge=1, description="Training epochs.")
    steps: int | None = Field(
        None,
        ge=1,
        description="Optimizer steps of every trial under trials.budget=steps; None: the steps "
        "`epochs` take on the regime's largest mix in the grid.",
    )
    learning_rate: float = Field(5e-5, gt=0, description="AdamW learning rate.")
    head_learning_rate: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the new classification head (the parameters the checkpoint "
        "does not have); None: learning_rate. Few steps on a small regime leave a head at the "
        "body's rate near its random start.",
    )
    batch_size: int = Field(16, ge=1, description="Per-worker batch size.")
    num_workers: int = Field(
        1,
        ge=1,
        description="Ray Train workers per trial (DDP); 1 without DeepSpeed trains in the trial's "
        "own process.",
    )
    validate_every: int = Field(
        1,
        ge=1,
        description="Epochs between val passes while training (the training curve; the last "
        "epoch always has one). Each pass scores every val document: on a CPU, with many short "
        "epochs, it can cost as much as the training.",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    deepspeed: DeepSpeedConfig | None = Field(None, description="Train with DeepSpeed ZeRO.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder.")
    regimes: list[str] | None = Field(
        None, description="Regimes this family runs on (fine-tuning is costly); default all."
    )


class FrozenHeadFamily(StrictModel):
    kind: Literal["frozen_head"] = "frozen_head"
    name: str = Field("frozen_head", description="Family name in reports.")
    head: Literal["linear", "mlp"] = Field("linear", description="Head on frozen embeddings.")
    epochs: int = Field(60, ge=1, description="Head training epochs.")
    steps: int | None = Field(
        None,
        ge=1,
        description="Optimizer steps of every trial under trials.budget=steps; None: the steps "
        "`epochs` take on the regime's largest mix in the grid.",
    )
    learning_rate: float = Field(3e-3, gt=0, description="Head learning rate.")
    batch_size: int = Field(32, ge=1, description="Embeddings per optimizer step.")
    hidden: int = Field(256, ge=1, description="Hidden units of the MLP head.")
    encoder: EncoderConfig | None = Field(
        None,
        description="Frozen sentence encoder; default the fidelity stage's, so both share one "
        "embedding cache.",
    )


class TfidfLinearFamily(StrictModel):
    kind: Literal["tfidf_linear"] = "tfidf_linear"
    name: str = Field("tfidf_linear", description="Family name in reports.")
    ngram_max: int = Field(2, ge=1, le=3, description="Largest word n-gram.")
    C: float = Field(10.0, gt=0, description="Inverse regularization of the logistic model.")
    max_features: int | None = Field(
        50000, ge=1, description="Vocabulary size: the most frequent n-grams; None: all."
    )


class SetFitFamily(StrictModel):
    """SetFit (tasks.setfit_family): the body fine-tuned on contrastive pairs of training rows,
    then a one-vs-rest logistic head. It builds its own pairs, so `trials.orderings` do not apply
    to it; its head is a logistic regression, so its only grid loss is `bce`."""

    kind: Literal["setfit"] = "setfit"
    name: str = Field("setfit", description="Family name in reports.")
    model: str = Field(
        "embedded:minilm-l6",
        description="Sentence-transformers body: `embedded:minilm-l6`, a local folder or a hub id.",
    )
    max_length: int = Field(64, ge=16, description="Token limit per document.")
    num_iterations: int = Field(
        2,
        ge=1,
        description="Contrastive pairs per training row: each row gives this many positive and "
        "as many negative pairs, so a body epoch is 2 x num_iterations x rows / batch_size steps. "
        "48 rows at the defaults with MiniLM at 64 tokens: 12 steps, 26-32 s on one core of a "
        "2-core AMD EPYC (AVX-512), ~2.5 s per step; scoring 600 texts takes 11-13 s more.",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="Body steps of every trial instead of num_iterations x body_epochs (a fixed "
        "budget whatever the mix size; trials.budget does not change it).",
    )
    body_epochs: int = Field(1, ge=1, description="Epochs of the body over its pairs.")
    batch_size: int = Field(16, ge=1, description="Pairs per body step.")
    body_learning_rate: float = Field(
        2e-5,
        gt=0,
        description="Body learning rate (AdamW; SetFit's default). With a dozen steps a higher "
        "one helps: 48 rows, MiniLM, 12 steps: val micro-F1 0.38 at 2e-5, 0.45 at 3e-4 (0.37 "
        "with the body left as it is).",
    )
    C: float = Field(1.0, gt=0, description="Inverse regularization of each label's head.")
    head_max_iter: int = Field(1000, ge=1, description="Solver iterations of each label's head.")
    regimes: list[str] | None = Field(None, description="Regimes this family runs on; default all.")
    arms: list[Arm] | None = Field(
        None,
        description="Arms (of trials.arms) this family runs; default all. [real_only] makes it a "
        "few-shot baseline on real data only: no cells of other arms, and so no volume controls.",
    )


Family = Annotated[
    FinetuneFamily | FrozenHeadFamily | TfidfLinearFamily | SetFitFamily,
    Field(discriminator="kind"),
]


class FixedBudgetConfig(StrictModel):
    budget: int = Field(ge=1, description="Total training rows of every fixed-budget arm.")
    real_fractions: list[float] = Field(description="Real share of the budget, each in [0, 1].")

    @model_validator(mode="after")
    def _fractions(self) -> FixedBudgetConfig:
        bad = [f for f in self.real_fractions if not 0 <= f <= 1]
        if bad:
            raise ValueError(f"real_fractions: each must be in [0, 1], got {bad}")
        return self


class NumericsGuardConfig(StrictModel):
    enabled: bool = Field(True, description="Compare logits against fp32 eager before the grid.")
    max_abs_diff: float = Field(
        0.05, gt=0, description="Flag a precision/attention whose logits differ more than this."
    )


class TrialResources(StrictModel):
    cpus: float = Field(1, gt=0, description="CPUs per trial.")
    gpus: float = Field(0, ge=0, description="GPUs per trial (fractions allowed).")
    custom: dict[str, float] = Field(
        {}, description="Custom Ray resources per trial, e.g. {accelerator_type_l4: 0.5}."
    )
    max_concurrent: int | None = Field(
        None,
        ge=1,
        json_schema_extra=NOT_FINGERPRINTED,
        description="Trials running at once. None: as many as the cluster holds when the stage "
        "starts, a fine-tune trial counted with its Ray Train workers (its Tune driver alone holds "
        "almost nothing, so without a bound every fine-tune would start and wait). On an "
        "autoscaling cluster set it to what the workers hold at max_workers.",
    )
    reuse_actors: bool = Field(
        True,
        json_schema_extra=NOT_FINGERPRINTED,
        description="Tune keeps a finished trial's worker process for the next trial asking for "
        "the same resources, saving a process start and the torch/transformers imports per trial "
        "(frozen-head grid on 2 CPUs: 72% -> 89% of core time spent in trials, BENCHMARKS.md).",
    )


class TrialsConfig(StrictModel):
    enabled: bool = Field(
        True, json_schema_extra=NOT_FINGERPRINTED, description="Run the trials stage."
    )
    families: list[Family] = Field(description="Classifier families in the grid.")
    arms: list[Arm] = Field(["real_only", "real_plus_synthetic"], description="Training mixes.")
    ratios: list[float] | None = Field(
        None, description="Synthetic:real ratios of augmented arms; default generation.ratios."
    )
    fixed_budget: FixedBudgetConfig | None = Field(None, description="Fixed-budget mixing arm.")
    filter_min_overlap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="`filtered` arm: keep a synthetic row when the Jaccard overlap of its labels "
        "with a real-only classifier's prediction reaches this.",
    )
    orderings: list[Ordering] = Field(["shuffled"], description="Row orderings of mixed arms.")
    losses: list[Loss] = Field(["bce"], description="Training losses.")
    precisions: list[Precision] = Field(["fp32"], description="Training precisions.")
    attentions: list[Attention] = Field(["sdpa"], description="Attention implementations.")
    seeds: list[int] = Field([0], description="Seeds; each grid cell runs once per seed.")
    regimes: list[str] | None = Field(None, description="Regimes in the grid; default all.")
    resources: TrialResources = TrialResources()
    max_failures: int = Field(
        1,
        ge=0,
        json_schema_extra=NOT_FINGERPRINTED,
        description="Ray Tune retries of a failed trial.",
    )
    numerics_guard: NumericsGuardConfig = NumericsGuardConfig()
    budget: Literal["epochs", "steps"] = Field(
        "epochs",
        description="Training budget of the torch families: `epochs` (every trial trains its "
        "family's epochs, so a bigger mix gets more optimizer steps) or `steps` (every trial of "
        "a family takes the same number of optimizer steps whatever its mix size; see the "
        "families' `steps`). TF-IDF is solved to convergence under both.",
    )
    thresholds: Literal["global", "per_label", "per_label_where_supported"] = Field(
        "per_label_where_supported",
        description="Decision thresholds chosen on val: one global threshold, one per label, or "
        "one per label where the label has at least `threshold_min_positives` val positives and "
        "the global one elsewhere (docs/thresholds.md).",
    )
    threshold_min_positives: int = Field(
        5,
        ge=1,
        description="thresholds=per_label_where_supported: val positives a label needs for its "
        "own threshold.",
    )
    select_metric: str = Field(
        "val_micro_f1",
        pattern=r"^val_",
        json_schema_extra=NOT_FINGERPRINTED,
        description="Validation metric that picks the best trial (val_*: nothing is chosen on "
        "test).",
    )
    retrieval_k: int = Field(10, ge=1, description="k of the nDCG@k retrieval proxy.")
    retrieval_corpus: Literal["test", "train_pool"] = Field(
        "test", description="Documents ranked by the retrieval proxy."
    )
    allow_cuda_only: bool = Field(
        False,
        description="Keep fp16/flash_attention_2 cells when no GPU is requested; they are "
        "skipped with the reason recorded on machines without CUDA.",
    )

    @model_validator(mode="after")
    def _numerics(self) -> TrialsConfig:
        if "fixed_budget" in self.arms and self.fixed_budget is None:
            raise ValueError("arms contains fixed_budget but trials.fixed_budget is not set")
        if self.ratios is not None and any(r <= 0 for r in self.ratios):
            raise ValueError(f"ratios: every ratio must be positive, got {self.ratios}")
        gpu = self.resources.gpus > 0 or self.allow_cuda_only
        cuda_only = [p for p in self.precisions if needs_cuda(p)]
        cuda_only += [a for a in self.attentions if needs_cuda(None, a)]
        if cuda_only and not gpu:
            # Name both axes: a cell is a (precision, attention) pair, either can be the culprit.
            raise ValueError(
                f"precisions={list(self.precisions)} with attentions={list(self.attentions)}: "
                f"{' and '.join(cuda_only)} need a GPU but trials.resources.gpus=0 (set "
                "trials.resources.gpus, or trials.allow_cuda_only=true to skip those cells "
                "with the reason recorded on machines without CUDA)"
            )
        stepped = [f.name for f in self.families if getattr(f, "steps", None) is not None]
        if stepped and self.budget != "steps":
            raise ValueError(
                f"families {stepped} set steps but trials.budget={self.budget}: set "
                "trials.budget=steps, or drop the families' steps"
            )
        gpus = self.resources.gpus
        multi = [f.name for f in self.families if f.kind == "finetune" and f.num_workers > 1]
        if multi and 0 < gpus < 1:
            # Fractions would let Ray put two ranks on one GPU, which NCCL refuses.
            raise ValueError(
                f"trials.resources.gpus={gpus} with num_workers > 1 in families {multi}: each "
                "Ray Train worker of a multi-worker fine-tune needs a whole GPU (gpus >= 1)"
            )
        return self

    @model_validator(mode="after")
    def _family_arms(self) -> TrialsConfig:
        for fam in self.families:
            arms = getattr(fam, "arms", None)
            if arms is None:
                continue
            missing = [a for a in arms if a not in self.arms]
            if missing:
                raise ValueError(
                    f"families[{fam.name}].arms={list(arms)}: {missing} not in "
                    f"trials.arms={list(self.arms)}"
                )
        return self
