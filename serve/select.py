"""Which checkpoint to serve: the best finished trial by the configured validation metric, or
the one classifier of an exported folder (`synthpat export`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.artifacts import RESULTS, load_results


@dataclass(frozen=True)
class Selection:
    trial_id: str
    path: Path
    metric: str
    value: float | None
    row: dict[str, Any] = field(default_factory=dict)


def trials_dir(run_dir: Path | str) -> Path:
    """`runs/<study>/trials`, or the folder itself when it already holds results.parquet."""
    run_dir = Path(run_dir)
    return run_dir if (run_dir / RESULTS).is_file() else run_dir / "trials"


def select_checkpoint(
    run_dir: Path | str,
    metric: str = "val_micro_f1",
    trial_id: str | None = None,
    *,
    flag: str = "--checkpoint",
) -> Selection:
    """The trial with the highest `metric` among those with a checkpoint (or `trial_id`).

    Ties go to the smaller trial id so that the choice does not depend on row order. An
    exported folder (`synthpat export`, it has synthpat.json) holds one classifier: that one.
    `flag`: the command's option that gave `trial_id`, for the error messages.
    """
    from tasks.export import is_export

    if is_export(run_dir):
        return export_selection(run_dir, metric, trial_id, flag=flag)
    tdir = trials_dir(run_dir)
    results = tdir / RESULTS
    df = load_results(tdir)
    for col in ("trial_id", "checkpoint"):
        if col not in df.columns:
            raise ValueError(f"{results}: no column {col!r}")
    if trial_id is not None:
        hit = df[df.trial_id.astype(str) == str(trial_id)]
        if hit.empty:
            raise ValueError(f"{flag} {trial_id!r}: no such trial_id in {results}")
        row = hit.iloc[0].to_dict()
        if not _has_checkpoint(row):
            raise ValueError(f"{flag} {trial_id!r}: the trial has no checkpoint")
        return _selection(tdir, row, metric)
    if metric not in df.columns:
        numeric = [c for c in df.columns if c.startswith(("val_", "test_"))]
        raise ValueError(f"serve.select_metric={metric!r}: not a column of {results}; {numeric}")
    rows = candidates(df, metric)
    if not rows:
        raise ValueError(f"{results}: no finished trial with a checkpoint and a {metric} value")
    best = min(rows, key=lambda r: (-float(r[metric]), str(r["trial_id"])))
    return _selection(tdir, best, metric)


def candidates(df: Any, metric: str) -> list[dict[str, Any]]:
    """The rows of results.parquet the best trial is chosen from: finished, with a checkpoint
    and a finite `metric`."""
    ok = df[df["status"].astype(str).eq("ok")] if "status" in df.columns else df
    rows = [r for r in ok.to_dict(orient="records") if _has_checkpoint(r)]
    return [r for r in rows if _finite(r.get(metric))]


def export_selection(
    folder: Path | str,
    metric: str = "val_micro_f1",
    trial_id: str | None = None,
    *,
    flag: str = "--checkpoint",
) -> Selection:
    """The classifier of an exported folder, with the trial row it recorded; `trial_id`, when
    given, must be the exported trial's."""
    from tasks.export import read_export_json

    folder = Path(folder)
    doc = read_export_json(folder)
    trial = doc.get("trial") or {}
    tid = str(trial.get("trial_id") or (doc.get("provenance") or {}).get("trial_id") or folder.name)
    if trial_id is not None and str(trial_id) != tid:
        raise ValueError(f"{flag} {trial_id!r}: {folder} is an export of trial {tid!r} only")
    row = dict(trial.get("row") or {})
    value = row.get(metric, (doc.get("metrics") or {}).get(metric))
    return Selection(
        trial_id=tid,
        path=folder,
        metric=metric,
        value=float(value) if _finite(value) else None,
        row={k: _plain(v) for k, v in row.items()},
    )


def _has_checkpoint(row: dict[str, Any]) -> bool:
    value = row.get("checkpoint")
    return isinstance(value, str) and bool(value.strip())


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _selection(tdir: Path, row: dict[str, Any], metric: str) -> Selection:
    given = Path(row["checkpoint"])
    path = given if given.is_absolute() else tdir / given
    if not (path / "classifier.json").is_file():
        raise FileNotFoundError(f"{path}: checkpoint of trial {row['trial_id']} has no files")
    value = row.get(metric)
    return Selection(
        trial_id=str(row["trial_id"]),
        path=path,
        metric=metric,
        value=float(value) if _finite(value) else None,
        row={k: _plain(v) for k, v in row.items()},
    )


def _plain(value: Any) -> Any:
    """numpy scalars and NaN to JSON-friendly values (the row is shown by /v1/model)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
