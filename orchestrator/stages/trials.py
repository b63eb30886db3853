"""Stage `trials`: the study grid on Ray Tune; one classifier per cell, evaluated on test.

Before the grid: the agreement filter of the `filtered` arm, one embedding pass over every text
per distinct encoder (the shared cache with the fidelity stage) for frozen heads and fidelity
curricula, and the numerics guard when fine-tuning is in the grid. Each trial is
`tasks.trials.recipe.run_trial`, on Ray Tune (`orchestrator.trials_tune`). Writes
`results.parquet`, `checkpoints/<trial_id>/`, `predictions/<trial_id>.npz` and `numerics.json`
(docs/artifacts.md).

Finished trials carry a `trial_key` (their cell, family settings and inputs); a re-run of the
stage after a config change links the previous output's trials of an unchanged key instead of
training them again, so a new seed trains only the new cells and a new guard tolerance none.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from config import StudyConfig
from config.fidelity import EncoderConfig
from orchestrator.console import warn_once
from orchestrator.stages.base import Stage, StageContext, StageOutput, console
from tasks.artifacts import (
    TrialRow,
    checkpoint_path,
    load_results,
    predictions_path,
    save_numerics,
    save_results,
)
from tasks.trials.families import build_family
from tasks.trials.grid import TrialCell, check_unique, expand_grid, ratios_of, trial_key
from tasks.trials.inputs import EncoderKey, EvalData, TrialInputs, TrialSettings
from tasks.trials.recipe import CLASSIFIER, PREDICTIONS, cell_row


class TrialsStage(Stage):
    name = "trials"
    # It reads no fidelity output (the embedding cache under runs/<study>/cache is shared, not
    # a stage output), so an MMD setting re-runs no trial.
    reads = ("prepare", "generate")
    fields = ("trials", "generation.ratios", "fidelity.encoder")

    def enabled(self, cfg: StudyConfig) -> bool:
        return cfg.trials is not None and cfg.trials.enabled

    def kept(self, ctx: StageContext) -> str:
        """The finished trials in the work folder, which a rerun does not train again."""
        from tasks.trials.recipe import read_row

        done = ctx.work_dir / "done"
        n = sum(read_row(d) is not None for d in done.iterdir()) if done.is_dir() else 0
        return f"{n} finished trial{'s' * (n != 1)}" if n else ""

    def run(self, ctx: StageContext) -> StageOutput:
        from tasks.trials.agreement import agreement_filter

        cfg, t = ctx.cfg, _section(ctx.cfg)
        inputs, corpora = _load(ctx)
        if "filtered" in t.arms:
            inputs.keep_ids = agreement_filter(
                inputs, corpora, ratios_of(cfg), t.filter_min_overlap
            )
        counts = {k: len(ids) for k, ids in inputs.keep_ids.items()}
        # Fine-tunes run on Train workers with `trials.resources.gpus`, not in this driver (on a
        # cluster, a CPU head): CUDA is what the workers get, whatever this machine has.
        cuda = t.resources.gpus > 0
        cells = expand_grid(cfg, corpora, counts, cuda=cuda)
        _warn_emulated_bf16(t, cuda)
        check_unique(cells)
        families = resolved_families(cfg)
        keys = _keys(ctx, cells, families)
        pending = [c for c in cells if c.status == "pending"]
        guarded = any(build_family(families[c.family]).numerics for c in pending)
        numerics = _guard(cfg, inputs, cuda) if guarded else []
        save_numerics(ctx.out_dir, numerics)
        flags = _flags(numerics, cells)
        reused = _reuse(ctx, [c for c in cells if c.status == "pending"], keys)
        todo = [c for c in cells if c.status == "pending" and c.trial_id not in reused]
        console.print(
            f"trials: {len(cells)} cells, {len(todo)} to run, {len(reused)} reused from the "
            f"previous run, {len(cells) - len(todo) - len(reused)} skipped"
        )
        _embed(ctx, inputs, families, todo)
        outcomes = _run(ctx, todo, inputs, families)
        rows = _assemble(ctx, cells, outcomes, reused, flags, keys)
        table = save_results(ctx.out_dir, rows)
        ok = table[table.status == "ok"]
        best = ok.sort_values(t.select_metric, ascending=False).head(1)
        return StageOutput(
            rows={
                "trials": len(table),
                "ok": len(ok),
                "reused": len(reused),
                "skipped": int((table.status == "skipped").sum()),
                "failed": int((table.status == "failed").sum()),
            },
            summary={
                "best_trial": best.trial_id.iloc[0] if len(best) else None,
                "status_note": _note(ok),
            },
        )


def _warn_emulated_bf16(t: Any, cuda: bool) -> None:
    from orchestrator.generation import cpu_has_native_bf16

    if "bf16" in t.precisions and not cuda and not cpu_has_native_bf16():
        warn_once(
            "emulated-bf16-trials",
            "trials: precision bf16 on a CPU without bf16 instructions is emulated, several "
            "times slower than fp32; drop bf16 from `trials.precisions` on this machine",
        )


def _section(cfg: StudyConfig):
    if cfg.trials is None:
        raise ValueError("trials: the config has no `trials` section")
    return cfg.trials


def default_encoder(cfg: StudyConfig) -> EncoderConfig:
    """The fidelity stage's encoder (the default one without fidelity): what frozen heads
    without their own encoder embed with, and what the fidelity curriculum scores rows by."""
    return cfg.fidelity.encoder if cfg.fidelity is not None else EncoderConfig()


def resolved_families(cfg: StudyConfig) -> dict[str, Any]:
    """Family name -> its config, an unset `encoder` resolved to `default_encoder`: each
    frozen head embeds with, trains on and records its own encoder."""
    out = {}
    for fam in _section(cfg).families:
        if "encoder" in type(fam).model_fields and fam.encoder is None:
            fam = fam.model_copy(update={"encoder": default_encoder(cfg)})
        out[fam.name] = fam
    return out


def _load(ctx: StageContext) -> tuple[TrialInputs, list[dict]]:
    from tasks.artifacts import load_corpora, load_corpus, load_labels, load_split
    from tasks.trials.grid import regime_keys_of, regimes_of

    cfg, t = ctx.cfg, _section(ctx.cfg)
    prep = ctx.input_dir("prepare")
    labels = load_labels(prep)
    corpora: list[dict] = []
    synth: dict[str, pd.DataFrame] = {}
    if "generate" in ctx.inputs:  # a real-only study has no generate stage
        gen = ctx.input_dir("generate")
        regimes = set(regimes_of(cfg))
        corpora = [dict(c) for c in load_corpora(gen) if c["regime"] in regimes]
        for c in corpora:
            synth[c["corpus_id"]] = load_corpus(gen, c)
            c["rows"] = len(synth[c["corpus_id"]])
    shared = EvalData(
        labels=list(labels.codes),
        names=list(labels.names),
        val=load_split(prep, "val"),
        test=load_split(prep, "test"),
        retrieval=load_split(prep, "train_pool") if t.retrieval_corpus == "train_pool" else None,
        thresholds=t.thresholds,
        threshold_min_positives=t.threshold_min_positives,
        retrieval_k=t.retrieval_k,
        cache_dir=str(ctx.store.run_dir / "cache" / "tokens"),
    )
    real = {k: load_split(prep, k) for k in regime_keys_of(cfg)}
    return TrialInputs(shared=shared, real=real, corpora=synth), corpora


def _embed(
    ctx: StageContext, inputs: TrialInputs, families: dict[str, Any], cells: list[TrialCell]
) -> None:
    """Every distinct text embedded once per distinct encoder that the cells' families read
    (and the fidelity curriculum's); cache hits for what the fidelity stage embedded."""
    from orchestrator.embeddings import embed_texts, embedding_cache_dir
    from orchestrator.ray_runtime import ensure_ray
    from tasks.trials.inputs import Embeddings, row_fidelity

    encoders: dict[EncoderKey, EncoderConfig] = {}
    for name in dict.fromkeys(c.family for c in cells):
        family = build_family(families[name])
        if family.needs_embeddings():
            encoders.setdefault(EncoderKey.of(family.encoder), family.encoder)
    curriculum = "curriculum_fidelity" in _section(ctx.cfg).orderings
    if curriculum:
        encoders.setdefault(EncoderKey.of(default_encoder(ctx.cfg)), default_encoder(ctx.cfg))
    if not encoders or not cells:
        return
    texts = inputs.texts()
    index = {t: i for i, t in enumerate(texts)}
    ensure_ray(ctx.cfg.resources, ctx.cfg.serve.ingress)
    for key, enc in encoders.items():
        console.print(
            f"trials: embeddings of {len(texts)} distinct texts "
            f"({key.model}, {key.max_length} tokens)"
        )
        vectors = embed_texts(texts, enc, embedding_cache_dir(ctx.store.run_dir))
        inputs.embeddings[key] = Embeddings(key, index, vectors)
    if curriculum:
        inputs.fidelity = row_fidelity(
            inputs, inputs.embeddings[EncoderKey.of(default_encoder(ctx.cfg))]
        )


def _guard(cfg: StudyConfig, inputs: TrialInputs, cuda: bool) -> list[dict]:
    """Numerics guard per fine-tuned family: logits of each precision x attention vs fp32 eager.

    With GPU trials it runs as a Ray task on a GPU worker (with the trials' custom resources),
    where the fine-tunes will run; otherwise here, on the CPU."""
    t = _section(cfg)
    if not t.numerics_guard.enabled:
        return []
    texts = inputs.shared.val.text.astype(str).tolist()[:8]
    fams = [f for f in t.families if build_family(f).numerics]
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

        ensure_ray(cfg.resources, cfg.serve.ingress)
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


def _keys(ctx: StageContext, cells: list[TrialCell], families: dict[str, Any]) -> dict[str, str]:
    """Trial id -> its `trial_key`: the cell, its family's settings, the trial settings of the
    stage that change a trial's output, and the input stages' fingerprints."""
    from orchestrator import __version__

    t = _section(ctx.cfg)
    upstream = {}
    for stage in ctx.inputs:
        manifest = ctx.store.manifest(stage)
        upstream[stage] = manifest.fingerprint if manifest is not None else ""
    common = {
        "thresholds": [t.thresholds, t.threshold_min_positives],
        "retrieval": [t.retrieval_corpus, t.retrieval_k],
        "version": __version__,
    }
    fid_encoder = EncoderKey.of(default_encoder(ctx.cfg))
    out = {}
    for c in cells:
        extra = dict(common)
        if c.arm == "filtered":
            extra["filter_min_overlap"] = t.filter_min_overlap
        if c.ordering == "curriculum_fidelity":
            extra["fidelity_encoder"] = list(fid_encoder)
        out[c.trial_id] = trial_key(c, families[c.family], upstream, extra)
    return out


def _reuse(ctx: StageContext, cells: list[TrialCell], keys: dict[str, str]) -> dict[str, TrialRow]:
    """The previous output's finished trials whose key is unchanged: their checkpoints and
    predictions hard-linked into this output (copied where links are refused), never retrained."""
    previous = ctx.store.stage_dir("trials")
    if ctx.force:
        return {}
    try:
        table = load_results(previous)
    except FileNotFoundError:
        return {}
    if "trial_key" not in table.columns:
        return {}
    done = {
        str(r["trial_id"]): TrialRow.from_dict(r)
        for r in table.to_dict("records")
        if r.get("status") == "ok" and r.get("trial_key")
    }
    out = {}
    for c in cells:
        row = done.get(c.trial_id)
        ckpt, pred = checkpoint_path(previous, c.trial_id), predictions_path(previous, c.trial_id)
        if row is None or row.trial_key != keys[c.trial_id]:
            continue
        if not (ckpt.is_dir() and pred.is_file()):
            continue
        shutil.copytree(ckpt, checkpoint_path(ctx.out_dir, c.trial_id), copy_function=_link)
        _link(pred, predictions_path(ctx.out_dir, c.trial_id))
        out[c.trial_id] = row
    return out


def _link(src: str | Path, dst: str | Path) -> None:
    """A hard link (no bytes copied); a copy where the filesystem refuses links."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _run(
    ctx: StageContext, cells: list[TrialCell], inputs: TrialInputs, families: dict[str, Any]
) -> dict:
    from orchestrator.ray_runtime import ensure_ray
    from orchestrator.trials_tune import GridRun, run_grid

    if not cells:
        return {}
    cfg, t = ctx.cfg, _section(ctx.cfg)
    # Ray Train V2 (the TorchTrainer inside a Tune trial) is read when workers start.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ensure_ray(cfg.resources, cfg.serve.ingress)
    shared = cfg.resources.storage_path
    storage = shared or str((ctx.work_dir / "tune").resolve())
    # Ray Train runs (a fine-tune's workers write there, its trial reads back) beside Tune's on
    # shared storage when there is one: on a cluster the two may sit on different nodes.
    train_storage = (
        f"{shared.rstrip('/')}/train-{ctx.fingerprint[:12]}"
        if shared
        else str((ctx.work_dir / "train").resolve())
    )
    run = GridRun(
        done_dir=str(ctx.work_dir / "done"),
        train_storage=train_storage,
        settings=TrialSettings(
            cpus=t.resources.cpus, gpus=t.resources.gpus, custom=dict(t.resources.custom)
        ),
        # With shared storage the cluster may span nodes whose disks the driver cannot read:
        # trials then send their folders through Tune's checkpoints (see GridRun.transport).
        transport=shared is not None,
    )
    return run_grid(
        cells,
        inputs,
        families,
        run,
        storage_path=storage,
        name=f"trials-{ctx.fingerprint[:12]}",
        max_concurrent=t.resources.max_concurrent,
        reuse_actors=t.resources.reuse_actors,
        max_failures=t.max_failures,
        progress_metric=t.select_metric,
    )


def _assemble(
    ctx: StageContext,
    cells: list[TrialCell],
    outcomes: dict,
    reused: dict[str, TrialRow],
    flags: dict,
    keys: dict[str, str],
) -> list[TrialRow]:
    """One row per cell; each finished trial's checkpoint and predictions moved (renamed, not
    copied) from its done marker to checkpoints/<trial_id>/ and predictions/<trial_id>.npz.

    A kill after some moves leaves those markers incomplete: a rerun trains them again."""
    from orchestrator.trials_tune import collect

    done_dir = ctx.work_dir / "done"
    rows = []
    for c in cells:
        outcome = outcomes.get(c.trial_id)
        if c.status == "skipped":
            row = cell_row(c, status="skipped", reason=c.reason)
        elif c.trial_id in reused:
            row = reused[c.trial_id]
        elif (found := collect(done_dir, c.trial_id, outcome)) is not None:
            row = found
            marker = done_dir / c.trial_id
            target = checkpoint_path(ctx.out_dir, c.trial_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(marker / CLASSIFIER, target)
            pred = predictions_path(ctx.out_dir, c.trial_id)
            pred.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(marker / PREDICTIONS, pred)
        else:
            reason = (outcome.error if outcome is not None else "") or "no result reported"
            row = cell_row(c, status="failed", reason=reason)
        if row.status == "ok":
            row.checkpoint = str(checkpoint_path(Path(), c.trial_id))
        flag = flags.get((c.family, c.precision, c.attention), {})
        row.numerics_flag = bool(flag.get("flagged", False))
        row.trial_key = keys[c.trial_id]
        rows.append(row)
    return rows


def _note(ok: pd.DataFrame) -> str:
    if ok.empty:
        return "no trial finished"
    # In grid order, not ranked: which arm is "best" is the report's call, made on validation.
    by_arm = ok.groupby("arm", sort=False)[["val_micro_f1", "test_micro_f1"]].mean()
    return "; ".join(
        f"{arm}: micro-F1 val {v.val_micro_f1:.3f} / test {v.test_micro_f1:.3f}"
        for arm, v in by_arm.iterrows()
    )
