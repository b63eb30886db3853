"""Every synthetic corpus of a run as one Hugging Face dataset folder, one config per corpus."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tasks.export.context import RunContext
from tasks.export.dataset_card import build_dataset_card


def export_corpora(
    run_dir: Path | str, out: Path | str, run: RunContext, default: str | None = None
) -> list[dict[str, Any]]:
    """Copy generate/corpora/*.parquet (and generate/removed/*.parquet) into
    `out/<corpus_id>/{train,removed}.parquet` and write the dataset card; return the corpora.json
    entries exported (each with `removed_rows`). No corpora: nothing is written, [] returned.

    `default`: the corpus `load_dataset(out)` loads without a config name (the exported model's
    corpus, else the first)."""
    generate = Path(run_dir) / "generate"
    entries = []
    known = {str(c["corpus_id"]): c for c in run.corpora}
    # corpora.json lists the corpora; a folder without it still has its Parquet files.
    ids = list(known) or sorted(p.stem for p in (generate / "corpora").glob("*.parquet"))
    for cid in ids:
        src = generate / "corpora" / f"{cid}.parquet"
        if not src.is_file():
            continue
        entry = {"corpus_id": cid, **known.get(cid, {})}
        entry.setdefault("rows", pq.ParquetFile(src).metadata.num_rows)
        dest = Path(out) / cid
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / "train.parquet")
        removed = generate / "removed" / f"{cid}.parquet"
        n_removed = pq.ParquetFile(removed).metadata.num_rows if removed.is_file() else 0
        if n_removed:
            shutil.copy2(removed, dest / "removed.parquet")
        entry["removed_rows"] = n_removed
        entries.append(entry)
    if not entries:
        return []
    hashes = {
        e["corpus_id"]: _prompt_hashes(Path(out) / e["corpus_id"] / "train.parquet")
        for e in entries
    }
    card = build_dataset_card(entries, run, default, hashes)
    (Path(out) / "README.md").write_text(card)
    return entries


def _prompt_hashes(path: Path) -> list[str]:
    table = pq.read_table(path, columns=None)
    if "prompt_hash" not in table.column_names:
        return []
    return sorted({str(h) for h in table.column("prompt_hash").to_pylist() if h})
