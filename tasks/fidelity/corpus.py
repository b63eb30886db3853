"""Every fidelity, diversity and leakage measure of one synthetic corpus against its regime."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from config.fidelity import FidelityConfig
from tasks.fidelity.distribution import frechet_distance, label_divergence, prdc
from tasks.fidelity.diversity import dispersion, distinct_n, near_duplicate_rate
from tasks.fidelity.leakage import (
    keyword_audit,
    nearest_similarity,
    ngram_copy_rate,
    similarity_summary,
)
from tasks.fidelity.mmd import median_bandwidth, mmd_test


@dataclass
class CorpusSides:
    """Texts, labels and embeddings of the synthetic corpus, the regime's real training rows,
    and the held-out real rows (val and test)."""

    synth_texts: list[str]
    synth_labels: list[list[str]]
    synth_emb: np.ndarray
    real_texts: list[str]
    real_labels: list[list[str]]
    real_emb: np.ndarray
    heldout_texts: list[str]
    heldout_emb: np.ndarray
    codes: Sequence[str] = field(default_factory=tuple)
    names: Sequence[str] = field(default_factory=tuple)


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def per_label_mmd(sides: CorpusSides, cfg: FidelityConfig, bandwidth: float) -> pd.DataFrame:
    """MMD^2 and p of each label's synthetic rows against its real rows, where both have enough.

    The corpus-level bandwidth is reused: a median taken on a handful of rows is too noisy,
    and one bandwidth keeps the per-label numbers comparable.
    """
    records = []
    for j, code in enumerate(sides.codes):
        s_idx = [i for i, ls in enumerate(sides.synth_labels) if code in ls]
        r_idx = [i for i, ls in enumerate(sides.real_labels) if code in ls]
        rec = {"label": code, "mmd2": np.nan, "mmd_p": np.nan}
        if min(len(s_idx), len(r_idx)) >= cfg.mmd.per_label_min_rows:
            res = mmd_test(
                sides.synth_emb[s_idx],
                sides.real_emb[r_idx],
                cfg.mmd.bandwidth_multipliers,
                cfg.mmd.per_label_permutations,
                cfg.mmd.block_size,
                cfg.mmd.linear_time_above,
                cfg.seed + j + 1,
                bandwidth=bandwidth,
            )
            rec.update(mmd2=res.mmd2, mmd_p=res.p_value if res.p_value is not None else np.nan)
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=["label", "mmd2", "mmd_p"])


def measure_corpus(
    sides: CorpusSides, cfg: FidelityConfig, keywords: Mapping[str, Sequence[str]]
) -> tuple[dict, pd.DataFrame]:
    """All measures of one corpus under the `fidelity` section: a JSON-ready dict and the
    per-label table."""
    if len(sides.synth_texts) < 2:
        raise ValueError(f"a corpus needs at least 2 synthetic rows, got {len(sides.synth_texts)}")
    synth, real = sides.synth_emb, sides.real_emb
    bandwidth = median_bandwidth(synth, real, seed=cfg.seed)
    mmd = mmd_test(
        synth,
        real,
        cfg.mmd.bandwidth_multipliers,
        cfg.mmd.permutations,
        cfg.mmd.block_size,
        cfg.mmd.linear_time_above,
        cfg.seed,
        bandwidth=bandwidth,
        progress=max(len(synth), len(real)) > 4000,
    )
    k = cfg.knn_k
    manifold = (
        prdc(real, synth, k, cfg.mmd.block_size)
        if min(len(real), len(synth)) > k
        else dict.fromkeys(("precision", "recall", "density", "coverage"))
    )
    audit_table, audit = keyword_audit(
        sides.synth_texts,
        sides.synth_labels,
        sides.real_texts,
        sides.real_labels,
        sides.codes,
        sides.names,
        keywords,
    )
    sim_train = nearest_similarity(synth, real, cfg.mmd.block_size)
    out: dict = {
        "rows": {"synthetic": len(synth), "real": len(real), "heldout": len(sides.heldout_texts)},
        "mmd": mmd.to_dict(),
        "frechet": frechet_distance(synth, real),
        **manifold,
        "labels": label_divergence(sides.real_labels, sides.synth_labels, sides.codes),
        "diversity": {
            "synthetic": _diversity(sides.synth_texts, synth, cfg),
            "real": _diversity(sides.real_texts, real, cfg),
        },
        "keywords": audit,
        "memorization": {
            "nearest_train": similarity_summary(sim_train, cfg.near_copy_similarity),
            "copy_train": ngram_copy_rate(sides.synth_texts, sides.real_texts, cfg.copy_ngram),
            "copy_ngram": cfg.copy_ngram,
            "near_copy_similarity": cfg.near_copy_similarity,
        },
    }
    if len(sides.heldout_texts):
        sim_held = nearest_similarity(synth, sides.heldout_emb, cfg.mmd.block_size)
        out["memorization"]["nearest_heldout"] = similarity_summary(
            sim_held, cfg.near_copy_similarity
        )
        out["memorization"]["copy_heldout"] = ngram_copy_rate(
            sides.synth_texts, sides.heldout_texts, cfg.copy_ngram
        )
    per_label = audit_table.merge(per_label_mmd(sides, cfg, bandwidth), on="label")
    per_label.insert(2, "share_synthetic", per_label["n_synthetic"] / max(len(synth), 1))
    per_label.insert(3, "share_real", per_label["n_real"] / max(len(real), 1))
    return _json_ready(out), per_label


def _diversity(texts: list[str], emb: np.ndarray, cfg: FidelityConfig) -> dict:
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "dispersion": dispersion(emb) if len(emb) >= 2 else None,
        **near_duplicate_rate(texts, cfg.near_duplicate_rate_threshold, seed=cfg.seed + 1),
    }


def _json_ready(obj):
    """NaN becomes null and numpy scalars plain numbers, so fidelity.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return _finite(obj)
    return obj
