"""Training mixes (the study's arms): deterministic functions of (real rows, corpus, spec, seed).

- `real_only`: the regime's real rows.
- `real_plus_synthetic`: real rows + the corpus volume at `ratio` (first round(ratio * n_real)
  rows by `volume_rank`).
- `duplicate_to_match`: the volume control. Every real row once, plus real rows drawn with
  replacement until the mix has exactly `target_size` rows: the size of the augmented arm it
  controls. Keeping each real row once means no label of the regime disappears from the control.
- `fixed_budget`: `budget` rows, round(real_fraction * budget) of them real (all real rows
  repeated, then drawn with replacement when that exceeds the regime), the rest synthetic by
  `volume_rank` (repeated in that order when the corpus is short).
- `filtered`: like `real_plus_synthetic`, with only the synthetic rows in `keep_ids`.

Orderings (docs/orderings.md). A mix carries an int `block` column, and every epoch the trainers
draw a fresh order with `epoch_order`: the blocks in ascending order, the rows reshuffled within
each block (seeded by the trial seed and the epoch). So an ordering differs from `shuffled` only
in its block order, never in being replayed unshuffled.

- `shuffled`: one block (every row 0).
- `curriculum_real_first`: real rows (block 0), then synthetic rows (block 1).
- `curriculum_fidelity`: real rows (block 0), then the synthetic rows in `FIDELITY_TIERS` tiers of
  equal size by per-row fidelity score, most faithful tier first (blocks 1..4); rows without a
  score go last.

`epoch_batches` cuts one epoch's order into batches (sharded across ranks like
`DistributedSampler`); `step_budget` says how many optimizer steps and epochs a run takes (a
number of epochs, or exactly `steps` steps under `trials.budget=steps`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import pandas as pd

from config.trials import Arm, Ordering

ARMS: tuple[str, ...] = get_args(Arm)
ORDERINGS: tuple[str, ...] = get_args(Ordering)
MIX_COLUMNS = ["id", "text", "labels", "source", "block"]
#: Synthetic fidelity tiers of `curriculum_fidelity` (quartiles of the per-row score).
FIDELITY_TIERS = 4


@dataclass(frozen=True)
class MixSpec:
    """One training mix. Fields that an arm does not use stay None."""

    arm: str
    seed: int = 0
    ratio: float | None = None
    real_fraction: float | None = None
    budget: int | None = None
    target_size: int | None = None
    ordering: str = "shuffled"
    keep_ids: frozenset[str] | None = field(default=None, compare=False)
    member: int = 0  # ensemble member: its own duplication draw (0 keeps the plain arm's)


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded by the trial seed and a stable digest of what the draw is for."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def slice_volume(synthetic: pd.DataFrame, ratio: float, n_real: int) -> pd.DataFrame:
    """The corpus volume at `ratio`: the first round(ratio * n_real) rows by `volume_rank`."""
    n = int(round(ratio * n_real))
    if "volume_rank" in synthetic:
        synthetic = synthetic.sort_values("volume_rank", kind="stable")
    return synthetic.head(n)


def _rows(df: pd.DataFrame, source: str | None = None) -> pd.DataFrame:
    out = df[[c for c in MIX_COLUMNS if c in df.columns and c != "block"]].copy()
    if "source" not in out.columns or source is not None:
        out["source"] = source or "real"
    return out.reset_index(drop=True)


def repeat_to(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Exactly `n` rows: each row of `df` once (or the first n of a permutation when n is
    smaller), then rows drawn with replacement."""
    if n <= 0 or len(df) == 0:
        if n > 0:
            raise ValueError(f"cannot draw {n} rows from an empty table")
        return df.iloc[:0]
    perm = rng.permutation(len(df))
    if n <= len(df):
        return df.iloc[np.sort(perm[:n])]
    extra = rng.integers(0, len(df), size=n - len(df))
    return df.iloc[np.concatenate([np.arange(len(df)), extra])]


def _tile_ranked(synthetic: pd.DataFrame, n: int) -> pd.DataFrame:
    if n == 0:
        return synthetic.iloc[:0]
    if len(synthetic) == 0:
        raise ValueError(f"fixed_budget needs {n} synthetic rows but the corpus is empty")
    ranked = (
        synthetic.sort_values("volume_rank", kind="stable")
        if "volume_rank" in synthetic
        else (synthetic)
    )
    idx = np.arange(n) % len(ranked)
    return ranked.iloc[idx]


