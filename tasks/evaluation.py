"""Thresholds chosen on val, test metrics (scikit-learn) and the nDCG@k retrieval proxy."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Candidate thresholds searched on val.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def threshold_counts(
    y: np.ndarray, proba: np.ndarray, grid: np.ndarray = THRESHOLD_GRID
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label at each threshold of
    `grid` (predicted: proba >= threshold): three (L, T) integer arrays."""
    pred = proba[:, :, None] >= grid[None, None, :]  # (n, L, T)
    truth = y[:, :, None].astype(bool)
    tp = (pred & truth).sum(0)
    fp = (pred & ~truth).sum(0)
    fn = (~pred & truth).sum(0)
    return tp, fp, fn


def global_threshold(y: np.ndarray, proba: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> float:
    """The single threshold with the best micro-F1 on (y, proba); ties go to the lowest.

    micro-F1 = 2 TP / (2 TP + FP + FN) over all labels (0 where nothing is predicted or true),
    scikit-learn's `f1_score(average="micro", zero_division=0)`, from one pass of counts.
    """
    tp, fp, fn = (c.sum(0) for c in threshold_counts(y, proba, grid))
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(grid[int(np.argmax(f1))])


#: Modes of `choose_thresholds`.
THRESHOLD_MODES = ("global", "per_label", "per_label_where_supported")


def per_label_thresholds(
    y: np.ndarray, proba: np.ndarray, grid: np.ndarray = THRESHOLD_GRID, min_positives: int = 1
) -> np.ndarray:
    """One threshold per label maximizing that label's F1 on val.

    A label with fewer than `min_positives` positives in val gets the global threshold instead
    (with the default 1, only a label that has none: it cannot be tuned at all).
    """
    fallback = global_threshold(y, proba, grid)
    out = np.full(y.shape[1], fallback, dtype=np.float32)
    tp, fp, fn = threshold_counts(y, proba, grid)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)  # (L, T)
    supported = y.sum(0) >= max(int(min_positives), 1)
    out[supported] = grid[np.argmax(f1[supported], axis=1)]
    return out


def choose_thresholds(
    y_val: np.ndarray, p_val: np.ndarray, mode: str, min_positives: int = 5
) -> np.ndarray:
    """Thresholds for `mode`: `global` (one value repeated), `per_label`, or
    `per_label_where_supported` (per label where the label has at least `min_positives` val
    positives, the global val-tuned threshold elsewhere; docs/thresholds.md)."""
    if mode == "global":
        return np.full(y_val.shape[1], global_threshold(y_val, p_val), dtype=np.float32)
    if mode == "per_label":
        return per_label_thresholds(y_val, p_val)
    if mode == "per_label_where_supported":
        if min_positives < 1:
            raise ValueError(f"threshold_min_positives={min_positives}; must be at least 1")
        return per_label_thresholds(y_val, p_val, min_positives=min_positives)
    raise ValueError(f"thresholds={mode!r}; expected one of {THRESHOLD_MODES}")


def classification_metrics(
    y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray
) -> dict[str, Any]:
    """micro/macro/samples F1, micro precision and recall, and per-label F1 (a list)."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    pred = proba >= np.asarray(thresholds)[None, :]
    kw = {"zero_division": 0}
    return {
        "micro_f1": float(f1_score(y, pred, average="micro", **kw)),
        "macro_f1": float(f1_score(y, pred, average="macro", **kw)),
        "samples_f1": float(f1_score(y, pred, average="samples", **kw)),
        "precision": float(precision_score(y, pred, average="micro", **kw)),
        "recall": float(recall_score(y, pred, average="micro", **kw)),
        "per_label_f1": [float(v) for v in f1_score(y, pred, average=None, **kw)],
    }


def jaccard_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard overlap of every label set in `a` (n, L) with every one in `b` (m, L)."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def ndcg_at_k(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    corpus_emb: np.ndarray | None = None,
    corpus_labels: np.ndarray | None = None,
    k: int = 10,
) -> float:
    """Mean nDCG@k of cosine-similarity retrieval with Jaccard label-overlap relevance.

    Without a separate corpus each query ranks the other queries (itself excluded). A query
    with no relevant document scores 0 (scikit-learn's convention).
    """
    per_query = ndcg_per_query(query_emb, query_labels, corpus_emb, corpus_labels, k)
    return float(per_query.mean()) if len(per_query) else 0.0


def ndcg_per_query(
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    corpus_emb: np.ndarray | None = None,
    corpus_labels: np.ndarray | None = None,
    k: int = 10,
) -> np.ndarray:
    """nDCG@k of every query (see `ndcg_at_k`), so the report can resample test documents.

    scikit-learn's `ndcg_score` only returns the mean, so it is called one query at a time.
    """
    from sklearn.metrics import ndcg_score

    same = corpus_emb is None
    c_emb = query_emb if same else corpus_emb
    c_lab = query_labels if same else corpus_labels
    if c_emb is None or c_lab is None:
        raise ValueError("ndcg: corpus embeddings and labels go together")
    q = _unit(query_emb)
    sims = q @ _unit(c_emb).T
    rel = jaccard_matrix(query_labels, c_lab)
    if same:
        n = len(q)
        if n < 2:
            return np.zeros(n, dtype=np.float32)
        off = ~np.eye(n, dtype=bool)
        sims = sims[off].reshape(n, n - 1)
        rel = rel[off].reshape(n, n - 1)
    return np.array(
        [ndcg_score(rel[i : i + 1], sims[i : i + 1], k=k) for i in range(len(q))],
        dtype=np.float32,
    )


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
