"""Simulated studies with a known truth: the results table and per-document test counts a real
trials stage would give, for checking the report's statistics
(tests/integration/test_calibration.py)
and timing it on paper-sized grids (bench/report.py).

Each trial is a classifier with a skill x on the logit scale: x = family base + the regime draw's
effect (shared by every arm of that draw) + the synthetic effect for augmented arms + the
trial's own luck (training seed; none for a deterministic family, whose seeds repeat one
result). Document j of a split has k_j true labels (1 + Poisson(0.6), at most 4) and a
difficulty d_j shared by every trial; a trial finds each true label with probability
sigmoid(x + d_j) and adds Poisson(fp_rate) false positives. The trial's luck is the same on
validation and test, as a real training run's is. micro-F1 of a trial on a large test set is
then F1(x) = 2 K m(x) / (K m(x) + fp_rate + K), K = E[k], m(x) = E_d[sigmoid(x + d)]
(`population_f1`), which gives the true gains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from tasks.inference import DocScores

_GH = np.polynomial.hermite_e.hermegauss(40)  # nodes, weights for E[f(Z)], Z ~ N(0, 1)
#: E[k] for k = min(1 + Poisson(0.6), 4) true labels per document.
_MEAN_LABELS = 1 + float(sum(min(j, 3) * stats.poisson.pmf(j, 0.6) for j in range(40)))


@dataclass(frozen=True)
class SimConfig:
    """The grid and variance components of a simulated study (defaults: the quickstart's)."""

    regimes: dict[str, int] = field(default_factory=lambda: {"r48": 48, "r96": 96})
    families: dict[str, float] = field(
        default_factory=lambda: {"minilm-ft": -1.2, "minilm-head": -0.6, "tfidf-lr": -0.3}
    )
    deterministic: tuple[str, ...] = ("tfidf-lr",)
    family_regimes: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"minilm-ft": ("r48",)}
    )
    corpora: tuple[tuple[str, str], ...] = (("smollm2", "synthesis"), ("smollm2", "paraphrase"))
    seeds: int = 2
    draws: int = 1
    n_test: int = 400
    n_val: int = 200
    effect: float = 0.0  # synthetic effect on the logit scale (augmented vs its control)
    volume_effect: float = 0.15  # what duplicating to the larger size does, for both
    sd_seed: float = 0.08
    sd_draw: float = 0.15
    sd_gain_draw: float = 0.0  # the synthetic effect's spread over regime draws
    sd_doc: float = 1.0
    fp_rate: float = 0.8


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def population_f1(x: np.ndarray | float, cfg: SimConfig) -> np.ndarray:
    """micro-F1 of a classifier of skill x on an infinite test set."""
    nodes, weights = _GH
    x = np.asarray(x, dtype=float)
    m = (_sigmoid(x[..., None] + cfg.sd_doc * nodes) * weights).sum(-1) / weights.sum()
    k = _MEAN_LABELS
    return 2 * k * m / (k * m + cfg.fp_rate + k)


def expected_f1(x: float, sd: float, cfg: SimConfig) -> float:
    """E over a trial's luck u ~ N(0, sd) of population_f1(x + u)."""
    nodes, weights = _GH
    return float((population_f1(x + sd * nodes, cfg) * weights).sum() / weights.sum())


def true_gain(cfg: SimConfig, family: str, draw_effect: float | None = None) -> float:
    """The controlled gain's true value: over the draws' distribution, or given one draw's
    effect on the logit scale (what a one-draw interval is conditional on)."""
    base = cfg.families[family] + cfg.volume_effect
    sd = 0.0 if family in cfg.deterministic else cfg.sd_seed
    if draw_effect is not None:
        return expected_f1(base + draw_effect + cfg.effect, sd, cfg) - expected_f1(
            base + draw_effect, sd, cfg
        )
    nodes, weights = _GH
    w = weights / weights.sum()
    gains = [
        sum(
            wg * expected_f1(base + cfg.sd_draw * v + cfg.effect + cfg.sd_gain_draw * g, sd, cfg)
            for g, wg in zip(nodes, w, strict=True)
        )
        - expected_f1(base + cfg.sd_draw * v, sd, cfg)
        for v in nodes
    ]
    return float(np.dot(w, gains))


