"""Stage `generate`: synthetic corpora per regime x draw x generator x strategy x variant.

Plans every prompt once at the largest volume (`tasks.prompts`), generates them per generator
with one Ray Data + vLLM pipeline (`orchestrator.generation`, resumable from the stage's work
folder), then cleans and filters each corpus (`tasks.filters`) and writes `corpora/`, `removed/`
and `corpora.json` (docs/artifacts.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from rich.table import Table

from config import StudyConfig
from config.generation import GenerationConfig
from orchestrator.stages.base import Stage, StageContext, StageOutput, console
from tasks.artifacts import CORPUS_COLUMNS


class GenerateStage(Stage):
    name = "generate"
    reads = ("prepare",)
    # Regimes default to data.regimes, which the prepare fingerprint covers.
    fields = ("generation",)

    def enabled(self, cfg: StudyConfig) -> bool:
        return cfg.generation is not None and cfg.generation.enabled

    def kept(self, ctx: StageContext) -> str:
        """The rows already generated, per generator (a rerun generates only the rest)."""
        from orchestrator.generation import ShardStore

        root = ctx.work_dir / "shards"
        counts = {}
        for g in _section(ctx.cfg).generators:
            if (root / g.name).is_dir():
                done = ShardStore(root / g.name).read()
                counts[g.name] = int(done["status"].eq("ok").sum())
        n = sum(counts.values())
        if not n:
            return ""
        per = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        return f"{n} generated row{'s' * (n != 1)} ({per})"

    def run(self, ctx: StageContext) -> StageOutput:
        from tasks.artifacts import CorpusId, load_labels, load_split, save_corpora, save_corpus

        gen_cfg = _section(ctx.cfg)
        prep = ctx.input_dir("prepare")
        labels = load_labels(prep)
        label_names = dict(zip(labels.codes, labels.names, strict=True))
        keys = ctx.cfg.generation_regime_keys()
        real = {k: load_split(prep, k) for k in keys}
        heldout = pd.concat(
            [load_split(prep, s)[["id", "text"]] for s in ("val", "test")],
            ignore_index=True,
        )
        plans = plan_all(gen_cfg, real, label_names)
        prompts = [p for rows in plans.values() for p in rows]
        corpora, stats, totals = [], [], {"generated": 0, "failed": 0, "output_tokens": 0}
        engines = []
        for g in gen_cfg.generators:
            # One engine at a time: the previous generator's actors and placement group are gone
            # and its CPUs free before the next engine starts (recorded for `synthpat status`).
            engines.append({"generator": g.name, **engine_slot(ctx)})
            results = generate_rows(prompts, g, ctx, gen_cfg.max_retries, gen_cfg.pipeline_restarts)
            by_id = results.set_index("id")
            for (key, strategy, variant), rows in plans.items():
                regime, draw = keys[key]
                cid = str(CorpusId(key, g.name, strategy, variant))
                table = corpus_rows(rows, by_id, g.name, label_names, regime=regime, draw=draw)
                kept, removed, counts = _filter(table, gen_cfg, heldout)
                path = save_corpus(ctx.out_dir, cid, kept, removed)
                corpora.append(
                    {
                        "corpus_id": cid,
                        "regime": regime,
                        "draw": draw,
                        "regime_key": key,
                        "generator": g.name,
                        "strategy": strategy,
                        "variant": variant,
                        "n_real": len(real[key]),
                        "planned": len(rows),
                        "rows": len(kept),
                        "removed": len(removed),
                        "removed_by_filter": counts,
                        "ratios": list(gen_cfg.ratios),
                        "path": path,
                    }
                )
                stats.append((cid, len(rows), len(kept), counts))
            totals["generated"] += len(results)
            totals["failed"] += int(results["status"].ne("ok").sum())
            totals["output_tokens"] += int(results["output_tokens"].sum())
        save_corpora(ctx.out_dir, corpora)
        _print(stats)
        rows = {"corpora": len(corpora), **totals, "kept": sum(c["rows"] for c in corpora)}
        return StageOutput(rows=rows, summary={"corpora": corpora, "engines": engines})


def _section(cfg: StudyConfig) -> GenerationConfig:
    if cfg.generation is None:
        raise ValueError("generation: the config has no `generation` section")
    return cfg.generation


def plan_all(
    gen_cfg: GenerationConfig, real: Mapping[str, pd.DataFrame], label_names: Mapping[str, str]
) -> dict[tuple[str, str, str], list]:
    """Every corpus's prompts, keyed by (regime key, strategy, variant); the same for each
    generator. `real` is keyed by regime key: the key names the rows and seeds them, so each
    draw of a regime gets its own prompts and sampling seeds (draw 0 those of a single draw)."""
    from tasks.prompts import plan_prompts

    plans = {}
    for key, df in real.items():
        for strategy in gen_cfg.strategies:
            for variant in gen_cfg.variants:
                plans[(key, strategy, variant)] = plan_prompts(
                    key,
                    df,
                    label_names,
                    strategy,
                    variant,
                    n_rows=gen_cfg.planned_rows(len(df)),
                    exemplars=gen_cfg.exemplars,
                    max_exemplar_words=gen_cfg.exemplar_words,
                    rare_label_floor=gen_cfg.rare_label_floor,
                    seed=gen_cfg.seed,
                )
    return plans


def generate_rows(
    prompts: list, gen: Any, ctx: StageContext, max_retries: int, pipeline_restarts: int = 3
) -> pd.DataFrame:
    """One generator's results for all prompts, resumable under the stage's work folder."""
    from orchestrator.generation import run_generation, templater_soon
    from orchestrator.ray_runtime import cluster_address, ensure_ray

    templater = templater_soon(gen)  # loads while Ray starts
    ensure_ray(ctx.cfg.resources, ctx.cfg.serve.ingress)
    return run_generation(
        prompts,
        gen,
        ctx.work_dir / "shards" / gen.name,
        max_retries,
        pipeline_restarts=pipeline_restarts,
        # A Ray that synthpat started here cannot grow; a joined cluster may autoscale.
        fixed_cluster=cluster_address(ctx.cfg.resources) is None,
        templater=templater,
    )


#: The longest the stage waits for a finished engine's resources to come back.
RELEASE_TIMEOUT_S = 60.0


def engine_slot(ctx: StageContext, timeout_s: float = RELEASE_TIMEOUT_S) -> dict[str, Any]:
    """Wait until no placement group of an earlier engine is alive and (on a local Ray, which
    nothing else uses) every CPU is free again; what was free when the next engine starts.

    Ray Data tears a finished pipeline's actors down asynchronously: without the wait the next
    generator's engine could queue behind the last one's, or both hold memory at once."""
    import time

    import ray
    from ray.util import placement_group_table

    from orchestrator.ray_runtime import cluster_address, ensure_ray

    ensure_ray(ctx.cfg.resources, ctx.cfg.serve.ingress)
    local = cluster_address(ctx.cfg.resources) is None
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in placement_group_table().values() if p.get("state") != "REMOVED"]
        total = ray.cluster_resources().get("CPU", 0.0)
        free = ray.available_resources().get("CPU", 0.0)
        released = not alive and (not local or free >= total - 1e-6)
        if released or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not released:
        console.print(
            f"[yellow]generate: an earlier engine still holds resources after {timeout_s:.0f}s "
            f"({len(alive)} placement group(s) alive, {free:g} of {total:g} CPUs free)[/yellow]"
        )
    return {"placement_groups_alive": len(alive), "cpus_free": free, "cpus_total": total}


def corpus_rows(
    rows: list,
    by_id: pd.DataFrame,
    generator: str,
    label_names: Mapping[str, str],
    regime: str | None = None,
    draw: int = 0,
) -> pd.DataFrame:
    """Join one corpus's plan with its generation results: cleaned text plus provenance.

    `regime`, `draw`: the base regime and draw the plan was made for (the plan's rows carry the
    regime key); default: the plan's regime, draw 0."""
    from tasks.prompts import postprocess

    records = []
    for p in rows:
        r = by_id.loc[p.row_id]
        text = postprocess(r["text"], p, label_names) if r["status"] == "ok" else ""
        records.append(
            {
                "id": f"{p.regime}__{generator}__{p.strategy}__{p.variant}__{p.volume_rank:06d}",
                "text": text,
                "labels": list(p.target_labels),
                "source": "synthetic",
                "regime": regime or p.regime,
                "draw": draw,
                "generator": generator,
                "strategy": p.strategy,
                "variant": p.variant,
                "prompt_hash": p.template_hash,
                "seed": int(p.seed),
                "exemplar_ids": list(p.exemplar_ids),
                "source_id": p.source_id,
                "target_labels": list(p.target_labels),
                "prompt_tokens": int(r["prompt_tokens"]),
                "output_tokens": int(r["output_tokens"]),
                "gen_seconds": float(r["gen_seconds"]),
                "attempts": int(r["attempts"]),
                "finish_reason": r["finish_reason"],
                "volume_rank": int(p.volume_rank),
                "status": r["status"],
                "error": r["error"],
            }
        )
    return pd.DataFrame.from_records(records)


def _filter(
    table: pd.DataFrame, gen_cfg: GenerationConfig, heldout: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    from tasks.filters import filter_corpus

    res = filter_corpus(table, gen_cfg.filters, heldout)
    kept = res.kept[CORPUS_COLUMNS].reset_index(drop=True)
    return kept, res.removed.reset_index(drop=True), dict(res.counts)


def _print(stats: list[tuple[str, int, int, dict[str, int]]]) -> None:
    t = Table(title="generate: rows per corpus")
    for col in ("corpus", "planned", "kept", "removed by filter"):
        t.add_column(col, justify="left" if col in ("corpus", "removed by filter") else "right")
    for cid, planned, kept, counts in stats:
        why = ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "-"
        t.add_row(cid, str(planned), str(kept), why)
    console.print(t)
