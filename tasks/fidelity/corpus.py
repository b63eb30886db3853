"""Every fidelity, diversity and leakage measure of one synthetic corpus against its regime."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

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
class FidelityParams:
    """The knobs of the measures (the stage fills them from the `fidelity` config section)."""

    permutations: int = 1000
    bandwidth_multipliers: Sequence[float] = (1.0,)
    block_size: int = 2048
    linear_time_above: int = 50000
    per_label_min_rows: int = 10
    per_label_permutations: int = 200
    knn_k: int = 5
    copy_ngram: int = 8
    near_duplicate_threshold: float = 0.8
    near_copy_similarity: float = 0.95
    seed: int = 0


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


def per_label_mmd(sides: CorpusSides, params: FidelityParams, bandwidth: float) -> pd.DataFrame:
    """MMD^2 and p of each label's synthetic rows against its real rows, where both have enough.

    The corpus-level bandwidth is reused: a median taken on a handful of rows is too noisy,
    and one bandwidth keeps the per-label numbers comparable.
    """
    records = []
    for j, code in enumerate(sides.codes):
        s_idx = [i for i, ls in enumerate(sides.synth_labels) if code in ls]
        r_idx = [i for i, ls in enumerate(sides.real_labels) if code in ls]
        rec = {"label": code, "mmd2": np.nan, "mmd_p": np.nan}
        if min(len(s_idx), len(r_idx)) >= params.per_label_min_rows:
            res = mmd_test(
                sides.synth_emb[s_idx],
                sides.real_emb[r_idx],
                params.bandwidth_multipliers,
                params.per_label_permutations,
                params.block_size,
                params.linear_time_above,
                params.seed + j + 1,
                bandwidth=bandwidth,
            )
            rec.update(mmd2=res.mmd2, mmd_p=res.p_value if res.p_value is not None else np.nan)
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=["label", "mmd2", "mmd_p"])


def measure_corpus(
    sides: CorpusSides, params: FidelityParams, keywords: Mapping[str, Sequence[str]]
) -> tuple[dict, pd.DataFrame]:
    """All measures of one corpus: a JSON-ready dict and the per-label table."""
    if len(sides.synth_texts) < 2:
        raise ValueError(f"a corpus needs at least 2 synthetic rows, got {len(sides.synth_texts)}")
    synth, real = sides.synth_emb, sides.real_emb
    bandwidth = median_bandwidth(synth, real, seed=params.seed)
    mmd = mmd_test(
        synth,
        real,
        params.bandwidth_multipliers,
        params.permutations,
        params.block_size,
        params.linear_time_above,
        params.seed,
        bandwidth=bandwidth,
        progress=max(len(synth), len(real)) > 4000,
    )
    k = params.knn_k
    manifold = (
        prdc(real, synth, k, params.block_size)
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
    sim_train = nearest_similarity(synth, real, params.block_size)
    out: dict = {
        "rows": {"synthetic": len(synth), "real": len(real), "heldout": len(sides.heldout_texts)},
        "mmd": mmd.to_dict(),
        "frechet": frechet_distance(synth, real),
        **manifold,
        "labels": label_divergence(sides.real_labels, sides.synth_labels, sides.codes),
        "diversity": {
            "synthetic": _diversity(sides.synth_texts, synth, params),
            "real": _diversity(sides.real_texts, real, params),
        },
        "keywords": audit,
        "memorization": {
            "nearest_train": similarity_summary(sim_train, params.near_copy_similarity),
            "copy_train": ngram_copy_rate(sides.synth_texts, sides.real_texts, params.copy_ngram),
            "copy_ngram": params.copy_ngram,
            "near_copy_similarity": params.near_copy_similarity,
        },
    }
    if len(sides.heldout_texts):
        sim_held = nearest_similarity(synth, sides.heldout_emb, params.block_size)
        out["memorization"]["nearest_heldout"] = similarity_summary(
            sim_held, params.near_copy_similarity
        )
        out["memorization"]["copy_heldout"] = ngram_copy_rate(
            sides.synth_texts, sides.heldout_texts, params.copy_ngram
        )
    per_label = audit_table.merge(per_label_mmd(sides, params, bandwidth), on="label")
    per_label.insert(2, "share_synthetic", per_label["n_synthetic"] / max(len(synth), 1))
    per_label.insert(3, "share_real", per_label["n_real"] / max(len(real), 1))
    return _json_ready(out), per_label


def _diversity(texts: list[str], emb: np.ndarray, params: FidelityParams) -> dict:
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "dispersion": dispersion(emb) if len(emb) >= 2 else None,
        **near_duplicate_rate(texts, params.near_duplicate_threshold, seed=params.seed + 1),
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
