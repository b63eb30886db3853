"""Report writer: sections, captions, markdown tables, fixed-budget and ensemble paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_tables import SEEDS, _row, planted_results

from tasks.report.tables import StatsOptions, mixing_comparisons
from tasks.report.writer import _md_table, write_report

OPTS = StatsOptions(n_resamples=200)


def _fixed_budget_rows() -> list[dict]:
    rows = []
    for s in SEEDS:
        for frac, v in ((0.0, 0.45), (0.25, 0.62), (0.5, 0.58), (1.0, 0.41)):
            rows.append(
                _row(
                    trial_id=f"fb{frac}-s{s}",
                    regime="r48",
                    arm="fixed_budget",
                    real_fraction=frac,
                    generator="g",
                    strategy="s0",
                    variant="plain",
                    seed=s,
                    test_micro_f1=v + 0.01 * s,
                    test_ndcg10=0.5,
                )
            )
    return rows


def test_report_with_fixed_budget_and_no_fidelity(tmp_path: Path) -> None:
    df = pd.concat([planted_results(), pd.DataFrame(_fixed_budget_rows())], ignore_index=True)
    res = write_report(df, None, [], tmp_path, ["r48", "r96"], "fb", opts=OPTS)
    names = [f.name for f in res.figures]
    assert names == ["gains", "fixed_budget", "retrieval"]
    fb = next(f for f in res.figures if f.name == "fixed_budget")
    assert "3 trials per point" in fb.caption
    paper = res.tables["paper_vs_run"].set_index("quantity")
    assert paper.loc["best real share at fixed budget", "this run"] == "25% [25%, 25%]"
    assert paper.loc["MMD-gain r by regime, Fisher z", "this run"] == "n/a"
    md = (tmp_path / "report.md").read_text()
    assert "nothing to correlate" in md
    assert (tmp_path / "tables" / "fixed_budget.parquet").is_file()
    back = pd.read_parquet(tmp_path / "tables" / "controlled_gains.parquet")
    assert len(back) == len(res.tables["controlled_gains"])


def test_ensemble_compared_with_best_plain_corpus() -> None:
    df = planted_results()
    ens = []
    for s in SEEDS:
        ens.append(
            _row(
                trial_id=f"ens-s{s}",
                regime="r48",
                arm="ensemble",
                ratio=1.0,
                seed=s,
                test_micro_f1=0.70 + 0.01 * s,
            )
        )
    comp = mixing_comparisons(pd.concat([df, pd.DataFrame(ens)]), "test_micro_f1", OPTS)
    row = comp[comp.comparison == "vs best plain corpus"]
    assert len(row) == 1
    # best plain corpus at r48 is s5: 0.55 + 0.104 + 0.01 s
    assert row.gain_reference.iloc[0] == pytest.approx(0.70 - 0.654)
    assert row.n_reference.iloc[0] == 3


def test_markdown_table_escapes_pipes_and_blanks_missing() -> None:
    t = pd.DataFrame({"a": ["x|y", None], "b": [1.5, np.nan]})
    assert _md_table(t).splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1.5 |", "|  |  |"]
    assert _md_table(pd.DataFrame()) == "_(empty)_\n"
