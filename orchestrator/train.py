"""Fine-tuning on Ray Train: `train_on_ray(job, settings)` runs a `tasks.finetune.FinetuneJob`
on N workers; it is the `trainer` the trials stage gives the finetune family.

Works from a plain driver and from inside a Ray Tune function trainable (Ray Train V2 runs its
controller next to the caller and schedules the workers with their own resources). Inside Tune,
give the trial itself almost no CPU (`tune.with_resources(fn, {"CPU": 0.01})`; 0 is refused):
the workers ask for the trial's `cpus` / `gpus` / `custom` resources each, and a trial that
holds the cores itself would leave none for them. For the same reason the trained model is also
scored where it was trained: the job's `score_sets` (val, test, retrieval texts) are run through
it on rank 0, on the worker's cores or GPU, and only the probabilities and embeddings travel
back to the trial.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.ray_runtime import storage_uri
from tasks.checkpoint import FinetuneClassifier, load_classifier, save_classifier
from tasks.finetune import FinetuneFit, FinetuneJob, check_numerics, score_job, tokenize_cached
from tasks.finetune import train_job as run_job
from tasks.trials.inputs import TrialSettings, label_matrix

HISTORY_JSON = "train_history.json"
SCORES_NPZ = "scores.npz"


def _train_worker(config: dict[str, FinetuneJob]) -> None:
    """One Ray Train worker: the plain training loop, then rank 0 hands back the checkpoint."""
    import ray.train
    import ray.train.torch

    job = config["job"]
    device = str(ray.train.torch.get_device())
    rank = ray.train.get_context().get_world_rank()
    history: list[dict[str, float]] = []

    def report(epoch: int, metrics: dict[str, float]) -> None:
        history.append(dict(metrics))
        ray.train.report(dict(metrics))  # every worker reports: V2 reports are collective

    clf = run_job(job, report=report, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_classifier(Path(tmp) / "classifier", clf)
            (Path(tmp) / HISTORY_JSON).write_text(json.dumps(history))
            arrays = {}
            for name, (p, e) in score_job(clf, job).items():
                arrays[f"{name}.proba"], arrays[f"{name}.embed"] = p, e
            if arrays:
                np.savez(Path(tmp) / SCORES_NPZ, **arrays)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({**(history[-1] if history else {}), "final": 1.0}, checkpoint=checkpoint)


def worker_resources(
    cpus: float, gpus: float, custom: dict[str, float] | None = None
) -> dict[str, float]:
    """One Ray Train worker's resources: its CPUs, its GPUs if any, and the study's custom
    resources (e.g. `accelerator_type_l4`, which pins the worker to an L4 node)."""
    resources = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus > 0 else {})}
    resources.update({k: float(v) for k, v in (custom or {}).items()})
    return resources


def train_on_ray(job: FinetuneJob, settings: TrialSettings, device: str = "cpu") -> FinetuneFit:
    """Fine-tune on a Ray Train `TorchTrainer` (`job.family.num_workers` workers, each with
    `settings`' CPUs, GPUs and custom resources; the run under `settings.storage_dir`) and load
    the result; each of the job's score sets is scored on rank 0 before it leaves the worker.

    DDP over gloo on CPU or NCCL on GPU; DeepSpeed ZeRO when `family.deepspeed` is set.
    Tokenization happens here, once, into the job's cache (the workers read the cache). The
    trained classifier is loaded onto `device` in the calling process with its per-epoch
    metrics in `meta["train_history"]`.
    """
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    family = job.family
    use_gpu = settings.gpus > 0
    check_numerics(job.precision, job.attention, "cuda" if use_gpu else "cpu")
    for texts in (job.train_texts, job.val_texts):
        tokenize_cached(family.model, texts, family.max_length, Path(job.cache_dir))
    name = f"finetune-{uuid.uuid4().hex[:10]}"
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(
            num_workers=int(family.num_workers),
            use_gpu=use_gpu,
            resources_per_worker=worker_resources(
                settings.cpus, settings.gpus, dict(settings.custom)
            ),
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name,
            # A local folder serves one machine only: the workers write their checkpoints where
            # the trial reads them.
            storage_path=storage_uri(settings.storage_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(
            f"finetune of {family.model} ({job.loss}, {job.precision}, {job.attention}) failed"
        ) from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"finetune run {name} reported no checkpoint")
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with result.checkpoint.as_directory() as folder:
        clf = load_classifier(Path(folder) / "classifier", device=device, precision="fp32")
        history = json.loads((Path(folder) / HISTORY_JSON).read_text())
        if (Path(folder) / SCORES_NPZ).is_file():
            with np.load(Path(folder) / SCORES_NPZ) as npz:
                for key in job.score_sets:
                    scores[key] = (npz[f"{key}.proba"], npz[f"{key}.embed"])
    if not isinstance(clf, FinetuneClassifier):
        raise TypeError(f"finetune run {name} returned a {clf.family} checkpoint")
    clf.meta["train_history"] = history
    clf.meta["precision"] = job.precision  # loaded in fp32 for scoring; trained in `precision`
    # The classifier now lives in this process; the trial saves its own checkpoint.
    remove_train_run(settings.storage_dir, name)
    return FinetuneFit(clf, scores)


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
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    device: str = "cpu",
) -> FinetuneClassifier:
    """Tables in, classifier out: `train_on_ray` on `train`/`val` (`text`, `labels` and, when
    `train` has one, `block` columns), for scripts and benchmarks."""
    job = FinetuneJob(
        family=family,
        train_texts=train["text"].astype(str).tolist(),
        train_y=label_matrix(train, labels),
        val_texts=val["text"].astype(str).tolist(),
        val_y=label_matrix(val, labels),
        labels=list(labels),
        loss=loss,
        precision=precision,
        attention=attention,
        seed=seed,
        cache_dir=str(cache_dir),
        blocks=train["block"].to_numpy(dtype=np.int64) if "block" in train.columns else None,
    )
    settings = TrialSettings(
        cpus=cpus_per_worker, gpus=gpus_per_worker, storage_dir=str(storage_dir)
    )
    return train_on_ray(job, settings, device=device).classifier


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
