"""`synthpat plan --pilot/--detect`: the power of the verdict's test from a pilot's components."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config import load_config
from orchestrator.cli import app
from orchestrator.plan_power import power_plan
from tasks.power import VarianceComponents, min_detectable_gain

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart-full.yaml"  # two regimes of 48 and 96


def _pilot(tmp_path: Path, draw: float | None = None) -> Path:
    run = tmp_path / "pilot"
    (run / "report").mkdir(parents=True)
    entry = {"draw": draw, "seed": 0.006**2, "doc": 0.2**2, "cells": 4, "n_draws": 1, "n_seeds": 2}
    doc = {
        "overall": entry,
        "by_family_kind": {"tfidf_linear": {**entry, "seed": 0.0}},
        "n_docs": 400,
    }
    (run / "report" / "variance_components.json").write_text(json.dumps(doc))
    return run


def test_power_lines_use_the_pilot_and_the_grids_candidates(tmp_path: Path) -> None:
    cfg = load_config(QUICKSTART)
    lines = power_plan(cfg, _pilot(tmp_path), detect=0.05)
    by = {(ln.regime, ln.family): ln for ln in lines}
    # The quickstart's r48 has 3 families x 2 corpora of augmented cells, r96 2 x 2.
    assert by[("r48", "tfidf-lr")].candidates == 6 and by[("r96", "tfidf-lr")].candidates == 4
    tf = by[("r48", "tfidf-lr")]
    assert tf.components.seed == 0.0 and tf.components.source.startswith("pilot tfidf_linear")
    # A one-draw pilot cannot measure the draw component: the stated default is used and named.
    assert "draw: default" in tf.components.source
    assert tf.n_docs == 400 and (tf.draws, tf.seeds) == (1, len(cfg.trials.seeds))
    # The figure is the one tasks.power gives for that design, tested at alpha / (6 x 2).
    # (the run variance pooled over its 4 cells: r48 and r96, 2 corpora each).
    assert tf.mde == pytest.approx(min_detectable_gain(tf.components, 1, 2, 400, 0.05, 12, cells=4))
    head = by[("r48", "minilm-head")]
    assert head.components.source == "pilot all (draw: default)"
    assert tf.needed is not None and tf.needed[0] * tf.needed[1] >= 2


def test_more_draws_detect_smaller_gains(tmp_path: Path) -> None:
    pilot = _pilot(tmp_path, draw=0.01**2)
    one = power_plan(load_config(QUICKSTART), pilot)
    four = power_plan(
        load_config(QUICKSTART, ["data.regime_draws=4", "trials.seeds=[0,1,2]"]), pilot
    )
    assert four[0].mde < one[0].mde
    assert four[0].draws == 4 and four[0].seeds == 3


def test_pre_registered_headline_needs_no_adjustment(tmp_path: Path) -> None:
    cfg = load_config(QUICKSTART, ['report.headline={"family": "tfidf-lr"}'])
    lines = power_plan(cfg, _pilot(tmp_path))
    assert {ln.candidates for ln in lines} == {1}


def test_cli_prints_the_table_and_refuses_a_pilot_without_a_report(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["plan", str(QUICKSTART), "--pilot", str(_pilot(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "detectable gain" in res.output and "minilm-head" in res.output
    bad = CliRunner().invoke(app, ["plan", str(QUICKSTART), "--pilot", str(tmp_path / "none")])
    assert bad.exit_code == 2
    assert "variance_components.json" in bad.output


def test_components_are_read_as_variances() -> None:
    vc = VarianceComponents(draw=0.0, seed=0.0, doc=0.2**2)
    # Documents only, no selection: the z test's MDE is (1.96 + 0.84) * 0.2 / sqrt(400).
    assert min_detectable_gain(vc, 1, 2, 400) == pytest.approx(2.80 * 0.01, abs=5e-4)
