"""Storage locations as every node of a cluster names them."""

from __future__ import annotations

from pathlib import Path


def storage_uri(storage: str | Path) -> str:
    """A storage location as Ray and pyarrow take it: a URI (`s3://`, `gs://`, `file://`) as
    given, which every node of a cluster reaches; a local folder made absolute."""
    text = str(storage)
    return text if "://" in text else str(Path(text).resolve())
