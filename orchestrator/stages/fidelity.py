"""Stage `fidelity`: how far each synthetic corpus is from its regime's real data, and leakage.

A corpus is compared with the real rows of its own regime draw (`regime_key` in corpora.json).

Reads prepare's regimes, val and test and generate's corpora; embeds every text once through the
shared embedding cache (Ray Data encoder actors); writes per corpus `fidelity.json` and
`per_label.parquet`, and one `summary.parquet` row per corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from config import StudyConfig
from orchestrator.cache import write_json_atomic
from orchestrator.stages.base import Stage, StageContext, StageOutput, console

SUMMARY_COLUMNS = [
    "corpus_id",
    "regime",
    "draw",
    "generator",
    "strategy",
    "variant",
    "n_synthetic",
    "n_real",
    "status",
    "reason",
    "mmd2",
    "mmd_p",
    "mmd_estimator",
    "frechet",
    "precision",
    "recall",
    "density",
    "coverage",
    "label_js",
    "distinct_2",
    "dispersion",
    "dispersion_real",
    "near_duplicate_rate",
    "name_mention_rate",
    "name_mention_rate_real",
    "code_mention_rate",
    "code_mention_rate_real",
    "keyword_rate",
    "keyword_rate_real",
    "nearest_train_mean",
    "nearest_train_share_above",
    "nearest_heldout_max",
    "copy_train_rate",
    "copy_heldout_rate",
]


class FidelityStage(Stage):
    name = "fidelity"
    depends_on = ("prepare", "generate")

    def enabled(self, cfg: StudyConfig) -> bool:
        # Without a generation section there is no synthetic corpus to score.
        gen = cfg.generation is not None and cfg.generation.enabled
        return gen and cfg.fidelity is not None and cfg.fidelity.enabled

    def config_subset(self, cfg: StudyConfig) -> dict[str, Any]:
        fid = _section(cfg).model_dump(mode="json")
        # How the encoder is scheduled does not change a single vector.
        fid["encoder"] = {k: fid["encoder"][k] for k in ("model", "max_length")}
        fid.pop("enabled")
        return fid

    def run(self, ctx: StageContext) -> StageOutput:
        from tasks.corpus import read_labels

        fid = _section(ctx.cfg)
        prep, gen = ctx.input_dir("prepare"), ctx.input_dir("generate")
        labels = read_labels(prep)
        corpora = read_corpora(gen)
        real = _load_real(prep, sorted({regime_key_of(c) for c in corpora}))
        heldout = pd.concat([real["val"], real["test"]], ignore_index=True)
        synth = {c["corpus_id"]: _read_corpus(gen, c) for c in corpora}

        emb = _embed_all(ctx, synth, real, heldout)
        params = _params(fid)
        rows, per_corpus_rows = [], {}
        keywords_by_regime: dict[str, dict[str, list[str]]] = {}
        for meta in corpora:
            # `regime` below is the regime key: the corpus's own draw of its regime.
            cid, regime = meta["corpus_id"], regime_key_of(meta)
            if regime not in keywords_by_regime:
                keywords_by_regime[regime] = _keywords(real[regime], labels, fid.keywords_per_label)
            row = {k: meta.get(k) for k in ("corpus_id", "regime", "generator", "strategy")}
            row.update(variant=meta.get("variant"), draw=int(meta.get("draw", 0)))
            result = _measure_one(
                synth[cid], real[regime], heldout, emb, labels, params, keywords_by_regime[regime]
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
        summary = pd.DataFrame.from_records(rows).reindex(columns=SUMMARY_COLUMNS)
        summary.to_parquet(ctx.out_dir / "summary.parquet", index=False)
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


def read_corpora(gen_dir: Path) -> list[dict]:
    """The generate stage's corpus list (corpora.json), each with a resolvable `path`."""
    path = gen_dir / "corpora.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the generate stage first")
    corpora = json.loads(path.read_text())
    for i, c in enumerate(corpora):
        missing = [k for k in ("corpus_id", "regime") if k not in c]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {missing}")
    return corpora


def regime_key_of(meta: dict) -> str:
    """The regime key of a corpora.json entry (entries written before draws: the regime)."""
    return str(meta.get("regime_key") or meta["regime"])


def _read_corpus(gen_dir: Path, meta: dict) -> pd.DataFrame:
    from tasks.corpus import read_table

    given = Path(meta.get("path") or f"corpora/{meta['corpus_id']}.parquet")
    return read_table(given if given.is_absolute() else gen_dir / given)


def _load_real(prep: Path, regimes: list[str]) -> dict[str, pd.DataFrame]:
    from tasks.corpus import read_table, split_path

    out = {}
    for name in [*regimes, "val", "test"]:
        path = split_path(prep, name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no prepared split or regime {name!r}")
        out[name] = read_table(path)
    return out


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
    ensure_ray(ctx.cfg.resources)
    vecs = embed_texts(texts, enc, embedding_cache_dir(ctx.store.run_dir))
    return dict(zip(texts, vecs, strict=True))


def _params(fid):
    from tasks.fidelity import FidelityParams

    return FidelityParams(
        permutations=fid.mmd.permutations,
        bandwidth_multipliers=tuple(fid.mmd.bandwidth_multipliers),
        block_size=fid.mmd.block_size,
        linear_time_above=fid.mmd.linear_time_above,
        per_label_min_rows=fid.mmd.per_label_min_rows,
        per_label_permutations=fid.mmd.per_label_permutations,
        knn_k=fid.knn_k,
        copy_ngram=fid.copy_ngram,
        near_duplicate_threshold=fid.near_duplicate_threshold,
        near_copy_similarity=fid.near_copy_similarity,
        seed=fid.seed,
    )


def _keywords(real: pd.DataFrame, labels, per_label: int) -> dict[str, list[str]]:
    from tasks.fidelity.leakage import top_keywords

    return top_keywords(list(real.text), list(real.labels), labels.codes, per_label)


def _measure_one(synth, real, heldout, emb, labels, params, keywords):
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
    return measure_corpus(sides, params, keywords)


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
