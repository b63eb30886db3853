"""Report tables on a planted results grid whose gains and correlations are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tasks.report.findings import (
    fidelity_correlations,
    paper_vs_run,
    regime_comparisons,
    with_fidelity,
)
from tasks.report.tables import (
    StatsOptions,
    aggregate,
    controlled_gains,
    fixed_budget_curve,
    mixing_comparisons,
    numerics_table,
    retrieval_vs_classification,
)

SEEDS = (0, 1, 2)
REGIMES = ("r48", "r96")
N_CORPORA = 6
OPTS = StatsOptions(n_resamples=200)


def planted_gain(regime: str, k: int) -> float:
    """Controlled gain of corpus k: rises with MMD at r48, falls at r96."""
    sign = 1 if regime == "r48" else -1
    return sign * 0.02 * k + 0.004 * (k % 2)


def planted_mmd(k: int) -> float:
    return 0.1 * k


def _row(**kw) -> dict:
    base = dict(
        ratio=np.nan,
        real_fraction=np.nan,
        ordering="shuffled",
        generator="",
        strategy="",
        variant="",
        family="tfidf",
        loss="bce",
        precision="fp32",
        attention="none",
        status="ok",
        reason="",
        controls="",
        numerics_flag=False,
    )
    base.update(kw)
    return base


def planted_results() -> pd.DataFrame:
    """real_only (bce and the better focal), per corpus an augmented arm and its own control.

    Each control has a distinct value, so a gain computed against the wrong control is wrong.
    """
    rows = []
    for regime in REGIMES:
        for s in SEEDS:
            for loss, base in (("bce", 0.30), ("focal", 0.35)):
                rows.append(
                    _row(
                        trial_id=f"{regime}-ro-{loss}-s{s}",
                        regime=regime,
                        arm="real_only",
                        loss=loss,
                        seed=s,
                        test_micro_f1=base + 0.01 * s,
                        test_ndcg10=0.5 + 0.01 * s,
                    )
                )
            for k in range(N_CORPORA):
                aug_id = f"{regime}-aug{k}-s{s}"
                control = 0.40 + 0.03 * k + 0.01 * s
                rows.append(
                    _row(
                        trial_id=f"{regime}-dup{k}-s{s}",
                        regime=regime,
                        arm="duplicate_to_match",
                        seed=s,
                        controls=aug_id,
                        n_train=100 + k,
                        test_micro_f1=control,
                        test_ndcg10=0.5,
                    )
                )
                rows.append(
                    _row(
                        trial_id=aug_id,
                        regime=regime,
                        arm="real_plus_synthetic",
                        ratio=1.0,
                        generator="g",
                        strategy=f"s{k}",
                        variant="plain",
                        seed=s,
                        test_micro_f1=control + planted_gain(regime, k),
                        test_ndcg10=0.5 + 0.01 * s - 0.1,
                    )
                )
    return pd.DataFrame(rows)


def planted_summary() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "corpus_id": f"{r}__g__s{k}__plain",
                "regime": r,
                "generator": "g",
                "strategy": f"s{k}",
                "variant": "plain",
                "mmd2": planted_mmd(k),
                "precision": 0.5,
                "recall": 0.1 * k,
            }
            for r in REGIMES
            for k in range(N_CORPORA)
        ]
    )


def test_controlled_gain_uses_each_arms_own_control() -> None:
    gains = controlled_gains(planted_results(), "test_micro_f1", OPTS)
    assert len(gains) == len(REGIMES) * N_CORPORA
    for g in gains.itertuples():
        k = int(g.strategy[1:])
        assert g.gain_control == pytest.approx(planted_gain(g.regime, k))
        assert g.n_control == 3 and g.n_trials == 3
        # raw gain over real_only (bce, same seed): 0.40 + 0.03k + gain - 0.30
        assert g.gain_real_only == pytest.approx(0.10 + 0.03 * k + planted_gain(g.regime, k))
        # the best real-only loss is focal (0.35), not the arm's own bce
        assert g.baseline_loss == "focal"
        assert g.gain_baseline == pytest.approx(0.05 + 0.03 * k + planted_gain(g.regime, k))
        # differences are constant across seeds: the paired interval collapses on the gain
        assert g.gain_control_low == pytest.approx(g.gain_control)


def test_comma_joined_control_serves_two_arms() -> None:
    df = planted_results()
    # One control for two arms of the same size: drop aug1's control and let aug0's cover both.
    drop = df.trial_id.str.match(r"r48-dup1-s\d")
    df = df[~drop].copy()
    for s in SEEDS:
        i = df.index[df.trial_id == f"r48-dup0-s{s}"][0]
        df.loc[i, "controls"] = f"r48-aug0-s{s},r48-aug1-s{s}"
    gains = controlled_gains(df, "test_micro_f1", OPTS).set_index(["regime", "strategy"])
    # aug1 = 0.43 + gain(1) + 0.01s; its control is now dup0 = 0.40 + 0.01s
    assert gains.loc[("r48", "s1"), "gain_control"] == pytest.approx(0.03 + planted_gain("r48", 1))
    assert gains.loc[("r96", "s1"), "gain_control"] == pytest.approx(planted_gain("r96", 1))


def test_aggregate_counts_and_means() -> None:
    df = planted_results()
    df.loc[df.trial_id == "r48-aug0-s2", "status"] = "failed"
    agg = aggregate(df, OPTS)
    assert len(agg) == len(REGIMES) * (2 + 2 * N_CORPORA)
    cell = agg[(agg.regime == "r48") & (agg.arm == "real_only") & (agg.loss == "focal")].iloc[0]
    assert cell.n_ok == 3
    assert cell.test_micro_f1_mean == pytest.approx(0.36)
    assert cell.test_micro_f1_std == pytest.approx(0.01)
    assert cell.test_micro_f1_ci_low >= 0.35 - 1e-12 and cell.test_micro_f1_ci_high <= 0.37 + 1e-12
    failed = agg[
        (agg.regime == "r48") & (agg.arm == "real_plus_synthetic") & (agg.strategy == "s0")
    ]
    assert (failed.n_ok.iloc[0], failed.n_failed.iloc[0]) == (2, 1)


def test_fidelity_correlation_and_fisher_z_on_planted_grid() -> None:
    gains = controlled_gains(planted_results(), "test_micro_f1", OPTS)
    joined = with_fidelity(gains, planted_summary())
    assert len(joined) == 12
    corr = fidelity_correlations(joined)
    mmd = corr[(corr.measure == "mmd2") & (corr.method == "pearson")].set_index("regime")
    x = [planted_mmd(k) for k in range(N_CORPORA)]
    for regime in REGIMES:
        expected = np.corrcoef(x, [planted_gain(regime, k) for k in range(N_CORPORA)])[0, 1]
        assert mmd.loc[regime, "r"] == pytest.approx(expected)
        assert mmd.loc[regime, "n"] == N_CORPORA
        assert mmd.loc[regime, "trials_per_point"] == 3
    comp = regime_comparisons(corr, list(REGIMES))
    row = comp[comp.measure == "mmd2"].iloc[0]
    assert (row.regime_1, row.regime_2) == ("r48", "r96")
    r1, r2 = mmd.loc["r48", "r"], mmd.loc["r96", "r"]
    z = (math.atanh(r1) - math.atanh(r2)) / math.sqrt(2 / (N_CORPORA - 3))
    assert row.z == pytest.approx(z)
    assert row.p < 0.001


def test_fixed_budget_curve_optimum() -> None:
    rows = []
    for s in SEEDS:
        for frac, v in ((0.1, 0.50), (0.25, 0.60), (0.5, 0.55), (1.0, 0.40)):
            rows.append(
                _row(
                    trial_id=f"fb{frac}-s{s}",
                    regime="r48",
                    arm="fixed_budget",
                    real_fraction=frac,
                    generator="g",
                    strategy="s",
                    variant="plain",
                    seed=s,
                    test_micro_f1=v + 0.01 * s,
                )
            )
    curve = fixed_budget_curve(pd.DataFrame(rows), "test_micro_f1", OPTS)
    assert len(curve) == 4
    opt = curve[curve.optimum]
    assert opt.real_fraction.tolist() == [0.25]
    assert (opt.optimum_low.iloc[0], opt.optimum_high.iloc[0]) == (0.25, 0.25)
    assert curve.set_index("real_fraction").loc[0.5, "mean"] == pytest.approx(0.56)


def test_mixing_comparisons_pair_by_corpus_and_seed() -> None:
    df = planted_results()
    extra = []
    for row in df[df.arm == "real_plus_synthetic"].to_dict("records"):
        extra.append(
            {
                **row,
                "trial_id": row["trial_id"] + "-cur",
                "ordering": "curriculum_real_first",
                "test_micro_f1": row["test_micro_f1"] - 0.05,
            }
        )
        extra.append(
            {
                **row,
                "trial_id": row["trial_id"] + "-filt",
                "arm": "filtered",
                "test_micro_f1": row["test_micro_f1"] + 0.02,
            }
        )
    comp = mixing_comparisons(pd.concat([df, pd.DataFrame(extra)]), "test_micro_f1", OPTS)
    cur = comp[comp.comparison == "vs shuffled"]
    filt = comp[comp.comparison == "vs plain mixing"]
    assert len(cur) == len(filt) == 12
    assert np.allclose(cur.gain_reference, -0.05)
    assert np.allclose(filt.gain_reference, 0.02)


def test_retrieval_numerics_and_paper_table() -> None:
    df = planted_results()
    ret = retrieval_vs_classification(df, OPTS)
    assert np.allclose(ret.ndcg_change, -0.1)
    assert np.allclose(ret.ndcg_change_rel, -0.1 / 0.51)
    guard = [
        {
            "family": "tfidf",
            "precision": "fp32",
            "attention": "none",
            "max_abs_diff": 0.0,
            "flagged": False,
            "skipped_reason": None,
        }
    ]
    num = numerics_table(guard, df, "test_micro_f1")
    assert num.n_trials.tolist() == [len(df)]
    gains = controlled_gains(df, "test_micro_f1", OPTS)
    corr = fidelity_correlations(with_fidelity(gains, planted_summary()))
    comp = regime_comparisons(corr, list(REGIMES))
    paper = paper_vs_run(
        aggregate(df, OPTS), gains, comp, pd.DataFrame(), ret, list(REGIMES), "test_micro_f1"
    ).set_index("quantity")
    # best augmented cell at r48 is corpus 5: control 0.55 + 0.104 (seed mean +0.01)
    assert paper.loc["augmented micro-F1", "this run"] == f"{0.56 + planted_gain('r48', 5):.3f}"
    assert paper.loc["real-only micro-F1", "paper"] == "0.120"
    assert paper.loc["controlled synthetic gain", "this run"].startswith("+0.104")
    assert paper.loc["best real share at fixed budget", "this run"] == "n/a"


def test_failed_control_drops_only_its_seed_pair() -> None:
    df = planted_results()
    failed = df.trial_id.isin(["r48-dup2-s1", "r48-ro-focal-s0", "r48-ro-focal-s1"])
    df.loc[failed, ["status", "test_micro_f1"]] = ["failed", np.nan]
    gains = controlled_gains(df, "test_micro_f1", OPTS).set_index(["regime", "strategy"])
    assert gains.loc[("r48", "s2"), "n_control"] == 2
    assert gains.loc[("r48", "s2"), "gain_control"] == pytest.approx(planted_gain("r48", 2))
    assert gains.loc[("r48", "s3"), "n_control"] == 3
    # focal is still the best real-only loss at r48 on its one remaining seed (0.37 vs bce 0.31)
    assert gains.loc[("r48", "s3"), "baseline_loss"] == "focal"
    assert gains.loc[("r48", "s3"), "n_baseline"] == 1
