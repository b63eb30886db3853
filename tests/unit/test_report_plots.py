"""Report figures drawn from small frames: panels, lines and points in the matplotlib figure, the
PNG and SVG written, captions that give the counts, and the cases with nothing to draw."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from tasks.artifacts import save_predictions, save_split
from tasks.labels import LabelSpace
from tasks.report import figures as figs
from tasks.report import figures_gains as gain_figs
from tasks.report import figures_mixing as mix_figs
from tasks.report.figures_labels import plot_label_f1, served_labels
from tasks.report.findings import fidelity_correlations

OVER = "1 draw x 3 seeds, 40 test documents"
RATIOS = (0.5, 1.0, 2.0)


def _gain_row(regime: str, k: int, ratio: float, gain: float, half: float = 0.01) -> dict:
    return {
        "regime": regime,
        "arm": "real_plus_synthetic",
        "ratio": ratio,
        "real_fraction": np.nan,
        "control_size": np.nan,
        "ordering": "shuffled",
        "generator": "g",
        "strategy": f"s{k}",
        "variant": "plain",
        "family": "tfidf",
        "loss": "bce",
        "precision": "fp32",
        "attention": "none",
        "gain_control": gain,
        "gain_control_low": gain - half,
        "gain_control_high": gain + half,
        "n_gain_control": 3,
        "gain_real_only": 0.3 + gain,
        "gain_real_only_low": 0.3 + gain - half,
        "gain_real_only_high": 0.3 + gain + half,
        "n_gain_real_only": 3,
        "over": OVER,
        "method": "t interval over training seeds",
    }


def _gains(ratios=RATIOS, regimes=("r48", "r96"), corpora=2) -> pd.DataFrame:
    rows = [
        _gain_row(r, k, x, 0.01 * k + 0.02 * x)
        for r in regimes
        for k in range(corpora)
        for x in ratios
    ]
    return pd.DataFrame(rows)


def _bars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def _assert_written(fig: figs.Figure, out: Path) -> None:
    assert fig.path == out / f"{fig.name}.png" and fig.svg == out / f"{fig.name}.svg"
    assert fig.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    root = ET.parse(fig.svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_ratio_curve_has_a_panel_per_regime_and_two_lines_per_corpus(tmp_path: Path) -> None:
    drawn = gain_figs.plot_ratio_curve(_gains(), "test_micro_f1")
    assert isinstance(drawn, figs.Drawn)
    axes = _visible_axes(drawn.fig)
    assert [ax.get_title() for ax in axes] == ["r48, tfidf", "r96, tfidf"]
    for ax in axes:
        bars = _bars(ax)
        assert len(bars) == 4  # 2 corpora x (controlled, raw)
        controlled = bars[0].lines[0]
        assert controlled.get_xdata().tolist() == list(RATIOS)
        assert controlled.get_ydata().tolist() == pytest.approx([0.01, 0.02, 0.04])
        assert bars[1].lines[0].get_ydata().tolist() == pytest.approx([0.31, 0.32, 0.34])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "2"]
    legend = [t.get_text() for t in drawn.fig.legends[0].get_texts()]
    assert legend == ["s0", "s1", "vs duplicate_to_match (controlled)", "vs real_only (raw)"]
    assert "(0.5, 1, 2)" in drawn.caption
    assert f"12 cells with a control; 3 paired runs per point ({OVER})." in drawn.caption
    assert "95% paired intervals (t interval over training seeds)" in drawn.caption
    _assert_written(figs.save(drawn, tmp_path), tmp_path)


def test_ratio_curve_with_one_ratio_or_no_gains_says_why() -> None:
    one = gain_figs.plot_ratio_curve(_gains(ratios=(1.0,)), "test_micro_f1")
    assert isinstance(one, figs.NoFigure)
    assert one.reason.startswith("only one synthetic:real ratio ran (1)")
    none = gain_figs.plot_ratio_curve(pd.DataFrame(), "test_micro_f1")
    assert isinstance(none, figs.NoFigure) and none.name == "ratio_curve"


def test_ratio_curve_with_one_seed_draws_points_without_bars(tmp_path: Path) -> None:
    gains = _gains(regimes=("r48",), corpora=1)
    gains[["gain_control_low", "gain_control_high"]] = np.nan  # one seed: no interval
    gains["n_gain_control"] = 1
    f = gain_figs.ratio_curve_figure(gains, tmp_path, "test_micro_f1")
    assert isinstance(f, figs.Figure)
    _assert_written(f, tmp_path)
    assert "1 paired runs per point" in f.caption


def _joined(regimes=("r48", "r96"), corpora=5) -> pd.DataFrame:
    rows = []
    for regime, sign in zip(regimes, (1, -1), strict=False):
        for k in range(corpora):
            row = _gain_row(regime, k, 1.0, sign * 0.02 * k + 0.001 * (k % 2))
            row["fid_mmd2"] = 0.1 * k
            rows.append(row)
    return pd.DataFrame(rows)


def test_mmd_figure_fits_a_line_per_regime_with_r_and_its_interval(tmp_path: Path) -> None:
    joined = _joined()
    corr = fidelity_correlations(joined, n_permutations=99)
    drawn = gain_figs.plot_mmd(joined, corr, "test_micro_f1")
    assert isinstance(drawn, figs.Drawn)
    axes = _visible_axes(drawn.fig)
    assert [ax.get_title() for ax in axes] == ["r48", "r96"]
    pearson = corr[(corr.measure == "mmd2") & (corr.method == "pearson")].set_index("regime")
    for ax, sign in zip(axes, (1, -1), strict=True):
        (points,) = _bars(ax)
        assert len(points.lines[0].get_xdata()) == 5
        fit = [ln for ln in ax.lines if ln.get_label().startswith("Pearson")]
        assert len(fit) == 1
        slope = np.polyfit(fit[0].get_xdata(), fit[0].get_ydata(), 1)[0]
        assert np.sign(slope) == sign and abs(slope) == pytest.approx(0.2, abs=0.01)
        c = pearson.loc[ax.get_title()]
        label = fit[0].get_label()
        assert label.startswith(f"Pearson r={c.r:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}], n=5")
    assert "one panel per regime;" in drawn.caption
    assert f"10 corpus points; 3 paired runs per point ({OVER})" in drawn.caption
    assert "Fisher-z interval" in drawn.caption
    _assert_written(figs.save(drawn, tmp_path), tmp_path)


def test_mmd_figure_with_two_corpora_draws_no_line() -> None:
    joined = _joined(regimes=("r48",), corpora=2)
    drawn = gain_figs.plot_mmd(joined, fidelity_correlations(joined, n_permutations=99), "f1")
    (ax,) = _visible_axes(drawn.fig)
    assert not [ln for ln in ax.lines if ln.get_label().startswith("Pearson")]
    assert len(_bars(ax)) == 1


def _curve(regimes=("r48", "r96")) -> pd.DataFrame:
    rows = []
    for regime in regimes:
        for frac, mean, best in ((0.0, 0.4, False), (0.25, 0.6, True), (1.0, 0.3, False)):
            rows.append(
                {
                    "regime": regime,
                    "generator": "g",
                    "strategy": "s0",
                    "variant": "plain",
                    "ordering": "shuffled",
                    "family": "tfidf",
                    "loss": "bce",
                    "precision": "fp32",
                    "attention": "none",
                    "real_fraction": frac,
                    "n_trials": 3,
                    "mean": mean,
                    "ci_low": mean - 0.02,
                    "ci_high": mean + 0.02,
                    "optimum": best,
                    "over": "1 draw x 3 seeds",
                    "method": "t interval over training seeds",
                }
            )
    return pd.DataFrame(rows)


def test_fixed_budget_has_a_panel_per_regime_and_stars_the_val_optimum(tmp_path: Path) -> None:
    drawn = mix_figs.plot_fixed_budget(_curve(), "test_micro_f1")
    axes = _visible_axes(drawn.fig)
    assert [ax.get_title() for ax in axes] == ["r48", "r96"]
    for ax in axes:
        curve, star = ax.lines[0], ax.lines[1]
        assert curve.get_xdata().tolist() == [0.0, 0.25, 1.0]
        assert (star.get_xdata().tolist(), star.get_marker()) == ([0.25], "*")
        assert ax.xaxis.get_major_formatter()(0.25, 0) == "25%"
    assert "(0%, 25%, 100%; the rest synthetic)" in drawn.caption
    assert "3 trials per point (1 draw x 3 seeds)" in drawn.caption
    _assert_written(figs.save(drawn, tmp_path), tmp_path)


def test_every_figure_function_writes_png_and_svg(tmp_path: Path) -> None:
    gains = _gains()
    joined = _joined()
    ret = pd.DataFrame(
        {
            "regime": ["r48", "r96"],
            "f1_change": [0.3, 0.2],
            "f1_change_low": [0.25, 0.15],
            "f1_change_high": [0.35, 0.25],
            "ndcg_change": [-0.1, -0.05],
            "ndcg_change_low": [-0.12, -0.07],
            "ndcg_change_high": [-0.08, -0.03],
            "n_f1_change": [3, 3],
            "over": ["1 draw x 3 seeds"] * 2,
        }
    )
    corr = fidelity_correlations(joined, n_permutations=9)
    made = [
        gain_figs.gains_figure(gains, tmp_path, "test_micro_f1"),
        gain_figs.mmd_figure(joined, corr, tmp_path, "test_micro_f1"),
        mix_figs.fixed_budget_figure(_curve(), tmp_path, "test_micro_f1"),
        mix_figs.retrieval_figure(ret, tmp_path),
    ]
    assert [f.name for f in made] == ["gains", "mmd_vs_gain", "fixed_budget", "retrieval"]
    for f in made:
        _assert_written(f, tmp_path)
    assert "2 cells, 95% paired intervals" in made[3].caption
    assert gain_figs.gains_figure(pd.DataFrame(), tmp_path, "f1") is None
    assert mix_figs.fixed_budget_figure(pd.DataFrame(), tmp_path, "f1") is None


CODES = ("A01B", "B02C", "C03D", "H04L")


def _plant_served(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Labels, a 6-document test split, a regime of 5 real patents, one trial's decisions.

    Per label: A01B 2 of 2 found (F1 1); B02C 1 of 2 and one false alarm (F1 0.5); C03D never
    true, never predicted (no F1); H04L 1 true, missed (F1 0).
    """
    prepare, trials = tmp_path / "prepare", tmp_path / "trials"
    prepare.mkdir()
    space = LabelSpace(CODES, CODES, (10,) * len(CODES))
    (prepare / "labels.json").write_text(json.dumps(space.to_json()))
    test_labels = [["A01B"], ["A01B", "B02C"], ["B02C"], ["H04L"], [], []]
    test = pd.DataFrame({"id": [f"t{i}" for i in range(6)], "text": "x", "labels": test_labels})
    save_split(prepare, "test", test)
    regime_labels = [["A01B"], ["A01B"], ["A01B", "B02C"], ["C03D"], ["H04L"]]
    regime = pd.DataFrame({"id": list("abcde"), "text": "x", "labels": regime_labels})
    save_split(prepare, "r48", regime)
    proba = np.array(
        [[0.9, 0, 0, 0], [0.9, 0.9, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0.9, 0, 0], [0, 0, 0, 0]]
    )
    (trials / "predictions").mkdir(parents=True)
    save_predictions(
        trials / "predictions" / "t1.npz", proba[:2], proba, np.full(4, 0.5), np.zeros(6)
    )
    row = {"trial_id": "t1", "regime": "r48", "draw": 0, "arm": "real_plus_synthetic"}
    row.update(ratio=2.0, generator="g", family="tfidf", loss="bce", n_synthetic=10)
    row["val_micro_f1"] = 0.61
    return trials, prepare, row


