"""Maximum mean discrepancy between two embedding samples, with a permutation test.

No well-kept library computes the unbiased MMD^2 with a permutation test blockwise in bounded
memory (scikit-learn has kernels, not the test; torch-two-sample and similar are unmaintained), so
the estimator is written here and tested against a direct O(n^2) reference.

Kernel: k(a, b) = sum_s exp(-||a - b||^2 / (2 sigma_s^2)), sigma_s = multiplier_s * median
pairwise distance of the pooled sample (the median heuristic, on a seeded subsample).

The permutation test never stores the n x n kernel matrix. With pooled rows Z = [X; Y] and a
split `a` (1 for rows in the first group), the unbiased statistic depends on the split only
through B = w'Kw with w = a/m - (1-a)/k and l = a'K1. So P permutations at once are the
quadratic forms diag(W'KW) of an (n, P) weight matrix W, and K W is accumulated block by block
over the upper triangle of K: memory is O(block^2 + n P), time is O(n^2 (d + P) / 2).
Centered weights keep every float32 partial sum small, so the float32 kernel costs no accuracy
in the statistic (accumulation across blocks is float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import norm


@dataclass
class MmdResult:
    mmd2: float  # the unbiased (or linear-time) estimate of MMD^2
    p_value: float | None  # permutation p-value, or the normal approximation of the linear test
    estimator: str  # "unbiased" or "linear"
    permutations: int
    bandwidths: list[float]
    n_x: int
    n_y: int
    null_mean: float | None = None
    null_std: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def median_bandwidth(x: np.ndarray, y: np.ndarray, max_points: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of the pooled sample (a seeded subsample if large)."""
    z = np.concatenate([x, y]).astype(np.float64)
    if len(z) > max_points:
        z = z[np.random.default_rng(seed).choice(len(z), max_points, replace=False)]
    d = pdist(z)
    med = float(np.median(d[d > 0])) if np.any(d > 0) else 0.0
    if med <= 0:
        raise ValueError("median bandwidth is 0: all embeddings are identical")
    return med


def kernel_block(
    a: np.ndarray,
    b: np.ndarray,
    bandwidths: Sequence[float],
    a_sq: np.ndarray | None = None,
    b_sq: np.ndarray | None = None,
) -> np.ndarray:
    """The summed Gaussian kernel between the rows of a and b, in the dtype of a."""
    a_sq = np.einsum("ij,ij->i", a, a) if a_sq is None else a_sq
    b_sq = np.einsum("ij,ij->i", b, b) if b_sq is None else b_sq
    d2 = a @ b.T
    d2 *= -2
    d2 += a_sq[:, None]
    d2 += b_sq[None, :]
    np.maximum(d2, 0, out=d2)  # rounding can make a tiny negative distance
    if len(bandwidths) == 1:
        d2 *= -1.0 / (2.0 * bandwidths[0] ** 2)
        return np.exp(d2, out=d2)
    out = np.zeros_like(d2)
    tmp = np.empty_like(d2)
    for s in bandwidths:
        np.multiply(d2, -1.0 / (2.0 * s**2), out=tmp)
        out += np.exp(tmp, out=tmp)
    return out


def _split_weights(idx_first: np.ndarray, n: int, m: int, dtype) -> np.ndarray:
    """Columns w = a/m - (1-a)/k for each split, given the first group's row indices."""
    k = n - m
    w = np.full((n, idx_first.shape[0]), -1.0 / k, dtype=dtype)
    cols = np.repeat(np.arange(idx_first.shape[0]), m)
    w[idx_first.reshape(-1), cols] = 1.0 / m
    return w


def _permutation_indices(n: int, m: int, permutations: int, seed: int) -> np.ndarray:
    """(P+1, m) first-group row indices: the observed split, then P random splits."""
    rng = np.random.default_rng(seed)
    idx = np.empty((permutations + 1, m), dtype=np.int32)
    idx[0] = np.arange(m)
    for p in range(1, permutations + 1):
        idx[p] = rng.permutation(n)[:m]
    return idx


