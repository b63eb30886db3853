import numpy as np
import pytest

from config.data import regime_key
from tasks.prepare import prepare_dataset
from tasks.records import PatentRecord
from tasks.split import dedup_indices, draw_regimes, draw_seed, stratified_split


def _synthetic_labels(n=2000, k=12, seed=0):
    rng = np.random.default_rng(seed)
    p = np.linspace(0.35, 0.02, k)
    y = (rng.random((n, k)) < p).astype(np.float32)
    y[y.sum(axis=1) == 0, 0] = 1
    return y


def test_split_disjoint_complete_and_proportional():
    y = _synthetic_labels()
    pool, val, test = stratified_split(y, 400, 200, seed=3)
    assert set(pool).isdisjoint(val) and set(pool).isdisjoint(test) and set(val).isdisjoint(test)
    assert len(pool) + len(val) + len(test) == len(y)
    # iterative stratification trades exact sizes for label balance: within 5%
    assert abs(len(test) - 400) <= 20 and abs(len(val) - 200) <= 10
    full = y.mean(axis=0)
    for idx in (pool, val, test):
        # iterative stratification keeps each label's share within a point or two
        assert np.max(np.abs(y[idx].mean(axis=0) - full)) < 0.02
    again = stratified_split(y, 400, 200, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((pool, val, test), again, strict=True))


def test_regimes_nested_deterministic_and_covering():
    y = _synthetic_labels(n=1000, k=20)
    sizes = {"a": 30, "b": 60, "c": 200}
    regs, cover = draw_regimes(y, sizes, seed=5)
    assert cover <= 30
    assert set(regs["a"]) <= set(regs["b"]) <= set(regs["c"])
    assert {k: len(v) for k, v in regs.items()} == sizes
    for idx in regs.values():
        assert (y[idx].sum(axis=0) > 0).all()  # every label present
    again, _ = draw_regimes(y, sizes, seed=5)
    assert all(np.array_equal(regs[k], again[k]) for k in sizes)
    other, _ = draw_regimes(y, sizes, seed=6)
    assert not np.array_equal(regs["c"], other["c"])


def test_regime_larger_than_pool_is_refused():
    y = _synthetic_labels(n=50, k=4)
    with pytest.raises(ValueError, match="exceed the train pool"):
        draw_regimes(y, {"big": 51}, seed=0)


def test_dedup_keeps_first_and_ignores_case_punctuation():
    keep, dropped = dedup_indices(["A b, c.", "x", "a B c", "y", "X!"])
    assert keep == [0, 1, 3]
    assert dropped == [(2, 0), (4, 1)]


