"""Distribution distances between embedding samples and between label distributions.

Frechet distance (as in FID, on sentence embeddings), the k-NN manifold measures precision /
recall / density / coverage (Naeem et al. 2020, the formulas of the reference `prdc` package,
computed in row blocks so the full distance matrix is never stored), and the divergence of
label marginals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import pairwise_distances_chunked
from sklearn.neighbors import NearestNeighbors

from tasks.labels import multi_hot


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) of the two samples' Gaussians.

    Tr((S_x S_y)^(1/2)) is the sum of square roots of the eigenvalues of S_x S_y, which are real
    and non-negative (S_x S_y is similar to a PSD matrix); this avoids sqrtm's complex
    round-off when a covariance is singular (fewer rows than dimensions).
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Frechet distance needs at least 2 rows per side, got {len(x)}, {len(y)}")
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    diff = x.mean(0) - y.mean(0)
    sx = np.atleast_2d(np.cov(x, rowvar=False))
    sy = np.atleast_2d(np.cov(y, rowvar=False))
    eig = np.linalg.eigvals(sx @ sy)
    tr_covmean = float(np.sqrt(np.clip(eig.real, 0, None)).sum())
    return float(diff @ diff + np.trace(sx) + np.trace(sy) - 2 * tr_covmean)


def kth_neighbour_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (Euclidean)."""
    if len(x) <= k:
        raise ValueError(f"k-NN radius needs more than k={k} rows, got {len(x)}")
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x)
    dist, _ = nn.kneighbors(x)
    return dist[:, k]  # column 0 is the row itself (distance 0)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, block_size: int = 2048) -> dict:
    """Precision, recall, density and coverage of `fake` with respect to `real`.

    precision: share of fake rows inside some real row's k-NN ball; recall: share of real rows
    inside some fake row's ball; density: mean count of real balls holding a fake row, over k;
    coverage: share of real balls holding at least one fake row. Strict `<` as in `prdc`.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    r_real = kth_neighbour_distance(real, k)
    r_fake = kth_neighbour_distance(fake, k)
    working_memory = max(1, block_size * max(len(real), len(fake)) * 8 >> 20)
    in_ball = 0
    ball_count = 0.0
    nearest_fake = np.full(len(real), np.inf)
    for chunk in pairwise_distances_chunked(fake, real, working_memory=working_memory):
        inside = chunk < r_real[None, :]
        in_ball += int(inside.any(axis=1).sum())
        ball_count += float(inside.sum())
        np.minimum(nearest_fake, chunk.min(axis=0), out=nearest_fake)
    recalled = 0
    for chunk in pairwise_distances_chunked(real, fake, working_memory=working_memory):
        recalled += int((chunk < r_fake[None, :]).any(axis=1).sum())
    return {
        "precision": in_ball / len(fake),
        "recall": recalled / len(real),
        "density": ball_count / (k * len(fake)),
        "coverage": float(np.mean(nearest_fake < r_real)),
    }


def label_distribution(label_sets: Sequence[Sequence[str]], codes: Sequence[str]) -> np.ndarray:
    """Label counts over the label space (codes outside it are ignored)."""
    return multi_hot(label_sets, codes).sum(axis=0).astype(np.float64)


def label_divergence(
    real_labels: Sequence[Sequence[str]],
    synth_labels: Sequence[Sequence[str]],
    codes: Sequence[str],
) -> dict:
    """How far the synthetic label marginals are from the real ones.

    Jensen-Shannon divergence (base 2, in [0, 1]) and total variation of the normalized label
    frequencies, label cardinality on both sides, and the labels real data has but synthetic
    data lacks.
    """
    p = label_distribution(real_labels, codes)
    q = label_distribution(synth_labels, codes)
    if p.sum() == 0 or q.sum() == 0:
        raise ValueError("label divergence needs at least one label in the space on each side")
    pn, qn = p / p.sum(), q / q.sum()
    return {
        "label_js": float(jensenshannon(pn, qn, base=2) ** 2),
        "label_tv": float(0.5 * np.abs(pn - qn).sum()),
        "label_cardinality_real": float(p.sum() / max(len(real_labels), 1)),
        "label_cardinality_synthetic": float(q.sum() / max(len(synth_labels), 1)),
        "labels_missing": [c for c, a, b in zip(codes, p, q, strict=True) if a > 0 and b == 0],
    }
