"""The `finetune` family: tokenization cached per corpus and one fine-tuning run.

`train_finetune` is the whole training loop. It runs as a plain single process, and unchanged as
each worker of a Ray Train run (`orchestrator/train.py`): when a `torch.distributed` process group
exists every rank computes the same epoch order (`tasks.mixes.epoch_order`) and takes its shard,
as `DistributedSampler` would, and the model is wrapped in DDP, or handed to DeepSpeed ZeRO when
the family asks for it. No Ray here.

A `FinetuneJob` is one fine-tune as a value (rows, labels, cell settings, the text sets to score
once trained); `train_in_process(job)` runs it here, `orchestrator.train.train_on_ray(job, ...)`
on Ray Train workers; both return a `FinetuneFit`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from config.trials import needs_cuda
from tasks.checkpoint import FinetuneClassifier, usable_attention
from tasks.files import replace_dir
from tasks.finetune_engine import TrainEngine, autocast
from tasks.models import resolve_model

if TYPE_CHECKING:
    from config.trials import FinetuneFamily

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
# Files that define what a tokenizer produces; their bytes key the tokenization cache.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
)
_TOKENIZE_CHUNK = 2048

Report = Callable[[int, dict[str, float]], None]
OnStep = Callable[[int, np.ndarray], None]


def check_numerics(precision: str, attention: str, device: str) -> None:
    """Refuse a precision/attention pair this device cannot run, naming both fields."""
    if device.startswith("cuda"):
        return
    if why := needs_cuda(precision, attention):
        raise ValueError(
            f"{why}, and this run is on {device}: use precision fp32 or bf16 with attention "
            "eager or sdpa"
        )


def _sha256(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def tokenizer_fingerprint(folder: str) -> str:
    """A hash of the tokenizer files in a model folder (or the hub id when it is not local)."""
    path = Path(folder)
    if not path.is_dir():
        return _sha256([folder.encode()])
    parts = [
        name.encode() + (path / name).read_bytes()
        for name in _TOKENIZER_FILES
        if (path / name).is_file()
    ]
    return _sha256(parts or [str(path.resolve()).encode()])


def tokenize_cached(
    model: str, texts: Sequence[str], max_length: int, cache_dir: Path
) -> dict[str, np.ndarray]:
    """Token arrays for `texts`, computed once per (tokenizer, max_length, texts) and reused.

    Stored as `.npy` under `cache_dir/tokens/<key>/` (int32, padded to the longest text, at most
    `max_length`); later calls, from any trial or worker, memory-map them.
    """
    folder = resolve_model(model)
    texts = [str(t) for t in texts]
    key = _sha256(
        [
            tokenizer_fingerprint(folder).encode(),
            str(max_length).encode(),
            _sha256([t.encode() for t in texts]).encode(),
        ]
    )[:32]
    target = Path(cache_dir) / "tokens" / key
    if (target / "done").is_file():
        return {
            k: np.load(target / f"{k}.npy", mmap_mode="r")
            for k in TOKEN_KEYS
            if (target / f"{k}.npy").is_file()
        }
    arrays = _tokenize(folder, texts, max_length)
    tmp = target.with_name(f".{key}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    for k, v in arrays.items():
        np.save(tmp / f"{k}.npy", v)
    (tmp / "done").write_text(f"{len(texts)} texts, max_length={max_length}\n")
    # Another trial may have written the same key first; both contents are identical.
    replace_dir(tmp, target, keep_existing=True)
    return arrays


def _tokenize(folder: str, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    chunks: list[dict[str, list[list[int]]]] = []
    starts = range(0, len(texts), _TOKENIZE_CHUNK)
    for start in tqdm(starts, desc="tokenize", unit="chunk", disable=len(starts) < 4):
        enc = tok(texts[start : start + _TOKENIZE_CHUNK], truncation=True, max_length=max_length)
        chunks.append({k: enc[k] for k in TOKEN_KEYS if k in enc})
    keys = [k for k in TOKEN_KEYS if chunks and k in chunks[0]] or ["input_ids", "attention_mask"]
    rows = {k: [r for c in chunks for r in c[k]] for k in keys}
    width = max((len(r) for r in rows["input_ids"]), default=1)
    pad = {"input_ids": tok.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
    out = {}
    for k in keys:
        arr = np.full((len(texts), width), pad[k], dtype=np.int32)
        for i, r in enumerate(rows[k]):
            arr[i, : len(r)] = r
        out[k] = arr
    return out


def _batch(tokens: dict[str, np.ndarray], idx: Any, device: Any) -> dict[str, Any]:
    """Rows `idx` as tensors, trimmed to the longest real sequence among them (dynamic padding)."""
    import torch

    idx = np.asarray(idx)
    width = max(int(np.asarray(tokens["attention_mask"][idx]).sum(1).max(initial=1)), 1)
    return {
        k: torch.from_numpy(np.asarray(v[idx, :width], dtype=np.int64)).to(device)
        for k, v in tokens.items()
    }


def forward_tokens(
    model: Any, tokens: dict[str, np.ndarray], batch_size: int = 64, want_embed: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (and mean-pooled unit embeddings) for pre-tokenized rows."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    n = len(tokens["input_ids"])
    probs, embs = [], []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            enc = _batch(tokens, np.arange(start, min(start + batch_size, n)), device)
            out = model(**enc, output_hidden_states=want_embed)
            probs.append(torch.sigmoid(out.logits.float()).cpu().numpy())
            if want_embed:
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (out.hidden_states[-1].float() * mask).sum(1) / mask.sum(1).clamp(min=1)
                embs.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    n_labels = model.config.num_labels
    p = np.concatenate(probs) if probs else np.zeros((0, n_labels), np.float32)
    e = (np.concatenate(embs) if embs else None) if want_embed else None
    return p.astype(np.float32), e


def predict_cached(
    classifier: FinetuneClassifier, model: str, texts: Sequence[str], cache_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and embeddings for `texts` through the tokenization cache (trial scoring)."""
    tokens = tokenize_cached(model, texts, classifier.max_length, cache_dir)
    p, e = forward_tokens(classifier.model, tokens, classifier.batch_size, want_embed=True)
    assert e is not None or len(texts) == 0
    return p, (e if e is not None else np.zeros((0, classifier.model.config.hidden_size)))


