"""Report build time on a paper-scale results table, and its bootstrap against a plain loop.

Grid: 4 regimes x 6 generators x 2 strategies x 3 variants (144 corpora) x 3 families x 5 seeds:
2,160 augmented trials, as many duplicate_to_match controls and 60 real-only trials.
Baseline: the same percentile bootstrap CIs of every cell written as a Python loop over resamples
(what the report would cost without scipy's vectorized `stats.bootstrap`).

    .venv/bin/python bench/report.py [--resamples 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.report.tables import StatsOptions, controlled_gains
from tasks.report.writer import write_report

REGIMES = {"r165": 165, "r660": 660, "r1320": 1320, "r4565": 4565}


def paper_grid(seeds: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A results table and fidelity summary shaped like the paper's main study."""
    rng = np.random.default_rng(0)
    rows, fid = [], []
    for regime in REGIMES:
        for fam in ("bert-patents", "modernbert", "tfidf"):
            for s in range(seeds):
                rows.append(
                    dict(
                        trial_id=f"{regime}-{fam}-ro-s{s}",
                        regime=regime,
                        arm="real_only",
                        family=fam,
                        loss="bce",
                        seed=s,
                        test_micro_f1=rng.uniform(0.1, 0.5),
                        test_ndcg10=0.5,
                    )
                )
        for g in range(6):
            for strat in ("synthesis", "paraphrase"):
                for var in ("plain", "masked", "removed"):
                    mmd = rng.uniform(0, 0.5)
                    fid.append(
                        dict(
                            regime=regime,
                            generator=f"g{g}",
                            strategy=strat,
                            variant=var,
                            mmd2=mmd,
                            frechet=mmd * 3,
                        )
                    )
                    for fam in ("bert-patents", "modernbert", "tfidf"):
                        for s in range(seeds):
                            aug = f"{regime}-{g}-{strat}-{var}-{fam}-s{s}"
                            base = rng.uniform(0.3, 0.7)
                            rows.append(
                                dict(
                                    trial_id=aug,
                                    regime=regime,
                                    arm="real_plus_synthetic",
                                    ratio=1.0,
                                    generator=f"g{g}",
                                    strategy=strat,
                                    variant=var,
                                    family=fam,
                                    loss="bce",
                                    seed=s,
                                    test_micro_f1=base + 0.1 * mmd,
                                    test_ndcg10=0.45,
                                )
                            )
                            rows.append(
                                dict(
                                    trial_id=f"{aug}-dup",
                                    regime=regime,
                                    arm="duplicate_to_match",
                                    family=fam,
                                    loss="bce",
                                    seed=s,
                                    controls=aug,
                                    n_train=hash(aug) % 10**6,
                                    test_micro_f1=base,
                                    test_ndcg10=0.5,
                                )
                            )
    df = pd.DataFrame(rows).assign(
        status="ok", ordering="shuffled", precision="fp32", attention="sdpa"
    )
    return df, pd.DataFrame(fid)


def loop_bootstrap(values: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n)]
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    results, summary = paper_grid()
    opts = StatsOptions(n_resamples=args.resamples)
    print(f"{len(results)} trials, {len(summary)} corpora, {args.resamples} resamples")

    t0 = time.perf_counter()
    gains = controlled_gains(results, "test_micro_f1", opts)
    t_gains = time.perf_counter() - t0

    aug = results[results.arm == "real_plus_synthetic"]
    dup = results.set_index("controls")["test_micro_f1"]
    diffs = [
        g.test_micro_f1.to_numpy() - dup.loc[g.trial_id].to_numpy()
        for _, g in aug.groupby(["regime", "generator", "strategy", "variant", "family"])
    ]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for d in diffs:
        for _ in range(3):  # the report's three intervals per cell: control, baseline, real_only
            loop_bootstrap(d, args.resamples, rng)
    t_loop = time.perf_counter() - t0
    print(f"controlled gains ({len(gains)} cells, scipy bootstrap): {t_gains:.2f}s")
    print(f"baseline: Python-loop bootstrap, 3 per cell, {len(diffs)} cells: {t_loop:.2f}s")
    print(f"speed-up over the loop baseline: {t_loop / t_gains:.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_report(results, summary, [], Path(tmp), list(REGIMES), "bench", opts=opts)
        print(f"whole report (tables, figures, md, html): {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
