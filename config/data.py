"""The `data` section: where real patents come from, the label space, splits and regimes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import NOT_FINGERPRINTED, ConfigPath, StrictModel


class SourceConfig(StrictModel):
    path: ConfigPath = Field(
        description="File or folder of real patents (JSONL, CSV, Parquet, or HUPD-style JSON); "
        "JSONL and CSV may be gzip (`.jsonl.gz`, `.csv.gz`) or zstd (`.jsonl.zst`, `.csv.zst`).",
        json_schema_extra=NOT_FINGERPRINTED,
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "hupd"] = Field(
        "auto",
        description="Input format; `auto` decides from the file extension, looked up through a "
        "`.gz` or `.zst` suffix.",
    )
    min_good_records: int = Field(
        200, ge=1, description="Fail the prepare stage if fewer valid records than this remain."
    )
    limit: int | None = Field(
        None, ge=1, description="Read at most this many valid records (for quick experiments)."
    )
    max_text_chars: int = Field(
        50_000,
        gt=0,
        description="Set aside (as rejected, never truncated) a record whose text, title and "
        "abstract, is longer than this many characters.",
    )


class LabelSpaceConfig(StrictModel):
    level: Literal["subclass", "group"] = Field(
        "subclass",
        description="`subclass` (4 characters, e.g. G06F) or `group` (main group from `codes`, "
        "e.g. G06F17) for fine-grained evaluation.",
    )
    top_k: int = Field(64, ge=2, description="Keep the K most frequent labels at that level.")


class SplitConfig(StrictModel):
    test_size: float | int = Field(
        1500, gt=0, description="Held-out test documents: a count, or a fraction if below 1."
    )
    val_size: float | int = Field(
        500, gt=0, description="Validation documents (threshold tuning): a count or a fraction."
    )


class RegimeConfig(StrictModel):
    name: str = Field(description="Regime name used in paths and reports, e.g. `r165`.")
    size: int = Field(ge=1, description="Number of real training patents in this regime.")


class DataConfig(StrictModel):
    source: SourceConfig
    labels: LabelSpaceConfig = LabelSpaceConfig()
    split: SplitConfig = SplitConfig()
    regimes: list[RegimeConfig] = Field(
        description="Low-resource regimes drawn from the train pool; nested, smaller in larger."
    )
    seed: int = Field(13, description="Seed of the split and of the regime draws.")
    regime_draws: int = Field(
        1,
        ge=1,
        description="Independent draws of every regime from the same train pool (the val and "
        "test splits stay fixed); generation and trials run per draw, so intervals can vary "
        "over the real patents drawn. Draw 0 is the regimes as `seed` draws them; draw d >= 1 "
        "is named `<regime>-d<d>` and seeded from `seed` and d.",
    )

    @model_validator(mode="after")
    def _regimes_distinct(self) -> DataConfig:
        names = [r.name for r in self.regimes]
        if len(set(names)) != len(names):
            raise ValueError(f"regimes: names must be unique, got {names}")
        if not self.regimes:
            raise ValueError("regimes: at least one regime is needed")
        keys = self.regime_keys()
        clash = sorted({k for k in keys if keys.count(k) > 1})
        if clash:
            raise ValueError(
                f"regimes: with regime_draws={self.regime_draws} the names {clash} stand both "
                "for a regime and for another regime's draw; rename the regime"
            )
        return self

    def regime_keys(self) -> list[str]:
        """Every (draw, regime) as its regime key, draw by draw (`regime_key`)."""
        return [regime_key(r.name, d) for d in range(self.regime_draws) for r in self.regimes]


def regime_key(name: str, draw: int) -> str:
    """The name of one draw of one regime: `name` for draw 0 (as before draws), else `name-d<draw>`.

    Keys name the prepared tables, corpus ids and trial ids, so draw 0 keeps every existing name.
    """
    if draw < 0:
        raise ValueError(f"draw={draw} must be >= 0")
    return name if draw == 0 else f"{name}-d{draw}"
