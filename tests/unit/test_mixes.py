"""Training mixes: sizes, sources, determinism and orderings."""

import numpy as np
import pandas as pd
import pytest

from tasks.mixes import (
    MIX_COLUMNS,
    MixSpec,
    build_mix,
    epoch_batches,
    epoch_order,
    mix_counts,
    repeat_to,
    shard,
    step_budget,
    steps_per_epoch,
)


def tables(n_real: int = 10, n_syn: int = 30):
    real = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n_real)],
            "text": [f"real {i}" for i in range(n_real)],
            "labels": [["A"]] * n_real,
        }
    )
    syn = pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(n_syn)],
            "text": [f"syn {i}" for i in range(n_syn)],
            "labels": [["B"]] * n_syn,
            "volume_rank": list(range(n_syn))[::-1],
        }
    )
    return real, syn


def test_real_plus_synthetic_takes_the_volume_by_rank():
    real, syn = tables()
    mix = build_mix(real, syn, MixSpec("real_plus_synthetic", ratio=1.5))
    assert mix_counts(mix) == {"n_train": 25, "n_real": 10, "n_synthetic": 15}
    # volume_rank runs backwards: the volume is the last 15 rows of the table.
    assert set(mix[mix.source == "synthetic"].id) == {f"s{i}" for i in range(15, 30)}


def test_duplicate_to_match_keeps_every_real_row_and_hits_the_size():
    real, _ = tables()
    mix = build_mix(real, None, MixSpec("duplicate_to_match", seed=3, target_size=25))
    assert mix_counts(mix) == {"n_train": 25, "n_real": 25, "n_synthetic": 0}
    assert set(mix.id) == set(real.id)
    again = build_mix(real, None, MixSpec("duplicate_to_match", seed=3, target_size=25))
    assert mix.id.tolist() == again.id.tolist()
    other = build_mix(real, None, MixSpec("duplicate_to_match", seed=4, target_size=25))
    assert mix.id.tolist() != other.id.tolist()
    with pytest.raises(ValueError, match="target_size=5 must be at least the 10 real rows"):
        build_mix(real, None, MixSpec("duplicate_to_match", target_size=5))


@pytest.mark.parametrize(("fraction", "n_real"), [(0.0, 0), (0.2, 8), (0.5, 20), (1.0, 40)])
def test_fixed_budget_has_the_budget_and_the_fraction(fraction, n_real):
    real, syn = tables()
    mix = build_mix(real, syn, MixSpec("fixed_budget", budget=40, real_fraction=fraction))
    assert mix_counts(mix) == {"n_train": 40, "n_real": n_real, "n_synthetic": 40 - n_real}
    if n_real >= 10:  # real rows repeated beyond the regime, each at least once
        assert set(mix[mix.source == "real"].id) == set(real.id)


def test_filtered_keeps_only_the_agreed_rows():
    real, syn = tables()
    keep = frozenset({"s29", "s28", "s0"})
    mix = build_mix(real, syn, MixSpec("filtered", ratio=1.0, keep_ids=keep))
    # s0 has the lowest priority (rank 29) and is outside the volume of 10 rows.
    assert set(mix[mix.source == "synthetic"].id) == {"s29", "s28"}


def test_orderings():
    real, syn = tables()
    first = build_mix(
        real, syn, MixSpec("real_plus_synthetic", ratio=1.0, ordering="curriculum_real_first")
    )
    assert first.source.tolist() == ["real"] * 10 + ["synthetic"] * 10
    fid = pd.Series({f"s{i}": float(i) for i in range(30)})
    by_fid = build_mix(
        real, syn, MixSpec("real_plus_synthetic", ratio=1.0, ordering="curriculum_fidelity"), fid
    )
    assert by_fid.id.tolist()[10:] == [f"s{i}" for i in range(29, 19, -1)]
    shuffled = build_mix(real, syn, MixSpec("real_plus_synthetic", ratio=1.0))
    assert shuffled.source.tolist() != first.source.tolist()


