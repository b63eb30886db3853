"""MMD^2: the unbiased estimator, blockwise vs full, permutation test, linear-time estimator."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from tasks.fidelity.mmd import (
    _permutation_indices,
    median_bandwidth,
    mmd2_linear,
    mmd2_permutation,
    mmd2_unbiased,
    mmd_test,
)


def reference_mmd2(x, y, bandwidths):
    """Direct O(n^2) unbiased MMD^2 in float64: the textbook formula, written out."""

    def k(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2 * s * s)) for s in bandwidths)

    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    xx = sum(kxx[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kyy[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return xx + yy - 2 * kxy.sum() / (m * n)


@pytest.fixture
def shifted():
    rng = np.random.default_rng(0)
    return rng.normal(size=(57, 8)), rng.normal(size=(43, 8)) + 0.4


@pytest.mark.parametrize("multipliers", [[1.0], [0.5, 1.0, 2.0]])
@pytest.mark.parametrize("block", [64, 100, 4096])
def test_unbiased_matches_direct_reference(shifted, multipliers, block):
    x, y = shifted
    bws = [median_bandwidth(x, y) * m for m in multipliers]
    ref = reference_mmd2(x, y, bws)
    assert ref > 0.01
    # float32 kernel blocks (the default) and float64 both agree with the reference.
    assert mmd2_unbiased(x, y, bws, block_size=block) == pytest.approx(ref, abs=1e-6)
    stat64, _ = mmd2_permutation(x, y, bws, 0, block, dtype=np.float64)
    assert stat64 == pytest.approx(ref, abs=1e-12)


def test_blockwise_equals_full_including_null_distribution(shifted):
    x, y = shifted
    bws = [median_bandwidth(x, y)]
    full_stat, full_null = mmd2_permutation(x, y, bws, 50, block_size=4096, seed=7)
    blk_stat, blk_null = mmd2_permutation(x, y, bws, 50, block_size=64, seed=7)
    assert blk_stat == pytest.approx(full_stat, abs=1e-7)
    np.testing.assert_allclose(blk_null, full_null, atol=1e-7)


def test_each_permutation_statistic_is_the_mmd_of_that_split(shifted):
    x, y = shifted
    z = np.concatenate([x, y])
    bws = [median_bandwidth(x, y)]
    _, null = mmd2_permutation(x, y, bws, 5, block_size=64, seed=3, dtype=np.float64)
    idx = _permutation_indices(len(z), len(x), 5, 3)
    for p in range(1, 6):
        first = np.zeros(len(z), dtype=bool)
        first[idx[p]] = True
        assert null[p - 1] == pytest.approx(reference_mmd2(z[first], z[~first], bws), abs=1e-12)


def test_same_distribution_near_zero_with_large_p():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(250, 16))
    res = mmd_test(x, y, permutations=500, seed=0)
    assert abs(res.mmd2) < 3 * res.null_std
    assert res.p_value > 0.05
    assert res.estimator == "unbiased" and res.permutations == 500


def test_shifted_gaussians_positive_with_small_p():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(250, 16)) + 0.3
    res = mmd_test(x, y, multipliers=[0.5, 1, 2], permutations=500, seed=0)
    assert res.mmd2 > 10 * res.null_std
    # No permutation beats the observed split: p is the smallest possible value.
    assert res.p_value == pytest.approx(1 / 501)
    assert len(res.bandwidths) == 3


def test_linear_time_estimator_detects_shift_and_not_sameness():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 8))
    same, p_same = mmd2_linear(x, rng.normal(size=(4000, 8)), [4.0])
    diff, p_diff = mmd2_linear(x, rng.normal(size=(4000, 8)) + 0.5, [4.0])
    assert p_diff < 0.01 and diff > 0.01
    assert p_same > 0.01 and abs(same) < diff / 5
    res = mmd_test(x, rng.normal(size=(4000, 8)) + 0.5, linear_time_above=1000)
    assert res.estimator == "linear" and res.p_value < 0.01


def test_linear_time_is_unbiased_on_average():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4)) + 0.5
    bws = [2.0]
    full = mmd2_unbiased(x, y, bws, block_size=512)
    lin = [
        mmd2_linear(x[rng.permutation(2000)], y[rng.permutation(2000)], bws)[0] for _ in range(40)
    ]
    assert np.mean(lin) == pytest.approx(full, rel=0.1)


def test_median_bandwidth_and_errors():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    y = np.array([[0.0, 0.0]])
    # Pairwise distances 5, 0, 5: zeros are skipped, the median is 5.
    assert median_bandwidth(x, y) == 5.0
    with pytest.raises(ValueError, match="identical"):
        median_bandwidth(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        mmd2_unbiased(x[:1], y, [1.0])
