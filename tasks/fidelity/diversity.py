"""Diversity of a corpus: distinct n-grams, embedding dispersion, near-duplicate rate."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore), the unit of every n-gram here."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> Iterator[tuple[str, ...]]:
    """The word n-grams of a token list, in order."""
    return zip(*(tokens[i:] for i in range(n)), strict=False)


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


def _shingles(text: str, size: int) -> set[bytes]:
    toks = words(text)
    if len(toks) < size:
        return {" ".join(toks).encode()} if toks else set()
    return {" ".join(g).encode() for g in ngrams(toks, size)}


def near_duplicate_rate(
    texts: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 3,
    seed: int = 1,
) -> dict:
    """Share of rows that have an exact or a near duplicate (MinHash Jaccard >= threshold).

    Candidates come from MinHash LSH (datasketch) over word `shingle`-grams; each candidate pair
    is confirmed by its MinHash Jaccard estimate, so LSH false positives do not count.
    """
    from datasketch import MinHash, MinHashLSH

    n = len(texts)
    if n == 0:
        return {"exact_duplicate_rate": 0.0, "near_duplicate_rate": 0.0}
    normalized = [" ".join(words(t)) for t in texts]
    first: dict[str, int] = {}
    exact = np.zeros(n, dtype=bool)
    for i, t in enumerate(normalized):
        if t in first:
            exact[i] = exact[first[t]] = True
        else:
            first[t] = i
    hashes = MinHash.bulk([_shingles(t, shingle) for t in texts], num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    near = exact.copy()
    for i, mh in enumerate(hashes):
        for j in lsh.query(mh):
            if mh.jaccard(hashes[j]) >= threshold:
                near[i] = near[j] = True
        lsh.insert(i, mh)
    return {
        "exact_duplicate_rate": float(exact.mean()),
        "near_duplicate_rate": float(near.mean()),
    }
