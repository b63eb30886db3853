"""Reading and writing the corpus tables that stages pass to each other (Parquet)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pandas as pd

from tasks.labels import LabelSpace

REQUIRED_COLUMNS = ("id", "text", "labels")


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write Parquet through a temp file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_table(path: Path) -> pd.DataFrame:
    """Read a corpus table; labels come back as Python lists of codes."""
    df = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    df["labels"] = df["labels"].map(list)
    return df


def read_labels(prepare_dir: Path) -> LabelSpace:
    return LabelSpace.from_json(json.loads((prepare_dir / "labels.json").read_text()))


def split_path(prepare_dir: Path, split: str) -> Path:
    """`train_pool`, `val`, `test`, or a regime name (under regimes/)."""
    if split in ("train_pool", "val", "test"):
        return prepare_dir / f"{split}.parquet"
    return prepare_dir / "regimes" / f"{split}.parquet"