def test_repeat_to_draws_exactly_n():
    real, _ = tables()
    rng = np.random.default_rng(0)
    assert len(repeat_to(real, 4, rng)) == 4 and repeat_to(real, 4, rng).id.is_unique
    assert len(repeat_to(real, 23, rng)) == 23


def test_blocks_of_each_ordering():
    real, syn = tables(n_real=10, n_syn=30)

    def mix(ordering, fid=None):
        spec = MixSpec("real_plus_synthetic", ratio=2.0, ordering=ordering)
        return build_mix(real, syn, spec, fid)

    assert list(mix("shuffled").columns) == MIX_COLUMNS
    assert mix("shuffled").block.tolist() == [0] * 30
    first = mix("curriculum_real_first")
    assert (first.block == np.where(first.source == "real", 0, 1)).all()
    # 20 synthetic rows in the volume (s10..s29), scored by index; s10 and s11 have no score.
    fid = pd.Series({f"s{i}": float(i) for i in range(12, 30)})
    by_fid = mix("curriculum_fidelity", fid)
    assert by_fid.block.tolist() == [0] * 10 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5
    tiers = by_fid[by_fid.block > 0].groupby("block").id.apply(set).tolist()
    assert tiers[0] == {f"s{i}" for i in range(25, 30)}  # most faithful tier first
    assert tiers[3] == {"s10", "s11", "s12", "s13", "s14"}  # unscored rows in the last tier


def test_epoch_order_keeps_blocks_and_reshuffles_within_them():
    blocks = np.repeat([0, 1, 2], [6, 10, 4])
    orders = [epoch_order(blocks, seed=3, epoch=e) for e in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(20))
        assert (np.diff(blocks[order]) >= 0).all()  # block 0, then 1, then 2
        for b in (0, 1, 2):  # within a block: the same rows, another order
            assert set(order[blocks[order] == b]) == set(np.flatnonzero(blocks == b))
    assert orders[0].tolist() != orders[1].tolist() != orders[2].tolist()
    assert orders[0][6:16].tolist() != orders[1][6:16].tolist()  # reshuffled inside block 1
    np.testing.assert_array_equal(epoch_order(blocks, 3, 1), orders[1])  # same on every rank
    assert epoch_order(blocks, 4, 1).tolist() != orders[1].tolist()


def test_shuffled_is_one_block_mixing_real_and_synthetic():
    real, syn = tables(n_real=10, n_syn=30)
    mix = build_mix(real, syn, MixSpec("real_plus_synthetic", ratio=1.0))
    order = epoch_order(mix.block.to_numpy(), seed=0, epoch=0)
    fed = mix.source.to_numpy()[order]
    assert sorted(order.tolist()) == list(range(20))
    assert "synthetic" in set(fed[:10]) and "real" in set(fed[10:])  # not real-first


def test_shards_match_distributed_sampler():
    from torch.utils.data import DistributedSampler

    order = epoch_order(np.zeros(11, dtype=int), seed=1, epoch=0)
    parts = [shard(order, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4]  # padded to equal lengths
    for r in range(3):
        ref = list(DistributedSampler(range(11), num_replicas=3, rank=r, shuffle=False))
        assert parts[r].tolist() == order[ref].tolist()
    assert set(np.concatenate(parts)) == set(range(11))
    batches = epoch_batches(np.zeros(11, dtype=int), 1, 0, batch_size=3, rank=2, world=3)
    assert [b.tolist() for b in batches] == [parts[2][:3].tolist(), parts[2][3:].tolist()]


def test_step_budget():
    assert steps_per_epoch(100, 32) == 4 and steps_per_epoch(100, 32, world=2) == 2
    assert steps_per_epoch(0, 32) == 1
    assert step_budget(100, 32, epochs=3) == (12, 3)
    assert step_budget(100, 32, epochs=3, steps=10) == (10, 3)  # 4 + 4 + 2
    assert step_budget(10, 32, epochs=3, steps=10) == (10, 10)  # one step per epoch