@dataclass
class SimStudy:
    results: pd.DataFrame
    scores: DocScores
    draw_effects: dict[tuple[str, int], float]
    gain_effects: dict[tuple[str, int], float]


def _docs(rng: np.random.Generator, n: int, cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    k = np.minimum(1 + rng.poisson(0.6, n), 4)
    return k, rng.normal(0, cfg.sd_doc, n)


def _counts(rng, x: float, k: np.ndarray, d: np.ndarray, cfg: SimConfig):
    tp = rng.binomial(k, _sigmoid(x + d))
    return tp, rng.poisson(cfg.fp_rate, len(k)), k - tp


def _f1(tp, fp, fn) -> float:
    return float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1))


def simulate_study(cfg: SimConfig, seed: int) -> SimStudy:
    """One simulated study: results.parquet-like rows and each trial's test counts."""
    rng = np.random.default_rng(seed)
    k_test, d_test = _docs(rng, cfg.n_test, cfg)
    k_val, d_val = _docs(rng, cfg.n_val, cfg)
    rows, tps, fps, fns = [], [], [], []
    draw_eff, gain_eff = {}, {}
    for regime, n_real in cfg.regimes.items():
        for draw in range(cfg.draws):
            v = rng.normal(0, cfg.sd_draw)
            g_d = rng.normal(0, cfg.sd_gain_draw) if cfg.sd_gain_draw else 0.0
            draw_eff[(regime, draw)], gain_eff[(regime, draw)] = v, g_d
            for fam, base in cfg.families.items():
                if regime not in cfg.family_regimes.get(fam, (regime,)):
                    continue
                det = fam in cfg.deterministic
                cells = [("real_only", None, base + v, n_real)]
                for gen, strat in cfg.corpora:
                    x = base + v + cfg.volume_effect + cfg.effect + g_d
                    cells.append(("real_plus_synthetic", (gen, strat), x, 2 * n_real))
                cells.append(("duplicate_to_match", None, base + v + cfg.volume_effect, 2 * n_real))
                fixed: dict[int, tuple] = {}
                for s in range(cfg.seeds):
                    aug_ids = []
                    for i, (arm, corpus, x, n_train) in enumerate(cells):
                        if det and i in fixed:
                            val_f1, counts = fixed[i]
                        else:
                            u = 0.0 if det else rng.normal(0, cfg.sd_seed)
                            counts = _counts(rng, x + u, k_test, d_test, cfg)
                            val_f1 = _f1(*_counts(rng, x + u, k_val, d_val, cfg))
                            fixed[i] = (val_f1, counts)
                        tid = f"{regime}-d{draw}-{fam}-{arm}-{i}-s{s}"
                        if arm == "real_plus_synthetic":
                            aug_ids.append(tid)
                        rows.append(
                            {
                                "trial_id": tid,
                                "regime": regime,
                                "draw": draw,
                                "arm": arm,
                                "controls": ",".join(aug_ids)
                                if arm == "duplicate_to_match"
                                else "",
                                "ratio": 1.0 if arm != "real_only" else np.nan,
                                "ordering": "shuffled",
                                "generator": corpus[0] if corpus else "",
                                "strategy": corpus[1] if corpus else "",
                                "variant": "plain" if corpus else "",
                                "family": fam,
                                "family_kind": "tfidf_linear" if det else "frozen_head",
                                "loss": "bce",
                                "precision": "fp32",
                                "attention": "none",
                                "seed": s,
                                "n_train": n_train,
                                "n_real": n_real,
                                "status": "ok",
                                "val_micro_f1": val_f1,
                                "test_micro_f1": _f1(*counts),
                            }
                        )
                        tps.append(counts[0])
                        fps.append(counts[1])
                        fns.append(counts[2])
    results = pd.DataFrame(rows)
    scores = DocScores(
        results.trial_id.tolist(),
        np.array(tps, np.float32),
        np.array(fps, np.float32),
        np.array(fns, np.float32),
    )
    return SimStudy(results, scores, draw_eff, gain_eff)
