"""Report tables and verdict on a planted results grid whose gains, choices and correlations are
known: every "best" is planted so that the test-best and the validation-best differ."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasks.inference import DocResampler, combined_df
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
    mixing_comparisons,
    numerics_table,
    retrieval_vs_classification,
    variance_components,
)
from tasks.report.verdict import verdicts
from tasks.simulate import SimConfig, simulate_study

SEEDS = (0, 1, 2)
REGIMES = ("r48", "r96")
N_CORPORA = 6
OPTS = StatsOptions(n_resamples=200)
#: Per-seed noise of the augmented trials (mean 0, sd 0.002): gains are exact on average but
#: their intervals are not degenerate.
NOISE = (-0.002, 0.0, 0.002)
#: The augmented corpus best on validation; on test corpus 5 is best in every regime.
VAL_BEST = 2


def planted_gain(regime: str, k: int) -> float:
    """Controlled gain of corpus k: rises with MMD at r48, falls at r96, no trend at r72."""
    if regime == "r72":
        return 0.01 * (k % 3)
    sign = 1 if regime == "r48" else -1
    return sign * 0.02 * k + 0.004 * (k % 2)


def planted_mmd(k: int) -> float:
    return 0.1 * k


def _row(**kw) -> dict:
    base = dict(
        draw=0,  # the trials stage writes the regime draw (0 for a study without draws)
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


def planted_results(regimes: tuple[str, ...] = REGIMES) -> pd.DataFrame:
    """real_only (bce, and focal: better on validation and test), per corpus an augmented arm
    and its own duplicate_to_match control.

    Each control has a distinct value, so a gain computed against the wrong control is wrong.
    The controls are the best baseline on test but the worst on validation; the augmented arm
    best on validation (VAL_BEST) is not the one best on test (corpus 5).
    """
    rows = []
    for regime in regimes:
        for s in SEEDS:
            for loss, base, val in (("bce", 0.30, 0.50), ("focal", 0.35, 0.60)):
                rows.append(
                    _row(
                        trial_id=f"{regime}-ro-{loss}-s{s}",
                        regime=regime,
                        arm="real_only",
                        loss=loss,
                        seed=s,
                        val_micro_f1=val,
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
                        val_micro_f1=0.20,
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
                        val_micro_f1=0.70 - 0.01 * abs(k - VAL_BEST),
                        test_micro_f1=control + planted_gain(regime, k) + NOISE[s],
                        test_ndcg10=0.5 + 0.01 * s - 0.1,
                    )
                )
    return pd.DataFrame(rows)


def planted_summary(regimes: tuple[str, ...] = REGIMES) -> pd.DataFrame:
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
            for r in regimes
            for k in range(N_CORPORA)
        ]
    )


def _t_half(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width of the classical t interval of a mean of n values with sample sd `sd`."""
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def test_controlled_gain_uses_each_arms_own_control() -> None:
    gains = controlled_gains(Analysis(planted_results(), opts=OPTS))
    assert len(gains) == len(REGIMES) * N_CORPORA
    # Per-seed gains g - 0.002, g, g + 0.002 in every cell; the seed variance is pooled over the
    # family's 12 cells (2 degrees of freedom each), so the t quantile has 24 df.
    half = float(stats.t.ppf(0.975, 24) * 0.002 / math.sqrt(3))
    own = controlled_gains(Analysis(planted_results(), opts=OPTS, pool_runs=False))
    assert own.gain_control_low.to_numpy() == pytest.approx(
        (own.gain_control - _t_half(0.002, len(SEEDS))).to_numpy()
    )
    assert (gains.method.str.contains("pooled over 12 cells")).all()
    for g in gains.itertuples():
        k = int(g.strategy[1:])
        assert g.gain_control == pytest.approx(planted_gain(g.regime, k))
        assert g.n_gain_control == 3 and g.n_trials == 3
        assert g.control_ids == ",".join(f"{g.regime}-dup{k}-s{s}" for s in SEEDS)
        # the paired t interval over the 3 seeds (no document part: no predictions)
        assert g.gain_control_low == pytest.approx(g.gain_control - half)
        assert g.gain_control_high == pytest.approx(g.gain_control + half)
        assert (g.n_seeds, g.n_draws, g.n_docs) == (3, 1, 0)
        assert g.over == "1 draw x 3 seeds"
        # raw gain over real_only (bce, same seed): 0.40 + 0.03k + gain - 0.30
        assert g.gain_real_only == pytest.approx(0.10 + 0.03 * k + planted_gain(g.regime, k))
        # the best baseline on validation is real_only focal (val 0.60), though on test the
        # duplicate_to_match control (val 0.20) is better; 3 candidates: ro bce/focal, dup bce
        assert g.baseline == "real_only, focal"
        assert g.baseline_candidates == 3
        assert g.gain_baseline == pytest.approx(0.05 + 0.03 * k + planted_gain(g.regime, k))
        assert g.val_mean == pytest.approx(0.70 - 0.01 * abs(k - VAL_BEST))
    for col in ("gain_control", "gain_baseline", "gain_real_only"):
        low, high = gains[f"{col}_low"], gains[f"{col}_high"]
        assert np.isfinite(low).all() and np.isfinite(high).all()
        assert ((low < gains[col]) & (gains[col] < high)).all()
    assert np.isfinite(gains.gain_control_q).all()
    assert (gains.gain_control_q >= gains.gain_control_p - 1e-12).all()


