"""Prompt planning: row ids and ranks, target distribution and floor, exemplars, variants."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tasks.cpc_names import SUBCLASS_NAMES
from tasks.prompts import (
    PromptRow,
    mask_label_names,
    plan_prompts,
    postprocess,
    row_seed,
    template_hash,
)

NAMES = dict(SUBCLASS_NAMES)


def _real() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["p1", "p2", "p3", "p4", "p5"],
            "text": [
                "A catheter for diagnosis of the heart during surgery.",
                "A lithium cell; batteries and fuel cells with a solid electrolyte.",
                "A phased antenna array for wireless communication networks.",
                "A surgical stapler with gearing that drives the anvil.",
                "Electric digital data processing with a cache for a battery monitor.",
            ],
            "labels": [
                ["A61B"],
                ["H01M"],
                ["H01Q", "H04W"],
                ["A61B", "F16H"],
                ["G06F", "H01M"],
            ],
        }
    )


def _big_real(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """Skewed label sets: a few common sets and one rare label (G10L) in a single row."""
    rng = np.random.default_rng(seed)
    sets = [("G06F",), ("G06F", "H04L"), ("H04L", "H04W"), ("A61B",), ("A61B", "A61F")]
    probs = [0.4, 0.25, 0.15, 0.15, 0.05]
    picks = rng.choice(len(sets), size=n - 1, p=probs)
    labels = [list(sets[i]) for i in picks] + [["G10L"]]
    return pd.DataFrame(
        {
            "id": [f"r{i:04d}" for i in range(n)],
            "text": [f"text number {i}" for i in range(n)],
            "labels": labels,
        }
    )


def _user(row: PromptRow) -> str:
    assert row.messages[0]["role"] == "system"
    assert row.messages[1]["role"] == "user"
    return row.messages[1]["content"]


def test_row_ids_ranks_and_count():
    rows = plan_prompts("r5", _real(), NAMES, "synthesis", "plain", 12, 2, 1, seed=7)
    assert len(rows) == 12
    assert [r.volume_rank for r in rows] == list(range(12))
    assert rows[0].row_id == "r5__synthesis__plain__000000"
    assert rows[11].row_id == "r5__synthesis__plain__000011"
    assert len({r.row_id for r in rows}) == 12
    assert all(r.seed == row_seed(7, r.row_id) for r in rows)
    assert {r.template_hash for r in rows} == {template_hash("synthesis", "plain")}
    assert len(rows[0].template_hash) == 12


def test_zero_rows_and_bad_choices():
    assert plan_prompts("r5", _real(), NAMES, "synthesis", "plain", 0, 2, 1, seed=0) == []
    with pytest.raises(ValueError, match="strategy='summary'"):
        plan_prompts("r5", _real(), NAMES, "summary", "plain", 3, 2, 1, seed=0)
    with pytest.raises(ValueError, match="variant='none'"):
        plan_prompts("r5", _real(), NAMES, "synthesis", "none", 3, 2, 1, seed=0)
    with pytest.raises(ValueError, match="exemplars >= 1"):
        plan_prompts("r5", _real(), NAMES, "synthesis", "instruction_label_removal", 3, 0, 1, 0)
    with pytest.raises(ValueError, match=r"lack columns \['labels'\]"):
        plan_prompts("r5", _real().drop(columns="labels"), NAMES, "synthesis", "plain", 3, 2, 1, 0)


def test_first_round_is_each_real_label_set_once():
    real = _real()
    rows = plan_prompts("r5", real, NAMES, "synthesis", "plain", 10, 2, 0, seed=1)
    want = sorted(tuple(sorted(x)) for x in real["labels"])
    assert sorted(r.target_labels for r in rows[:5]) == want
    assert sorted(r.target_labels for r in rows[5:]) == want


def test_rare_label_floor_honoured():
    real = _big_real()
    rows = plan_prompts("big", real, NAMES, "synthesis", "plain", 400, 1, 6, seed=0)
    counts = Counter(c for r in rows for c in r.target_labels)
    assert counts["G10L"] == 6  # one real row, raised to the floor exactly
    assert min(counts.values()) >= 6
    # Floor rows replace the tail, so the first half keeps the real distribution.
    assert Counter(c for r in rows[:200] for c in r.target_labels)["G10L"] <= 1


def test_floor_best_effort_when_rows_too_few():
    rows = plan_prompts("r5", _real(), NAMES, "synthesis", "plain", 3, 1, 5, seed=0)
    assert len(rows) == 3


def test_target_distribution_follows_regime():
    real = _big_real(n=400)
    rows = plan_prompts("big", real, NAMES, "synthesis", "plain", 2000, 1, 1, seed=5)
    real_sets = Counter(tuple(sorted(x)) for x in real["labels"])
    got = Counter(r.target_labels for r in rows)
    for labels, n in real_sets.items():
        assert got[labels] == 5 * n  # whole rounds: exactly ratio x the real count
    # 1000 rows = 2.5 rounds: each set 2x its real count plus at most one more round.
    prefix = Counter(r.target_labels for r in rows[:1000])
    for labels, n in real_sets.items():
        assert 2 * n <= prefix[labels] <= 3 * n
    shares = np.array([prefix[k] / 1000 for k in real_sets])
    want = np.array([n / len(real) for n in real_sets.values()])
    assert np.abs(shares - want).max() < 0.03


def test_nested_prefix_is_a_smaller_plan():
    real = _big_real(n=100)
    big = plan_prompts("big", real, NAMES, "synthesis", "plain", 500, 2, 1, seed=9)
    small = plan_prompts("big", real, NAMES, "synthesis", "plain", 100, 2, 1, seed=9)
    assert [r.target_labels for r in small] == [r.target_labels for r in big[:100]]
    assert [r.exemplar_ids for r in small] == [r.exemplar_ids for r in big[:100]]


def test_same_seed_same_prompts_other_seed_other_targets():
    real = _big_real(n=100)
    a = plan_prompts("big", real, NAMES, "synthesis", "plain", 100, 2, 1, seed=11)
    b = plan_prompts("big", real, NAMES, "synthesis", "plain", 100, 2, 1, seed=11)
    c = plan_prompts("big", real, NAMES, "synthesis", "plain", 100, 2, 1, seed=12)
    assert a == b
    assert [r.target_labels for r in a] != [r.target_labels for r in c]
    assert [r.seed for r in a] != [r.seed for r in c]


def test_variants_share_targets_and_exemplars():
    real = _big_real(n=60)
    plans = [
        plan_prompts("big", real, NAMES, "synthesis", v, 60, 2, 1, seed=2)
        for v in ("plain", "label_name_masking", "instruction_label_removal")
    ]
    assert [r.target_labels for r in plans[0]] == [r.target_labels for r in plans[2]]
    assert [r.exemplar_ids for r in plans[0]] == [r.exemplar_ids for r in plans[1]]
    assert len({p[0].template_hash for p in plans}) == 3


def test_exemplars_share_the_most_labels():
    real = _real()
    rows = plan_prompts("r5", real, NAMES, "synthesis", "plain", 5, 2, 0, seed=4)
    by_target = {r.target_labels: r for r in rows}
    # Only p4 carries both A61B and F16H; p1 shares A61B and comes second.
    assert by_target[("A61B", "F16H")].exemplar_ids == ("p4", "p1")
    # H01M: p2 and p5 share one label each; both are shown, no unrelated row.
    assert set(by_target[("H01M",)].exemplar_ids) == {"p2", "p5"}
    assert by_target[("H01Q", "H04W")].exemplar_ids == ("p3",)
    assert all(r.source_id is None for r in rows)


def test_plain_names_codes_and_titles():
    rows = plan_prompts("r5", _real(), NAMES, "synthesis", "plain", 5, 2, 0, seed=4)
    for row in rows:
        user = _user(row)
        for code in row.target_labels:
            assert f"- {code}: {NAMES[code]}" in user
        assert "80 to 200 words" in user


def test_label_name_masking_codes_only_and_masked_exemplars():
    rows = plan_prompts("r5", _real(), NAMES, "synthesis", "label_name_masking", 5, 2, 0, seed=4)
    for row in rows:
        user = _user(row)
        for code in row.target_labels:
            assert f"- {code}\n" in user + "\n"
            assert NAMES[code].lower() not in user.lower()
    row = next(r for r in rows if r.target_labels == ("H01M",))
    user = _user(row)
    # p2's text says "batteries and fuel cells", H01M's title: it reaches the prompt masked.
    assert "A lithium cell; [LABEL] with a solid electrolyte." in user
    assert "batteries" not in user.lower()


def test_instruction_label_removal_no_codes_no_names():
    real = _real()
    rows = plan_prompts("r5", real, NAMES, "synthesis", "instruction_label_removal", 5, 2, 0, 4)
    all_codes = {c for labels in real["labels"] for c in labels}
    for row in rows:
        user = _user(row)
        instruction = user.split("Examples of real patent abstracts")[0]
        for code in all_codes:
            assert code not in user
            assert NAMES[code].lower() not in instruction.lower()
        assert "Example 1: " in user
        assert len(row.exemplar_ids) >= 1


def test_paraphrase_keeps_source_labels_and_cycles():
    real = _real()
    rows = plan_prompts("r5", real, NAMES, "paraphrase", "plain", 12, 2, 3, seed=8)
    labels = {i: tuple(sorted(x)) for i, x in zip(real["id"], real["labels"], strict=True)}
    texts = dict(zip(real["id"], real["text"], strict=True))
    assert all(r.target_labels == labels[r.source_id] for r in rows)
    assert all(r.exemplar_ids == () for r in rows)
    assert sorted(r.source_id for r in rows[:5]) == ["p1", "p2", "p3", "p4", "p5"]
    assert sorted(r.source_id for r in rows[5:10]) == ["p1", "p2", "p3", "p4", "p5"]
    assert texts[rows[0].source_id] in _user(rows[0])
    assert rows[0].row_id == "r5__paraphrase__plain__000000"


def test_paraphrase_variants_strings():
    real = _real()
    masked = plan_prompts("r5", real, NAMES, "paraphrase", "label_name_masking", 5, 0, 0, 8)
    removed = plan_prompts("r5", real, NAMES, "paraphrase", "instruction_label_removal", 5, 0, 0, 8)
    for m, r in zip(masked, removed, strict=True):
        assert m.source_id == r.source_id
        for code in m.target_labels:
            assert f"- {code}" in _user(m)
            assert NAMES[code].lower() not in _user(m).lower()
            assert code not in _user(r)
    p1 = next(m for m in masked if m.source_id == "p1")
    assert "A catheter for [LABEL] of the heart during [LABEL]." in _user(p1)


def test_exemplar_texts_truncated():
    real = _real()
    real.loc[0, "text"] = " ".join(f"w{i}" for i in range(300))
    rows = plan_prompts(
        "r5", real, NAMES, "synthesis", "plain", 5, 2, 0, seed=0, max_exemplar_words=50
    )
    # Target {A61B}: p1 and p4 share it, and both are shown.
    row = next(r for r in rows if r.target_labels == ("A61B",))
    assert set(row.exemplar_ids) == {"p1", "p4"}
    assert "w49 ..." in _user(row)
    assert "w50" not in _user(row)


def test_row_seed_stable_and_distinct():
    assert row_seed(0, "a__synthesis__plain__000000") == row_seed(0, "a__synthesis__plain__000000")
    seeds = {row_seed(0, f"a__synthesis__plain__{i:06d}") for i in range(1000)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**31 for s in seeds)
    assert row_seed(1, "x") != row_seed(0, "x")


def test_mask_label_names_whole_word_longest_first():
    names = {"H01M": "Batteries and fuel cells", "H01Q": "Antennas", "F16H": "Gearing"}
    text = "Antennas, antennas and BATTERIES AND FUEL CELLS; antennasx and gearings stay."
    assert mask_label_names(text, names) == (
        "[LABEL], [LABEL] and [LABEL]; antennasx and gearings stay."
    )
    # Parts of a ";"-title are masked on their own; the code is left alone.
    names = {"A61B": "Diagnosis; surgery; identification"}
    assert mask_label_names("A61B: surgery aid", names, mask="#") == "A61B: # aid"
    assert mask_label_names("", names) == ""


def test_postprocess_cleans_and_masks_only_for_masking_variant():
    real = _real()
    raw = "Sure! Here is the abstract:\n**A gearing unit** for surgery.<|im_end|>"
    masked = plan_prompts("r5", real, NAMES, "synthesis", "label_name_masking", 1, 1, 0, 0)[0]
    plain = plan_prompts("r5", real, NAMES, "synthesis", "plain", 1, 1, 0, 0)[0]
    assert postprocess(raw, plain, NAMES) == "A gearing unit for surgery."
    assert postprocess(raw, masked, NAMES) == "A [LABEL] unit for [LABEL]."


def test_exemplar_ties_vary_across_rows():
    real = _big_real(n=200)
    labels = {i: set(x) for i, x in zip(real["id"], real["labels"], strict=True)}
    rows = plan_prompts("big", real, NAMES, "synthesis", "plain", 400, 3, 1, seed=6)
    g06f = [r for r in rows if r.target_labels == ("G06F",)]
    assert len(g06f) > 100
    assert all(len(r.exemplar_ids) == 3 for r in g06f)
    assert all("G06F" in labels[e] for r in g06f for e in r.exemplar_ids)
    # Many real rows carry exactly {G06F}: the seeded tie-break spreads the exemplars over them.
    assert len({r.exemplar_ids for r in g06f}) > 50