def test_prepare_dataset_duplicates_never_straddle_splits():
    rng = np.random.default_rng(0)
    codes = ["G06F", "H04L", "A61K", "B65D", "H01L"]
    recs = []
    for i in range(600):
        labs = tuple(sorted({"G06F", *rng.choice(codes, size=rng.integers(1, 3)).tolist()}))
        recs.append(PatentRecord(f"US{i}", "", f"text number {i % 590}", None, labs, ()))
    prepared = prepare_dataset(recs, "subclass", 4, 100, 50, {"r20": 20, "r40": 40}, seed=1)
    ids = [set(getattr(prepared, s).id) for s in ("train_pool", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    texts = [t for s in ("train_pool", "val", "test") for t in getattr(prepared, s).text]
    assert len(texts) == len(set(texts))
    assert prepared.summary["dropped_duplicates"] == 10
    assert len(prepared.labels) == 4
    assert prepared.summary["dropped_no_label"] == sum(
        1 for r in recs if not set(r.labels) & set(prepared.labels.codes)
    )
    assert set(prepared.regimes["r20"].id) <= set(prepared.regimes["r40"].id) <= ids[0]


def test_draw_zero_is_the_single_draw_of_before():
    # The rows the code drew before regime draws existed (same labels, sizes and seed): draw 0
    # must keep them, so studies with regime_draws=1 keep their tables and trial ids.
    y = _synthetic_labels(n=300, k=8)
    regs, cover = draw_regimes(y, {"a": 6, "b": 12}, seed=5)
    assert regs["a"].tolist() == [49, 106, 132, 207, 217, 238]
    assert regs["b"].tolist() == [49, 61, 79, 89, 106, 132, 160, 207, 217, 238, 258, 269]
    assert cover == 5
    again, _ = draw_regimes(y, {"a": 6, "b": 12}, seed=5, draw=0)
    assert all(np.array_equal(regs[k], again[k]) for k in regs)
    assert draw_seed(5, 0) == 5


def test_draws_are_nested_covering_and_differ_from_each_other():
    y = _synthetic_labels(n=1000, k=20)
    sizes = {"a": 30, "b": 60, "c": 200}
    draws = [draw_regimes(y, sizes, seed=5, draw=d)[0] for d in range(3)]
    for regs in draws:
        assert set(regs["a"]) <= set(regs["b"]) <= set(regs["c"])
        assert {k: len(v) for k, v in regs.items()} == sizes
        for idx in regs.values():
            assert (y[idx].sum(axis=0) > 0).all()
    for i in range(3):
        for j in range(i + 1, 3):
            for k in sizes:
                assert not np.array_equal(draws[i][k], draws[j][k]), (i, j, k)
    # A later draw is deterministic, and is not some other seed's draw 0.
    assert np.array_equal(draw_regimes(y, sizes, seed=5, draw=1)[0]["c"], draws[1]["c"])
    assert len({draw_seed(5, d) for d in range(3)} | {6, 7}) == 5
    assert not np.array_equal(draw_regimes(y, sizes, seed=6)[0]["c"], draws[1]["c"])


def test_regime_keys_name_draw_zero_as_before():
    assert regime_key("r48", 0) == "r48"
    assert regime_key("r48", 1) == "r48-d1"
    assert regime_key("r48", 12) == "r48-d12"
    with pytest.raises(ValueError, match="draw=-1"):
        regime_key("r48", -1)


def _records(n=600, seed=0):
    rng = np.random.default_rng(seed)
    codes = ["G06F", "H04L", "A61K", "B65D", "H01L"]
    out = []
    for i in range(n):
        labs = tuple(sorted({"G06F", *rng.choice(codes, size=rng.integers(1, 3)).tolist()}))
        out.append(PatentRecord(f"US{i}", "", f"text number {i}", None, labs, ()))
    return out


def test_prepare_dataset_with_two_draws_keeps_splits_and_draw_zero():
    recs = _records()
    sizes = {"r20": 20, "r40": 40}
    one = prepare_dataset(recs, "subclass", 4, 100, 50, sizes, seed=1)
    two = prepare_dataset(recs, "subclass", 4, 100, 50, sizes, seed=1, draws=2)
    assert list(one.regimes) == ["r20", "r40"]
    assert list(two.regimes) == ["r20", "r40", "r20-d1", "r40-d1"]
    # The split is the draws' common ground: the same train pool, val and test for every draw.
    for split in ("train_pool", "val", "test"):
        assert getattr(one, split).id.tolist() == getattr(two, split).id.tolist()
    for name in sizes:
        assert one.regimes[name].id.tolist() == two.regimes[name].id.tolist()
    pool = set(two.train_pool.id)
    assert set(two.regimes["r20-d1"].id) <= set(two.regimes["r40-d1"].id) <= pool
    assert len(two.regimes["r40-d1"]) == 40
    assert set(two.regimes["r40-d1"].id) != set(two.regimes["r40"].id)
    assert list(two.summary["regimes"]) == list(two.regimes)
    assert two.summary["regime_draws"] == 2 and len(two.summary["label_cover_sizes"]) == 2
    assert two.summary["label_cover_size"] == one.summary["label_cover_size"]
