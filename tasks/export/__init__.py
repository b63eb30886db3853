"""Exporting a run for the Hugging Face tools: the chosen classifier in its family's standard
format with a model card, and every synthetic corpus as a dataset folder with a dataset card.

    DIR/                  the model (transformers / sentence-transformers / skops folder)
      README.md           model card (Hub YAML metadata + provenance, metrics, verdict)
      synthpat.json       the classifier's card for the project (`load_export`, `synthpat serve`)
      thresholds.json     {code: threshold}, the tuned per-label thresholds
      corpora/            one dataset folder, one config per synthetic corpus, its README.md

Which trial to export is the caller's choice (`synthpat export` uses serve's selection); this
package reads only the run folder and never imports Ray. See tasks.export.model for each
family's layout.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.export.context import RunContext, TrialContext, run_context, trial_context
from tasks.export.model import (
    EXPORT_JSON,
    THRESHOLDS_JSON,
    ExportError,
    export_classifier,
    is_export,
    load_export,
    read_export_json,
    setfit_model,
)

__all__ = [
    "EXPORT_JSON",
    "THRESHOLDS_JSON",
    "CORPORA_DIR",
    "ExportError",
    "ExportResult",
    "RunContext",
    "TrialContext",
    "export_run",
    "export_classifier",
    "is_export",
    "load_export",
    "read_export_json",
    "run_context",
    "setfit_model",
    "trial_context",
]

CORPORA_DIR = "corpora"


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    trial_id: str
    family: str
    corpora: list[str] = field(default_factory=list)


def export_run(
    run_dir: Path | str,
    out: Path | str,
    checkpoint: Path | str,
    row: dict[str, Any],
    *,
    trial: dict[str, Any] | None = None,
    dataset_repo: str | None = None,
) -> ExportResult:
    """Export the trial whose checkpoint folder is `checkpoint` (its results.parquet `row`) and
    the run's corpora into `out`, with both cards.

    `trial`: how it was chosen (`select_metric`, `select_value`, `chosen_by`, `n_candidates`),
    recorded in synthpat.json and said in the card. `dataset_repo`: the Hub id the corpora will
    have (the model card's `datasets:`); None names them after the study.
    """
    from tasks.export.cards import build_model_card
    from tasks.export.corpora import export_corpora

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--to {out}: the folder is not empty")
    run = run_context(run_dir)
    info = {"trial_id": str(row.get("trial_id", "")), "run": run.study, **(trial or {}), "row": row}
    # Written beside `out` and renamed into place: a failed export leaves no half folder.
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        doc = export_classifier(checkpoint, tmp, info)
        ctx = trial_context(run, row, doc)
        default = (doc.get("mix") or {}).get("corpus_id") or None
        corpora = export_corpora(run_dir, tmp / CORPORA_DIR, run, default)
        repo = dataset_repo or f"synthpat-{run.study}-synthetic-corpora"
        (tmp / "README.md").write_text(build_model_card(doc, ctx, repo if corpora else None))
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, info["trial_id"], doc["family"], [c["corpus_id"] for c in corpora])
