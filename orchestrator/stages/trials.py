"""Stage `trials`: the study grid on Ray Tune; one classifier per cell, evaluated on test.

Before the grid: the agreement filter of the `filtered` arm, one embedding pass over every text
(shared cache with the fidelity stage) for frozen heads and fidelity curricula, and the numerics
guard when fine-tuning is in the grid. Writes `results.parquet`, `checkpoints/<trial_id>/` and
`numerics.json` (docs/artifacts.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from config import StudyConfig
from config.fidelity import EncoderConfig
from config.trials import SCHEDULING_FIELDS
from orchestrator.cache import write_json_atomic
from orchestrator.stages.base import Stage, StageContext, StageOutput, console
from orchestrator.trials import TrialCell, check_unique, expand_grid, ratios_of, volume
from orchestrator.trials_fit import RESULT_COLUMNS, TrialData, cell_columns, keep_key


class TrialsStage(Stage):
    name = "trials"
    depends_on: tuple[str, ...] = ("prepare", "generate", "fidelity")

    def enabled(self, cfg: StudyConfig) -> bool:
        return cfg.trials is not None and cfg.trials.enabled

    def config_subset(self, cfg: StudyConfig) -> dict[str, Any]:
        # Upstream follows the config: a real-only study has no generate or fidelity stage.
        self.depends_on = _deps(cfg)
        t = _section(cfg)
        return {
            "trials": t.model_dump(
                mode="json", exclude={"enabled": True, "resources": set(SCHEDULING_FIELDS)}
            ),
            "ratios": ratios_of(cfg),
            "encoder": _encoder(cfg).model_dump(include={"model", "max_length"}),
        }

    def run(self, ctx: StageContext) -> StageOutput:
        cfg, t = ctx.cfg, _section(ctx.cfg)
        data, corpora = _load(ctx)
        keep = _agreement_filter(cfg, data, corpora) if "filtered" in t.arms else {}
        data.keep_ids = {k: sorted(v) for k, v in keep.items()}
        counts = {(c, float(r)): len(ids) for (c, r), ids in _split_keys(keep).items()}
        # Fine-tunes run on Train workers with `trials.resources.gpus`, not in this driver (on a
        # cluster, a CPU head): CUDA is what the workers get, whatever this machine has.
        cuda = t.resources.gpus > 0
        cells = expand_grid(cfg, corpora, counts, cuda=cuda)
        check_unique(cells)
        pending = [c for c in cells if c.status == "pending"]
        kinds = {c.family_kind for c in pending}
        if "frozen_head" in kinds or "curriculum_fidelity" in t.orderings:
            _embed(ctx, data)
        if "curriculum_fidelity" in t.orderings:
            data.fidelity = _row_fidelity(data)
        numerics = _guard(cfg, data, cuda) if "finetune" in kinds else []
        write_json_atomic(ctx.out_dir / "numerics.json", numerics)
        flags = _flags(numerics, cells)
        console.print(
            f"trials: {len(cells)} cells, {len(pending)} to run, "
            f"{len(cells) - len(pending)} skipped"
        )
        results = _run(ctx, [c for c in cells if c.status == "pending"], data)
        table = _assemble(ctx, cells, results, flags)
        table.to_parquet(ctx.out_dir / "results.parquet", index=False)
        ok = table[table.status == "ok"]
        best = ok.sort_values(t.select_metric, ascending=False).head(1)
        return StageOutput(
            rows={
                "trials": len(table),
                "ok": len(ok),
                "skipped": int((table.status == "skipped").sum()),
                "failed": int((table.status == "failed").sum()),
            },
            summary={
                "best_trial": best.trial_id.iloc[0] if len(best) else None,
                "status_note": _note(ok),
            },
        )


def _section(cfg: StudyConfig):
    if cfg.trials is None:
        raise ValueError("trials: the config has no `trials` section")
    return cfg.trials


def _encoder(cfg: StudyConfig) -> EncoderConfig:
    """The frozen-head encoder: the family's own, else the fidelity stage's (one shared cache)."""
    for fam in _section(cfg).families:
        if fam.kind == "frozen_head" and fam.encoder is not None:
            return fam.encoder
    return cfg.fidelity.encoder if cfg.fidelity is not None else EncoderConfig()


def _load(ctx: StageContext) -> tuple[TrialData, list[dict]]:
    from orchestrator.stages.fidelity import _read_corpus, read_corpora
    from orchestrator.trials import regime_keys_of, regimes_of
    from tasks.corpus import read_labels, read_table, split_path

    cfg, t = ctx.cfg, _section(ctx.cfg)
    prep = ctx.input_dir("prepare")
    labels = read_labels(prep)
    corpora: list[dict] = []
    synth: dict[str, pd.DataFrame] = {}
    if "generate" in _deps(cfg):
        gen = ctx.input_dir("generate")
        regimes = set(regimes_of(cfg))
        corpora = [c for c in read_corpora(gen) if c["regime"] in regimes]
        for c in corpora:
            synth[c["corpus_id"]] = _read_corpus(gen, c)
            c["rows"] = len(synth[c["corpus_id"]])
    retrieval = (
        read_table(split_path(prep, "train_pool")) if t.retrieval_corpus == "train_pool" else None
    )
    data = TrialData(
        labels=list(labels.codes),
        names=list(labels.names),
        real={k: read_table(split_path(prep, k)) for k in regime_keys_of(cfg)},
        corpora=synth,
        val=read_table(split_path(prep, "val")),
        test=read_table(split_path(prep, "test")),
        retrieval=retrieval,
        encoder=_encoder(cfg).model_dump(include={"model", "max_length"}),
        cache_dir=str(ctx.store.run_dir / "cache" / "tokens"),
        thresholds=t.thresholds,
        threshold_min_positives=t.threshold_min_positives,
        retrieval_k=t.retrieval_k,
    )
    return data, corpora


def _deps(cfg: StudyConfig) -> tuple[str, ...]:
    gen = cfg.generation is not None and cfg.generation.enabled
    fid = gen and cfg.fidelity is not None and cfg.fidelity.enabled
    return ("prepare",) + (("generate",) if gen else ()) + (("fidelity",) if fid else ())


def _split_keys(keep: dict[str, set[str]]) -> dict[tuple[str, str], set[str]]:
    return {tuple(k.rsplit("@", 1)): v for k, v in keep.items()}  # type: ignore[misc]


def _agreement_filter(cfg: StudyConfig, data: TrialData, corpora: list[dict]) -> dict:
    """`filtered` arm: synthetic rows whose labels a real-only TF-IDF classifier agrees with.

    Agreement: Jaccard overlap of the row's labels with the classifier's predicted set (val-tuned
    thresholds) at least `trials.filter_min_overlap`. One classifier per regime key (each draw
    of a regime judges its own corpora), trained once.
    """
    from orchestrator.stages.fidelity import regime_key_of
    from tasks.evaluation import choose_thresholds, jaccard_matrix
    from tasks.heads import TfidfConfig, train_tfidf_linear
    from tasks.mixes import slice_volume

    t = _section(cfg)
    keep: dict[str, set[str]] = {}
    judges = {}
    for key, real in data.real.items():
        clf = train_tfidf_linear(
            real.text.tolist(),
            data.y(real),
            TfidfConfig(),
            "bce",
            0,
            labels=data.labels,
            names=data.names,
        )
        p_val = clf.predict_proba(data.val.text.tolist())
        judges[key] = (clf, choose_thresholds(data.y(data.val), p_val, "global"))
    for c in corpora:
        clf, th = judges[regime_key_of(c)]
        syn = data.corpora[c["corpus_id"]]
        n_real = len(data.real[regime_key_of(c)])
        for r in ratios_of(cfg):
            vol = slice_volume(syn, r, n_real)
            assert len(vol) == volume(r, n_real, len(syn))
            pred = clf.predict_proba(vol.text.tolist()) >= th[None, :]
            overlap = np.diag(jaccard_matrix(data.y(vol), pred.astype(np.float32)))
            kept = vol.id[overlap >= t.filter_min_overlap]
            keep[keep_key(c["corpus_id"], float(r))] = set(kept.astype(str))
    return keep


def _embed(ctx: StageContext, data: TrialData) -> None:
    """Every distinct text embedded once (cache hits for what the fidelity stage embedded)."""
    from orchestrator.embeddings import embed_texts, embedding_cache_dir
    from orchestrator.ray_runtime import ensure_ray

    frames = [*data.real.values(), *data.corpora.values(), data.val, data.test]
    if data.retrieval is not None:
        frames.append(data.retrieval)
    texts = sorted({str(t) for df in frames for t in df.text})
    ensure_ray(ctx.cfg.resources)
    enc = _encoder(ctx.cfg)
    console.print(f"trials: embeddings of {len(texts)} distinct texts ({enc.model})")
    data.emb = embed_texts(texts, enc, embedding_cache_dir(ctx.store.run_dir))
    data.emb_index = {t: i for i, t in enumerate(texts)}


def _row_fidelity(data: TrialData) -> dict[str, dict[str, float]]:
    """Per synthetic row: cosine similarity to its regime draw's real centroid (higher: closer)."""
    out = {}
    for cid, syn in data.corpora.items():
        # A corpus id starts with the regime key of the draw it was generated from.
        key = cid.split("__", 1)[0]
        real = data.real.get(key)
        if real is None or syn.empty:
            continue
        centroid = data.embeddings(real.text.tolist()).mean(0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        x = data.embeddings(syn.text.tolist())
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        out[cid] = dict(zip(syn.id.astype(str), (x @ centroid).astype(float), strict=True))
    return out


def _guard(cfg: StudyConfig, data: TrialData, cuda: bool) -> list[dict]:
    """Numerics guard per fine-tuned family: logits of each precision x attention vs fp32 eager.

    With GPU trials it runs as a Ray task on a GPU worker (with the trials' custom resources),
    where the fine-tunes will run; otherwise here, on the CPU."""
    t = _section(cfg)
    if not t.numerics_guard.enabled:
        return []
    texts = data.val.text.astype(str).tolist()[:8]
    fams = [f for f in t.families if f.kind == "finetune"]
    calls = [
        {
            "model": fam.model,
            "precisions": t.precisions,
            "attentions": t.attentions,
            "texts": texts,
            "max_length": fam.max_length,
            "max_abs_diff": t.numerics_guard.max_abs_diff,
            "device": "cuda" if cuda else "cpu",
            "trust_remote_code": fam.trust_remote_code,
        }
        for fam in fams
    ]
    if cuda:
        from orchestrator.ray_runtime import ensure_ray

        ensure_ray(cfg.resources)
    found = run_guard(calls, guard_task_options(t.resources) if cuda else None)
    rows = [
        {"family": fam.name, "model": fam.model, **r}
        for fam, fam_rows in zip(fams, found, strict=True)
        for r in fam_rows
    ]
    flagged = [r for r in rows if r.get("flagged")]
    if flagged:
        console.print(f"[yellow]trials: numerics guard flagged {len(flagged)} pair(s)[/yellow]")
    return rows


def guard_task_options(resources: Any) -> dict[str, Any]:
    """Ray task options of the guard on a GPU worker: one GPU at most (a fraction as the trials
    ask), the trials' CPUs and custom resources (which pin it to the same kind of node)."""
    return {
        "num_cpus": resources.cpus,
        "num_gpus": min(resources.gpus, 1.0),
        "resources": dict(resources.custom),
    }


def run_guard(calls: list[dict[str, Any]], task_options: dict[str, Any] | None) -> list[list]:
    """`tasks.numerics.numerics_guard` per call: here, or as Ray tasks with `task_options`."""
    from tasks.numerics import numerics_guard

    if task_options is None:
        return [numerics_guard(**kw) for kw in calls]
    import ray

    task = ray.remote(numerics_guard).options(**task_options)
    return ray.get([task.remote(**kw) for kw in calls])


def _flags(numerics: list[dict], cells: list[TrialCell]) -> dict[tuple, dict]:
    """(family, precision, attention) -> guard row; cells the guard could not run are skipped."""
    by_pair = {(r["family"], r["precision"], r["attention"]): r for r in numerics}
    for c in cells:
        r = by_pair.get((c.family, c.precision, c.attention))
        if r is not None and r.get("skipped_reason") and c.status == "pending":
            c.status, c.reason = "skipped", f"numerics guard: {r['skipped_reason']}"
    return by_pair


def _run(ctx: StageContext, cells: list[TrialCell], data: TrialData) -> dict[str, dict]:
    from orchestrator.ray_runtime import ensure_ray
    from orchestrator.trials_tune import run_grid

    if not cells:
        return {}
    cfg, t = ctx.cfg, _section(ctx.cfg)
    # Ray Train V2 (the TorchTrainer inside a Tune trial) is read when workers start.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ensure_ray(cfg.resources)
    storage = cfg.resources.storage_path or str((ctx.work_dir / "tune").resolve())
    # Ray Train runs (a fine-tune's workers write there, its trial reads back) beside Tune's on
    # shared storage when there is one: on a cluster the two may sit on different nodes.
    train_storage = (
        f"{cfg.resources.storage_path.rstrip('/')}/train-{ctx.fingerprint[:12]}"
        if cfg.resources.storage_path
        else str((ctx.work_dir / "train").resolve())
    )
    return run_grid(
        cells,
        data,
        {f.name: f for f in t.families},
        storage_path=storage,
        name=f"trials-{ctx.fingerprint[:12]}",
        done_dir=ctx.work_dir / "done",
        train_storage=train_storage,
        cpus=t.resources.cpus,
        gpus=t.resources.gpus,
        custom=t.resources.custom,
        max_concurrent=t.resources.max_concurrent,
        reuse_actors=t.resources.reuse_actors,
        max_failures=t.max_failures,
    )


def _assemble(
    ctx: StageContext, cells: list[TrialCell], results: dict[str, dict], flags: dict
) -> pd.DataFrame:
    """One row per cell; checkpoints copied into checkpoints/<trial_id>/."""
    rows = []
    for c in cells:
        base = cell_columns(c)
        res = results.get(c.trial_id)
        flag = flags.get((c.family, c.precision, c.attention), {})
        if c.status == "skipped":
            row = {**base, "status": "skipped", "reason": c.reason}
        elif res is None or res["row"] is None:
            reason = (res or {}).get("error") or "no result reported"
            row = {**base, "status": "failed", "reason": reason}
        else:
            row = {**base, **res["row"]}
            row["checkpoint"] = _copy_checkpoint(ctx, c.trial_id, res["checkpoint"])
        row["numerics_flag"] = bool(flag.get("flagged", False))
        rows.append(row)
    return pd.DataFrame.from_records(rows).reindex(columns=RESULT_COLUMNS)


def _copy_checkpoint(ctx: StageContext, trial_id: str, checkpoint: Any) -> str:
    """The trial's classifier to checkpoints/<trial_id>/ and its predictions.npz to
    predictions/<trial_id>.npz (the report reads them), from its done marker or, on another
    node, from the checkpoint Tune reported. Returns the checkpoint's relative path or ""."""
    from orchestrator.trials_fit import PREDICTIONS
    from orchestrator.trials_tune import CKPT

    target = ctx.out_dir / "checkpoints" / trial_id
    predictions = ctx.out_dir / "predictions" / f"{trial_id}.npz"
    predictions.parent.mkdir(parents=True, exist_ok=True)
    local = ctx.work_dir / "done" / trial_id
    with tempfile.TemporaryDirectory() as tmp:
        if not (local / CKPT).is_dir():
            if checkpoint is None:
                return ""
            checkpoint.to_directory(tmp)
            local = Path(tmp)
        shutil.copytree(local / CKPT, target)
        if (local / PREDICTIONS).is_file():
            shutil.copyfile(local / PREDICTIONS, predictions)
    return f"checkpoints/{trial_id}"


def _note(ok: pd.DataFrame) -> str:
    if ok.empty:
        return "no trial finished"
    # In grid order, not ranked: which arm is "best" is the report's call, made on validation.
    by_arm = ok.groupby("arm", sort=False)[["val_micro_f1", "test_micro_f1"]].mean()
    return "; ".join(
        f"{arm}: micro-F1 val {v.val_micro_f1:.3f} / test {v.test_micro_f1:.3f}"
        for arm, v in by_arm.iterrows()
    )
