"""Diversity of a corpus: distinct n-grams, embedding dispersion, near-duplicate rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.text import (
    NEAR_DUP_NUM_PERM,
    NEAR_DUP_SHINGLE,
    near_duplicate_pairs,
    ngrams,
    normalize_text,
    words,
)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique word n-grams over all n-grams of the corpus (0 when there are none)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        grams = list(ngrams(words(text), n))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def dispersion(emb: np.ndarray) -> float:
    """Mean pairwise cosine distance of the rows, in O(n d).

    For unit rows e_i, sum_{i != j} e_i . e_j = ||sum_i e_i||^2 - n, so no pair is formed.
    """
    n = len(emb)
    if n < 2:
        raise ValueError(f"dispersion needs at least 2 rows, got {n}")
    e = np.asarray(emb, np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.where(norms > 0, norms, 1.0)
    total = e.sum(axis=0)
    mean_cos = (total @ total - float((e * e).sum())) / (n * (n - 1))
    return float(1.0 - mean_cos)


def near_duplicate_rate(
    texts: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = NEAR_DUP_NUM_PERM,
    shingle: int = NEAR_DUP_SHINGLE,
    seed: int = 1,
) -> dict:
    """Share of rows that have an exact or a near duplicate (word-shingle Jaccard >= threshold).

    Both rows of a pair count. The pairs are those of `tasks.text.near_duplicate_pairs`, the
    test the generation filter applies, so the two agree on what a near duplicate is.
    """
    n = len(texts)
    if n == 0:
        return {"exact_duplicate_rate": 0.0, "near_duplicate_rate": 0.0}
    normalized = [normalize_text(t) for t in texts]
    first: dict[str, int] = {}
    exact = np.zeros(n, dtype=bool)
    for i, t in enumerate(normalized):
        if t in first:
            exact[i] = exact[first[t]] = True
        else:
            first[t] = i
    near = exact.copy()
    pairs = near_duplicate_pairs(texts, threshold, shingle=shingle, num_perm=num_perm, seed=seed)
    for i, j, _ in pairs:
        near[i] = near[j] = True
    return {
        "exact_duplicate_rate": float(exact.mean()),
        "near_duplicate_rate": float(near.mean()),
    }