def test_served_labels_scores_each_label_on_test(tmp_path: Path) -> None:
    trials, prepare, row = _plant_served(tmp_path)
    served = served_labels(trials, prepare, row, "val_micro_f1", 7)
    assert served.f1[[0, 1, 3]].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert np.isnan(served.f1[2])
    assert served.test_support.tolist() == [2, 2, 0, 1]
    assert served.train_support.tolist() == [3, 1, 1, 1]
    assert (served.n_test, served.n_train_real, served.regime_key) == (6, 5, "r48")


def test_label_f1_figure_sorts_labels_and_shows_support(tmp_path: Path) -> None:
    trials, prepare, row = _plant_served(tmp_path)
    served = served_labels(trials, prepare, row, "val_micro_f1", 7)
    drawn = plot_label_f1(served)
    bars_ax, support_ax = drawn.fig.axes
    heights = [p.get_height() for p in bars_ax.patches]
    assert heights == pytest.approx([1.0, 0.5, 0.0])  # sorted; C03D (no F1) left out
    assert [t.get_text() for t in bars_ax.get_xticklabels()] == ["A01B", "B02C", "H04L"]
    train, test = support_ax.lines
    assert train.get_ydata().tolist() == [3, 1, 1]
    assert test.get_ydata().tolist() == [2, 2, 1]
    c = drawn.caption
    assert "test split (6 documents)" in c and "trial t1" in c
    assert "highest val_micro_f1 (0.610) among 7 finished trials" in c
    assert "regime draw r48 (5 patents; its 10 synthetic rows are not counted)" in c
    assert "3 of the 3 plotted labels have fewer than 5" in c
    assert "1 of 4 labels have no test positive" in c
    _assert_written(figs.save(drawn, tmp_path), tmp_path)


def test_served_labels_without_predictions_or_with_wrong_shape_fail_clearly(
    tmp_path: Path,
) -> None:
    trials, prepare, row = _plant_served(tmp_path)
    with pytest.raises(FileNotFoundError, match="served trial t2 has no predictions"):
        served_labels(trials, prepare, {**row, "trial_id": "t2"}, "val_micro_f1", 7)
    save_predictions(
        trials / "predictions" / "t1.npz", np.zeros((2, 3)), np.zeros((6, 3)), np.zeros(3),
        np.zeros(6),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"shape \(6, 3\), but the test split is \(6, 4\)"):
        served_labels(trials, prepare, row, "val_micro_f1", 7)


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures drawn but not saved stay open in pyplot; close them after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