def _dist_info() -> tuple[bool, int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_for_training(
    folder: str, labels: list[str], attention: str, trust_remote_code: bool
) -> tuple[Any, set[str]]:
    """An `AutoModelForSequenceClassification` in fp32 with a fresh multi-label head, and the
    names of its parameters the checkpoint did not have (that head)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" notice is expected
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            folder,
            num_labels=len(labels),
            problem_type="multi_label_classification",
            id2label=dict(enumerate(labels)),
            label2id={c: i for i, c in enumerate(labels)},
            attn_implementation=usable_attention(attention),
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh = set(info.get("missing_keys", ())) | {k for k, *_ in info.get("mismatched_keys", ())}
    return model, {n for n, _ in model.named_parameters() if n in fresh}


def train_finetune(
    family: FinetuneFamily,
    train_texts: Sequence[str],
    train_y: np.ndarray,
    val_texts: Sequence[str],
    val_y: np.ndarray,
    labels: list[str],
    loss: str,
    precision: str,
    attention: str,
    seed: int,
    cache_dir: Path,
    report: Report | None = None,
    *,
    names: list[str] | None = None,
    blocks: np.ndarray | None = None,
    steps: int | None = None,
    device: str | None = None,
    on_step: OnStep | None = None,
    final_val: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> FinetuneClassifier:
    """Fine-tune `family.model` for multi-label classification and return the classifier.

    `report(epoch, metrics)` is called after every epoch on every process with `train_loss`,
    `val_loss`, `val_micro_f1` (at 0.5), `samples`, `train_steps` (so far), `seconds` and
    `samples_per_s`.
    Every epoch draws a fresh order: the mix's `blocks` in order, rows reshuffled within each
    (`tasks.mixes.epoch_order`; None: one block), sharded rank::world with equal shard lengths.
    `steps`: exactly that many optimizer steps (over as many epochs as they take, the last one cut
    short) instead of `family.epochs` epochs; the LR schedule spans them. The steps taken are in
    `meta["provenance"]["train_steps"]`. `on_step(epoch, rows)` sees each batch's rows (this
    rank's) before its optimizer step. Thresholds are left at 0.5; the caller picks them on val.
    `final_val`: a dict that receives, under "val", the last validation's (probabilities,
    embeddings) of the val texts: what scoring the returned model on them would compute, so a
    caller that scores val does not run it twice. Filled only where they are the same numbers:
    one process, fp32, the returned model being the trained module itself.
    """
    import torch

    from tasks.losses import build_loss
    from tasks.mixes import epoch_batches, step_budget

    device = device or _default_device()
    check_numerics(precision, attention, device)
    if train_y.shape != (len(train_texts), len(labels)):
        raise ValueError(
            f"train_y has shape {train_y.shape}, expected ({len(train_texts)}, {len(labels)})"
        )
    distributed, rank, world = _dist_info()
    torch.manual_seed(seed)
    folder = resolve_model(family.model)
    train_tok = tokenize_cached(family.model, train_texts, family.max_length, cache_dir)
    val_tok = tokenize_cached(family.model, val_texts, family.max_length, cache_dir)
    model, fresh = load_for_training(folder, labels, attention, family.trust_remote_code)
    model = model.to(device)

    blocks = np.zeros(len(train_texts), np.int64) if blocks is None else np.asarray(blocks)
    if blocks.shape != (len(train_texts),):
        raise ValueError(f"blocks has shape {blocks.shape}, expected ({len(train_texts)},)")
    # Equal shard lengths on every rank: the same number of steps, so DDP's collectives pair up.
    total_steps, n_epochs = step_budget(
        len(train_texts), family.batch_size, family.epochs, steps, world
    )
    loss_fn = build_loss(loss, train_y)
    engine = TrainEngine(model, family, precision, device, total_steps, distributed, fresh)
    score_batch = max(family.batch_size, 32)  # the classifier's scoring passes, below
    y_train = torch.from_numpy(np.array(train_y, dtype=np.float32))  # a writable copy
    metrics: dict[str, float] = {}
    taken = 0
    for epoch in range(n_epochs):
        batches = epoch_batches(blocks, seed, epoch, family.batch_size, rank, world)
        started, total, seen = time.perf_counter(), 0.0, 0
        engine.train()
        for idx in batches[: total_steps - taken]:
            if on_step is not None:
                on_step(epoch, idx)
            enc = _batch(train_tok, idx, device)
            logits = engine.forward(enc)
            step_loss = loss_fn(logits.float(), y_train[idx].to(device))
            engine.step(step_loss)
            taken += 1
            total += float(step_loss.detach()) * len(idx)
            seen += len(idx)
        seconds = time.perf_counter() - started
        metrics = {
            "epoch": float(epoch + 1),
            "train_loss": _mean_across(total, seen, distributed),
            "samples": float(_sum_across(seen, distributed)),
            "train_steps": float(taken),
            "seconds": seconds,
            "threads": float(torch.get_num_threads()),
        }
        metrics["samples_per_s"] = metrics["samples"] / max(seconds, 1e-9)
        last = epoch + 1 == n_epochs
        if (epoch + 1) % family.validate_every == 0 or last:
            keep = last and final_val is not None and precision == "fp32" and not distributed
            val_metrics, scored = _validate(
                engine.module, val_tok, val_y, loss_fn, precision, device, score_batch, keep
            )
            metrics.update(val_metrics)
            if scored is not None and final_val is not None:
                final_val["val"] = scored
        if report is not None:
            report(epoch + 1, metrics)
    trained = engine.finish().float().eval()
    if final_val is not None and trained is not engine.module:
        final_val.pop("val", None)  # a gathered copy (ZeRO-3): score it afresh
    if attention == "flash_attention_2":
        # Scored (val, test, retrieval) in fp32, which FlashAttention-2 kernels refuse: sdpa
        # computes the same attention. The checkpoint still says how it was trained.
        trained.set_attn_implementation("sdpa")
    tokenizer = _load_tokenizer(folder, family.trust_remote_code)
    meta = {
        "precision": precision,
        "attention": attention,
        "trust_remote_code": family.trust_remote_code,
        "metrics": {k: v for k, v in metrics.items() if k.startswith("val_")},
        "provenance": {
            "model": family.model,
            "loss": loss,
            "seed": seed,
            "world_size": world,
            "train_steps": taken,
        },
    }
    return FinetuneClassifier(
        trained,
        tokenizer,
        family.max_length,
        batch_size=score_batch,
        labels=labels,
        names=names or list(labels),
        meta=meta,
    )


def _load_tokenizer(folder: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def _sum_across(value: float, distributed: bool) -> float:
    if not distributed:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return float(t.item())


def collective_device() -> str:
    """Where a tensor must live for the default process group: NCCL reduces CUDA tensors only
    (Ray Train builds an NCCL group on GPU workers, a gloo one on CPUs)."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def _mean_across(total: float, count: int, distributed: bool) -> float:
    return _sum_across(total, distributed) / max(_sum_across(count, distributed), 1.0)


