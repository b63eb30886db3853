"""Coverage of the report's interval rule against plain Welch-Satterthwaite, by simulation.

A gain's error is a run part (seeds or draws: nu = units - 1 degrees of freedom, variance
estimated) plus a document part (variance known from the bootstrap). For each nu and each ratio
of document to run variance, the share of intervals that miss the truth, at the 95% level of a
cell's interval and at the 1 - 0.05/24 level of a verdict chosen among 12 cells in 2 regimes.
Baseline: Satterthwaite's df with the plug-in run variance, in the same draws.

    .venv/bin/python bench/calibration.py [--draws 200000]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from tasks.inference import combined_df

RATIOS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def miss_rates(units: int, level: float, n: int, rng: np.random.Generator) -> tuple[list, list]:
    nu = units - 1
    ours, plain = [], []
    for ratio in RATIOS:
        run_var = 1.0 / units  # variance of the mean of `units` unit-variance runs
        doc_var = ratio * run_var
        g = rng.normal(0, np.sqrt(doc_var), (n, 1)) + rng.normal(0, 1.0, (n, units))
        mean, vr = g.mean(1), g.var(1, ddof=1) / units
        total = vr + doc_var
        with np.errstate(invalid="ignore", divide="ignore"):
            satt = np.where(vr > 0, total**2 / (vr**2 / nu), np.inf)
        q = 0.5 + level / 2
        for df, out in ((combined_df(vr, nu, doc_var), ours), (satt, plain)):
            out.append(float(np.mean(np.abs(mean) > stats.t.ppf(q, df) * np.sqrt(total))))
    return ours, plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("miss rate of the interval by document/run variance ratio", RATIOS)
    for level in (0.95, 1 - 0.05 / 24):
        print(f"\nlevel {level:.4f} (nominal miss {1 - level:.4f})")
        for units in (2, 3, 5):
            ours, plain = miss_rates(units, level, args.draws, rng)
            fmt = lambda v: " ".join(f"{x:.4f}" for x in v)  # noqa: E731
            print(f"  {units} units  report: {fmt(ours)}")
            print(f"  {units} units  plain:  {fmt(plain)}")
            worst = max(p / max(o, 1e-9) for o, p in zip(ours, plain, strict=True))
            print(f"  {units} units  worst plain/report miss ratio: {worst:.2f}x")


if __name__ == "__main__":
    main()