def test_comma_joined_control_serves_two_arms() -> None:
    df = planted_results()
    # One control for two arms of the same size: drop aug1's control and let aug0's cover both.
    drop = df.trial_id.str.match(r"r48-dup1-s\d")
    df = df[~drop].copy()
    for s in SEEDS:
        i = df.index[df.trial_id == f"r48-dup0-s{s}"][0]
        df.loc[i, "controls"] = f"r48-aug0-s{s},r48-aug1-s{s}"
    gains = controlled_gains(Analysis(df, opts=OPTS)).set_index(["regime", "strategy"])
    # aug1 = 0.43 + gain(1) + 0.01s; its control is now dup0 = 0.40 + 0.01s
    assert gains.loc[("r48", "s1"), "gain_control"] == pytest.approx(0.03 + planted_gain("r48", 1))
    assert gains.loc[("r48", "s1"), "control_ids"] == "r48-dup0-s0,r48-dup0-s1,r48-dup0-s2"
    assert gains.loc[("r48", "s0"), "gain_control"] == pytest.approx(planted_gain("r48", 0))
    assert gains.loc[("r96", "s1"), "gain_control"] == pytest.approx(planted_gain("r96", 1))


def test_failed_control_drops_only_its_seed_pair() -> None:
    # (Each cell's own seed variance here, as the hand computation below; pooling is tested
    # in test_controlled_gain_uses_each_arms_own_control.)
    df = planted_results()
    failed = df.trial_id.isin(["r48-dup2-s1", "r48-ro-focal-s0", "r48-ro-focal-s1"])
    df.loc[failed, ["status", "test_micro_f1"]] = ["failed", np.nan]
    gains = controlled_gains(Analysis(df, opts=OPTS, pool_runs=False)).set_index(
        ["regime", "strategy"]
    )
    s2 = gains.loc[("r48", "s2")]
    assert s2.n_gain_control == 2
    assert s2.control_ids == "r48-dup2-s0,,r48-dup2-s2"
    # seeds 0 and 2 remain: gains g - 0.002 and g + 0.002
    assert s2.gain_control == pytest.approx(planted_gain("r48", 2))
    assert s2.gain_control_high - s2.gain_control == pytest.approx(_t_half(0.004 / 2**0.5, 2))
    assert gains.loc[("r48", "s3"), "n_gain_control"] == 3
    assert gains.loc[("r96", "s2"), "n_gain_control"] == 3
    # focal is still the best baseline on validation at r48 on its one remaining seed
    s3 = gains.loc[("r48", "s3")]
    assert s3.baseline == "real_only, focal"
    assert s3.n_gain_baseline == 1
    # seed 2 only: aug3 = 0.51 + gain(3) + 0.002 against focal 0.37
    assert s3.gain_baseline == pytest.approx(0.14 + planted_gain("r48", 3) + 0.002)


def test_aggregate_counts_and_means() -> None:
    df = planted_results()
    df.loc[df.trial_id == "r48-aug0-s2", "status"] = "failed"
    agg = aggregate(Analysis(df, opts=OPTS))
    assert len(agg) == len(REGIMES) * (2 + 2 * N_CORPORA)
    cell = agg[(agg.regime == "r48") & (agg.arm == "real_only") & (agg.loss == "focal")].iloc[0]
    assert cell.n_ok == 3
    assert cell.test_micro_f1_mean == pytest.approx(0.36)
    assert cell.val_micro_f1_mean == pytest.approx(0.60)
    assert cell.test_micro_f1_std == pytest.approx(0.01)
    half = _t_half(0.01, 3)
    assert cell.test_micro_f1_ci_low == pytest.approx(0.36 - half)
    assert cell.test_micro_f1_ci_high == pytest.approx(0.36 + half)
    failed = agg[
        (agg.regime == "r48") & (agg.arm == "real_plus_synthetic") & (agg.strategy == "s0")
    ]
    assert (failed.n_ok.iloc[0], failed.n_failed.iloc[0]) == (2, 1)


