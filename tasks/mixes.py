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
Orderings: `shuffled`, `curriculum_real_first` (real rows, then synthetic), `curriculum_fidelity`
(real rows, then synthetic rows from most to least faithful).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ARMS = (
    "real_only",
    "duplicate_to_match",
    "real_plus_synthetic",
    "fixed_budget",
    "filtered",
    "ensemble",
)
ORDERINGS = ("shuffled", "curriculum_real_first", "curriculum_fidelity")
MIX_COLUMNS = ["id", "text", "labels", "source"]


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
    out = df[[c for c in MIX_COLUMNS if c in df.columns]].copy()
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
    rng = rng_for(spec.seed, spec.arm, spec.ratio, spec.real_fraction, spec.budget)
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
    """Row order of a mix; curricula keep real rows first (shuffled among themselves)."""
    perm = rng.permutation(len(mix))
    shuffled = mix.iloc[perm].reset_index(drop=True)
    if ordering == "shuffled":
        return shuffled[MIX_COLUMNS]
    is_real = (shuffled["source"] == "real").to_numpy()
    if ordering == "curriculum_real_first":
        key = np.where(is_real, 0, 1)
        return shuffled.iloc[np.argsort(key, kind="stable")][MIX_COLUMNS].reset_index(drop=True)
    if ordering == "curriculum_fidelity":
        if fidelity is None:
            raise ValueError("ordering=curriculum_fidelity needs per-row fidelity scores")
        score = shuffled["id"].map(fidelity).fillna(-np.inf).to_numpy()
        key = np.where(is_real, np.inf, score)  # real first, then most faithful synthetic
        order = np.argsort(-key, kind="stable")
        return shuffled.iloc[order][MIX_COLUMNS].reset_index(drop=True)
    raise ValueError(f"ordering={ordering!r}; expected one of {ORDERINGS}")


def mix_counts(mix: pd.DataFrame) -> dict[str, int]:
    """n_train, n_real, n_synthetic of a mix (rows, repeats counted)."""
    n_real = int((mix["source"] == "real").sum())
    return {"n_train": len(mix), "n_real": n_real, "n_synthetic": len(mix) - n_real}
