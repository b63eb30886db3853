"""Fine-tuning on Ray Train: `fit_finetune` runs `tasks.finetune.train_finetune` on N workers.

Works from a plain driver and from inside a Ray Tune function trainable (Ray Train V2 runs its
controller next to the caller and schedules the workers with their own resources). Inside Tune,
give the trial itself almost no CPU (`tune.with_resources(fn, {"CPU": 0.01})`; 0 is refused):
the workers ask for `cpus_per_worker` / `gpus_per_worker` / `custom_per_worker` each, and a
trial that holds the cores itself would leave none for them. For the same reason the trained
model is also scored where it was trained: `score_sets` (val, test, retrieval texts) are run
through it on rank 0, on the worker's cores or GPU, and only the probabilities and embeddings
travel back to the trial.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from orchestrator.ray_runtime import storage_uri
from tasks.checkpoint import FinetuneClassifier, load_classifier, save_classifier
from tasks.finetune import check_numerics, predict_cached, tokenize_cached, train_finetune
from tasks.labels import LabelSpace

HISTORY_JSON = "train_history.json"
SCORES_NPZ = "scores.npz"


class FinetuneFit(NamedTuple):
    """A fine-tuned classifier and, per scored text set, its (probabilities, embeddings)."""

    classifier: FinetuneClassifier
    scores: dict[str, tuple[np.ndarray, np.ndarray]]


def label_matrix(df: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """Multi-hot (n, L) float32 matrix of a table's `labels` column in the order of `labels`."""
    if "labels" not in df.columns or "text" not in df.columns:
        raise ValueError(f"table needs columns text and labels, has {list(df.columns)}")
    space = LabelSpace(codes=tuple(labels), names=tuple(labels), support=(0,) * len(labels))
    return space.encode([list(v) for v in df["labels"]])


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the plain training loop, then rank 0 hands back the checkpoint."""
    import ray.train
    import ray.train.torch

    device = str(ray.train.torch.get_device())
    rank = ray.train.get_context().get_world_rank()
    history: list[dict[str, float]] = []

    def report(epoch: int, metrics: dict[str, float]) -> None:
        history.append(dict(metrics))
        ray.train.report(dict(metrics))  # every worker reports: V2 reports are collective

    clf = train_finetune(
        config["family"],
        config["train_texts"],
        config["train_y"],
        config["val_texts"],
        config["val_y"],
        config["labels"],
        config["loss"],
        config["precision"],
        config["attention"],
        config["seed"],
        Path(config["cache_dir"]),
        report=report,
        names=config["names"],
        blocks=config["blocks"],
        steps=config["steps"],
        device=device,
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_classifier(Path(tmp) / "classifier", clf)
            (Path(tmp) / HISTORY_JSON).write_text(json.dumps(history))
            arrays = {}
            for name, texts in (config.get("score_sets") or {}).items():
                p, e = predict_cached(clf, config["family"].model, texts, Path(config["cache_dir"]))
                arrays[f"{name}.proba"], arrays[f"{name}.embed"] = p, e
            if arrays:
                np.savez(Path(tmp) / SCORES_NPZ, **arrays)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({**(history[-1] if history else {}), "final": 1.0}, checkpoint=checkpoint)


def fit_finetune(
    family: Any,
    train: pd.DataFrame,
    val: pd.DataFrame,
    labels: list[str],
    loss: str,
    precision: str,
    attention: str,
    seed: int,
    cache_dir: Path,
    storage_dir: str | Path,
    *,
    names: list[str] | None = None,
    blocks: np.ndarray | None = None,
    steps: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    device: str = "cpu",
) -> FinetuneClassifier:
    """Fine-tune on a Ray Train `TorchTrainer` (`family.num_workers` workers) and load the result.

    The classifier of `train_and_score` with no text sets to score; see there.
    """
    return train_and_score(
        family, train, val, labels, loss, precision, attention, seed, cache_dir, storage_dir,
        names=names, blocks=blocks, steps=steps, cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker, device=device,
    ).classifier  # fmt: skip


def _blocks(train: pd.DataFrame, blocks: np.ndarray | None) -> np.ndarray:
    """Each training row's block (`tasks.mixes`): given, the mix's `block` column, or all 0."""
    if blocks is not None:
        return np.asarray(blocks, dtype=np.int64)
    if "block" in train.columns:
        return train["block"].to_numpy(dtype=np.int64)
    return np.zeros(len(train), dtype=np.int64)


def worker_resources(
    cpus: float, gpus: float, custom: dict[str, float] | None = None
) -> dict[str, float]:
    """One Ray Train worker's resources: its CPUs, its GPUs if any, and the study's custom
    resources (e.g. `accelerator_type_l4`, which pins the worker to an L4 node)."""
    resources = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus > 0 else {})}
    resources.update({k: float(v) for k, v in (custom or {}).items()})
    return resources


def train_and_score(
    family: Any,
    train: pd.DataFrame,
    val: pd.DataFrame,
    labels: list[str],
    loss: str,
    precision: str,
    attention: str,
    seed: int,
    cache_dir: Path,
    storage_dir: str | Path,
    *,
    names: list[str] | None = None,
    blocks: np.ndarray | None = None,
    steps: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    custom_per_worker: dict[str, float] | None = None,
    device: str = "cpu",
    score_sets: dict[str, list[str]] | None = None,
) -> FinetuneFit:
    """Fine-tune on a Ray Train `TorchTrainer` (`family.num_workers` workers) and load the result;
    score each of `score_sets` with the trained model on rank 0 before it leaves the worker.

    DDP over gloo on CPU or NCCL on GPU; DeepSpeed ZeRO when `family.deepspeed` is set.
    `train`/`val` are tables with `text` and `labels` columns; `blocks` (default: `train`'s `block`
    column when it has one) and `steps` go to `train_finetune`. Tokenization happens here, once,
    into `cache_dir` (the workers read the cache). The trained classifier is loaded onto `device`
    in the calling process with its per-epoch metrics in `meta["train_history"]`.
    """
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = gpus_per_worker > 0
    check_numerics(precision, attention, "cuda" if use_gpu else "cpu")
    train_texts, val_texts = train["text"].astype(str).tolist(), val["text"].astype(str).tolist()
    for texts in (train_texts, val_texts):
        tokenize_cached(family.model, texts, family.max_length, cache_dir)
    config = {
        "family": family,
        "train_texts": train_texts,
        "train_y": label_matrix(train, labels),
        "val_texts": val_texts,
        "val_y": label_matrix(val, labels),
        "labels": list(labels),
        "names": list(names or labels),
        "loss": loss,
        "precision": precision,
        "attention": attention,
        "seed": seed,
        "cache_dir": str(cache_dir),
        "blocks": _blocks(train, blocks),
        "steps": None if steps is None else int(steps),
        "score_sets": {k: [str(t) for t in v] for k, v in (score_sets or {}).items()},
    }
    resources = worker_resources(cpus_per_worker, gpus_per_worker, custom_per_worker)
    name = f"finetune-{uuid.uuid4().hex[:10]}"
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=int(getattr(family, "num_workers", 1)),
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name,
            # A local folder serves one machine only: the workers write their checkpoints where
            # the trial reads them.
            storage_path=storage_uri(storage_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(
            f"finetune of {family.model} ({loss}, {precision}, {attention}) failed"
        ) from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"finetune run {name} reported no checkpoint")
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with result.checkpoint.as_directory() as folder:
        clf = load_classifier(Path(folder) / "classifier", device=device, precision="fp32")
        history = json.loads((Path(folder) / HISTORY_JSON).read_text())
        if (Path(folder) / SCORES_NPZ).is_file():
            with np.load(Path(folder) / SCORES_NPZ) as npz:
                for key in score_sets or {}:
                    scores[key] = (npz[f"{key}.proba"], npz[f"{key}.embed"])
    assert isinstance(clf, FinetuneClassifier)
    clf.meta["train_history"] = history
    clf.meta["precision"] = precision  # loaded in fp32 for scoring; trained in `precision`
    # The classifier now lives in this process; the trial saves its own checkpoint.
    remove_train_run(storage_dir, name)
    return FinetuneFit(clf, scores)


def remove_train_run(storage_dir: str | Path, name: str) -> None:
    """Delete a finished Train run's folder under `storage_dir`, local or a URI."""
    path = storage_uri(storage_dir)
    if "://" not in path:
        shutil.rmtree(Path(path) / name, ignore_errors=True)
        return
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(path)
    with contextlib.suppress(OSError):  # already gone, or a store that has no folders to delete
        fs.delete_dir(f"{root.rstrip('/')}/{name}")
