"""Build the report: every table (CSV + Parquet), the figures, `report.md` and `report.html`."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.inference import DOC_METRICS, DocResampler, DocScores
from tasks.report import display
from tasks.report import figures as figs
from tasks.report.figures_gains import gains_figure, mmd_figure, ratio_curve_figure
from tasks.report.figures_labels import ServedLabels, label_f1_figure
from tasks.report.figures_mixing import fixed_budget_figure, retrieval_figure
from tasks.report.findings import (
    fidelity_correlations,
    paper_vs_run,
    regime_comparisons,
    with_fidelity,
)
from tasks.report.tables import (
    Analysis,
    StatsOptions,
    aggregate,
    controlled_gains,
    fixed_budget_curve,
    loss_comparisons,
    mixing_comparisons,
    normalize,
    numerics_table,
    retrieval_vs_classification,
    variance_components,
)
from tasks.report.verdict import attach_fewshot, fewshot_comparison, verdicts

GAINS_TEXT = (
    "Each augmented cell against its own duplicate_to_match control: the regime's real rows "
    "duplicated to the same number of rows, trained with the same optimizer steps; this is the "
    "only volume-controlled gain. Beside it: the gain over the best non-augmentation baseline, "
    "chosen on validation among real_only and same-size duplicate_to_match over the losses "
    "(volume-controlled only when the chosen baseline is a duplicate_to_match, named in the "
    "column), and the raw gain over real_only with the same loss (volume plus content). "
    "q: Benjamini-Hochberg over every cell's controlled-gain p-value."
)
FIDELITY_TEXT = (
    "Per regime, correlation across corpora between each fidelity measure and the controlled "
    "gain. Corpora of one generator are not independent, so p comes from a permutation test "
    "that permutes gains only within a generator (the parametric p when every generator has one "
    "corpus); q: Benjamini-Hochberg over every row of the table. The Fisher-z interval of r "
    "assumes independent corpora. Fisher's z compares the smallest and the largest regime; it "
    "treats the two regimes' corpora as independent samples (each regime generates its own)."
)


@dataclass
class Section:
    """One report section: a heading, prose, display tables and figures."""

    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[figs.Figure] = field(default_factory=list)


@dataclass
class ReportResult:
    """What `write_report` wrote: the tables by name, the figures and the verdict."""

    tables: dict[str, pd.DataFrame]
    figures: list[figs.Figure]
    sections: list[Section]
    verdict: list[dict[str, Any]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


def _budget_note(results: pd.DataFrame) -> str:
    if "budget" not in results.columns or results["budget"].dropna().empty:
        return "Training budget: epochs (each family's `epochs`)."
    budgets = sorted(set(results["budget"].dropna().astype(str)))
    if budgets == ["steps"]:
        return (
            "Training budget: steps (every trial of a torch family ran the same number of "
            "optimizer steps whatever its size; TF-IDF is fitted to convergence)."
        )
    return (
        f"Training budget: {', '.join(budgets)} (under `epochs` an arm with more rows also "
        "trains for more steps; only the duplicate_to_match control matches both rows and steps)."
    )


def _analysis(
    results: pd.DataFrame,
    scores: DocScores | None,
    metric: str,
    select: str,
    opts: StatsOptions,
    pool_runs: bool = True,
) -> Analysis:
    resampler = None
    short = metric.removeprefix("test_")
    if scores is not None and len(scores.trial_ids) and short in DOC_METRICS:
        try:
            resampler = DocResampler(scores, short, opts.n_resamples, opts.seed)
        except ValueError:
            resampler = None  # e.g. no per-query nDCG in older predictions
    return Analysis(results, metric, select, opts, resampler, pool_runs)


def build_sections(
    results: pd.DataFrame,
    summary: pd.DataFrame | None,
    numerics: list[dict[str, Any]],
    out_dir: Path,
    regime_order: list[str],
    metric: str = "test_micro_f1",
    opts: StatsOptions | None = None,
    scores: DocScores | None = None,
    select: str = "val_micro_f1",
    headline: dict[str, Any] | None = None,
    pool_runs: bool = True,
    served: ServedLabels | str | None = None,
) -> ReportResult:
    """Compute every table and figure of the report; write figures under out_dir/figures.

    `served`: the served model's per-label test scores for its figure, or why there are none.
    """
    opts = opts or StatsOptions()
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    conf = opts.confidence
    a = _analysis(results, scores, metric, select, opts, pool_runs)
    agg = aggregate(a)
    gains = controlled_gains(a)
    verdict = verdicts(a, gains, regime_order, headline)
    fewshot = fewshot_comparison(a, gains, verdict)
    attach_fewshot(verdict, fewshot)
    joined = with_fidelity(gains, summary)
    corr = fidelity_correlations(joined, conf, seed=opts.seed)
    fisher = regime_comparisons(corr, regime_order, conf)
    curve = fixed_budget_curve(a)
    mixing = mixing_comparisons(a)
    losses = loss_comparisons(a)
    nd = _analysis(results, scores, "test_ndcg10", select, opts) if metric != "test_ndcg10" else a
    if metric == "test_micro_f1":
        retrieval = retrieval_vs_classification(a, nd, gains)
    else:
        f1 = _analysis(results, scores, "test_micro_f1", select, opts)
        retrieval = retrieval_vs_classification(f1, nd)
    num = numerics_table(numerics, a)
    paper = paper_vs_run(verdict, gains, fisher, curve, retrieval, regime_order, agg, metric)
    components = variance_components(a, gains) if not gains.empty else pd.DataFrame()
    tables = {
        "verdict": display.display_verdict(verdict) if verdict else pd.DataFrame(),
        "aggregate": agg,
        "controlled_gains": gains,
        "fidelity_gain": joined,
        "correlations": corr,
        "fisher_z": fisher,
        "fixed_budget": curve,
        "mixing": mixing,
        "losses": losses,
        "fewshot": fewshot,
        "retrieval": retrieval,
        "numerics": num,
        "paper_vs_run": paper,
        "variance_components": components,
    }
    methods = sorted(set(gains.method)) if not gains.empty else sorted(set(agg.get("method", [])))
    made: list[figs.Figure] = []
    if verdict:
        text = "\n\n".join(f"- {v['sentence']}" for v in verdict)
        sections = [Section("Verdict", text, [("", tables["verdict"])])]
    else:
        sections = [
            Section(
                "Verdict",
                "No verdict: no augmented cell with its duplicate_to_match control finished, so "
                "this run cannot say whether synthetic text helps beyond volume.",
            )
        ]
    sections.append(
        Section(
            "Paper vs this run",
            f"Headline figures of the paper beside the same quantities from this run ({metric}, "
            f"{conf:.0%} intervals); every cell shown was chosen on {select}, never on test.",
            [("", paper)],
        )
    )
    if gains.empty:
        sections.append(Section("Synthetic gain", "No augmented arm ran: real-only study."))
    else:
        f = gains_figure(gains, fig_dir, metric, conf)
        curve_fig = ratio_curve_figure(gains, fig_dir, metric, conf)
        shown = [x for x in (f, curve_fig) if isinstance(x, figs.Figure)]
        made += shown
        note = "" if isinstance(curve_fig, figs.Figure) else f" No ratio curve: {curve_fig.reason}."
        sections.append(
            Section(
                "Synthetic gain, controlled for volume",
                f"{GAINS_TEXT} {_budget_note(results)}{note}",
                [("", display.display_gains(gains))],
                shown,
            )
        )
    if corr.empty:
        sections.append(
            Section(
                "Fidelity vs gain",
                "No fidelity summary (generation or fidelity "
                "disabled), or no plain mixing arm: nothing to correlate.",
            )
        )
    else:
        f = mmd_figure(joined, corr, fig_dir, metric, conf)
        made += [f] if f else []
        tabs = [("Correlations across corpora", display.display_corr(corr))]
        if not fisher.empty:
            tabs.append(
                (
                    "Fisher z: difference of Pearson r, smallest vs largest regime",
                    display.display_fisher(fisher),
                )
            )
        sections.append(
            Section("Fidelity vs controlled gain", FIDELITY_TEXT, tabs, [f] if f else [])
        )
    mix_tabs = []
    if not curve.empty:
        f = fixed_budget_figure(curve, fig_dir, metric, conf)
        made += [f] if f else []
        mix_tabs.append(("Fixed-budget curve", display.display_curve(curve)))
    if not mixing.empty:
        mix_tabs.append(
            (
                "Orderings (same rows and steps), filtering (fewer rows) and ensembling",
                display.display_pairs(mixing),
            )
        )
    if not losses.empty:
        mix_tabs.append(("Real-only losses vs bce", display.display_pairs(losses)))
    if not fewshot.empty:
        mix_tabs.append(
            (
                "Verdict cell vs the few-shot baseline (SetFit on the same real patents)",
                display.display_fewshot(fewshot),
            )
        )
    mix_figs = [f for f in made if f.name == "fixed_budget"]
    text = "" if mix_tabs else "No fixed-budget, ordering, filtering, ensemble or loss axis ran."
    sections.append(Section("Mixing and baselines", text, mix_tabs, mix_figs))
    if not retrieval.empty:
        f = retrieval_figure(retrieval, fig_dir, conf)
        made += [f] if f else []
        sections.append(
            Section(
                "Retrieval proxy vs classification",
                "nDCG@10 (relevance = Jaccard overlap of label sets) and micro-F1 changes over "
                "real_only, per augmented cell.",
                [("", display.display_retrieval(retrieval))],
                [f] if f else [],
            )
        )
    sections.append(_served_section(served, fig_dir, made))
    sections.append(
        Section(
            "Numerics",
            "The numerics guard's max |logit difference| against fp32 eager per "
            "precision x attention, its flag, and the trials run with each.",
            [("", display.display_numerics(num))],
        )
    )
    sections.append(
        Section(
            "All grid cells",
            f"Mean validation micro-F1 and {metric} with its {conf:.0%} interval, and the sd "
            "over runs, per cell in grid order.",
            [("", display.display_agg(agg, metric))],
        )
    )
    sections.append(Section("How these figures were computed", _methods_text(methods, a, opts)))
    return ReportResult(tables, made, sections, verdict, methods)


def _served_section(
    served: ServedLabels | str | None, fig_dir: Path, made: list[figs.Figure]
) -> Section:
    """The served model's per-label F1 figure (appended to `made`), or why there is none."""
    title = "Per-label F1 of the served model"
    if served is None:
        return Section(title, "No figure: the served model's predictions were not given.")
    if isinstance(served, str):
        return Section(title, f"No figure: {served}.")
    f = label_f1_figure(served, fig_dir)
    if isinstance(f, figs.NoFigure):
        return Section(title, f"No figure: {f.reason}.")
    made.append(f)
    text = (
        "Where the served classifier fails: each label's F1 on the test split beside how many "
        "real training patents carried it."
    )
    return Section(title, text, figures=[f])