def test_verdict_cell_is_the_validation_argmax() -> None:
    a = Analysis(planted_results(), opts=OPTS, pool_runs=False)
    gains = controlled_gains(a)
    # on test corpus 5 is the best augmented cell in both regimes
    for regime in REGIMES:
        cells = gains[gains.regime == regime]
        assert cells.loc[cells["mean"].idxmax(), "strategy"] == "s5"
    out = verdicts(a, gains, list(REGIMES))
    assert [v["regime"] for v in out] == list(REGIMES)
    se = 0.002 / math.sqrt(3)
    for v in out:
        assert v["cell"]["strategy"] == f"s{VAL_BEST}"
        assert v["selected_by"] == "validation"
        assert v["n_cells_compared"] == N_CORPORA
        assert v["gain"] == pytest.approx(planted_gain(v["regime"], VAL_BEST))
        assert v["trial_ids"] == [f"{v['regime']}-aug{VAL_BEST}-s{s}" for s in SEEDS]
        # Bonferroni for the choice among 6: p x 6 and the interval at level 1 - 0.05/6 (df 2)
        p_raw = 2 * stats.t.sf(abs(v["gain"]) / se, 2)
        assert v["p_unadjusted"] == pytest.approx(p_raw)
        assert v["p"] == pytest.approx(min(1.0, 6 * p_raw))
        half = stats.t.ppf(1 - 0.05 / 12, 2) * se
        assert v["ci_low"] == pytest.approx(v["gain"] - half)
        assert v["ci_high"] == pytest.approx(v["gain"] + half)
        assert v["units"] == {"draws": 1, "seeds": 3, "documents": 0}
        assert v["conditional_on_draw"] is True
        assert v["significant"] is True
        assert v["baseline"] == "real_only, focal"
    # BH over two regimes with equal p: q = p
    assert out[0]["q"] == pytest.approx(out[1]["q"]) and out[0]["q"] == pytest.approx(out[0]["p"])
    assert out[0]["sentence"].startswith("At r48, synthetic text adds +0.040 micro-F1 beyond")
    assert "chosen on validation among 6 augmented cells" in out[0]["sentence"]
    assert "does worse than the same volume" in out[1]["sentence"]


def test_preregistered_headline_compares_one_cell() -> None:
    a = Analysis(planted_results(), opts=OPTS, pool_runs=False)
    gains = controlled_gains(a)
    out = verdicts(a, gains, list(REGIMES), {"strategy": "s4", "ratio": 1.0})
    for v in out:
        assert v["cell"]["strategy"] == "s4"
        assert v["n_cells_compared"] == 1
        assert v["selected_by"] == "pre-registered (report.headline)"
        assert v["p"] == pytest.approx(v["p_unadjusted"])
        assert v["gain"] == pytest.approx(planted_gain(v["regime"], 4))
        half = _t_half(0.002, 3)
        assert v["ci_high"] - v["gain"] == pytest.approx(half)
    with pytest.raises(ValueError, match="matches 0 augmented cells") as none:
        verdicts(a, gains, list(REGIMES), {"strategy": "s9"})
    assert "'strategy': 's9'" in str(none.value) and "'family'" in str(none.value)
    with pytest.raises(ValueError, match="matches 6 augmented cells") as many:
        verdicts(a, gains, list(REGIMES), {"generator": "g"})
    assert "'generator': 'g'" in str(many.value) and "'variant'" in str(many.value)
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        verdicts(a, gains, list(REGIMES), {"colour": "red"})


