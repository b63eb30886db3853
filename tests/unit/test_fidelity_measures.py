"""Frechet, PRDC, label divergence, diversity and the leakage audits against known answers."""

import numpy as np
import pytest
from scipy.linalg import sqrtm
from scipy.spatial.distance import cdist

from tasks.fidelity.distribution import frechet_distance, label_divergence, prdc
from tasks.fidelity.diversity import dispersion, distinct_n, near_duplicate_rate
from tasks.fidelity.leakage import (
    keyword_audit,
    nearest_similarity,
    ngram_copy_rate,
    top_keywords,
)
from tasks.text import words


def test_frechet_matches_sqrtm_reference_and_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    y = rng.normal(size=(150, 5)) * 2 + 1
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = np.sum((mx - my) ** 2) + np.trace(sx + sy - 2 * sqrtm(sx @ sy).real)
    assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-8)
    # Diagonal Gaussians: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2 on the sample moments.
    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    b = a * 0.5 + 10
    va, vb = np.var(a, axis=0, ddof=1), np.var(b, axis=0, ddof=1)
    closed = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)


def reference_prdc(real, fake, k):
    """The formulas of the reference `prdc` package, with full distance matrices."""
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < r_real[:, None]
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (d_rf < r_fake[None, :]).any(axis=1).mean(),
        "density": inside.sum(axis=0).mean() / k,
        "coverage": (d_rf.min(axis=1) < r_real).mean(),
    }


@pytest.mark.parametrize("block", [8, 4096])
def test_prdc_matches_reference(block):
    rng = np.random.default_rng(1)
    real = rng.normal(size=(120, 6))
    fake = rng.normal(size=(90, 6)) * 1.3 + 0.4
    got = prdc(real, fake, k=5, block_size=block)
    ref = reference_prdc(real, fake, 5)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1


def test_prdc_of_identical_sets_covers_everything():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(50, 3))
    got = prdc(real, real.copy(), k=3)
    # Every fake point sits on a real point (distance 0 < radius): all measures are 1, and each
    # fake point is at least in its own real point's ball.
    assert (got["precision"], got["recall"], got["coverage"]) == (1.0, 1.0, 1.0)
    assert got["density"] >= 1 / 3


def test_label_divergence():
    codes = ["A", "B", "C"]
    real = [["A"], ["A", "B"], ["C"], ["B"]]
    out = label_divergence(real, [["A"], ["B"], ["B", "Z"]], codes)
    # real: A 2, B 2, C 1 -> (.4, .4, .2); synthetic: A 1, B 2 -> (1/3, 2/3, 0).
    assert out["label_tv"] == pytest.approx(0.5 * (abs(0.4 - 1 / 3) + abs(0.4 - 2 / 3) + 0.2))
    assert out["labels_missing"] == ["C"]
    assert out["label_cardinality_real"] == pytest.approx(5 / 4)
    assert out["label_cardinality_synthetic"] == pytest.approx(3 / 3)
    assert 0 < out["label_js"] < 1
    assert label_divergence(real, real, codes)["label_js"] == pytest.approx(0, abs=1e-12)


