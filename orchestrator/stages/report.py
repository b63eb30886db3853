"""Stage `report`: seeds aggregated with CIs, controlled gains, fidelity-gain correlations,
mixing curves, numerics; `report.md`, a self-contained `report.html`, figures and tables.

Works on whatever the run has: without generation or fidelity it reports the real-only arms and
losses only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import StudyConfig
from config.report import ReportConfig
from orchestrator.stages.base import Stage, StageContext, StageOutput, console


class ReportStage(Stage):
    name = "report"
    reads = ("prepare", "fidelity", "trials")
    # serve.select_metric: the per-label F1 figure shows the trial serve would pick.
    fields = ("report", "data.regimes", "serve.select_metric")

    def enabled(self, cfg: StudyConfig) -> bool:
        trials = cfg.trials is not None and cfg.trials.enabled
        return trials and (cfg.report is None or cfg.report.enabled)

    def run(self, ctx: StageContext) -> StageOutput:
        from tasks.artifacts import load_fidelity_summary, load_numerics, load_results
        from tasks.report.tables import StatsOptions
        from tasks.report.writer import write_report

        rep = section(ctx.cfg)
        trials = ctx.input_dir("trials")
        results = load_results(trials)
        summary = None
        if "fidelity" in ctx.inputs:
            summary = load_fidelity_summary(ctx.input_dir("fidelity"))
        numerics = load_numerics(trials)
        opts = StatsOptions(rep.confidence, rep.bootstrap_samples, rep.seed)
        scores = doc_scores(trials, ctx.input_dir("prepare"), results)
        served = served_labels(ctx.cfg, trials, ctx.input_dir("prepare"))
        with console.status("report: intervals, correlations, figures"):
            res = write_report(
                results, summary, numerics, ctx.out_dir, regime_order(ctx.cfg), ctx.cfg.study,
                rep.metric, opts, scores, rep.select_metric, rep.headline, rep.pool_run_variance,
                served,
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
    from tasks.artifacts import load_labels, load_predictions, load_split, predictions_path
    from tasks.inference import DocScores
    from tasks.trials.inputs import label_matrix

    if not (trials_dir / "predictions").is_dir():
        return None
    ok = results[results.status == "ok"].trial_id.astype(str)
    paths = {t: predictions_path(trials_dir, t) for t in ok}
    preds = {t: load_predictions(p) for t, p in paths.items() if p.is_file()}
    if not preds:
        return None
    labels = load_labels(prepare_dir)
    y = label_matrix(load_split(prepare_dir, "test"), list(labels.codes))
    return DocScores.from_predictions(preds, y)


def served_labels(cfg: StudyConfig, trials_dir: Path, prepare_dir: Path) -> Any:
    """The per-label test scores of the trial the serve stage would pick (serve's own choice,
    `serve.select.select_checkpoint`), or the reason there are none (a str for the report)."""
    from serve.select import candidates, select_checkpoint
    from tasks.artifacts import load_results
    from tasks.report.figures_labels import served_labels as read_served

    metric = cfg.serve.resolve_select_metric(cfg.trials)
    try:
        sel = select_checkpoint(trials_dir, metric)
        n = len(candidates(load_results(trials_dir), metric))
        return read_served(trials_dir, prepare_dir, sel.row, metric, n)
    except (FileNotFoundError, ValueError) as err:
        return f"no served model to score ({err})"