def _methods_text(methods: list[str], a: Analysis, opts: StatsOptions) -> str:
    docs = (
        f"{a.n_docs} test documents resampled {opts.n_resamples} times (seed {opts.seed}), "
        "the same resamples for every trial"
        if a.n_docs
        else "test documents not resampled (no per-trial predictions)"
    )
    lines = [
        f"Choices (verdict cell, baselines, best corpus, fixed-budget optimum) are made on "
        f"{a.select}; {a.metric} is only reported.",
        "Intervals: " + ("; ".join(methods) if methods else "n/a") + f"; {docs}.",
        "With one regime draw an interval is conditional on that draw of real patents; set "
        "data.regime_draws to vary it. Details and references: docs/statistics.md.",
    ]
    return " ".join(lines)


def _md_table(df: pd.DataFrame) -> str:
    # Hand-written: pandas' to_markdown needs `tabulate`, one more dependency for ten lines.
    if df.empty:
        return "_(empty)_\n"
    cells = df.astype(object).where(df.notna(), "").astype(str)
    head = "| " + " | ".join(str(c).replace("|", "\\|") for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.values]
    return "\n".join([head, sep, *body]) + "\n"


def render_markdown(title: str, header: str, sections: list[Section], out_dir: Path) -> str:
    """report.md: figures linked by relative path, as SVG (sharp at any zoom, text kept as
    text, rendered by GitHub and most Markdown viewers; the PNG lies beside it)."""
    lines = [f"# {title}", "", header, ""]
    for s in sections:
        lines += [f"## {s.title}", ""] + ([s.text, ""] if s.text else [])
        for f in s.figures:
            lines += [
                f"![{f.title}]({f.svg.relative_to(out_dir).as_posix()})",
                "",
                f"*Figure: {f.caption}*",
                "",
            ]
        for name, t in s.tables:
            lines += ([f"**{name}**", ""] if name else []) + [_md_table(t)]
    return "\n".join(lines)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f0f0f0; } figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; }
