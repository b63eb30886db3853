"""Thresholds on val, metrics, and nDCG@k with Jaccard relevance against a worked example."""

import math

import numpy as np
import pytest

from tasks.evaluation import (
    THRESHOLD_GRID,
    choose_thresholds,
    classification_metrics,
    global_threshold,
    jaccard_matrix,
    ndcg_at_k,
    per_label_thresholds,
)


def test_jaccard_matrix_by_hand():
    a = np.array([[1, 1, 0], [0, 0, 0]])
    b = np.array([[1, 0, 0], [0, 1, 1]])
    np.testing.assert_allclose(jaccard_matrix(a, b), [[0.5, 1 / 3], [0.0, 0.0]])


def test_ndcg_at_k_worked_example():
    # Query q = labels {A, B}; documents d1 {A}, d2 {A, B}, d3 {C}; cosine ranks d1 > d3 > d2.
    q_emb = np.array([[1.0, 0.0]])
    q_lab = np.array([[1, 1, 0]])
    d_emb = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
    d_lab = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    # Relevances 0.5, 1.0, 0.0; ranked order d1 (0.5), d3 (0.0), d2 (1.0).
    dcg = 0.5 / math.log2(2) + 0.0 / math.log2(3) + 1.0 / math.log2(4)
    idcg = 1.0 / math.log2(2) + 0.5 / math.log2(3)
    got = ndcg_at_k(q_emb, q_lab, d_emb, d_lab, k=10)
    assert got == pytest.approx(dcg / idcg, rel=1e-6)
    # At k=1 only d1 counts: 0.5 / 1.0.
    assert ndcg_at_k(q_emb, q_lab, d_emb, d_lab, k=1) == pytest.approx(0.5)


def test_ndcg_within_one_set_excludes_the_query_itself():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    lab = np.array([[1, 0], [1, 0], [0, 1]])
    # Doc 0 and 1 find each other first (relevance 1); doc 2 has no relevant neighbour (0).
    assert ndcg_at_k(emb, lab, k=2) == pytest.approx(2 / 3)


def test_thresholds_chosen_on_val():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    p = np.array([[0.30, 0.10], [0.40, 0.20], [0.20, 0.80], [0.10, 0.60]])
    # Label 0: any threshold in (0.2, 0.3] separates it; the lowest grid value there is 0.225.
    # Label 1: positives 0.8, negatives up to 0.6: lowest separating value 0.625.
    np.testing.assert_allclose(per_label_thresholds(y, p), [0.225, 0.625])
    assert global_threshold(y, p) == pytest.approx(0.225)  # micro-F1 0.857 there
    assert choose_thresholds(y, p, "global").tolist() == pytest.approx([0.225, 0.225])
    with pytest.raises(ValueError, match="thresholds='best'.*per_label_where_supported"):
        choose_thresholds(y, p, "best")


def test_global_threshold_is_scikit_learns_micro_f1_argmax():
    from sklearn.metrics import f1_score

    for seed in range(3):
        rng = np.random.default_rng(seed)
        y = (rng.random((40, 5)) < 0.3).astype(int)
        p = np.round(np.clip(0.4 * y + 0.6 * rng.random((40, 5)), 0, 1), 2)
        f1 = [f1_score(y, p >= t, average="micro", zero_division=0) for t in THRESHOLD_GRID]
        assert global_threshold(y, p) == THRESHOLD_GRID[int(np.argmax(f1))]


def test_per_label_where_supported_falls_back_to_global_below_k_positives():
    # Label 0: 4 val positives (0.6-0.9) over negatives 0.3, 0.4 -> its own threshold 0.425.
    # Label 1: 1 positive (0.35) over negatives <= 0.1 -> its own 0.125; the global best is 0.325
    # (micro-F1 10/11: only label 0's 0.4 is a false positive).
    p = np.array([[0.6, 0.05], [0.7, 0.1], [0.8, 0.02], [0.9, 0.08], [0.3, 0.35], [0.4, 0.1]])
    y = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 0]])
    assert per_label_thresholds(y, p).tolist() == pytest.approx([0.425, 0.125])
    assert global_threshold(y, p) == pytest.approx(0.325)
    rule = "per_label_where_supported"
    assert choose_thresholds(y, p, rule, 1).tolist() == pytest.approx([0.425, 0.125])
    assert choose_thresholds(y, p, rule, 2).tolist() == pytest.approx([0.425, 0.325])
    assert choose_thresholds(y, p, rule, 4).tolist() == pytest.approx([0.425, 0.325])
    assert choose_thresholds(y, p, rule, 5).tolist() == pytest.approx([0.325, 0.325])
    assert choose_thresholds(y, p, rule).tolist() == pytest.approx([0.325, 0.325])  # K=5
    with pytest.raises(ValueError, match="threshold_min_positives=0"):
        choose_thresholds(y, p, rule, 0)


def test_classification_metrics_by_hand():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    p = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.9]])
    m = classification_metrics(y, p, np.array([0.5, 0.5]))
    # Predictions [[1,0],[1,1],[0,1]]: tp 3, fp 1, fn 1.
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    assert m["micro_f1"] == pytest.approx(0.75)
    assert m["per_label_f1"] == pytest.approx([0.5, 1.0])
    assert m["macro_f1"] == pytest.approx(0.75)
    assert m["samples_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
