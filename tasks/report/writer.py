"""Build the report: every table (CSV + Parquet), the figures, `report.md` and `report.html`."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.report import display
from tasks.report import figures as figs
from tasks.report.findings import (
    fidelity_correlations,
    paper_vs_run,
    regime_comparisons,
    with_fidelity,
)
from tasks.report.tables import (
    CELL,
    StatsOptions,
    aggregate,
    controlled_gains,
    fixed_budget_curve,
    mixing_comparisons,
    normalize,
    numerics_table,
    paired_comparison,
    retrieval_vs_classification,
)

GAINS_TEXT = (
    "Each augmented arm against its own duplicate_to_match control (same size, real rows "
    "resampled), the best real-only loss, and real_only with the same loss; paired bootstrap "
    "CIs over seeds."
)
FIDELITY_TEXT = (
    "Per regime, correlation between each corpus's fidelity measure and its controlled gain "
    "(Pearson with a Fisher-z CI, Spearman with the 1.06/sqrt(n-3) SE); Fisher's z compares two "
    "regimes, with Zou's CI on r1 - r2. Intervals need n >= 4 corpora."
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
    """What `write_report` wrote: the tables by name and the figures."""

    tables: dict[str, pd.DataFrame]
    figures: list[figs.Figure]
    sections: list[Section]


def loss_comparisons(results: pd.DataFrame, metric: str, opts: StatsOptions) -> pd.DataFrame:
    """Each real-only loss against bce on the same seed (the non-augmentation baselines)."""
    df = normalize(results)
    real = df.arm == "real_only"
    if not ((real & (df.loss == "bce")).any() and (real & (df.loss != "bce")).any()):
        return pd.DataFrame()
    keys = ["regime", "family", "precision", "attention", "seed"]
    return paired_comparison(
        df, metric, real & (df.loss != "bce"), real & (df.loss == "bce"), keys, opts, "vs bce"
    )


def build_sections(
    results: pd.DataFrame,
    summary: pd.DataFrame | None,
    numerics: list[dict[str, Any]],
    out_dir: Path,
    regime_order: list[str],
    metric: str = "test_micro_f1",
    opts: StatsOptions | None = None,
) -> ReportResult:
    """Compute every table and figure of the report; write figures under out_dir/figures."""
    opts = opts or StatsOptions()
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    conf = opts.confidence
    agg = aggregate(results, opts)
    gains = controlled_gains(results, metric, opts)
    joined = with_fidelity(gains, summary)
    corr = fidelity_correlations(joined, conf)
    fisher = regime_comparisons(corr, regime_order, conf)
    curve = fixed_budget_curve(results, metric, opts)
    mixing = mixing_comparisons(results, metric, opts)
    losses = loss_comparisons(results, metric, opts)
    retrieval = retrieval_vs_classification(results, opts)
    num = numerics_table(numerics, results, metric)
    paper = paper_vs_run(agg, gains, fisher, curve, retrieval, regime_order, metric)
    tables = {
        "aggregate": agg,
        "controlled_gains": gains,
        "fidelity_gain": joined,
        "correlations": corr,
        "fisher_z": fisher,
        "fixed_budget": curve,
        "mixing": mixing,
        "losses": losses,
        "retrieval": retrieval,
        "numerics": num,
        "paper_vs_run": paper,
    }
    made: list[figs.Figure] = []
    sections = [
        Section(
            "Paper vs this run",
            f"Headline figures of the paper beside the same "
            f"quantities from this run ({metric}, {conf:.0%} CIs).",
            [("", paper)],
        )
    ]
    if gains.empty:
        sections.append(Section("Synthetic gain", "No augmented arm ran: real-only study."))
    else:
        f = figs.gains_figure(gains, fig_dir, metric, conf)
        made += [f] if f else []
        sections.append(
            Section(
                "Synthetic gain, controlled for volume",
                GAINS_TEXT,
                [("", display.display_gains(gains))],
                [f] if f else [],
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
        f = figs.mmd_figure(joined, corr, fig_dir, metric, conf)
        made += [f] if f else []
        tabs = [("Correlations across corpora", display.display_corr(corr))]
        if not fisher.empty:
            tabs.append(
                (
                    "Fisher z: difference of Pearson r between regimes",
                    display.display_fisher(fisher),
                )
            )
        sections.append(
            Section(
                "Fidelity vs controlled gain",
                FIDELITY_TEXT,
                tabs,
                [f] if f else [],
            )
        )
    mix_tabs = []
    if not curve.empty:
        f = figs.fixed_budget_figure(curve, fig_dir, metric, conf)
        made += [f] if f else []
        mix_tabs.append(("Fixed-budget curve", display.display_curve(curve)))
    if not mixing.empty:
        mix_tabs.append(("Orderings, filtering and ensembling", display.display_pairs(mixing)))
    if not losses.empty:
        mix_tabs.append(("Real-only losses vs bce", display.display_pairs(losses)))
    mix_figs = [f for f in made if f.name == "fixed_budget"]
    text = "" if mix_tabs else "No fixed-budget, ordering, filtering, ensemble or loss axis ran."
    sections.append(Section("Mixing and baselines", text, mix_tabs, mix_figs))
    if not retrieval.empty:
        f = figs.retrieval_figure(retrieval, fig_dir, conf)
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
            f"Mean {metric} [{conf:.0%} bootstrap CI] and sd over seeds.",
            [("", display.display_agg(agg, metric))],
        )
    )
    return ReportResult(tables, made, sections)


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
    """report.md: figures linked by relative path."""
    lines = [f"# {title}", "", header, ""]
    for s in sections:
        lines += [f"## {s.title}", ""] + ([s.text, ""] if s.text else [])
        for f in s.figures:
            lines += [
                f"![{f.title}]({f.path.relative_to(out_dir).as_posix()})",
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
) -> ReportResult:
    """Write tables/*.csv|parquet, figures/*.png, report.md and report.html into out_dir."""
    opts = opts or StatsOptions()
    res = build_sections(results, summary, numerics, out_dir, regime_order, metric, opts)
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    for name, t in res.tables.items():
        t.to_csv(tdir / f"{name}.csv", index=False)
        t.astype({c: str for c in t.columns if t[c].dtype == object}).to_parquet(
            tdir / f"{name}.parquet", index=False
        )
    status = normalize(results).status.value_counts()
    header = (
        f"Study {study}: {len(results)} trials ({int(status.get('ok', 0))} ok, "
        f"{int(status.get('failed', 0))} failed, {int(status.get('skipped', 0))} skipped); "
        f"metric {metric}; {opts.confidence:.0%} intervals from {opts.n_resamples} bootstrap "
        f"resamples over seeds (seed {opts.seed})."
    )
    seeds = normalize(results).query("status == 'ok'").groupby(CELL, dropna=False).size()
    if len(seeds) and seeds.min() < 5:
        # A percentile bootstrap over 2-4 seeds can only take a handful of values: say so.
        header += (
            f" Some cells have only {int(seeds.min())} seed(s): their bootstrap intervals are "
            f"too narrow to read as {opts.confidence:.0%} coverage; firm conclusions need more "
            "seeds."
        )
    title = f"synthpat report: {study}"
    (out_dir / "report.md").write_text(render_markdown(title, header, res.sections, out_dir))
    (out_dir / "report.html").write_text(render_html(title, header, res.sections))
    return res


__all__ = ["ReportResult", "Section", "write_report", "build_sections"]