</style></head><body>
<h1>{{ title }}</h1><p>{{ header }}</p>
{% for s in sections %}<h2>{{ s.title }}</h2>{% if s.text %}<p>{{ s.text }}</p>{% endif %}
{% for f in s.figures %}<figure>
<img alt="{{ f.title }}" src="data:image/png;base64,{{ images[f.name] }}">
<figcaption><b>{{ f.title }}.</b> {{ f.caption }}</figcaption></figure>{% endfor %}
{% for name, t in s.tables %}{% if name %}<h3>{{ name }}</h3>{% endif %}{{ t | safe }}{% endfor %}
{% endfor %}</body></html>
"""


def render_html(title: str, header: str, sections: list[Section]) -> str:
    """report.html: one self-contained file, figures embedded as base64 PNG."""
    import jinja2

    images = {
        f.name: base64.b64encode(f.path.read_bytes()).decode() for s in sections for f in s.figures
    }
    view = [
        Section(
            s.title,
            s.text,
            [(n, t.to_html(index=False, na_rep="", escape=True, border=0)) for n, t in s.tables],
            s.figures,
        )
        for s in sections
    ]
    env = jinja2.Environment(autoescape=True)
    return env.from_string(_HTML).render(
        title=html.unescape(title), header=header, sections=view, images=images
    )


def write_report(
    results: pd.DataFrame,
    summary: pd.DataFrame | None,
    numerics: list[dict[str, Any]],
    out_dir: Path,
    regime_order: list[str],
    study: str,
    metric: str = "test_micro_f1",
    opts: StatsOptions | None = None,
    scores: DocScores | None = None,
    select: str = "val_micro_f1",
    headline: dict[str, Any] | None = None,
    pool_runs: bool = True,
    served: ServedLabels | str | None = None,
) -> ReportResult:
    """Write tables/*.csv|parquet, figures/*.png and *.svg, verdict.json,
    variance_components.json, report.md and report.html into out_dir (`served`: see
    `build_sections`)."""
    opts = opts or StatsOptions()
    res = build_sections(
        results, summary, numerics, out_dir, regime_order, metric, opts, scores, select, headline,
        pool_runs, served,
    )  # fmt: skip
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    for name, t in res.tables.items():
        t.to_csv(tdir / f"{name}.csv", index=False)
        t.astype({c: str for c in t.columns if t[c].dtype == object}).to_parquet(
            tdir / f"{name}.parquet", index=False
        )
    verdict_doc = {
        "study": study,
        "metric": metric,
        "select_metric": select,
        "confidence": opts.confidence,
        "regimes": res.verdict,
    }
    (out_dir / "verdict.json").write_text(json.dumps(verdict_doc, indent=2, default=_json))
    comp = res.tables["variance_components"]
    (out_dir / "variance_components.json").write_text(
        json.dumps(pooled_components(comp), indent=2, default=_json)
    )
    status = normalize(results).status.value_counts()
    header = (
        f"Study {study}: {len(results)} trials ({int(status.get('ok', 0))} ok, "
        f"{int(status.get('failed', 0))} failed, {int(status.get('skipped', 0))} skipped); "
        f"measured on {metric}, every choice made on {select}; {opts.confidence:.0%} intervals "
        "(see the last section for how)."
    )
    title = f"synthpat report: {study}"
    (out_dir / "report.md").write_text(render_markdown(title, header, res.sections, out_dir))
    (out_dir / "report.html").write_text(render_html(title, header, res.sections))
    return res


def pooled_components(comp: pd.DataFrame) -> dict[str, Any]:
    """Variance components averaged over cells, overall and per family kind (for the plan)."""
    if comp.empty:
        return {"overall": None, "by_family_kind": {}, "n_docs": 0}

    def pool(df: pd.DataFrame) -> dict[str, Any]:
        return {
            "draw": _mean(df["draw"]),
            "seed": _mean(df["seed"]),
            "doc": _mean(df["doc"]),
            "cells": len(df),
            "n_draws": int(df.n_draws.max()),
            "n_seeds": int(df.n_seeds.max()),
        }

    kinds = {str(k): pool(g) for k, g in comp.groupby("family_kind") if str(k)}
    return {"overall": pool(comp), "by_family_kind": kinds, "n_docs": int(comp.n_docs.max())}


def _mean(s: pd.Series) -> float | None:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return float(v.mean()) if len(v) else None


def _json(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


__all__ = ["ReportResult", "Section", "write_report", "build_sections", "normalize"]
