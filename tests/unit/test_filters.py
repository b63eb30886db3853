"""Post-generation cleaning and filters on small hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from config.generation import FilterConfig
from tasks.filters import FILTERS, clean_text, filter_corpus, trim_to_sentence

SPEC = FilterConfig(
    min_words=20,
    max_words=60,
    near_duplicate_threshold=0.8,
    leakage_ngram=8,
    leakage_threshold=0.2,
)


def _words(seed: int, n: int) -> list[str]:
    """n distinct-looking words; different seeds share (almost) no word."""
    rng = np.random.default_rng(seed)
    return [f"w{seed}x{v}" for v in rng.integers(0, 10**6, size=n)]


def _text(seed: int, n: int = 30) -> str:
    return " ".join(_words(seed, n)) + "."


def _rows(items: list[tuple[str, str]], **extra) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "id": [i for i, _ in items],
            "text": [t for _, t in items],
            "volume_rank": list(range(len(items))),
            "status": ["ok"] * len(items),
            "labels": [["G06F"]] * len(items),
        }
    )
    for col, values in extra.items():
        df[col] = values
    return df


HELDOUT = pd.DataFrame({"id": ["v1", "t7"], "text": [_text(900, 40), _text(901, 20)]})


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "Sure! Here is an abstract:\n\nA gear box with two shafts.",
            "A gear box with two shafts.",
        ),
        ("Here's a patent abstract for you: A valve seat.", "A valve seat."),
        ("<|im_start|>assistant\nA valve seat.<|im_end|>", "A valve seat."),
        ("Assistant: A valve   seat\n\n with a spring.</s>", "A valve seat with a spring."),
        ("## Self-cleaning valve\nA valve seat.", "A valve seat."),
        ("**Abstract:** A *sealed* valve seat.", "A sealed valve seat."),
        ('"A valve seat with a spring."', "A valve seat with a spring."),
        ("\u201cA valve seat.\u201d<|eot_id|>", "A valve seat."),
        ("Title: Valve\nAbstract:\nA valve seat.", "A valve seat."),
        ("Certainly.\n\n**Abstract**\n\nA valve seat.", "A valve seat."),
        ("[INST] A valve seat. [/INST]", "A valve seat."),
        ('The "inner" seat and the "outer" seat.', 'The "inner" seat and the "outer" seat.'),
        (
            "Here the valve closes when the spring relaxes.",
            "Here the valve closes when the spring relaxes.",
        ),
        ("A patent abstract for a new invention is as follows:\n\nA valve.", "A valve."),
        ("A patent abstracts:\n\nA valve seat.", "A valve seat."),
        ("A valve comprising:\na seat and a spring.", "A valve comprising: a seat and a spring."),
        ("", ""),
    ],
)
def test_clean_text(raw: str, clean: str):
    assert clean_text(raw) == clean


def test_each_filter_removes_its_rows_with_reasons():
    long_text = _text(7, 70)
    near_a = _words(8, 40)
    near_b = [*near_a[:-1], "different"]
    leak = HELDOUT.loc[1, "text"].rstrip(".").split() + _words(9, 10)
    partial = HELDOUT.loc[0, "text"].split()[:9] + _words(10, 21)
    rows = _rows(
        [
            ("ok1", _text(1)),
            ("fail", _text(2)),
            ("empty", "   "),
            ("trunc", _text(3).rstrip(".") + " and the"),
            ("stopped", _text(4).rstrip(".") + " and the"),
            ("short", "A valve seat with five words."),
            ("long", long_text),
            ("dup_src", _text(5)),
            ("dup", _text(5).upper().replace(".", " !")),
            ("near_src", " ".join(near_a) + "."),
            ("near", " ".join(near_b) + "."),
            ("leak", " ".join(leak) + "."),
            ("partial", " ".join(partial) + "."),
        ],
        finish_reason=["stop", "stop", "stop", "length", "stop"] + ["stop"] * 8,
    )
    rows.loc[rows["id"] == "fail", "status"] = "failed"
    rows["error"] = [None, "engine died after 3 retries"] + [None] * 11
    res = filter_corpus(rows, SPEC, HELDOUT)

    assert list(res.counts) == list(FILTERS)
    assert res.counts == {
        "failed": 1,
        "empty": 1,
        "truncated": 1,
        "too_short": 1,
        "too_long": 1,
        "exact_duplicate": 1,
        "near_duplicate": 1,
        "leakage": 1,
    }
    assert res.kept["id"].tolist() == ["ok1", "stopped", "dup_src", "near_src", "partial"]
    reasons = dict(zip(res.removed["id"], res.removed["reason"], strict=True))
    filters = dict(zip(res.removed["id"], res.removed["filter"], strict=True))
    assert filters == {
        "fail": "failed",
        "empty": "empty",
        "trunc": "truncated",
        "short": "too_short",
        "long": "too_long",
        "dup": "exact_duplicate",
        "near": "near_duplicate",
        "leak": "leakage",
    }
    assert reasons["fail"] == "status=failed: engine died after 3 retries"
    assert reasons["empty"] == "empty text"
    tail = " ".join(rows.loc[rows["id"] == "trunc", "text"].item().split()[-4:])
    assert reasons["trunc"] == f"hit the token limit mid-sentence (ends {tail!r})"
    assert tail.endswith(" and the")
    assert reasons["short"] == "6 words < min 20"
    assert reasons["long"] == "70 words > max 60"
    assert reasons["dup"] == "same normalized text as dup_src"
    # 40 words -> 38 shingles; the last word changed -> 37 shared of 39 in the union.
    assert reasons["near"] == "Jaccard 0.95 >= 0.8 with near_src"
    # 30 words -> 23 8-grams; the first 20 words copy t7 -> 13 of them are in t7.
    assert reasons["leak"] == "13/23 8-grams (57% >= 20%) found in held-out t7"
    assert list(res.kept.columns) == list(rows.columns)
    assert list(res.removed.columns) == [*rows.columns, "filter", "reason"]
    assert len(res.kept) + len(res.removed) == len(rows)


def test_duplicates_keep_lowest_volume_rank_whatever_the_input_order():
    text = _text(11)
    rows = _rows([("late", text), ("early", text.lower()), ("mid", text)])
    rows["volume_rank"] = [9, 2, 5]
    res = filter_corpus(rows, SPEC, HELDOUT)
    assert res.kept["id"].tolist() == ["early"]
    assert res.removed["id"].tolist() == ["mid", "late"]
    assert set(res.removed["reason"]) == {"same normalized text as early"}


def test_near_duplicate_keeps_lowest_rank_and_spares_distinct_rows():
    base = _words(12, 50)
    variants = [[*base[:-1], f"end{k}"] for k in range(3)]
    rows = _rows(
        [(f"v{k}", " ".join(v) + ".") for k, v in enumerate(variants)] + [("other", _text(13, 50))]
    )
    rows["volume_rank"] = [4, 1, 3, 0]
    res = filter_corpus(rows, SPEC, HELDOUT)
    assert res.kept["id"].tolist() == ["other", "v1"]
    assert res.removed["id"].tolist() == ["v2", "v0"]
    assert all(r.endswith("with v1") for r in res.removed["reason"])


def test_a_row_is_removed_by_the_first_filter_only():
    rows = _rows([("a", "Short text here."), ("b", "short text here")])
    res = filter_corpus(rows, SPEC, HELDOUT)
    assert res.counts["too_short"] == 2
    assert res.counts["exact_duplicate"] == 0
    assert res.kept.empty


def test_truncation_needs_finish_reason():
    rows = _rows([("a", _text(14).rstrip(".") + " and the")])
    assert filter_corpus(rows, SPEC, HELDOUT).counts["truncated"] == 0
    rows["finish_reason"] = ["length"]
    assert filter_corpus(rows, SPEC, HELDOUT).counts["truncated"] == 1
    rows["text"] = [_text(14)]  # ends with a full stop: complete even at the limit
    assert filter_corpus(rows, SPEC, HELDOUT).counts["truncated"] == 0


def test_deterministic_and_order_independent():
    items = [(f"r{i}", _text(100 + i % 7)) for i in range(20)]
    rows = _rows(items)
    a = filter_corpus(rows, SPEC, HELDOUT)
    b = filter_corpus(rows.sample(frac=1.0, random_state=3), SPEC, HELDOUT)
    assert a.kept["id"].tolist() == b.kept["id"].tolist() == [f"r{i}" for i in range(7)]
    pd.testing.assert_frame_equal(a.removed, b.removed)
    assert a.counts == b.counts
    assert a.counts["exact_duplicate"] == 13


def test_real_filter_config_and_empty_input():
    spec = FilterConfig(min_words=5, max_words=100)
    rows = _rows([])
    res = filter_corpus(rows, spec, HELDOUT)
    assert res.counts == dict.fromkeys(FILTERS, 0)
    assert res.kept.empty and res.removed.empty
    assert list(res.removed.columns) == [*rows.columns, "filter", "reason"]
    res = filter_corpus(_rows([("a", "one two three four five six.")]), spec, HELDOUT)
    assert res.kept["id"].tolist() == ["a"]


def test_bad_inputs_name_the_missing_field():
    with pytest.raises(ValueError, match=r"lack columns \['status'\]"):
        filter_corpus(_rows([("a", "x")]).drop(columns="status"), SPEC, HELDOUT)
    # A bad filter section fails when the config is built, naming its fields.
    with pytest.raises(ValidationError, match="min_words=50 is above max_words=10"):
        FilterConfig(min_words=50, max_words=10)


def test_planted_duplicates_and_leaks_found_among_many_rows():
    held = pd.DataFrame(
        {"id": [f"h{i}" for i in range(300)], "text": [_text(5000 + i, 60) for i in range(300)]}
    )
    items = [(f"r{i:04d}", _text(i, 55)) for i in range(1000)]
    near_ids, leak_ids = [], []
    for k in range(20):
        # Rows 900..919 repeat rows 100..119 with the last word changed (Jaccard 76/78 = 0.97).
        src = _words(100 + k, 55)
        items[900 + k] = (items[900 + k][0], " ".join([*src[:-1], "changed"]) + ".")
        near_ids.append(items[900 + k][0])
        # Rows 950..969 copy 40 words of one held-out patent and add 15 of their own.
        copied = held.loc[10 * k, "text"].split()[:40]
        items[950 + k] = (items[950 + k][0], " ".join(copied + _words(7000 + k, 15)) + ".")
        leak_ids.append(items[950 + k][0])
    res = filter_corpus(_rows(items), SPEC, held)
    removed = res.removed.set_index("id")
    assert res.counts["near_duplicate"] == 20
    assert res.counts["leakage"] == 20
    assert sorted(removed.index[removed["filter"] == "near_duplicate"]) == near_ids
    assert sorted(removed.index[removed["filter"] == "leakage"]) == leak_ids
    # 55 words -> 48 8-grams, 33 of them inside the first 40 words copied from h{10k}.
    assert removed.loc["r0953", "reason"] == "33/48 8-grams (69% >= 20%) found in held-out h30"
    assert removed.loc["r0900", "reason"].endswith("with r0100")
    assert len(res.kept) == 960


def test_trim_to_sentence():
    assert trim_to_sentence("A valve. It has a seat, e.g. a ring. The spring and the") == (
        "A valve. It has a seat, e.g. a ring."
    )
    assert trim_to_sentence('It says "stop." Then the') == 'It says "stop."'
    assert trim_to_sentence("no full stop at all") == ""


def test_trim_truncated_keeps_long_enough_cut_rows():
    spec = SPEC.model_copy(update={"trim_truncated": True})
    long_ok = " ".join(_words(20, 25)) + ". The " + " ".join(_words(21, 6))
    too_short = " ".join(_words(22, 10)) + ". The " + " ".join(_words(23, 15))
    rows = _rows(
        [("long_ok", long_ok), ("too_short", too_short), ("complete", _text(24))],
        finish_reason=["length", "length", "length"],
    )
    res = filter_corpus(rows, spec, HELDOUT)
    assert res.kept["id"].tolist() == ["long_ok", "complete"]
    assert res.kept["text"].tolist() == [" ".join(_words(20, 25)) + ".", _text(24)]
    assert res.trimmed == ["long_ok"]
    assert res.counts["truncated"] == 1
    reason = res.removed.set_index("id").loc["too_short", "reason"]
    assert reason.endswith("; 10 words up to the last full sentence < min 20")
    # Without trim_truncated both cut-off rows go and nothing is trimmed.
    res = filter_corpus(rows, SPEC, HELDOUT)
    assert res.kept["id"].tolist() == ["complete"]
    assert res.trimmed == []
    assert res.removed["text"].tolist() == [long_ok, too_short]
