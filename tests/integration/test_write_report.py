"""write_report end to end: the Verdict section and verdict.json, sections, captions, figures,
the fixed-budget path, a pre-registered headline, regime draws with documents (seconds each:
every call renders the report's figures)."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.report.tables import StatsOptions
from tasks.report.writer import write_report
from tasks.simulate import SimConfig, simulate_study

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_report_tables import SEEDS, VAL_BEST, _row, planted_gain, planted_results  # noqa: E402

OPTS = StatsOptions(n_resamples=200)
REGIMES = ["r48", "r96"]
VERDICT_FIELDS = {
    "selected_by",
    "n_cells_compared",
    "cell",
    "gain",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "interval_method",
    "units",
    "significant",
}


def _fixed_budget_rows() -> list[dict]:
    """A fixed-budget curve whose test optimum (25%) is not its validation optimum (50%)."""
    rows = []
    grid = ((0.0, 0.45, 0.40), (0.25, 0.62, 0.50), (0.5, 0.58, 0.55), (1.0, 0.41, 0.30))
    for s in SEEDS:
        for frac, test, val in grid:
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
                    val_micro_f1=val,
                    test_micro_f1=test + 0.01 * s,
                    test_ndcg10=0.5,
                )
            )
    return rows


def _verdict(out: Path) -> dict:
    return json.loads((out / "verdict.json").read_text())


def _headings(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


def test_report_opens_with_the_verdict_and_writes_verdict_json(tmp_path: Path) -> None:
    res = write_report(planted_results(), None, [], tmp_path, REGIMES, "planted", opts=OPTS)
    doc = _verdict(tmp_path)
    assert (doc["study"], doc["metric"], doc["select_metric"]) == (
        "planted",
        "test_micro_f1",
        "val_micro_f1",
    )
    assert [v["regime"] for v in doc["regimes"]] == REGIMES
    for v in doc["regimes"]:
        assert set(v) >= VERDICT_FIELDS
        assert v["selected_by"] == "validation"
        assert v["n_cells_compared"] == 6
        # the validation argmax, not corpus 5 (the test argmax)
        assert v["cell"]["strategy"] == f"s{VAL_BEST}" and v["cell"]["family"] == "tfidf"
        assert v["gain"] == pytest.approx(planted_gain(v["regime"], VAL_BEST))
        assert v["ci_low"] < v["gain"] < v["ci_high"]
        assert 0 < v["p"] <= v["q"] + 1e-12 < 0.05
        assert v["significant"] is True
        assert v["units"] == {"draws": 1, "seeds": 3, "documents": 0}
        assert v["interval_method"].startswith("t interval over training seeds")
        assert "test documents not resampled" in v["interval_method"]
        assert "for the choice among 6 cells" in v["interval_method"]
    assert res.verdict == doc["regimes"]
    md = (tmp_path / "report.md").read_text()
    assert _headings(md)[0] == "Verdict"
    verdict_part = md.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert "- At r48, synthetic text adds +0.040 micro-F1 beyond volume" in verdict_part
    assert "| r96 | hurts |" in verdict_part
    html = (tmp_path / "report.html").read_text()
    assert html.index("<h2>Verdict</h2>") < html.index("<h2>Paper vs this run</h2>")
    components = json.loads((tmp_path / "variance_components.json").read_text())
    assert components["overall"]["seed"] == pytest.approx(0.002**2)
    assert components["overall"]["draw"] is None and components["n_docs"] == 0


def test_preregistered_headline_is_one_cell_compared(tmp_path: Path) -> None:
    headline = {"strategy": "s4", "family": "tfidf"}
    write_report(
        planted_results(), None, [], tmp_path, REGIMES, "pre", opts=OPTS, headline=headline
    )
    for v in _verdict(tmp_path)["regimes"]:
        assert v["n_cells_compared"] == 1
        assert v["selected_by"] == "pre-registered (report.headline)"
        assert v["cell"]["strategy"] == "s4"
        assert v["p"] == pytest.approx(v["p_unadjusted"])
        assert "for the choice among" not in v["interval_method"]
    md = (tmp_path / "report.md").read_text()
    assert "pre-registered in report.headline" in md
    with pytest.raises(ValueError, match="matches 0 augmented cells of regime r48") as err:
        write_report(
            planted_results(), None, [], tmp_path / "bad", REGIMES, "pre", opts=OPTS,
            headline={"strategy": "s4", "loss": "focal"},
        )  # fmt: skip
    assert "'loss': 'focal'" in str(err.value) and "'ordering'" in str(err.value)


def test_two_regime_draws_and_test_documents_reach_the_verdict(tmp_path: Path) -> None:
    study = simulate_study(SimConfig(draws=2, effect=0.4), 3)
    # tasks.simulate gives no nDCG; see test_retrieval_without_ndcg_reports_no_change
    results = study.results.assign(test_ndcg10=0.5)
    opts = StatsOptions(n_resamples=300, seed=2)
    write_report(results, None, [], tmp_path, REGIMES, "sim", opts=opts, scores=study.scores)
    doc = _verdict(tmp_path)
    assert len(doc["regimes"]) == 2
    for v in doc["regimes"]:
        assert v["units"] == {"draws": 2, "seeds": 2, "documents": 400}
        assert v["units_text"] == "2 draws x 2 seeds, 400 test documents"
        assert v["interval_method"].startswith("t interval over regime draws, its variance pooled")
        assert "+ bootstrap over 400 test documents" in v["interval_method"]
        assert v["conditional_on_draw"] is False
        assert np.isfinite([v["ci_low"], v["ci_high"]]).all()
        assert v["ci_low"] < v["gain"] < v["ci_high"]
        ids = v["trial_ids"]
        assert {t.split("-")[1] for t in ids} == {"d0", "d1"}  # both draws in the estimate
    components = json.loads((tmp_path / "variance_components.json").read_text())
    assert components["n_docs"] == 400
    assert components["overall"]["n_draws"] == 2
    assert components["overall"]["draw"] is not None and components["overall"]["doc"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "400 test documents resampled 300 times (seed 2)" in md


def test_report_with_fixed_budget_and_no_fidelity(tmp_path: Path) -> None:
    df = pd.concat([planted_results(), pd.DataFrame(_fixed_budget_rows())], ignore_index=True)
    res = write_report(df, None, [], tmp_path, REGIMES, "fb", opts=OPTS)
    names = [f.name for f in res.figures]
    assert names == ["gains", "fixed_budget", "retrieval"]  # one ratio, no served model given
    for f in res.figures:
        assert f.path == tmp_path / "figures" / f"{f.name}.png" and f.path.is_file()
        assert ET.parse(f.svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    fb = next(f for f in res.figures if f.name == "fixed_budget")
    assert "3 trials per point" in fb.caption
    gains_fig = next(f for f in res.figures if f.name == "gains")
    assert (
        "12 cells with a control; 3 paired runs per point (1 draw x 3 seeds); 4 cells without a "
        "control (fixed_budget): raw gain only." in gains_fig.caption
    )
    curve = res.tables["fixed_budget"]
    assert curve[curve.optimum].real_fraction.tolist() == [0.5]  # on test 25% is better
    paper = res.tables["paper_vs_run"].set_index("quantity")
    assert paper.loc["best real share at fixed budget", "this run"] == "50% (test 0.590)"
    assert paper.loc["MMD-gain r by regime, Fisher z", "this run"] == "n/a"
    md = (tmp_path / "report.md").read_text()
    assert "nothing to correlate" in md
    assert "![Fixed-budget mixing curve](figures/fixed_budget.svg)" in md
    assert "No ratio curve: only one synthetic:real ratio ran (1)" in md
    assert "No figure: the served model's predictions were not given." in md
    assert _headings(md)[:3] == [
        "Verdict",
        "Paper vs this run",
        "Synthetic gain, controlled for volume",
    ]
    assert (tmp_path / "tables" / "fixed_budget.parquet").is_file()
    back = pd.read_parquet(tmp_path / "tables" / "controlled_gains.parquet")
    assert len(back) == len(res.tables["controlled_gains"])
    # the fixed-budget cells have no control: they never enter the verdict
    assert {v["cell"]["arm"] for v in res.verdict} == {"real_plus_synthetic"}


def _at_two_ratios() -> pd.DataFrame:
    """planted_results at r48, each corpus also mixed at ratio 2 with its own control (+0.01)."""
    base = planted_results(("r48",))
    mixed = base[base.arm.isin(["real_plus_synthetic", "duplicate_to_match"])].copy()
    mixed["trial_id"] = mixed.trial_id + "-x2"
    mixed["controls"] = mixed.controls.where(mixed.controls == "", mixed.controls + "-x2")
    mixed["ratio"] = mixed.ratio.where(mixed.arm != "real_plus_synthetic", 2.0)
    mixed["n_train"] = mixed.n_train + 50
    plus = mixed.arm == "real_plus_synthetic"
    mixed.loc[plus, "test_micro_f1"] += 0.01
    return pd.concat([base, mixed], ignore_index=True)


def test_ratio_curve_shows_each_corpus_over_its_ratios(tmp_path: Path) -> None:
    res = write_report(_at_two_ratios(), None, [], tmp_path, ["r48"], "ratios", opts=OPTS)
    curve = next(f for f in res.figures if f.name == "ratio_curve")
    assert curve.path.is_file() and curve.svg.is_file()
    assert "(1, 2)" in curve.caption
    assert "12 cells with a control; 3 paired runs per point (1 draw x 3 seeds)." in curve.caption
    gains = res.tables["controlled_gains"]
    at2 = gains[gains.ratio == 2.0].set_index("strategy").gain_control
    at1 = gains[gains.ratio == 1.0].set_index("strategy").gain_control
    assert (at2 - at1).tolist() == pytest.approx([0.01] * 6)  # what the curve plots
    md = (tmp_path / "report.md").read_text()
    assert "![Gain vs synthetic:real ratio](figures/ratio_curve.svg)" in md
    assert "No ratio curve" not in md
