"""Training mixes: sizes, sources, determinism and orderings."""

import numpy as np
import pandas as pd
import pytest

from tasks.mixes import MixSpec, build_mix, mix_counts, repeat_to


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
