"""Thresholds chosen on val, test metrics (scikit-learn) and the nDCG@k retrieval proxy."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Candidate thresholds searched on val.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def global_threshold(y: np.ndarray, proba: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> float:
    """The single threshold with the best micro-F1 on (y, proba); ties go to the lowest."""
    from sklearn.metrics import f1_score

    scores = [f1_score(y, proba >= t, average="micro", zero_division=0) for t in grid]
    return float(grid[int(np.argmax(scores))])


def per_label_thresholds(
    y: np.ndarray, proba: np.ndarray, grid: np.ndarray = THRESHOLD_GRID
) -> np.ndarray:
    """One threshold per label maximizing that label's F1 on val.

    A label with no positive in val cannot be tuned; it gets the global threshold instead.
    """
    fallback = global_threshold(y, proba, grid)
    out = np.full(y.shape[1], fallback, dtype=np.float32)
    pred = proba[:, :, None] >= grid[None, None, :]  # (n, L, T)
    truth = y[:, :, None].astype(bool)
    tp = (pred & truth).sum(0)
    fp = (pred & ~truth).sum(0)
    fn = (~pred & truth).sum(0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)  # (L, T)
    has_pos = y.sum(0) > 0
    out[has_pos] = grid[np.argmax(f1[has_pos], axis=1)]
    return out


def choose_thresholds(y_val: np.ndarray, p_val: np.ndarray, mode: str) -> np.ndarray:
    """Thresholds for `mode` `global` (one value repeated) or `per_label`."""
    if mode == "global":
        return np.full(y_val.shape[1], global_threshold(y_val, p_val), dtype=np.float32)
    if mode == "per_label":
        return per_label_thresholds(y_val, p_val)
    raise ValueError(f"thresholds={mode!r}; expected 'global' or 'per_label'")


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
    from sklearn.metrics import ndcg_score

    same = corpus_emb is None
    c_emb = query_emb if same else corpus_emb
    c_lab = query_labels if same else corpus_labels
    assert c_emb is not None and c_lab is not None
    q = _unit(query_emb)
    sims = q @ _unit(c_emb).T
    rel = jaccard_matrix(query_labels, c_lab)
    if same:
        n = len(q)
        if n < 2:
            return 0.0
        off = ~np.eye(n, dtype=bool)
        sims = sims[off].reshape(n, n - 1)
        rel = rel[off].reshape(n, n - 1)
    return float(ndcg_score(rel, sims, k=k))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
