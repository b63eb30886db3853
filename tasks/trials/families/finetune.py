"""`finetune`: a transformer fine-tuned end to end (`tasks.finetune`), in any precision and
attention implementation of the grid.

A one-worker fine-tune without DeepSpeed trains in the trial's own process (`train_in_process`,
on the trial's CPUs or GPU, `settings.threads` torch threads): a plain loop needs no worker group,
and starting one (Ray Train's controller, a worker actor, the model handed back as a checkpoint
and loaded again) cost ~60 s per trial on 2 cores, more than the training (BENCHMARKS.md).
Multi-worker fine-tunes (DDP, DeepSpeed ZeRO) run through an injected `trainer` (`FinetuneJob`,
`TrialSettings`) -> `FinetuneFit`: the orchestrator passes Ray Train
(`orchestrator.train.train_on_ray`, `num_workers` workers with the trial's resources each), which
also scores the trial's val/test/retrieval texts where it trained (on the worker's GPU), so only
probabilities and embeddings travel back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.checkpoint import FinetuneClassifier
from tasks.trials.families import register
from tasks.trials.families.base import FitJob, Fitted, Scores, TrialFamily


@register
class Finetune(TrialFamily):
    kind = "finetune"
    numerics = True

    def steps_per_epoch(self, rows: int) -> int | None:
        from tasks.mixes import steps_per_epoch

        return steps_per_epoch(rows, self.config.batch_size, self.config.num_workers)

    def needs_gpu(self) -> bool:
        return True

    def train_workers(self) -> int:
        """0 (train in the trial's process) for one worker without DeepSpeed; else the Ray Train
        workers a trial starts."""
        if self.config.num_workers == 1 and self.config.deepspeed is None:
            return 0
        return int(self.config.num_workers)

    def fit(self, job: FitJob) -> Fitted:
        from tasks.finetune import FinetuneJob, train_in_process

        ft = FinetuneJob(
            family=self.config,
            train_texts=job.texts,
            train_y=job.y,
            val_texts=job.val_texts,
            val_y=job.val_y,
            labels=job.labels,
            names=job.names,
            loss=job.loss,
            precision=job.precision,
            attention=job.attention,
            seed=job.seed,
            cache_dir=job.cache_dir,
            blocks=job.blocks,
            steps=job.steps,
            score_sets={k: list(v) for k, v in job.score_sets.items()},
        )
        trainer = self.trainer if self.train_workers() and self.trainer else train_in_process
        fit = trainer(ft, job.settings)
        clf = fit.classifier
        clf.meta["attention"] = job.attention
        scored = {tuple(job.score_sets[name]): s for name, s in fit.scores.items()}
        return Fitted(clf, job, steps=int(clf.meta["provenance"]["train_steps"]), scored=scored)

    def predict(self, fitted: Fitted, texts: list[str]) -> Scores:
        from tasks.finetune import predict_cached

        hit = fitted.scored.get(tuple(texts))
        if hit is not None:
            return hit
        cache = Path(fitted.job.cache_dir)
        return predict_cached(fitted.classifier, self.config.model, texts, cache)

    @classmethod
    def load(
        cls,
        path: Path,
        doc: dict[str, Any],
        device: str | None,
        precision: str | None,
        common: dict[str, Any],
    ) -> FinetuneClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from tasks.checkpoint import torch_dtype, usable_attention

        fc = doc.get("family_config", {})
        folder = path / fc.get("weights", "model")
        remote = bool(doc.get("trust_remote_code", False))
        model = AutoModelForSequenceClassification.from_pretrained(
            folder,
            use_safetensors=True,
            trust_remote_code=remote,
            dtype=torch_dtype(precision or doc.get("precision", "fp32")),
            attn_implementation=usable_attention(doc.get("attention", "eager")),
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
        model.to(device or "cpu").eval()
        return FinetuneClassifier(model, tokenizer, int(fc.get("max_length", 256)), **common)