def _validate(
    module: Any,
    tokens: dict[str, np.ndarray],
    y: np.ndarray,
    loss_fn: Any,
    precision: str,
    device: str,
    batch_size: int,
    keep: bool = False,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray] | None]:
    """Val loss and micro-F1 at 0.5; every process scores the full val set (ZeRO-3 needs all).
    With `keep`, also the (probabilities, embeddings) that `predict_cached` would give."""
    import torch
    from sklearn.metrics import f1_score

    if len(y) == 0:
        return {}, None
    with autocast(precision, device):
        p, e = forward_tokens(module, tokens, batch_size, want_embed=keep)
    p_t = torch.from_numpy(np.clip(p, 1e-7, 1 - 1e-7))
    logits = torch.log(p_t) - torch.log1p(-p_t)
    val_loss = float(loss_fn(logits, torch.from_numpy(np.array(y, dtype=np.float32))))
    f1 = float(f1_score(y, p >= 0.5, average="micro", zero_division=0))
    return {"val_loss": val_loss, "val_micro_f1": f1}, ((p, e) if keep and e is not None else None)


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tune: the family, its rows and the cell's settings, and the text sets to score
    with the trained model before it leaves the process that trained it."""

    family: FinetuneFamily
    train_texts: list[str]
    train_y: np.ndarray
    val_texts: list[str]
    val_y: np.ndarray
    labels: list[str]
    loss: str
    precision: str
    attention: str
    seed: int
    cache_dir: str
    names: list[str] | None = None
    blocks: np.ndarray | None = None  # the ordering's block of each row; None: one block
    steps: int | None = None
    score_sets: dict[str, list[str]] = field(default_factory=dict)


class FinetuneFit(NamedTuple):
    """A fine-tuned classifier and, per scored text set, its (probabilities, embeddings)."""

    classifier: FinetuneClassifier
    scores: dict[str, tuple[np.ndarray, np.ndarray]]


def train_job(
    job: FinetuneJob,
    report: Report | None = None,
    device: str | None = None,
    final_val: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> FinetuneClassifier:
    """`train_finetune` on a job's rows and settings."""
    return train_finetune(
        job.family, job.train_texts, job.train_y, job.val_texts, job.val_y, job.labels,
        job.loss, job.precision, job.attention, job.seed, Path(job.cache_dir), report,
        names=job.names, blocks=job.blocks, steps=job.steps, device=device, final_val=final_val,
    )  # fmt: skip


def score_job(
    clf: FinetuneClassifier,
    job: FinetuneJob,
    final_val: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, tuple[np.ndarray, ...]]:
    """Each of the job's score sets through the trained model (tokenization cached); a set
    holding exactly the val texts reuses `final_val` (`train_finetune`'s) where it has them."""
    known = (final_val or {}).get("val")
    return {
        name: (
            known
            if known is not None and list(texts) == list(job.val_texts)
            else predict_cached(clf, job.family.model, texts, Path(job.cache_dir))
        )
        for name, texts in job.score_sets.items()
    }


def train_in_process(job: FinetuneJob, settings: Any = None) -> FinetuneFit:
    """Run a job in this process (the one-worker trainer of the finetune family), on
    `settings.threads` torch threads where given (the trial's CPUs)."""
    import torch

    threads = getattr(settings, "threads", None)
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    history: list[dict[str, float]] = []
    final_val: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    clf = train_job(job, report=lambda _epoch, m: history.append(dict(m)), final_val=final_val)
    clf.meta["train_history"] = history
    return FinetuneFit(clf, score_job(clf, job, final_val))