def build_mix(
    real: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    spec: MixSpec,
    fidelity: pd.Series | None = None,
) -> pd.DataFrame:
    """The training rows of one arm, ordered as `spec.ordering` says; columns id, text, labels,
    source."""
    parts: tuple = (spec.arm, spec.ratio, spec.real_fraction, spec.budget)
    rng = rng_for(spec.seed, *parts, *((spec.member,) if spec.member else ()))
    real_rows = _rows(real, "real")
    syn = None if synthetic is None else _rows(synthetic, "synthetic")
    if synthetic is not None and "volume_rank" in synthetic.columns and syn is not None:
        syn["volume_rank"] = synthetic["volume_rank"].to_numpy()
    if spec.arm != "real_only" and spec.arm != "duplicate_to_match" and syn is None:
        raise ValueError(f"arm={spec.arm} needs a synthetic corpus")
    if spec.arm == "real_only":
        mix = real_rows
    elif spec.arm == "duplicate_to_match":
        if spec.target_size is None or spec.target_size < len(real_rows):
            raise ValueError(
                f"arm=duplicate_to_match: target_size={spec.target_size} must be at least the "
                f"{len(real_rows)} real rows"
            )
        mix = repeat_to(real_rows, spec.target_size, rng)
    elif spec.arm in ("real_plus_synthetic", "filtered", "ensemble"):
        if spec.ratio is None:
            raise ValueError(f"arm={spec.arm} needs a ratio")
        vol = slice_volume(syn, spec.ratio, len(real_rows))
        if spec.arm == "filtered":
            if spec.keep_ids is None:
                raise ValueError("arm=filtered needs keep_ids from the agreement filter")
            vol = vol[vol["id"].isin(spec.keep_ids)]
        mix = pd.concat([real_rows, vol], ignore_index=True)
    elif spec.arm == "fixed_budget":
        if spec.budget is None or spec.real_fraction is None:
            raise ValueError("arm=fixed_budget needs budget and real_fraction")
        n_real = int(round(spec.real_fraction * spec.budget))
        real_part = repeat_to(real_rows, n_real, rng)
        mix = pd.concat([real_part, _tile_ranked(syn, spec.budget - n_real)], ignore_index=True)
    else:
        raise ValueError(f"arm={spec.arm!r}; expected one of {ARMS}")
    return order_mix(mix.reset_index(drop=True), spec.ordering, rng, fidelity)


def order_mix(
    mix: pd.DataFrame,
    ordering: str,
    rng: np.random.Generator,
    fidelity: pd.Series | None = None,
) -> pd.DataFrame:
    """The mix with its `block` column (see the module docstring), rows sorted by block.

    The row order within a block is one seeded permutation; trainers reshuffle it every epoch
    (`epoch_order`), so only the blocks are an ordering's signal.
    """
    perm = rng.permutation(len(mix))
    shuffled = mix.iloc[perm].reset_index(drop=True)
    is_real = (shuffled["source"] == "real").to_numpy()
    block = np.zeros(len(shuffled), dtype=np.int64)
    within = np.arange(len(shuffled))  # row order inside a block: the permutation's
    if ordering == "shuffled":
        pass
    elif ordering == "curriculum_real_first":
        block[~is_real] = 1
    elif ordering == "curriculum_fidelity":
        if fidelity is None:
            raise ValueError("ordering=curriculum_fidelity needs per-row fidelity scores")
        score = shuffled["id"].map(fidelity).astype(float).fillna(-np.inf).to_numpy()
        syn = np.flatnonzero(~is_real)
        by_score = syn[np.argsort(-score[syn], kind="stable")]
        # Tiers by rank, not by score value: equal sizes even when scores tie.
        block[by_score] = 1 + np.arange(len(by_score)) * FIDELITY_TIERS // max(len(by_score), 1)
        within[by_score] = np.arange(len(by_score))  # the table reads most faithful first
    else:
        raise ValueError(f"ordering={ordering!r}; expected one of {ORDERINGS}")
    shuffled["block"] = block
    return shuffled.iloc[np.lexsort((within, block))][MIX_COLUMNS].reset_index(drop=True)


def epoch_order(blocks: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Row indices of one epoch: blocks in ascending order, rows shuffled within each block.

    A fresh order per (seed, epoch); the same on every process that asks (distributed ranks).
    """
    blocks = np.asarray(blocks)
    key = rng_for(seed, "epoch_order", epoch).random(len(blocks))
    return np.lexsort((key, blocks)).astype(np.int64)


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s rows of a global order, as `DistributedSampler` splits it: padded by
    wrapping around to a multiple of `world`, then every `world`-th row from `rank`."""
    if world <= 1:
        return order
    padded = np.resize(order, -(-len(order) // world) * world) if len(order) else order
    return padded[rank::world]


def steps_per_epoch(n_rows: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps of one epoch over `n_rows` on `world` ranks (each its shard, in batches)."""
    per_rank = -(-n_rows // world)  # ceil: DistributedSampler pads every shard to this
    return max(1, -(-per_rank // batch_size))


def step_budget(
    n_rows: int, batch_size: int, epochs: int, steps: int | None = None, world: int = 1
) -> tuple[int, int]:
    """(optimizer steps, epochs to draw) of a run: `epochs` full epochs, or exactly `steps`
    steps over as many fresh epochs as they take (the last one cut short)."""
    per_epoch = steps_per_epoch(n_rows, batch_size, world)
    total = epochs * per_epoch if steps is None else int(steps)
    return total, -(-total // per_epoch)


def epoch_batches(
    blocks: np.ndarray, seed: int, epoch: int, batch_size: int, rank: int = 0, world: int = 1
) -> list[np.ndarray]:
    """One epoch's batches of row indices for rank `rank` of `world` (`epoch_order`, `shard`)."""
    rows = shard(epoch_order(blocks, seed, epoch), rank, world)
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def mix_counts(mix: pd.DataFrame) -> dict[str, int]:
    """n_train, n_real, n_synthetic of a mix (rows, repeats counted)."""
    n_real = int((mix["source"] == "real").sum())
    return {"n_train": len(mix), "n_real": n_real, "n_synthetic": len(mix) - n_real}