def test_fidelity_correlation_and_fisher_z_on_planted_grid() -> None:
    # Three regimes given out of size order; r72 (the middle one) has no trend and must not
    # enter the Fisher z, which compares the smallest and the largest regime only.
    regimes = ("r72", "r96", "r48")
    order = ["r48", "r72", "r96"]
    gains = controlled_gains(Analysis(planted_results(regimes), opts=OPTS))
    joined = with_fidelity(gains, planted_summary(regimes))
    assert len(joined) == 3 * N_CORPORA
    corr = fidelity_correlations(joined, n_permutations=999)
    mmd = corr[(corr.measure == "mmd2") & (corr.method == "pearson")].set_index("regime")
    x = [planted_mmd(k) for k in range(N_CORPORA)]
    for regime in regimes:
        expected = np.corrcoef(x, [planted_gain(regime, k) for k in range(N_CORPORA)])[0, 1]
        assert mmd.loc[regime, "r"] == pytest.approx(expected)
        assert mmd.loc[regime, "n"] == N_CORPORA
        assert mmd.loc[regime, "trials_per_point"] == 3
    # One generator: all 6! arrangements enumerated; only the identity and the reversal are as
    # extreme as a strictly monotone relation.
    for regime in ("r48", "r96"):
        assert mmd.loc[regime, "p"] == pytest.approx(2 / 720)
        assert mmd.loc[regime, "p_method"] == "permutation within generator (720 arrangements)"
    tested = corr[corr.p.notna()]  # a constant measure (PRDC precision) has no r and no p
    assert len(tested) == 3 * 2 * 2  # mmd2 and recall, Pearson and Spearman, 3 regimes
    assert (tested.q >= tested.p - 1e-12).all() and corr.q[corr.p.isna()].isna().all()
    comp = regime_comparisons(corr, order)
    rows = comp[comp.measure == "mmd2"]
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.regime_1, row.regime_2) == ("r48", "r96")
    r1, r2 = mmd.loc["r48", "r"], mmd.loc["r96", "r"]
    assert (row.r1, row.r2) == pytest.approx((r1, r2))
    assert not np.isclose(mmd.loc["r72", "r"], [r1, r2]).any()  # using r72 would show
    assert "r72" not in set(comp.regime_1) | set(comp.regime_2)
    z = (math.atanh(r1) - math.atanh(r2)) / math.sqrt(2 / (N_CORPORA - 3))
    assert row.z == pytest.approx(z)
    assert row.p < 0.001


def test_fixed_budget_optimum_is_chosen_on_validation() -> None:
    rows = []
    # On test 25% is best; on validation 50%.
    grid = ((0.1, 0.50, 0.40), (0.25, 0.60, 0.45), (0.5, 0.55, 0.52), (1.0, 0.40, 0.30))
    for s in SEEDS:
        for frac, test, val in grid:
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
                    val_micro_f1=val,
                    test_micro_f1=test + 0.01 * s,
                )
            )
    a = Analysis(pd.DataFrame(rows), opts=OPTS)
    curve = fixed_budget_curve(a)
    assert len(curve) == 4
    opt = curve[curve.optimum]
    assert opt.real_fraction.tolist() == [0.5]
    assert set(curve.optimum_fraction) == {0.5}
    assert set(curve.n_fractions) == {4}
    by = curve.set_index("real_fraction")
    assert by.loc[0.5, "mean"] == pytest.approx(0.56)
    assert by.loc[0.25, "val_mean"] == pytest.approx(0.45)
    assert by.loc[0.5, "ci_high"] - 0.56 == pytest.approx(_t_half(0.01, 3))
    paper = paper_vs_run(
        [], pd.DataFrame(), pd.DataFrame(), curve, pd.DataFrame(), ["r48"], aggregate(a),
        "test_micro_f1",
    ).set_index("quantity")  # fmt: skip
    fb = paper.loc["best real share at fixed budget"]
    assert fb["this run"] == "50% (test 0.560)"
    assert "chosen on validation among 4 shares" in fb["where"]


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
    a = Analysis(pd.concat([df, pd.DataFrame(extra)], ignore_index=True), opts=OPTS)
    comp = mixing_comparisons(a)
    cur = comp[comp.comparison == "vs shuffled"]
    filt = comp[comp.comparison == "vs plain mixing"]
    assert len(cur) == len(filt) == 12
    assert np.allclose(cur.gain_reference, -0.05)
    assert np.allclose(filt.gain_reference, 0.02)
    assert (cur.n_gain_reference == 3).all()


