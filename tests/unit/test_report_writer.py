"""Report writer helpers without rendering a report: markdown tables and the ensemble
comparison (write_report itself, figures included: tests/integration/test_write_report.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_report_tables import SEEDS, _row, planted_results

from tasks.report.tables import Analysis, StatsOptions, mixing_comparisons
from tasks.report.writer import _md_table

OPTS = StatsOptions(n_resamples=200)


def test_ensemble_compared_with_best_plain_corpus_on_validation() -> None:
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
                val_micro_f1=0.8,
                test_micro_f1=0.70 + 0.01 * s,
            )
        )
    a = Analysis(pd.concat([df, pd.DataFrame(ens)], ignore_index=True), opts=OPTS)
    comp = mixing_comparisons(a)
    row = comp[comp.comparison == "vs best plain corpus (val)"]
    assert len(row) == 1
    # best plain corpus at r48 on validation is s2 (0.46 + 0.04 + 0.01 s + noise), on test s5
    assert row.gain_reference.iloc[0] == pytest.approx(0.71 - 0.51)
    assert row.n_gain_reference.iloc[0] == 3


def test_markdown_table_escapes_pipes_and_blanks_missing() -> None:
    t = pd.DataFrame({"a": ["x|y", None], "b": [1.5, np.nan]})
    assert _md_table(t).splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1.5 |", "|  |  |"]
    assert _md_table(pd.DataFrame()) == "_(empty)_\n"
