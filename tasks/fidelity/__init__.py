"""Fidelity, diversity and leakage measures of synthetic text against real patents (no Ray).

`mmd` (unbiased MMD^2, permutation test, linear-time estimator), `distribution` (Frechet,
precision/recall/density/coverage, label divergence), `diversity`, `leakage` (keyword overlap,
nearest-real similarity, n-gram copy rate) and `corpus.measure_corpus`, which runs them all.
"""

from tasks.fidelity.corpus import CorpusSides, measure_corpus
from tasks.fidelity.mmd import MmdResult, median_bandwidth, mmd2_unbiased, mmd_test

__all__ = [
    "CorpusSides",
    "MmdResult",
    "measure_corpus",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_test",
]