def test_retrieval_numerics_and_paper_table() -> None:
    df = planted_results()
    a = Analysis(df, opts=OPTS)
    ret = retrieval_vs_classification(a, Analysis(df, "test_ndcg10", opts=OPTS))
    assert len(ret) == len(REGIMES) * N_CORPORA
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
    num = numerics_table(guard, a)
    assert num.n_trials.tolist() == [len(df)]
    gains = controlled_gains(a)
    corr = fidelity_correlations(with_fidelity(gains, planted_summary()), n_permutations=999)
    comp = regime_comparisons(corr, list(REGIMES))
    verdict = verdicts(a, gains, list(REGIMES))
    paper = paper_vs_run(
        verdict, gains, comp, pd.DataFrame(), ret, list(REGIMES), aggregate(a), "test_micro_f1"
    ).set_index("quantity")
    # the verdict cell at r48 is corpus 2 (best on validation): control 0.46 + 0.04 (+0.01 mean)
    assert paper.loc["augmented micro-F1", "this run"] == f"{0.47 + planted_gain('r48', 2):.3f}"
    assert paper.loc["duplicate-to-match control micro-F1", "this run"] == "0.470"
    assert paper.loc["real-only micro-F1", "this run"] == "0.310"  # bce, the cell's own loss
    assert paper.loc["real-only micro-F1", "paper"] == "0.120"
    assert paper.loc["controlled synthetic gain", "this run"].startswith("+0.040 [")
    base = paper.loc["gain vs best non-augmentation baseline"]
    assert base["this run"].startswith(f"{0.05 + 0.06 + 0.04:+.3f} [")
    assert base["this run"].endswith("(real_only, focal)")
    assert "not volume-controlled" in base["where"]
    assert paper.loc["MMD-gain r, smallest regime (r48)", "this run"].startswith("+0.99")
    assert paper.loc["best real share at fixed budget", "this run"] == "n/a"
    assert "nDCG@10 change of the verdict cell" in paper.index


def test_variance_components_of_the_planted_gains() -> None:
    a = Analysis(planted_results(), opts=OPTS)
    comp = variance_components(a, controlled_gains(a))
    assert len(comp) == len(REGIMES) * N_CORPORA
    assert np.allclose(comp.seed, 0.002**2)  # var(-0.002, 0, 0.002)
    assert comp.draw.isna().all() and comp["doc"].isna().all()  # one draw, no predictions
    assert (comp.n_seeds == 3).all() and (comp.n_docs == 0).all()


def test_document_bootstrap_enters_the_controlled_gain_interval() -> None:
    cfg = SimConfig(
        regimes={"r48": 48}, families={"f": -0.6}, deterministic=(), family_regimes={},
        corpora=(("g", "synthesis"),), seeds=3, n_test=300, effect=0.3,
    )  # fmt: skip
    study = simulate_study(cfg, 7)
    res = DocResampler(study.scores, "micro_f1", 300, seed=1)
    a = Analysis(study.results, opts=StatsOptions(n_resamples=300, seed=1), resampler=res)
    (g,) = controlled_gains(a).itertuples()
    assert (g.n_docs, g.n_seeds, g.n_draws) == (300, 3, 1)
    assert g.over == "1 draw x 3 seeds, 300 test documents"
    assert "bootstrap over 300 test documents" in g.method
    # By hand: run part over the 3 seeds, document part over the paired replicates.
    df = study.results.set_index("trial_id")
    aug, ctl = g.trial_ids.split(","), g.control_ids.split(",")
    d = df.loc[aug, "test_micro_f1"].to_numpy() - df.loc[ctl, "test_micro_f1"].to_numpy()
    var_runs = d.var(ddof=1) / 3
    var_docs = (res.replicates(aug) - res.replicates(ctl)).mean(axis=0).var(ddof=1)
    assert var_docs > 0
    half = stats.t.ppf(0.975, combined_df(var_runs, 2, var_docs)) * math.sqrt(var_runs + var_docs)
    assert g.gain_control == pytest.approx(d.mean())
    assert g.gain_control_high - g.gain_control == pytest.approx(half, rel=1e-4)
    assert g.gain_control_low < g.gain_control < g.gain_control_high
    # the document replicates are centred on the full-test-set value
    assert res.replicates(aug).mean() == pytest.approx(
        df.loc[aug, "test_micro_f1"].mean(), abs=0.01
    )


def test_results_without_a_draw_column_are_one_draw() -> None:
    gains = controlled_gains(Analysis(planted_results().drop(columns="draw"), opts=OPTS))
    assert (gains.n_draws == 1).all()


def test_retrieval_without_ndcg_reports_no_change() -> None:
    df = planted_results().drop(columns="test_ndcg10")
    ret = retrieval_vs_classification(
        Analysis(df, opts=OPTS), Analysis(df, "test_ndcg10", opts=OPTS)
    )
    assert ret.empty or ret.ndcg_change.isna().all()


def test_the_headline_keys_are_the_cell_keys_a_verdict_names() -> None:
    # One list, in config (which validates report.headline); the report's cell columns add
    # only the regime and a control's size.
    from config.report import HEADLINE_KEYS
    from tasks.report.tables import CELL

    assert list(HEADLINE_KEYS) == [k for k in CELL if k not in ("regime", "control_size")]
