"""Word tokens, text normalization, word n-grams and MinHash near-duplicate pairs.

Every dedup key, n-gram count and near-duplicate test in the project goes through this module, so
the prepare-stage dedup, the generation filters and the fidelity measures agree on what "the same
text" and "a copied n-gram" mean. It imports only the standard library (datasketch lazily), so the
filters can use it without pulling in the fidelity measures' scipy and scikit-learn.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

# Letters and digits; everything else, the underscore included, separates words. An underscore is
# markup in generated text (`_emphasis_`, `__bold__` left over) far more often than part of a
# word, so "a _sealed_ valve" and "a sealed valve" are the same text.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SPACE = re.compile(r"\s+")

NEAR_DUP_SHINGLE = 3  # word 3-grams: short abstracts still give ~100 shingles
NEAR_DUP_NUM_PERM = 128


def words(text: str) -> list[str]:
    """Lower-cased word tokens (runs of letters and digits), the unit of every n-gram here."""
    return _WORD.findall(text.lower())


def normalize_text(text: str) -> str:
    """The exact-duplicate form of a text: its word tokens joined by single spaces.

    Case, punctuation and whitespace are folded, so two texts that differ only in those are equal.
    """
    return " ".join(words(text))


def collapse_whitespace(text: str) -> str:
    """`text` with every run of whitespace made one space and the ends stripped."""
    return _SPACE.sub(" ", text).strip()


def ngrams(tokens: Sequence[str], n: int) -> Iterator[tuple[str, ...]]:
    """The word n-grams of a token list, in order."""
    return zip(*(tokens[i:] for i in range(n)), strict=False)


def shingles(text: str, size: int = NEAR_DUP_SHINGLE) -> set[bytes]:
    """The word `size`-grams of a text as bytes; a shorter text is one shingle, its whole form.

    A text with no word at all gives {b""}, so two such texts are identical (Jaccard 1) as they
    are under `normalize_text`, and no set is ever empty.
    """
    toks = words(text)
    if len(toks) < size:
        return {" ".join(toks).encode()}
    return {" ".join(g).encode() for g in ngrams(toks, size)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def near_duplicate_pairs(
    texts: Sequence[str],
    threshold: float,
    *,
    shingle: int = NEAR_DUP_SHINGLE,
    num_perm: int = NEAR_DUP_NUM_PERM,
    seed: int = 1,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, Jaccard) with i < j whose word-shingle Jaccard is at least `threshold`.

    MinHash LSH (datasketch) proposes the candidate pairs, so the cost grows with the number of
    texts rather than of pairs; a pair LSH misses (its recall is below 1 near the threshold) is
    not found. Each candidate is confirmed on the exact shingle sets rather than on its MinHash
    estimate: the sets are at hand and cheap to compare, and the answer then depends only on LSH
    recall, not also on estimation noise that lets pairs just below the threshold in and keeps
    pairs just above it out. Sorted by (j, i).
    """
    from datasketch import MinHash, MinHashLSH

    if len(texts) < 2:
        return []
    sets = [shingles(t, shingle) for t in texts]
    hashes = MinHash.bulk(sets, num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    pairs = []
    for j, mh in enumerate(hashes):
        for i in sorted(lsh.query(mh)):
            sim = jaccard(sets[i], sets[j])
            if sim >= threshold:
                pairs.append((i, j, sim))
        lsh.insert(j, mh)
    return pairs
