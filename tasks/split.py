"""Deduplication, the stratified train-pool/val/test split, and nested low-resource regimes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from tasks.text import normalize_text


def normalized_text_key(text: str) -> str:
    """Exact-duplicate key: a hash of the text's normal form (case, punctuation, spaces folded)."""
    return hashlib.sha1(normalize_text(text).encode()).hexdigest()


def dedup_indices(texts: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Indices to keep (first of each duplicate group) and (dropped, kept) pairs.

    Dropping duplicates before splitting is what keeps a pair from straddling two splits.
    """
    seen: dict[str, int] = {}
    keep: list[int] = []
    dropped: list[tuple[int, int]] = []
    for i, t in enumerate(texts):
        k = normalized_text_key(t)
        if k in seen:
            dropped.append((i, seen[k]))
        else:
            seen[k] = i
            keep.append(i)
    return keep, dropped


def _size(value: float | int, n: int, field: str) -> int:
    size = int(round(value * n)) if isinstance(value, float) and value < 1 else int(value)
    if size < 1 or size >= n:
        raise ValueError(f"data.split.{field}={value} gives {size} of {n} documents")
    return size


def stratified_split(
    y: np.ndarray, test_size: float | int, val_size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train-pool / val / test indices by iterative stratification (multi-label aware)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n = len(y)
    n_test = _size(test_size, n, "test_size")
    n_val = _size(val_size, n - n_test, "val_size")
    all_idx = np.arange(n)
    s1 = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
    rest, test = next(s1.split(all_idx, y))
    s2 = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed + 1)
    pool_r, val_r = next(s2.split(rest, y[rest]))
    return np.sort(rest[pool_r]), np.sort(rest[val_r]), np.sort(test)


def regime_order(y: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """An order of the pool whose every prefix is a regime: a label cover first, then the rest.

    Taking prefixes makes regimes nested; putting a small cover first makes every regime of at
    least `cover_size` documents contain every label the pool has. Returns (order, cover_size).
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    support = y.sum(axis=0)
    covered = np.zeros(y.shape[1], dtype=bool)
    covered[support == 0] = True  # labels absent from the pool cannot be covered
    cover: list[int] = []
    in_cover = np.zeros(len(y), dtype=bool)
    # Rarest labels first: their documents often carry common labels too, so the cover stays small.
    for j in np.argsort(support, kind="stable"):
        if covered[j]:
            continue
        for i in perm:
            if y[i, j] and not in_cover[i]:
                cover.append(int(i))
                in_cover[i] = True
                covered |= y[i].astype(bool)
                break
    rest = [int(i) for i in perm if not in_cover[i]]
    # Shuffle the cover too, so a regime smaller than the cover is still a random subset of it.
    cover_arr = np.array(cover, dtype=int)
    rng.shuffle(cover_arr)
    return np.concatenate([cover_arr, np.array(rest, dtype=int)]), len(cover)


def draw_seed(seed: int, draw: int) -> int:
    """The seed of regime draw `draw`: `seed` itself for draw 0, else one derived from both."""
    if draw == 0:
        return seed
    # SeedSequence mixes (seed, draw) so that draw d of seed s is unrelated to draw 0 of s + d.
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def draw_regimes(
    y_pool: np.ndarray, sizes: dict[str, int], seed: int, draw: int = 0
) -> tuple[dict[str, np.ndarray], int]:
    """Nested regimes (pool row indices) by name, and the size of the label cover.

    `draw` selects one of several independent draws of the same regimes (its seed comes from
    `draw_seed(seed, draw)`); the regimes of one draw are nested, those of different draws not.
    """
    order, cover = regime_order(y_pool, draw_seed(seed, draw))
    too_big = {k: v for k, v in sizes.items() if v > len(order)}
    if too_big:
        raise ValueError(f"data.regimes: sizes {too_big} exceed the train pool ({len(order)})")
    return {name: np.sort(order[:size]) for name, size in sizes.items()}, cover
