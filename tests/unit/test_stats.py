"""tasks.stats and tasks.inference against scipy, scikit-learn and hand-worked values.

Coverage, false-positive rates and BH's step-up rule are checked by simulation in
tests/integration/test_calibration.py; here each function's values on small inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, precision_score, recall_score

from tasks.inference import DocResampler, DocScores, combined_df, estimate, estimate_runs
from tasks.stats import (
    bh_qvalues,
    cluster_permutation_pvalue,
    compare_correlations,
    correlation,
)


def test_fisher_z_hand_worked_paper_example() -> None:
    # r1=0.95 and r2=-0.73 over 14 corpora each: atanh(0.95)=1.83178, atanh(-0.73)=-0.92873,
    # SE = sqrt(2/11) = 0.42640, z = 2.76051 / 0.42640 = 6.474 (the paper's z=+6.47).
    d = compare_correlations(0.95, 14, -0.73, 14)
    assert d.z == pytest.approx(6.474, abs=1e-3)
    assert d.p == pytest.approx(2 * stats.norm.sf(6.474), rel=1e-2)
    assert d.p < 0.001
    assert d.diff == pytest.approx(1.68)
    # Zou's interval by hand: r1 in [0.8457, 0.9845], r2 in [-0.9086, -0.3255] (Fisher z +-0.591)
    # low = 1.68 - sqrt(0.1043^2 + 0.4045^2) = 1.2623; high = 1.68 + sqrt(0.0345^2 + 0.1786^2)
    assert d.ci_low == pytest.approx(1.2623, abs=2e-3)
    assert d.ci_high == pytest.approx(1.8619, abs=2e-3)


def test_fisher_z_unequal_n_and_sign() -> None:
    d = compare_correlations(0.2, 30, 0.5, 50)
    expected = (math.atanh(0.2) - math.atanh(0.5)) / math.sqrt(1 / 27 + 1 / 47)
    assert d.z == pytest.approx(expected)
    assert d.z < 0
    assert d.ci_low < d.diff < d.ci_high
    assert math.isnan(compare_correlations(0.5, 3, 0.1, 20).z)


def test_pearson_and_spearman_match_scipy() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(size=25)
    p = correlation(x, y, "pearson")
    ref = stats.pearsonr(x, y)
    assert p.r == pytest.approx(ref.statistic)
    assert p.p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (p.ci_low, p.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    s = correlation(x, y, "spearman")
    sref = stats.spearmanr(x, y)
    assert s.r == pytest.approx(sref.statistic)
    assert s.p == pytest.approx(sref.pvalue)
    half = 1.959964 * 1.06 / math.sqrt(22)
    assert s.ci_low == pytest.approx(math.tanh(math.atanh(s.r) - half), abs=1e-6)
    assert s.n == 25


def test_correlation_drops_nan_pairs_and_degenerate_input() -> None:
    c = correlation([1, 2, 3, np.nan, 5], [2, 4, 6, 8, np.nan])
    assert c.n == 3
    assert c.r == pytest.approx(1.0)
    assert math.isnan(correlation([1, 1, 1], [1, 2, 3]).r)
    with pytest.raises(ValueError, match="method"):
        correlation([1, 2], [1, 2], "kendall")


def _clustered(rng: np.random.Generator, within: float, between: float):
    """6 generators x 4 corpora: y = within * x's within-generator part + between * its
    generator part + noise."""
    clusters = np.repeat(np.arange(6), 4)
    gen = rng.normal(size=6)[clusters]
    own = rng.normal(size=24)
    x = gen + own
    y = within * own + between * gen + 0.3 * rng.normal(size=24)
    return x, y, clusters


def test_cluster_permutation_detects_a_within_generator_correlation() -> None:
    x, y, clusters = _clustered(np.random.default_rng(11), within=1.0, between=0.0)
    p, n = cluster_permutation_pvalue(x, y, clusters, n_permutations=999, seed=0)
    assert n > 20000  # (4!)^6 arrangements: sampled, not enumerated
    assert p == pytest.approx(1 / 1000)  # no sampled arrangement is as extreme
    ps, _ = cluster_permutation_pvalue(x, y, clusters, "spearman", n_permutations=999, seed=0)
    assert ps <= 0.01
    # seeded: the same draw gives the same p
    assert cluster_permutation_pvalue(x, y, clusters, n_permutations=999, seed=0)[0] == p


def test_cluster_permutation_ignores_a_between_generator_correlation() -> None:
    # Generators that are both farther and better, with no within-generator link: the
    # independence-assuming p is tiny, the within-generator permutation p is not.
    x, y, clusters = _clustered(np.random.default_rng(5), within=0.0, between=1.0)
    assert correlation(x, y).p < 0.01
    p, _ = cluster_permutation_pvalue(x, y, clusters, n_permutations=999, seed=0)
    assert p > 0.1


def test_cluster_permutation_drops_nan_pairs_and_rejects_unknown_methods() -> None:
    x = np.array([1.0, 2.0, 3.0, np.nan, 4.0, 5.0])
    y = np.array([1.0, 2.0, 3.0, 9.0, 4.0, np.nan])
    # finite pairs: (1,1), (2,2), (3,3), (4,4) in clusters 0,0,1,1: 2! x 2! arrangements
    p, n = cluster_permutation_pvalue(x, y, [0, 0, 1, 1, 1, 1])
    assert (n, p) == (4, pytest.approx(0.25))
    assert cluster_permutation_pvalue([1, 1, 1], [1, 2, 3], [0, 0, 0]) == (
        pytest.approx(math.nan, nan_ok=True),
        0,
    )
    with pytest.raises(ValueError, match="method"):
        cluster_permutation_pvalue([1, 2, 3], [1, 3, 2], [0, 0, 0], "kendall")


def test_bh_qvalues_of_no_and_all_missing_p_values() -> None:
    assert bh_qvalues([]).shape == (0,)
    assert np.isnan(bh_qvalues([np.nan, np.nan])).all()
    # a p-value above 1 (e.g. a Bonferroni product left unclipped) counts as 1
    assert bh_qvalues([0.01, 3.0]).tolist() == pytest.approx([0.02, 1.0])


def test_estimate_over_draws_by_hand() -> None:
    # draws x seeds; per-draw means 0.2 and 0.6: mean 0.4, var_runs = 0.08 / 2, df 1
    e = estimate(np.array([[0.1, 0.3], [0.5, 0.7]]))
    assert (e.mean, e.se, e.df) == pytest.approx((0.4, 0.2, 1.0))
    half = stats.t.ppf(0.975, 1) * 0.2
    assert (e.ci_low, e.ci_high) == pytest.approx((0.4 - half, 0.4 + half))
    assert e.p == pytest.approx(2 * stats.t.sf(2.0, 1))
    assert (e.runs_unit, e.n_draws, e.n_seeds, e.n_runs, e.n_docs) == ("draws", 2, 2, 4, 0)
    assert e.units == "2 draws x 2 seeds"
    # a missing run: the mean over draws of the mean over the seeds each draw has
    gap = estimate(np.array([[0.1, np.nan], [0.5, 0.7]]))
    assert gap.mean == pytest.approx((0.1 + 0.6) / 2) and gap.n_runs == 3
    # one draw: over seeds, conditional on the draw
    one = estimate(np.array([0.1, 0.2, 0.3]))
    assert one.runs_unit == "seeds" and one.df == pytest.approx(2.0)
    assert one.se == pytest.approx(0.1 / math.sqrt(3))
    assert "one regime draw: conditional on it" in one.method
    # one run: nothing to estimate the training variation from
    single = estimate(np.array([0.5]))
    assert single.runs_unit == "none" and math.isnan(single.p)
    assert (single.ci_low, single.ci_high) == (0.5, 0.5)
    # estimate_runs lays (draw, seed) values out the same way
    again = estimate_runs([0, 0, 1, 1], [0, 1, 0, 1], np.array([0.1, 0.3, 0.5, 0.7]), None, 0.95, 0)
    assert (again.mean, again.se) == pytest.approx((e.mean, e.se))


def test_estimate_with_document_replicates_and_adjustment() -> None:
    rng = np.random.default_rng(2)
    reps = rng.normal(0.0, 0.01, size=500)
    e = estimate(np.array([0.02, 0.03, 0.04]), reps, 0.95, n_docs=400)
    vr, vd = 0.01**2 / 3, float(reps.var(ddof=1))
    assert (e.var_runs, e.var_docs) == pytest.approx((vr, vd))
    assert e.se == pytest.approx(math.sqrt(vr + vd))
    # the df puts the run variance at its upper 75% bound: between nu and the plug-in value
    up = vr * 2 / stats.chi2.ppf(0.25, 2)
    assert e.df == pytest.approx((up + vd) ** 2 / (up**2 / 2))
    assert 2 < e.df < (vr + vd) ** 2 / (vr**2 / 2)
    assert e.df == pytest.approx(combined_df(vr, 2, vd))
    assert e.units == "1 draw x 3 seeds, 400 test documents"
    assert "bootstrap over 400 test documents" in e.method
    adj = e.adjusted(5)
    assert adj.p == pytest.approx(min(1.0, 5 * e.p))
    half = stats.t.ppf(1 - 0.05 / 10, e.df) * e.se
    assert (adj.ci_low, adj.ci_high) == pytest.approx((e.mean - half, e.mean + half))
    assert e.adjusted(1) is e


def test_doc_scores_from_predictions_match_scikit_learn() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=bool)
    pred = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=bool)
    proba = np.where(pred, 0.8, 0.2).astype(np.float16)
    scores = DocScores.from_predictions(
        {
            "a": {"test_pred": pred, "test_ndcg": np.array([1.0, 0.5, 0.0, 0.25])},
            "b": {"test_proba": proba, "thresholds": np.full(3, 0.5, np.float32)},
            "wrong-shape": {"test_pred": pred[:3]},
        },
        y,
    )
    assert scores.trial_ids == ["a", "b"]  # the trial of another test set is left out
    assert scores.tp[0].tolist() == [1, 1, 0, 1] and scores.fp[0].tolist() == [0, 1, 0, 0]
    assert scores.fn[0].tolist() == [1, 0, 0, 1]
    assert np.array_equal(scores.tp[0], scores.tp[1])
    assert scores.point("micro_f1") == pytest.approx([f1_score(y, pred, average="micro")] * 2)
    assert scores.point("precision")[0] == pytest.approx(precision_score(y, pred, average="micro"))
    assert scores.point("recall")[0] == pytest.approx(recall_score(y, pred, average="micro"))
    samples = f1_score(y, pred, average="samples", zero_division=0)
    assert scores.point("samples_f1")[0] == pytest.approx(samples)
    assert scores.point("ndcg10")[0] == pytest.approx(0.4375)
    assert np.isnan(scores.ndcg[1]).all()
    with pytest.raises(ValueError, match="macro_f1"):
        DocResampler(scores, "macro_f1")


def test_doc_resampler_equals_a_loop_over_resampled_documents() -> None:
    rng = np.random.default_rng(0)
    n, b = 50, 64
    tp = rng.integers(0, 3, size=(3, n)).astype(np.float32)
    fp = rng.integers(0, 2, size=(3, n)).astype(np.float32)
    fn = rng.integers(0, 2, size=(3, n)).astype(np.float32)
    scores = DocScores(["t0", "t1", "t2"], tp, fp, fn)
    # The definition: draw n documents with replacement, recompute micro-F1 from their counts.
    idx = np.random.default_rng(3).integers(0, n, size=(b, n))
    loop = np.array(
        [
            [
                2 * tp[t, i].sum() / (2 * tp[t, i].sum() + fp[t, i].sum() + fn[t, i].sum())
                for i in idx
            ]
            for t in range(3)
        ]
    )
    res = DocResampler(scores, "micro_f1", b, seed=3)
    assert res.n_docs == n and res.n_resamples == b
    assert np.allclose(res.replicates(["t0", "t1", "t2"]), loop, atol=1e-6)
    assert np.allclose(res.replicates(["t2", "t0"]), loop[[2, 0]], atol=1e-6)
    assert res.replicates(["t0", "missing"]) is None
    assert not res.has(["missing"])
    with pytest.raises(ValueError, match="nDCG"):
        DocResampler(scores, "ndcg10")


def test_cluster_permutation_counts_every_arrangement_of_a_sampled_design() -> None:
    x, y, clusters = _clustered(np.random.default_rng(11), within=1.0, between=0.0)
    _, n = cluster_permutation_pvalue(x, y, clusters, n_permutations=99)
    assert n == math.factorial(4) ** 6


def test_cluster_permutation_enumerates_small_designs() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p, n = cluster_permutation_pvalue(x, y, [0, 0, 1, 1])
    assert n == 4  # 2! x 2!
    assert p == pytest.approx(0.25)  # only the identity is as extreme
    p1, n1 = cluster_permutation_pvalue(x, y, [0, 1, 2, 3])
    assert n1 == 1 and np.isnan(p1)  # singletons: nothing to permute


def test_bh_qvalues_match_the_step_up_rule() -> None:
    p = [0.01, 0.04, 0.03, 0.2, np.nan]
    q = bh_qvalues(p)
    # sorted p 0.01, 0.03, 0.04, 0.2 (m=4): 0.04, 0.04*4/2=0.06 -> min(0.06, 0.0533) ...
    assert q[0] == pytest.approx(0.04)
    assert q[2] == pytest.approx(0.04 * 4 / 3)
    assert q[1] == pytest.approx(0.04 * 4 / 3)
    assert q[3] == pytest.approx(0.2)
    assert np.isnan(q[4])