def test_distinct_n_and_dispersion():
    texts = ["the cat sat", "the cat ran"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0.0
    e = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # cosines: (0, -1, 0) -> distances (1, 2, 1): mean 4/3.
    assert dispersion(e) == pytest.approx(4 / 3)
    rng = np.random.default_rng(3)
    r = rng.normal(size=(30, 4))
    u = r / np.linalg.norm(r, axis=1, keepdims=True)
    sims = u @ u.T
    brute = 1 - (sims.sum() - np.trace(sims)) / (30 * 29)
    assert dispersion(r) == pytest.approx(brute, abs=1e-12)


def test_near_duplicate_rate_counts_rows():
    base = " ".join(f"word{i}" for i in range(60))
    near = base.replace("word30", "other")  # Jaccard of 3-shingles ~ 0.9
    texts = [
        base,
        near,
        "completely different text about wheelchairs and ramps for access",
        "Completely different TEXT about wheelchairs and ramps, for access!",
        "a hearing aid with a microphone array and a small battery inside",
    ]
    out = near_duplicate_rate(texts, threshold=0.8)
    # Rows 2 and 3 are the same after normalization; rows 0 and 1 are near copies.
    assert out["exact_duplicate_rate"] == pytest.approx(2 / 5)
    assert out["near_duplicate_rate"] == pytest.approx(4 / 5)


CODES = ["A61G", "H04R"]
NAMES = ["Transport or accommodation for patients", "Loudspeakers, microphones"]
KEYWORDS = {"A61G": ["wheelchair", "seat", "frame"], "H04R": ["microphone", "speaker"]}


def test_keyword_audit_counts_exactly():
    synth = [
        "A wheelchair seat per A61G with a frame.",  # A61G: code, 3 keywords
        "Transport or accommodation for patients: a wheelchair.",  # A61G: name, 1 keyword
        "A microphone array; loudspeakers, microphones and a speaker (H04R 1/40).",  # H04R all
        "A61GX is not a code and neither is xh04r.",  # A61G: nothing (no whole-token code)
    ]
    synth_labels = [["A61G"], ["A61G", "Q99"], ["H04R"], ["A61G"]]
    real = ["A folding wheelchair.", "A speaker with a microphone."]
    real_labels = [["A61G"], ["H04R"]]
    table, overall = keyword_audit(synth, synth_labels, real, real_labels, CODES, NAMES, KEYWORDS)
    a, h = table.set_index("label").loc["A61G"], table.set_index("label").loc["H04R"]
    assert (a.n_synthetic, a.name_rows, a.code_rows, a.keyword_hits) == (3, 1, 1, 4)
    assert (h.n_synthetic, h.name_rows, h.code_rows, h.keyword_hits) == (1, 1, 1, 2)
    assert a.name_rate == pytest.approx(1 / 3) and a.code_rate == pytest.approx(1 / 3)
    assert a.keyword_rate == pytest.approx(4 / 9) and h.keyword_rate == pytest.approx(1.0)
    assert a.keyword_rate_real == pytest.approx(1 / 3) and h.keyword_rate_real == 1.0
    assert a.name_rate_real == 0.0 and a.n_real == 1
    assert overall["name_mention_rate"] == pytest.approx(2 / 4)
    assert overall["code_mention_rate"] == pytest.approx(2 / 4)
    assert overall["name_mention_rate_real"] == 0.0
    assert overall["keyword_rate"] == pytest.approx((4 / 9 * 3 + 1.0) / 4)


def test_top_keywords_prefer_label_specific_words():
    texts = [
        "wheelchair wheelchair frame device",
        "wheelchair seat device",
        "microphone membrane device",
        "microphone speaker device",
    ]
    labels = [["A61G"], ["A61G"], ["H04R"], ["H04R"]]
    kw = top_keywords(texts, labels, ["A61G", "H04R", "Z00"], per_label=2)
    assert kw["A61G"][0] == "wheelchair" and kw["H04R"][0] == "microphone"
    assert "device" not in kw["A61G"] + kw["H04R"]  # in every row: not distinctive
    assert kw["Z00"] == []


def test_nearest_similarity_and_ngram_copy():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ref = np.array([[2.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(
        nearest_similarity(q, ref, block_size=2), [1.0, 0.0, np.sqrt(0.5)], atol=1e-6
    )
    reference = ["the quick brown fox jumps over the lazy dog"]
    texts = ["a quick brown fox jumps high", "nothing copied here at all"]
    out = ngram_copy_rate(texts, reference, 3)
    # Row 0's 3-grams: a-quick-brown, quick-brown-fox*, brown-fox-jumps*, fox-jumps-high.
    assert out["ngram_rate"] == pytest.approx(2 / (4 + 3))
    assert out["row_rate"] == 0.5 and out["row_max"] == 0.5
    assert words("Hello, World-42!") == ["hello", "world", "42"]
