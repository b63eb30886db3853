"""Stage `fidelity`: how far each synthetic corpus is from its regime's real data, and leakage.

A corpus is compared with the real rows of its own regime draw (`regime_key` in corpora.json).

Reads prepare's regimes, val and test and generate's corpora; embeds every text once through the
shared embedding cache (Ray Data encoder actors); writes per corpus `fidelity.json` and
`per_label.parquet`, and one `summary.parquet` row per corpus.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table

from config import StudyConfig
from orchestrator.console import StageProgress
from orchestrator.stages.base import Stage, StageContext, StageOutput, console
from tasks.files import write_json_atomic


class FidelityStage(Stage):
    name = "fidelity"
    reads = ("prepare", "generate")
    # How the encoder is scheduled does not change a vector (NOT_FINGERPRINTED in the schema).
    fields = ("fidelity",)

    def enabled(self, cfg: StudyConfig) -> bool:
        # Without a generation section there is no synthetic corpus to score.
        gen = cfg.generation is not None and cfg.generation.enabled
        return gen and cfg.fidelity is not None and cfg.fidelity.enabled

    def run(self, ctx: StageContext) -> StageOutput:
        from tasks.artifacts import (
            load_corpora,
            load_corpus,
            load_labels,
            load_split,
            save_fidelity_summary,
        )

        fid = _section(ctx.cfg)
        prep, gen = ctx.input_dir("prepare"), ctx.input_dir("generate")
        labels = load_labels(prep)
        corpora = load_corpora(gen)
        keys = sorted({c["regime_key"] for c in corpora})
        real = {name: load_split(prep, name) for name in [*keys, "val", "test"]}
        heldout = pd.concat([real["val"], real["test"]], ignore_index=True)
        synth = {c["corpus_id"]: load_corpus(gen, c) for c in corpora}

        emb = _embed_all(ctx, synth, real, heldout)
        rows, per_corpus_rows = [], {}
        keywords_by_regime: dict[str, dict[str, list[str]]] = {}
        bar = StageProgress("fidelity", total=len(corpora), unit="corpora")
        for meta in corpora:
            # `regime` below is the regime key: the corpus's own draw of its regime.
            cid, regime = meta["corpus_id"], meta["regime_key"]
            if regime not in keywords_by_regime:
                keywords_by_regime[regime] = _keywords(real[regime], labels, fid.keywords_per_label)
            row = {k: meta.get(k) for k in ("corpus_id", "regime", "generator", "strategy")}
            row.update(variant=meta.get("variant"), draw=int(meta.get("draw", 0)))
            result = _measure_one(
                synth[cid], real[regime], heldout, emb, labels, fid, keywords_by_regime[regime]
            )
            row.update(n_synthetic=len(synth[cid]), n_real=len(real[regime]))
            per_corpus_rows[cid] = len(synth[cid])
            if isinstance(result, str):
                row.update(status="skipped", reason=result)
                console.print(f"[yellow]{cid}: skipped[/yellow]: {result}")
            else:
                report, per_label = result
                report.update(corpus={k: meta.get(k) for k in meta if k != "path"})
                report["audited_keywords"] = keywords_by_regime[regime]
                write_json_atomic(ctx.out_dir / cid / "fidelity.json", report)
                per_label.to_parquet(ctx.out_dir / cid / "per_label.parquet", index=False)
                row.update(status="ok", reason="", **_summary_row(report))
            rows.append(row)
            bar.update(1)
        bar.close()
        summary = save_fidelity_summary(ctx.out_dir, rows)
        _print_summary(summary)
        note = status_note(summary)
        return StageOutput(
            rows={"corpora": len(corpora), "scored": int((summary.status == "ok").sum())},
            summary={"status_note": note, "corpora": _records(summary)},
        )


def _section(cfg: StudyConfig):
    if cfg.fidelity is None:
        raise ValueError("fidelity: the config has no `fidelity` section")
    return cfg.fidelity


def _embed_all(
    ctx: StageContext, synth: dict[str, pd.DataFrame], real: dict, heldout: pd.DataFrame
) -> dict[str, np.ndarray]:
    """One embedding request for every distinct text; vectors looked up by text afterwards."""
    from orchestrator.embeddings import embed_texts, embedding_cache_dir
    from orchestrator.ray_runtime import ensure_ray

    texts = sorted(
        {
            *(t for df in synth.values() for t in df.text),
            *(t for df in real.values() for t in df.text),
            *heldout.text,
        }
    )
    enc = _section(ctx.cfg).encoder
    console.print(f"fidelity: embedding {len(texts)} distinct texts with {enc.model}")
    ensure_ray(ctx.cfg.resources, ctx.cfg.serve.ingress)
    vecs = embed_texts(texts, enc, embedding_cache_dir(ctx.store.run_dir))
    return dict(zip(texts, vecs, strict=True))


def _keywords(real: pd.DataFrame, labels, per_label: int) -> dict[str, list[str]]:
    from tasks.fidelity.leakage import top_keywords

    return top_keywords(list(real.text), list(real.labels), labels.codes, per_label)


def _measure_one(synth, real, heldout, emb, labels, fid, keywords):
    """(fidelity dict, per-label table), or the reason the corpus cannot be scored."""
    from tasks.fidelity import CorpusSides, measure_corpus

    if len(synth) < 2 or len(real) < 2:
        return f"too few rows (synthetic {len(synth)}, real {len(real)}; need 2 each)"

    def stack(df: pd.DataFrame) -> np.ndarray:
        return np.stack([emb[t] for t in df.text]) if len(df) else np.zeros((0, 1), np.float32)

    sides = CorpusSides(
        synth_texts=list(synth.text),
        synth_labels=list(synth.labels),
        synth_emb=stack(synth),
        real_texts=list(real.text),
        real_labels=list(real.labels),
        real_emb=stack(real),
        heldout_texts=list(heldout.text),
        heldout_emb=stack(heldout),
        codes=labels.codes,
        names=labels.names,
    )
    return measure_corpus(sides, fid, keywords)


def _summary_row(r: dict) -> dict:
    mem, kw = r["memorization"], r["keywords"]
    return {
        "mmd2": r["mmd"]["mmd2"],
        "mmd_p": r["mmd"]["p_value"],
        "mmd_estimator": r["mmd"]["estimator"],
        "frechet": r["frechet"],
        "precision": r["precision"],
        "recall": r["recall"],
        "density": r["density"],
        "coverage": r["coverage"],
        "label_js": r["labels"]["label_js"],
        "distinct_2": r["diversity"]["synthetic"]["distinct_2"],
        "dispersion": r["diversity"]["synthetic"]["dispersion"],
        "dispersion_real": r["diversity"]["real"]["dispersion"],
        "near_duplicate_rate": r["diversity"]["synthetic"]["near_duplicate_rate"],
        "name_mention_rate": kw["name_mention_rate"],
        "name_mention_rate_real": kw["name_mention_rate_real"],
        "code_mention_rate": kw["code_mention_rate"],
        "code_mention_rate_real": kw["code_mention_rate_real"],
        "keyword_rate": kw["keyword_rate"],
        "keyword_rate_real": kw["keyword_rate_real"],
        "nearest_train_mean": mem["nearest_train"]["mean"],
        "nearest_train_share_above": mem["nearest_train"]["share_above"],
        "nearest_heldout_max": mem.get("nearest_heldout", {}).get("max"),
        "copy_train_rate": mem["copy_train"]["ngram_rate"],
        "copy_heldout_rate": mem.get("copy_heldout", {}).get("ngram_rate"),
    }


def status_note(summary: pd.DataFrame, shown: int = 3) -> str:
    """A one-line headline for `synthpat status`: MMD^2 and p of the first corpora."""
    ok = summary[summary.status == "ok"]
    if ok.empty:
        return f"no corpus scored ({len(summary)} skipped)"
    parts = [
        f"{r.corpus_id}: MMD2={r.mmd2:.4f}" + (f" p={r.mmd_p:.3g}" if pd.notna(r.mmd_p) else "")
        for r in ok.head(shown).itertuples()
    ]
    more = f"; +{len(ok) - shown} more" if len(ok) > shown else ""
    return "; ".join(parts) + more


def _records(summary: pd.DataFrame) -> list[dict]:
    cols = ["corpus_id", "status", "mmd2", "mmd_p", "frechet", "precision", "recall"]
    out = summary[cols].astype(object).where(summary[cols].notna(), None)
    return out.to_dict(orient="records")


def _print_summary(summary: pd.DataFrame) -> None:
    t = Table(title="fidelity")
    cols = ("corpus", "rows", "MMD2", "p", "Frechet", "prec", "rec", "dens", "cov", "copy@train")
    for col in cols:
        t.add_column(col, justify="left" if col == "corpus" else "right")

    def f(v, fmt="{:.3f}"):
        return fmt.format(v) if pd.notna(v) else ""

    for r in summary.itertuples():
        t.add_row(
            r.corpus_id,
            str(r.n_synthetic),
            f(r.mmd2, "{:.4f}"),
            f(r.mmd_p, "{:.3g}"),
            f(r.frechet),
            f(r.precision),
            f(r.recall),
            f(r.density),
            f(r.coverage),
            f(r.copy_train_rate),
        )
    console.print(t)
