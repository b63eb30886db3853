"""The report stage through `synthpat report`: planted trial and fidelity artifacts."""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from planted import plant_manifest
from scipy import stats
from typer.testing import CliRunner

from config import load_config
from config.loader import dump_config
from orchestrator.cache import Manifest
from orchestrator.cli import app
from tasks.artifacts import save_predictions as write_predictions
from tasks.artifacts import save_split
from tasks.files import write_json_atomic
from tasks.labels import LabelSpace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_report_tables import (  # noqa: E402
    N_CORPORA,
    VAL_BEST,
    planted_gain,
    planted_results,
    planted_summary,
)

CODES = ("A01B", "B02C", "C03D", "H04L")
N_TEST = 40
#: The trial serve picks: the highest val_micro_f1 (corpus VAL_BEST, 0.70), ties to the smaller id.
SERVED = f"r48-aug{VAL_BEST}-s0"


def _study(tmp_path: Path, synthetic: bool) -> Path:
    source = tmp_path / "patents.jsonl"
    source.write_text("")
    tree: dict = {
        "study": "rep",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "data": {
            "source": {"path": str(source)},
            "regimes": [{"name": "r96", "size": 96}, {"name": "r48", "size": 48}],
        },
        "trials": {"families": [{"kind": "tfidf_linear", "name": "tfidf"}], "seeds": [0, 1, 2]},
        "report": {"bootstrap_samples": 300},
        "resources": {"runs_dir": str(tmp_path / "runs")},
    }
    if synthetic:
        tree["generation"] = {
            "generators": [{"kind": "vllm", "name": "g", "model": "embedded:smollm2-135m"}]
        }
        tree["fidelity"] = {}
    else:
        tree["trials"]["arms"] = ["real_only"]
        tree["trials"]["losses"] = ["bce", "focal"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _plant(run_dir: Path, stage: str, frames: dict[str, pd.DataFrame], extra=None) -> None:
    d = run_dir / stage
    d.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        df.to_parquet(d / name, index=False)
    for name, obj in (extra or {}).items():
        write_json_atomic(d / name, obj)
    plant_manifest(run_dir, run_dir / "config.resolved.yaml", stage)


def _plant_predictions(run_dir: Path, results: pd.DataFrame) -> None:
    """The prepare stage's labels and test table, and each ok trial's predictions file written
    as the trials stage writes it."""
    rng = np.random.default_rng(0)
    space = LabelSpace(CODES, CODES, (10,) * len(CODES))
    (run_dir / "prepare" / "labels.json").write_text(json.dumps(space.to_json()))
    labels = [sorted(set(rng.choice(CODES, size=rng.integers(1, 3)))) for _ in range(N_TEST)]
    test = pd.DataFrame({"id": [f"t{i}" for i in range(N_TEST)], "text": "x", "labels": labels})
    save_split(run_dir / "prepare", "test", test)
    # The served trial's regime: its real training patents, 3 of them with C03D (its long tail).
    real = [["A01B"]] * 20 + [["B02C"]] * 10 + [["C03D"]] * 3 + [["H04L"]] * 15
    regime = pd.DataFrame({"id": [f"r{i}" for i in range(48)], "text": "x", "labels": real})
    save_split(run_dir / "prepare", "r48", regime)
    ckpt = run_dir / "trials" / "checkpoints" / SERVED
    ckpt.mkdir(parents=True)
    (ckpt / "classifier.json").write_text("{}")  # serve's choice only checks it is there
    folder = run_dir / "trials" / "predictions"
    folder.mkdir(parents=True)
    for tid in results[results.status == "ok"].trial_id:
        write_predictions(
            folder / f"{tid}.npz",
            rng.random((8, len(CODES))),
            rng.random((N_TEST, len(CODES))),
            np.full(len(CODES), 0.5),
            rng.random(N_TEST),
        )


def _run_dir(
    tmp_path: Path, synthetic: bool, results: pd.DataFrame, predictions: bool = False
) -> Path:
    cfg = load_config(_study(tmp_path, synthetic))
    run_dir = tmp_path / "runs" / "rep"
    run_dir.mkdir(parents=True)
    (run_dir / "config.resolved.yaml").write_text(dump_config(cfg))
    _plant(run_dir, "prepare", {})
    if synthetic:
        _plant(run_dir, "fidelity", {"summary.parquet": planted_summary()})
    guard = [
        {
            "family": "tfidf",
            "model": "",
            "precision": "fp32",
            "attention": "none",
            "max_abs_diff": 0.0,
            "mean_abs_diff": 0.0,
            "flagged": False,
            "skipped_reason": None,
        }
    ]
    _plant(run_dir, "trials", {"results.parquet": results}, {"numerics.json": guard})
    if predictions:
        _plant_predictions(run_dir, results)
    return run_dir


def test_report_from_run_dir_has_right_gains_correlations_and_figures(tmp_path: Path) -> None:
    results = planted_results()
    results["checkpoint"] = "checkpoints/" + results.trial_id
    run_dir = _run_dir(tmp_path, True, results, predictions=True)
    res = CliRunner().invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0, res.output
    out = run_dir / "report"
    gains = pd.read_csv(out / "tables" / "controlled_gains.csv")
    assert len(gains) == 2 * N_CORPORA
    for g in gains.itertuples():
        assert g.gain_control == pytest.approx(planted_gain(g.regime, int(g.strategy[1:])))
    fisher = pd.read_csv(out / "tables" / "fisher_z.csv")
    mmd = fisher[fisher.measure == "mmd2"].iloc[0]
    # regimes ordered by size, not by their order in the config
    assert (mmd.regime_1, mmd.regime_2) == ("r48", "r96")
    assert mmd.r1 > 0.99 and mmd.r2 < -0.99
    expected_z = (math.atanh(mmd.r1) - math.atanh(mmd.r2)) / math.sqrt(2 / (N_CORPORA - 3))
    assert mmd.z == pytest.approx(expected_z)
    names = ("gains", "mmd_vs_gain", "retrieval", "label_f1")  # one ratio: no ratio curve
    assert {p.name for p in (out / "figures").iterdir()} == {
        f"{n}.{ext}" for n in names for ext in ("png", "svg")
    }
    for n in names:
        root = ET.parse(out / "figures" / f"{n}.svg").getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert 'src="figures/' not in html  # self-contained
    md = (out / "report.md").read_text()
    assert "![Fidelity (MMD) vs controlled gain](figures/mmd_vs_gain.svg)" in md
    assert "![Per-label F1 of the served model](figures/label_f1.svg)" in md
    assert "No ratio curve: only one synthetic:real ratio ran (1)" in md
    label_part = md.split("## Per-label F1 of the served model", 1)[1].split("\n## ", 1)[0]
    assert f"test split ({N_TEST} documents) of the served model, trial {SERVED}" in label_part
    assert "among 84 finished trials with a checkpoint" in label_part
    assert "regime draw r48 (48 patents)" in label_part
    assert "1 of the 4 plotted labels have fewer than 5" in label_part  # C03D, 3 patents
    assert "3 paired runs per point (1 draw x 3 seeds, 40 test documents)" in md
    assert md.split("\n## ", 2)[1].startswith("Verdict")
    # the document bootstrap ran on the predictions: its variance is in every verdict
    doc = json.loads((out / "verdict.json").read_text())
    assert doc["study"] == "rep" and [v["regime"] for v in doc["regimes"]] == ["r48", "r96"]
    # the half-width without documents: t(2) at 1 - 0.05/12 (chosen among 6) x sd 0.002 / sqrt 3
    seeds_only = stats.t.ppf(1 - 0.05 / 12, 2) * 0.002 / math.sqrt(3)
    for v in doc["regimes"]:
        assert v["units"] == {"draws": 1, "seeds": 3, "documents": N_TEST}
        assert f"bootstrap over {N_TEST} test documents" in v["interval_method"]
        assert v["cell"]["strategy"] == f"s{VAL_BEST}" and v["n_cells_compared"] == N_CORPORA
        assert v["gain"] == pytest.approx(planted_gain(v["regime"], VAL_BEST))
        assert v["ci_low"] < v["gain"] < v["ci_high"]
        assert v["ci_high"] - v["gain"] > seeds_only  # random predictions: wide documents part
    components = json.loads((out / "variance_components.json").read_text())
    assert components["n_docs"] == N_TEST and components["overall"]["doc"] > 0
    assert f"{N_TEST} test documents resampled 300 times" in md
    manifest = Manifest.read(out)
    assert manifest is not None
    assert manifest.rows["figures"] == 4 and manifest.rows["gains"] == 2 * N_CORPORA
    # Input stages' fingerprints come from the config (the stage graph), not the planted ones.
    assert set(manifest.upstream) == {"prepare", "fidelity", "trials"}
    again = CliRunner().invoke(app, ["report", str(run_dir)])
    assert again.exit_code == 0
    assert Manifest.read(out).fingerprint == manifest.fingerprint


def test_older_run_without_predictions_still_reports(tmp_path: Path) -> None:
    # A run from before trials/predictions/ existed: intervals over seeds only, said so.
    run_dir = _run_dir(tmp_path, True, planted_results())
    res = CliRunner().invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0, res.output
    out = run_dir / "report"
    doc = json.loads((out / "verdict.json").read_text())
    assert len(doc["regimes"]) == 2
    for v in doc["regimes"]:
        assert v["units"] == {"draws": 1, "seeds": 3, "documents": 0}
        assert v["units_text"] == "1 draw x 3 seeds"
        assert "test documents not resampled" in v["interval_method"]
        assert v["gain"] == pytest.approx(planted_gain(v["regime"], VAL_BEST))
        assert v["significant"] is True
    md = (out / "report.md").read_text()
    assert "test documents not resampled (no per-trial predictions)" in md
    assert "No figure: no served model to score" in md
    assert not (out / "figures" / "label_f1.png").exists()
    assert json.loads((out / "variance_components.json").read_text())["n_docs"] == 0


def test_real_only_study_reports_losses_without_fidelity(tmp_path: Path) -> None:
    df = planted_results()
    run_dir = _run_dir(tmp_path, False, df[df.arm == "real_only"])
    res = CliRunner().invoke(app, ["report", str(tmp_path / "study.yaml")])
    assert res.exit_code == 0, res.output
    out = run_dir / "report"
    losses = pd.read_csv(out / "tables" / "losses.csv")
    assert sorted(losses.regime) == ["r48", "r96"]
    assert losses.gain_reference.tolist() == pytest.approx([0.05, 0.05])  # focal over bce
    assert not (out / "figures" / "gains.png").exists()
    md = (out / "report.md").read_text()
    assert "No augmented arm ran: real-only study." in md
    assert set(Manifest.read(out).upstream) == {"prepare", "trials"}  # no fidelity stage


def test_report_of_a_folder_without_run_config_fails_clearly(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert "no config.resolved.yaml" in res.output
