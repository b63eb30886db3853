"""Stage `report`: seeds aggregated with CIs, controlled gains, fidelity-gain correlations,
mixing curves, numerics; `report.md`, a self-contained `report.html`, figures and tables.

Works on whatever the run has: without generation or fidelity it reports the real-only arms and
losses only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.config import StudyConfig
from orchestrator.config.report import ReportConfig
from orchestrator.stages.base import Stage, StageContext, StageOutput, console


class ReportStage(Stage):
    name = "report"
    depends_on: tuple[str, ...] = ("prepare", "fidelity", "trials")

    def enabled(self, cfg: StudyConfig) -> bool:
        trials = cfg.trials is not None and cfg.trials.enabled
        return trials and (cfg.report is None or cfg.report.enabled)

    def config_subset(self, cfg: StudyConfig) -> dict[str, Any]:
        # Upstream follows the config: no fidelity stage runs without generation.
        self.depends_on = deps_of(cfg)
        return {
            "report": section(cfg).model_dump(mode="json", exclude={"enabled"}),
            "regimes": regime_order(cfg),
        }

    def run(self, ctx: StageContext) -> StageOutput:
        import pandas as pd

        from tasks.report.tables import StatsOptions
        from tasks.report.writer import write_report

        rep = section(ctx.cfg)
        trials = ctx.input_dir("trials")
        results = pd.read_parquet(trials / "results.parquet")
        summary = None
        if "fidelity" in self.depends_on:
            summary = pd.read_parquet(ctx.input_dir("fidelity") / "summary.parquet")
        numerics = _read_numerics(trials / "numerics.json")
        opts = StatsOptions(rep.confidence, rep.bootstrap_samples, rep.seed)
        with console.status("report: bootstrap intervals, correlations, figures"):
            res = write_report(
                results, summary, numerics, ctx.out_dir, regime_order(ctx.cfg), ctx.cfg.study,
                rep.metric, opts,
            )  # fmt: skip
        paper = res.tables["paper_vs_run"]
        console.print(f"report: {ctx.store.stage_dir('report') / 'report.html'}")
        return StageOutput(
            rows={
                "trials": len(results),
                "cells": len(res.tables["aggregate"]),
                "gains": len(res.tables["controlled_gains"]),
                "correlations": len(res.tables["correlations"]),
                "figures": len(res.figures),
            },
            summary={"paper_vs_run": paper.to_dict("records")},
        )


def section(cfg: StudyConfig) -> ReportConfig:
    """The report section, its defaults when the config has none."""
    return cfg.report or ReportConfig()


def deps_of(cfg: StudyConfig) -> tuple[str, ...]:
    gen = cfg.generation is not None and cfg.generation.enabled
    fid = gen and cfg.fidelity is not None and cfg.fidelity.enabled
    return ("prepare",) + (("fidelity",) if fid else ()) + ("trials",)


def regime_order(cfg: StudyConfig) -> list[str]:
    """Regime names from the smallest to the largest (the order of Fisher z comparisons)."""
    return [r.name for r in sorted(cfg.data.regimes, key=lambda r: r.size)]


def _read_numerics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of numerics guard rows")
    return rows
