"""Word tokens, the one text normalization, n-grams, and the near-duplicate pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from config.generation import FilterConfig
from tasks.fidelity.diversity import near_duplicate_rate
from tasks.filters import filter_corpus
from tasks.split import dedup_indices
from tasks.text import (
    collapse_whitespace,
    jaccard,
    near_duplicate_pairs,
    ngrams,
    normalize_text,
    shingles,
    words,
)


def test_words_fold_case_punctuation_and_underscores():
    assert words("A _sealed_ Valve-seat, 2 springs!") == [
        "a",
        "sealed",
        "valve",
        "seat",
        "2",
        "springs",
    ]
    assert words("snake_case") == ["snake", "case"]
    assert words("Übergröße café") == ["übergröße", "café"]
    assert words("!!! ...") == []


def test_one_normal_form_for_every_exact_duplicate_test():
    a, b = "A valve   seat, with a __spring__.", "a VALVE seat with a spring"
    assert normalize_text(a) == normalize_text(b) == "a valve seat with a spring"
    # The prepare-stage dedup and the generation filter see the same duplicates.
    assert dedup_indices([a, b, "a valve"]) == ([0, 2], [(1, 0)])
    rows = pd.DataFrame(
        {
            "id": ["x", "y"],
            "text": [
                f"{a} " + " ".join(f"w{i}" for i in range(20)),
                f"{b} " + " ".join(f"w{i}" for i in range(20)),
            ],
            "volume_rank": [0, 1],
            "status": ["ok", "ok"],
        }
    )
    res = filter_corpus(rows, FilterConfig(min_words=5), rows.iloc[0:0])
    assert res.counts["exact_duplicate"] == 1
    assert res.removed["reason"].tolist() == ["same normalized text as x"]


def test_collapse_whitespace_and_ngrams():
    assert collapse_whitespace("  a\n\tb \u00a0 c ") == "a b c"
    assert list(ngrams(["a", "b", "c", "d"], 3)) == [("a", "b", "c"), ("b", "c", "d")]
    assert list(ngrams(["a"], 2)) == []


def test_shingles_of_short_and_wordless_texts():
    assert shingles("one two three four") == {b"one two three", b"two three four"}
    assert shingles("one two") == {b"one two"}
    assert shingles("!!!") == shingles("???") == {b""}  # the same text once normalized
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)
    assert jaccard(set(), set()) == 0.0


def _doc(seed: int, n: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"w{seed}x{v}" for v in rng.integers(0, 10**6, size=n)]


def test_near_duplicate_pairs_are_confirmed_on_exact_jaccard():
    base = _doc(1)
    one_off = [*base[:-1], "changed"]  # 57 of 59 shingles shared: Jaccard 57/59
    far = [*base[:30], *_doc(2, 30)]  # about half the shingles differ
    texts = [" ".join(t) for t in (base, one_off, far, _doc(3))]
    pairs = near_duplicate_pairs(texts, 0.8)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(jaccard(shingles(texts[0]), shingles(texts[1])))
    assert pairs[0][2] == pytest.approx(57 / 59)
    # A threshold just above the exact Jaccard drops the pair: no MinHash-estimate slack.
    assert near_duplicate_pairs(texts, 57 / 59 + 1e-9) == []
    assert near_duplicate_pairs(texts[:1], 0.8) == []


def test_filter_and_fidelity_rate_agree_on_near_duplicates():
    base = _doc(4)
    texts = [" ".join(base) + ".", " ".join([*base[:-1], "other"]) + ".", " ".join(_doc(5)) + "."]
    rows = pd.DataFrame(
        {"id": ["a", "b", "c"], "text": texts, "volume_rank": [0, 1, 2], "status": ["ok"] * 3}
    )
    res = filter_corpus(rows, FilterConfig(min_words=5), rows.iloc[0:0])
    assert res.removed["id"].tolist() == ["b"]
    rate = near_duplicate_rate(texts, threshold=0.8)
    assert rate["near_duplicate_rate"] == pytest.approx(2 / 3)  # both rows of the pair count
    assert near_duplicate_rate(res.kept["text"].tolist(), threshold=0.8)["near_duplicate_rate"] == 0
