"""What the cards say of a run, read from its stage outputs (every part optional: a run without
a report still exports, its card says the report is missing).

`run_context(run_dir)` reads the study-wide parts once; `trial_context(run, row, doc)` picks
what concerns one trial: its grid cell's interval (report/tables/aggregate), its controlled gain
(report/tables/controlled_gains), the verdict for its regime (report/verdict.json) and its
corpus (generate/corpora.json, fidelity/summary.parquet).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.report.tables import CELL

#: The keys of a report cell, as results.parquet names them: the report's own cell columns
#: (tasks.report.tables.CELL) less control_size, which a trial row does not carry.
CELL_KEYS = tuple(k for k in CELL if k != "control_size")


@dataclass
class RunContext:
    """The study-wide facts the cards quote; empty where the stage has not run."""

    study: str
    data_source: str = ""
    labels: list[dict[str, Any]] = field(default_factory=list)  # prepare/labels.json
    split_sizes: dict[str, int] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)  # report/verdict.json
    aggregate: pd.DataFrame | None = None
    controlled_gains: pd.DataFrame | None = None
    corpora: list[dict[str, Any]] = field(default_factory=list)  # generate/corpora.json
    generation: dict[str, Any] = field(default_factory=dict)  # generate manifest's config
    fidelity: dict[str, dict[str, Any]] = field(default_factory=dict)  # corpus_id -> summary
    fidelity_docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # fidelity.json


@dataclass
class TrialContext:
    """What one trial's model card quotes beyond its own classifier.json."""

    run: RunContext
    row: dict[str, Any]
    cell: dict[str, Any] | None = None  # its aggregate row
    gain: dict[str, Any] | None = None  # its controlled_gains row (augmented arms)
    regime_verdict: dict[str, Any] | None = None
    corpus: dict[str, Any] | None = None  # its corpora.json entry
    corpus_fidelity: dict[str, Any] | None = None


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.is_file() else None


def run_context(run_dir: Path | str) -> RunContext:
    """Read a run folder's labels, report, corpora, generation settings and fidelity."""
    import yaml

    run_dir = Path(run_dir)
    cfg = {}
    if (run_dir / "config.resolved.yaml").is_file():
        cfg = yaml.safe_load((run_dir / "config.resolved.yaml").read_text()) or {}
    source = str(((cfg.get("data") or {}).get("source") or {}).get("path") or "")
    # `../shared/data/uspto-9k/patents.jsonl` -> uspto-9k: the data set, not the file.
    data_source = Path(source).parent.name if source else ""
    ctx = RunContext(study=str(cfg.get("study") or run_dir.name), data_source=data_source)
    ctx.labels = _json(run_dir / "prepare" / "labels.json") or []
    prep = _json(run_dir / "prepare" / "manifest.json") or {}
    ctx.split_sizes = {k: int(v) for k, v in (prep.get("rows") or {}).items() if _is_int(v)}
    ctx.verdict = _json(run_dir / "report" / "verdict.json") or {}
    ctx.aggregate = _parquet(run_dir / "report" / "tables" / "aggregate.parquet")
    ctx.controlled_gains = _parquet(run_dir / "report" / "tables" / "controlled_gains.parquet")
    ctx.corpora = _json(run_dir / "generate" / "corpora.json") or []
    gen = _json(run_dir / "generate" / "manifest.json") or {}
    ctx.generation = (gen.get("config") or {}).get("generation") or {}
    summary = _parquet(run_dir / "fidelity" / "summary.parquet")
    if summary is not None:
        ctx.fidelity = {str(r["corpus_id"]): r for r in summary.to_dict(orient="records")}
    for c in ctx.corpora:
        doc = _json(run_dir / "fidelity" / str(c["corpus_id"]) / "fidelity.json")
        if doc is not None:
            ctx.fidelity_docs[str(c["corpus_id"])] = doc
    return ctx


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def missing(v: Any) -> bool:
    """None, NaN and "" all mean 'not set' in results and report tables."""
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v == ""


def _same(a: Any, b: Any) -> bool:
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return str(a) == str(b)


def _cell_rows(table: pd.DataFrame | None, row: dict[str, Any]) -> list[dict[str, Any]]:
    if table is None:
        return []
    keys = [k for k in CELL_KEYS if k in table.columns and k in row]
    hits = [r for r in table.to_dict(orient="records") if all(_same(r[k], row[k]) for k in keys)]
    if str(row.get("arm")) == "duplicate_to_match" and "control_size" in table.columns:
        # A control cell is one size of duplication: the size of the trial's training set.
        sized = [r for r in hits if _same(r.get("control_size"), row.get("n_train"))]
        hits = sized or hits
    return hits


def trial_context(run: RunContext, row: dict[str, Any], doc: dict[str, Any]) -> TrialContext:
    """The report cell, controlled gain, verdict and corpus of the trial of `row` (a
    results.parquet row; `doc`: its classifier.json, for the corpus id)."""
    tid = str(row.get("trial_id", ""))
    cells = _cell_rows(run.aggregate, row)
    gains = _cell_rows(run.controlled_gains, row)
    mine = [g for g in gains if tid in str(g.get("trial_ids", "")).split(",")]
    gains = mine or gains
    regimes = run.verdict.get("regimes", [])
    regime = next((v for v in regimes if str(v.get("regime")) == str(row.get("regime"))), None)
    corpus_id = str((doc.get("mix") or {}).get("corpus_id") or "")
    corpus = next((c for c in run.corpora if str(c.get("corpus_id")) == corpus_id), None)
    return TrialContext(
        run=run,
        row=row,
        cell=cells[0] if len(cells) == 1 else None,
        gain=gains[0] if len(gains) == 1 else None,
        regime_verdict=regime,
        corpus=corpus,
        corpus_fidelity=run.fidelity.get(corpus_id) if corpus_id else None,
    )
