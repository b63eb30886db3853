"""Power of the verdict's test before a study is paid for: the smallest controlled gain a
planned design detects, and the draws and seeds needed to detect a given gain.

The verdict (tasks/report/verdict.py) estimates a regime's controlled gain as the mean over draws
of the mean over seeds, with the variance of `tasks.inference.estimate`: over draws when there
are two or more (else over the seeds of the one draw), plus a bootstrap variance over the test
documents; it calls a gain significant when the t test passes at alpha / k, k being the number of
augmented cells the headline was chosen among (1 when the config pre-registers it).

With variance components sigma2_draw (between draws, of the gain), sigma2_seed (between seeds
within a draw) and sigma2_doc (per test document, so that the document part of the variance is
sigma2_doc / n_docs), the estimate of a design with D draws and S seeds is normal around the true
gain with variance sigma2_draw / D + sigma2_seed / (D S) + sigma2_doc / n_docs. With one draw the
verdict (and so its power) is about the drawn regime's own gain: the interval is conditional on
the draw, and the between-draw spread does not enter; `data.regime_draws` >= 2 makes it the
average gain over draws.

`power` computes the test's rejection rate exactly for this model by simulating its sufficient
statistics (the estimate and the run-variance estimate, a scaled chi-square), with common random
numbers so that the minimum detectable gain found by bisection is stable. The simulation test in
tests/integration/test_calibration.py runs the real estimator on simulated studies and checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from tasks.inference import combined_df

#: Stated defaults when no pilot run gives the variance components (micro-F1 gain scale): a
#: seed sd of 0.01 and a draw sd of 0.015 are the orders seen on the quickstart's frozen heads,
#: and a per-document sd of 0.25 gives a document SE of 0.0125 on 400 test documents.
DEFAULT_COMPONENTS = {"draw": 0.015**2, "seed": 0.01**2, "doc": 0.25**2}
_SIMULATIONS = 100_000


@dataclass(frozen=True)
class VarianceComponents:
    """Variance of a controlled gain between draws, between seeds, and per test document."""

    draw: float
    seed: float
    doc: float
    source: str = "default"


def default_components() -> VarianceComponents:
    return VarianceComponents(**DEFAULT_COMPONENTS, source="default (no pilot)")


def _draws(
    vc: VarianceComponents, draws: int, seeds: int, n_docs: int, cells: int = 1, rng_seed: int = 0
):
    """Simulated (estimate error, run-variance estimate) of a design, and its fixed parts.

    `cells`: how many cells the run variance is pooled over (the report pools a family's)."""
    rng = np.random.default_rng(rng_seed)
    z = rng.standard_normal(_SIMULATIONS)
    if draws >= 2:
        run_var, df = (vc.draw + vc.seed / seeds) / draws, draws - 1
        err_var = run_var + vc.doc / n_docs
    elif seeds >= 2:  # one draw: the verdict is about the drawn regime (conditional on it)
        run_var, df = vc.seed / seeds, seeds - 1
        err_var = run_var + vc.doc / n_docs
    else:  # one run: the estimator has no run variance to estimate
        run_var, df = 0.0, 0
        err_var = vc.seed + vc.doc / n_docs
    df *= max(1, cells)
    chi = rng.chisquare(df, _SIMULATIONS) / df if df >= 1 else np.zeros(_SIMULATIONS)
    return z, math.sqrt(err_var), run_var * chi, df, vc.doc / n_docs


def _rejection(
    vc: VarianceComponents, draws: int, seeds: int, n_docs: int, alpha: float, k: int, cells: int
):
    """gain -> rejection rate of the design's test (the simulated draws fixed once)."""
    z, err_sd, run_var_hat, df_runs, doc_var = _draws(vc, draws, seeds, n_docs, cells)
    total = run_var_hat + doc_var
    # The degrees of freedom exactly as tasks.inference.estimate computes them for each study.
    df = combined_df(run_var_hat, df_runs if df_runs >= 1 else math.inf, doc_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = stats.t.ppf(1 - alpha / (2 * k), df) * np.sqrt(total)
    bound = np.where(total > 0, bound, np.inf)
    return lambda gain: float(np.mean(np.abs(gain + err_sd * z) > bound))


def power(
    gain: float,
    vc: VarianceComponents,
    draws: int,
    seeds: int,
    n_docs: int,
    alpha: float = 0.05,
    k: int = 1,
    cells: int = 1,
) -> float:
    """Probability that the verdict's test calls `gain` significant (two-sided, level alpha / k;
    the run variance pooled over `cells` cells)."""
    return _rejection(vc, draws, seeds, n_docs, alpha, k, cells)(gain)


def min_detectable_gain(
    vc: VarianceComponents,
    draws: int,
    seeds: int,
    n_docs: int,
    alpha: float = 0.05,
    k: int = 1,
    target: float = 0.8,
    cells: int = 1,
) -> float:
    """The smallest true gain the design detects with probability `target` (bisection)."""
    reject = _rejection(vc, draws, seeds, n_docs, alpha, k, cells)
    lo, hi = 0.0, 1.0
    if reject(hi) < target:
        return math.inf
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reject(mid) >= target else (mid, hi)
    return hi


def runs_needed(
    gain: float,
    vc: VarianceComponents,
    n_docs: int,
    alpha: float = 0.05,
    k: int = 1,
    target: float = 0.8,
    max_draws: int = 20,
    max_seeds: int = 10,
    cells: int = 1,
    one_draw: bool = False,
) -> tuple[int, int] | None:
    """The cheapest (draws, seeds), fewest runs first, whose power for `gain` reaches `target`.

    `one_draw`: seeds of a single draw (a verdict conditional on it); else two or more draws
    (a verdict on the average over draws). The two answer different questions, so they are not
    compared with each other."""
    draws = [1] if one_draw else range(2, max_draws + 1)
    designs = sorted(
        ((d, s) for d in draws for s in range(2 if d == 1 else 1, max_seeds + 1)),
        key=lambda ds: (ds[0] * ds[1], ds[0]),
    )
    for d, s in designs:
        if power(gain, vc, d, s, n_docs, alpha, k, cells) >= target:
            return d, s
    return None
