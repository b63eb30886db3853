"""Report build time on a paper-sized simulated study, and its document bootstrap against a loop.

Study (`tasks.simulate`, known truth): 4 regimes (r165, r660, r1320, r4565) x 3 families (one
deterministic) x 5 seeds; per regime 6 generators x 2 strategies x 3 variants = 36 corpora, each
an augmented arm, with one same-size duplicate_to_match control serving all 36 (comma-joined
`controls`) and a real_only arm: 2,280 trials, each with per-document counts on 1,500 test
documents; 2,000 document resamples. Plus a fidelity summary (MMD^2 and friends per corpus).

Timed:
- `write_report` end to end: every table, the verdict, the figures, report.md/html, JSON;
- the document bootstrap alone: `DocResampler` construction (every trial's micro-F1 on every
  resample, as one weighted matrix product per chunk of trials).
Baseline, same run: the same replicates (the same resampled documents) as a plain Python loop
over resamples, each recomputing micro-F1 from the indexed documents' counts, on a subset of
trials; its per-trial cost against the resampler's, and a check that the values agree.

    .venv/bin/python bench/report.py [--resamples 2000] [--loop-trials 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.inference import DocResampler  # noqa: E402
from tasks.report.tables import StatsOptions  # noqa: E402
from tasks.report.writer import write_report  # noqa: E402
from tasks.simulate import SimConfig, simulate_study  # noqa: E402

REGIMES = {"r165": 165, "r660": 660, "r1320": 1320, "r4565": 4565}
FAMILIES = {"bert-patents": -0.8, "modernbert": -0.7, "tfidf-lr": -0.3}
GENERATORS = [f"g{i}" for i in range(6)]
STRATEGIES = ("synthesis", "paraphrase")
VARIANTS = ("plain", "masked", "removed")


def paper_study(resamples_seed: int = 0):
    """The simulated study and a fidelity summary shaped like the paper's main grid.

    SimConfig has no variant axis (its corpora are (generator, strategy) pairs, variant
    "plain"), so each variant rides in the strategy name and is split out afterwards.
    """
    corpora = tuple((g, f"{s}+{v}") for g in GENERATORS for s in STRATEGIES for v in VARIANTS)
    cfg = SimConfig(
        regimes=REGIMES,
        families=FAMILIES,
        deterministic=("tfidf-lr",),
        family_regimes={},
        corpora=corpora,
        seeds=5,
        n_test=1500,
        n_val=300,
        effect=0.05,
    )
    study = simulate_study(cfg, resamples_seed)
    df = study.results
    aug = df.strategy.str.contains("+", regex=False)
    parts = df.loc[aug, "strategy"].str.split("+", expand=True)
    df.loc[aug, "strategy"], df.loc[aug, "variant"] = parts[0], parts[1]
    # tasks.simulate has no retrieval metric; the report's retrieval table needs the column.
    rng = np.random.default_rng(1)
    df["test_ndcg10"] = rng.uniform(0.4, 0.6, len(df))
    fid = []
    for regime in REGIMES:
        for g in GENERATORS:
            for s in STRATEGIES:
                for v in VARIANTS:
                    mmd = rng.uniform(0, 0.5)
                    fid.append(
                        dict(
                            corpus_id=f"{regime}__{g}__{s}__{v}",
                            regime=regime,
                            generator=g,
                            strategy=s,
                            variant=v,
                            mmd2=mmd,
                            frechet=3 * mmd + rng.normal(0, 0.1),
                            precision=rng.uniform(0.3, 0.9),
                            recall=rng.uniform(0.3, 0.9),
                            label_js=rng.uniform(0, 0.3),
                        )
                    )
    return study, pd.DataFrame(fid)


def loop_replicates(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """Micro-F1 of each trial (rows) on each resample, one resample at a time: the resampled
    documents drawn as DocResampler draws them, their counts summed per trial."""
    n = tp.shape[1]
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    out = np.empty((len(tp), n_resamples))
    for b in range(n_resamples):
        idx = draws[b]
        t, f_p, f_n = tp[:, idx].sum(1), fp[:, idx].sum(1), fn[:, idx].sum(1)
        den = 2 * t + f_p + f_n
        out[:, b] = np.where(den > 0, 2 * t / np.maximum(den, 1e-12), 0.0)
    return out


def cpu() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    bf16 = "avx512_bf16" in fields.get("Flags", "").split()
    cores = fields.get("CPU(s)", "?").strip()
    return f"{model}, {cores} CPUs, avx512_bf16: {'yes' if bf16 else 'no'}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--loop-trials", type=int, default=20)
    args = ap.parse_args()
    print(f"CPU: {cpu()}")
    t0 = time.perf_counter()
    study, summary = paper_study()
    t_sim = time.perf_counter() - t0
    results, scores = study.results, study.scores
    n_trials, n_docs = len(results), scores.n_docs
    n_aug = int((results.arm == "real_plus_synthetic").sum())
    print(
        f"{n_trials} trials ({n_aug} augmented, {len(summary)} corpora), {n_docs} test documents, "
        f"{args.resamples} resamples; simulated in {t_sim:.1f}s"
    )

    t0 = time.perf_counter()
    res = DocResampler(scores, "micro_f1", args.resamples, seed=0)
    t_vec = time.perf_counter() - t0
    print(f"document bootstrap (DocResampler, {n_trials} trials): {t_vec:.2f}s")

    sub = list(range(0, n_trials, n_trials // args.loop_trials))[: args.loop_trials]
    ids = [scores.trial_ids[i] for i in sub]
    t0 = time.perf_counter()
    loop = loop_replicates(scores.tp[sub], scores.fp[sub], scores.fn[sub], args.resamples, 0)
    t_loop = time.perf_counter() - t0
    diff = float(np.abs(loop - res.replicates(ids)).max())
    per_loop, per_vec = t_loop / len(sub), t_vec / n_trials
    print(
        f"baseline: Python loop over resamples, {len(sub)} trials: {t_loop:.2f}s "
        f"({per_loop * 1e3:.1f} ms/trial, {per_loop * n_trials:.0f}s scaled to {n_trials} trials); "
        f"max |difference| {diff:.1e}"
    )
    print(
        f"per trial: resampler {per_vec * 1e3:.2f} ms vs loop {per_loop * 1e3:.1f} ms: "
        f"{per_loop / per_vec:.0f}x"
    )

    opts = StatsOptions(n_resamples=args.resamples, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep = write_report(
            results, summary, [], Path(tmp), list(REGIMES), "bench", opts=opts, scores=scores
        )
        t_report = time.perf_counter() - t0
    t = rep.tables
    print(
        f"whole report (write_report: {len(t)} tables, {len(rep.figures)} figures, "
        f"{len(rep.verdict)} verdicts, md, html): {t_report:.1f}s "
        f"({len(t['controlled_gains'])} controlled gains, {len(t['correlations'])} correlations)"
    )
    for v in rep.verdict:
        ci = f"[{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]"
        print(
            f"  {v['regime']}: gain {v['gain']:+.4f} {ci} p={v['p']:.3g} q={v['q']:.3g} "
            f"among {v['n_cells_compared']}, over {v['units_text']}"
        )


if __name__ == "__main__":
    main()
