"""Stage `report`: seeds aggregated with CIs, controlled gains, fidelity-gain correlations,
mixing curves, numerics; `report.md`, a self-contained `report.html`, figures and tables.

Works on whatever the run has: without generation or fidelity it reports the real-only arms and
losses only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from config import StudyConfig
from config.report import ReportConfig
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
        scores = doc_scores(trials, ctx.input_dir("prepare"), results)
        with console.status("report: intervals, correlations, figures"):
            res = write_report(
                results, summary, numerics, ctx.out_dir, regime_order(ctx.cfg), ctx.cfg.study,
                rep.metric, opts, scores, rep.select_metric, rep.headline, rep.pool_run_variance,
            )  # fmt: skip
        paper = res.tables["paper_vs_run"]
        for v in res.verdict:
            console.print(f"[bold]verdict[/bold] {v['sentence']}")
        console.print(f"report: {ctx.store.stage_dir('report') / 'report.html'}")
        return StageOutput(
            rows={
                "trials": len(results),
                "cells": len(res.tables["aggregate"]),
                "gains": len(res.tables["controlled_gains"]),
                "correlations": len(res.tables["correlations"]),
                "figures": len(res.figures),
            },
            summary={
                "paper_vs_run": paper.to_dict("records"),
                "verdict": [v["sentence"] for v in res.verdict],
                "status_note": _verdict_note(res.verdict),
            },
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


def _verdict_note(verdict: list[dict[str, Any]]) -> str:
    """`synthpat status`'s note: each regime's controlled gain and whether it is significant."""
    return "; ".join(
        f"{v['regime']}: {v['gain']:+.3f} ({'significant' if v['significant'] else 'n.s.'})"
        for v in verdict
    )


def doc_scores(trials_dir: Path, prepare_dir: Path, results: Any) -> Any:
    """Per-trial test decisions and per-query nDCG (trials/predictions/) against the prepare
    stage's test labels, for the document bootstrap; None when the run has no predictions."""
    from orchestrator.train import label_matrix
    from orchestrator.trials_fit import read_predictions
    from tasks.corpus import read_labels, read_table, split_path
    from tasks.inference import DocScores

    folder = trials_dir / "predictions"
    if not folder.is_dir():
        return None
    ok = results[results.status == "ok"].trial_id.astype(str)
    preds = {
        t: read_predictions(folder / f"{t}.npz") for t in ok if (folder / f"{t}.npz").is_file()
    }
    if not preds:
        return None
    labels = read_labels(prepare_dir)
    y = label_matrix(read_table(split_path(prepare_dir, "test")), list(labels.codes))
    return DocScores.from_predictions(preds, y)


def _read_numerics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of numerics guard rows")
    return rows