def quadratic_forms(
    z: np.ndarray,
    weights: np.ndarray,
    bandwidths: Sequence[float],
    block_size: int = 2048,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """diag(W' K W) for every column of W and the row sums K 1, without storing K.

    Only blocks of the upper triangle of K are computed; an off-diagonal block counts twice.
    """
    n = len(z)
    sq = np.einsum("ij,ij->i", z, z)
    forms = np.zeros(weights.shape[1], dtype=np.float64)
    row_sums = np.zeros(n, dtype=np.float64)
    starts = list(range(0, n, block_size))
    pairs = [(i, j) for i in starts for j in starts if j >= i]
    bar = _bar(len(pairs), progress)
    for i, j in pairs:
        si, sj = slice(i, i + block_size), slice(j, j + block_size)
        kb = kernel_block(z[si], z[sj], bandwidths, sq[si], sq[sj])
        part = np.einsum("ip,ip->p", weights[si], kb @ weights[sj], dtype=np.float64)
        forms += part if i == j else 2 * part
        row_sums[si] += kb.sum(axis=1, dtype=np.float64)
        if i != j:
            row_sums[sj] += kb.sum(axis=0, dtype=np.float64)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return forms, row_sums


def _unbiased_from_forms(
    forms: np.ndarray, lsum: np.ndarray, total: float, m: int, k: int, c: float
) -> np.ndarray:
    """Unbiased MMD^2 from B = w'Kw, l = a'K1 and T = 1'K1 (c = kernel diagonal)."""
    n = m + k
    # B = q (n/(mk))^2 + T/k^2 - 2 l (1/k^2 + 1/(mk)) with q = a'Ka, solved for q.
    q = (forms - total / k**2 + 2 * lsum * (1 / k**2 + 1 / (m * k))) * (m * k / n) ** 2
    s_xx = q - m * c
    s_yy = total - 2 * lsum + q - k * c
    # U - B: the unbiased sums divide by m(m-1) and k(k-1) and leave out the diagonal.
    return forms + s_xx / (m**2 * (m - 1)) + s_yy / (k**2 * (k - 1)) - c * (1 / m + 1 / k)


def mmd2_permutation(
    x: np.ndarray,
    y: np.ndarray,
    bandwidths: Sequence[float],
    permutations: int = 1000,
    block_size: int = 2048,
    seed: int = 0,
    dtype=np.float32,
    progress: bool = False,
) -> tuple[float, np.ndarray]:
    """The unbiased MMD^2 of (x, y) and its null distribution over `permutations` random splits."""
    m, k = len(x), len(y)
    if m < 2 or k < 2:
        raise ValueError(f"MMD needs at least 2 rows per side, got {m} and {k}")
    z = np.ascontiguousarray(np.concatenate([x, y]), dtype=dtype)
    n = m + k
    idx = _permutation_indices(n, m, permutations, seed)
    weights = _split_weights(idx, n, m, dtype)
    forms, row_sums = quadratic_forms(z, weights, bandwidths, block_size, progress)
    lsum = row_sums[idx].sum(axis=1)
    stats = _unbiased_from_forms(forms, lsum, row_sums.sum(), m, k, float(len(bandwidths)))
    return float(stats[0]), stats[1:]


def mmd2_unbiased(
    x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float], block_size: int = 2048
) -> float:
    """The unbiased MMD^2 estimate, blockwise in bounded memory (no permutations)."""
    return mmd2_permutation(x, y, bandwidths, 0, block_size)[0]


def mmd2_linear(x: np.ndarray, y: np.ndarray, bandwidths: Sequence[float]) -> tuple[float, float]:
    """Linear-time MMD^2 (Gretton et al. 2012, Lemma 14) and its one-sided normal p-value.

    Uses the first 2*floor(min(m, k)/2) rows of each side (shuffle beforehand if ordered).
    """
    half = min(len(x), len(y)) // 2
    if half < 2:
        raise ValueError(f"linear-time MMD needs at least 4 rows per side, got {len(x)}, {len(y)}")
    x1, x2 = x[0 : 2 * half : 2], x[1 : 2 * half : 2]
    y1, y2 = y[0 : 2 * half : 2], y[1 : 2 * half : 2]

    def pair_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = np.sum((np.asarray(a, np.float64) - b) ** 2, axis=1)
        return sum(np.exp(-d2 / (2 * s**2)) for s in bandwidths)

    h = pair_kernel(x1, x2) + pair_kernel(y1, y2) - pair_kernel(x1, y2) - pair_kernel(x2, y1)
    stat = float(h.mean())
    se = float(h.std(ddof=1) / np.sqrt(half))
    p = float(norm.sf(stat / se)) if se > 0 else (0.0 if stat > 0 else 1.0)
    return stat, p


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    multipliers: Sequence[float] = (1.0,),
    permutations: int = 1000,
    block_size: int = 2048,
    linear_time_above: int = 50000,
    seed: int = 0,
    bandwidth: float | None = None,
    progress: bool = False,
) -> MmdResult:
    """MMD^2 of x against y: unbiased with a permutation p-value, or linear-time when large.

    `bandwidth` fixes the base bandwidth (e.g. the corpus-level one for per-label tests); by
    default it is the median heuristic of the pooled sample.
    """
    base = bandwidth if bandwidth is not None else median_bandwidth(x, y, seed=seed)
    bws = [float(base * mult) for mult in multipliers]
    if max(len(x), len(y)) > linear_time_above:
        rng = np.random.default_rng(seed)
        stat, p = mmd2_linear(x[rng.permutation(len(x))], y[rng.permutation(len(y))], bws)
        return MmdResult(stat, p, "linear", 0, bws, len(x), len(y))
    stat, null = mmd2_permutation(x, y, bws, permutations, block_size, seed, progress=progress)
    if permutations == 0:
        return MmdResult(stat, None, "unbiased", 0, bws, len(x), len(y))
    # The observed split counts as one permutation, so p is never 0 (a valid test).
    p = float((1 + np.sum(null >= stat)) / (1 + permutations))
    null_mean, null_std = float(null.mean()), float(null.std())
    return MmdResult(stat, p, "unbiased", permutations, bws, len(x), len(y), null_mean, null_std)


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="MMD kernel blocks", unit="block", leave=False)
