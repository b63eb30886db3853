"""Forward passes cut by token length (`tasks.embeddings.length_passes`)."""

from __future__ import annotations

import numpy as np

from tasks.embeddings import PAD_SLACK, length_passes


def _check(lengths: list[int], most: int) -> list[list[int]]:
    passes = length_passes(lengths, most)
    flat = [i for p in passes for i in p]
    assert sorted(flat) == list(range(len(lengths)))  # every text once
    for p in passes:
        assert 1 <= len(p) <= most
        real = sum(lengths[i] for i in p)
        padded = len(p) * max(lengths[i] for i in p)
        if len(p) > 1:
            assert padded <= (1 + PAD_SLACK) * real + 1e-9, (p, [lengths[i] for i in p])
    return passes


def test_equal_lengths_fill_passes_and_far_apart_ones_go_alone():
    assert [len(p) for p in _check([100] * 20, 8)] == [8, 8, 4]
    assert [len(p) for p in _check([10, 200, 40, 400, 90], 8)] == [1, 1, 1, 1, 1]
    assert _check([], 8) == []


def test_random_lengths_keep_every_pass_within_the_slack():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        lengths = rng.integers(5, 257, size=n).tolist()
        passes = _check(lengths, int(rng.integers(1, 17)))
        # Sorted: a later pass never holds a text shorter than an earlier pass's longest.
        tops = [max(lengths[i] for i in p) for p in passes]
        bottoms = [min(lengths[i] for i in p) for p in passes]
        assert all(b >= t for t, b in zip(tops, bottoms[1:], strict=False))


def test_one_long_text_does_not_pad_a_pass_of_short_ones():
    passes = _check([20] * 7 + [250], 8)
    assert sorted(len(p) for p in passes) == [1, 7]
