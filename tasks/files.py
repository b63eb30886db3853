"""Atomic file writes: a reader sees the old file or the whole new one, never half of either.

Folders are written whole under a temp name and moved into place by `replace_dir`.

Every file writer goes through `atomic_path`: it hands out a temp path in the target's folder (same
filesystem, so the final `os.replace` is an atomic rename), renames it over the target when the
block finishes, and removes it when the block raises. Temp names start with a dot and end with
`.tmp-<hex>`, so globs for the real files (`shard-*.parquet`, `*.npy`) never match them.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it onto `path`, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """Write `obj` as JSON (indented, keys sorted, non-JSON values as str) to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_npy_atomic(path: Path | str, arr: np.ndarray) -> None:
    """Write one array in .npy format to `path` atomically (the name is kept as given)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # An open file, not a path: np.save would append ".npy" to the temp name.
        np.save(f, arr)


def write_parquet_atomic(path: Path | str, df: pd.DataFrame) -> None:
    """Write a DataFrame (without its index) as Parquet to `path` atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def replace_dir(src: Path | str, dst: Path | str, *, keep_existing: bool = False) -> bool:
    """Move the finished folder `src` onto `dst` by a rename; True when `src` went in.

    An existing `dst` is moved aside first and removed only after `src` is in place, so a kill
    in between leaves the old folder (`.<name>.old-<hex>`) rather than none. `keep_existing`:
    a `dst` already there wins (another writer made the same content first) and `src` is
    dropped."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if keep_existing:
        try:
            os.replace(src, dst)
            return True
        except OSError:  # dst exists and is not empty
            shutil.rmtree(src, ignore_errors=True)
            return False
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return True
