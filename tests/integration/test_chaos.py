"""Chaos: a quickstart-shaped study at a tiny size is killed with SIGKILL (its whole process
group, as an OOM killer or a lost terminal does) at three random moments, one in each of
generate, fidelity and trials, and restarted each time. It must end with the artifacts of an
uninterrupted run (corpora, the fidelity summary, the trial results up to their timing
columns) and leave no process behind after any kill.

The moments are drawn from a seed printed in the test's output (`SYNTHPAT_CHAOS_SEED` replays
one): a number of generated rows, a delay into the fidelity stage, a number of finished trials.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from run_processes import Run, shard_rows, smol, study, synthpat

pytestmark = pytest.mark.slow

TRIALS = {
    "families": [
        {"kind": "tfidf_linear", "name": "tfidf"},
        {
            "kind": "frozen_head",
            "name": "head",
            "epochs": 20,
            "encoder": {"model": "embedded:minilm-l6", "max_length": 64},
        },
    ],
    "arms": ["real_only", "real_plus_synthetic"],
    "seeds": [0, 1],
    "resources": {"cpus": 1},
}
#: Columns that say when and how fast a trial ran, not what it found.
TIMING = ["trained_at", "train_seconds"]
#: The same for a generated row (how long its request took).
CORPUS_TIMING = ["gen_seconds"]


def _config(root: Path, source: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return study(
        root,
        source,
        generators=[smol("smol", max_tokens=32)],
        regime_size=16,
        ratios=(0.5, 1.0),
        strategies=("synthesis", "paraphrase"),
        fidelity=True,
        trials=TRIALS,
    )


def _kill(run: Run, what: str) -> None:
    run.signal_group(signal.SIGKILL)
    run.wait(30)
    left, took = run.wait_no_leftovers(10)
    assert not left, f"{len(left)} processes left {took:.0f}s after SIGKILL in {what}: {left}"
    print(f"chaos: killed in {what}; nothing left after {took:.1f}s")


def _finished(run_dir: Path) -> int:
    return len(list(run_dir.glob(".work/trials-*/done/*/row.json")))


def _artifacts(run_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for p in sorted((run_dir / "generate" / "corpora").glob("*.parquet")):
        corpus = pd.read_parquet(p)
        out[f"corpus {p.stem}"] = corpus.drop(columns=[c for c in corpus if c in CORPUS_TIMING])
    out["fidelity summary"] = pd.read_parquet(run_dir / "fidelity" / "summary.parquet")
    results = pd.read_parquet(run_dir / "trials" / "results.parquet")
    out["trial results"] = (
        results.drop(columns=TIMING).sort_values("trial_id").reset_index(drop=True)
    )
    return out


def test_three_random_kills_end_with_the_uninterrupted_artifacts(tmp_path, uspto_path):
    seed = int(os.environ.get("SYNTHPAT_CHAOS_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"chaos: seed {seed} (SYNTHPAT_CHAOS_SEED={seed} replays these moments)")

    ref_cfg = _config(tmp_path / "ref", uspto_path)
    ref = synthpat(tmp_path, "run", str(ref_cfg), timeout_s=1200)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_dir = tmp_path / "ref" / "runs" / "stop"
    planned = sum(
        len(pd.read_parquet(p)) for p in (ref_dir / "generate" / "removed").glob("*.parquet")
    ) + sum(len(pd.read_parquet(p)) for p in (ref_dir / "generate" / "corpora").glob("*.parquet"))
    n_trials = len(pd.read_parquet(ref_dir / "trials" / "results.parquet"))

    cfg = _config(tmp_path / "chaos", uspto_path)
    run_dir = tmp_path / "chaos" / "runs" / "stop"
    args = ["run", str(cfg)]

    # 1. generate: after a random number of rows is written (at least one shard, not all).
    rows = rng.randint(1, max(1, planned - 5))
    run = Run(tmp_path, args, "gen")
    run.wait_for(lambda: shard_rows(run_dir, "smol") >= rows, 600, f"{rows} generated rows")
    _kill(run, f"generate ({shard_rows(run_dir, 'smol')} rows written)")
    assert not (run_dir / "generate" / "manifest.json").exists()

    # 2. fidelity: a random delay after the stage starts, before it commits.
    delay = rng.uniform(0.5, 6.0)
    run = Run(tmp_path, args, "fid")
    run.wait_for(lambda: "fidelity: running" in run.output(), 900, "the fidelity stage")
    time.sleep(delay)
    fidelity_done = (run_dir / "fidelity" / "manifest.json").exists()
    _kill(run, f"fidelity ({delay:.1f}s in{', after it committed' if fidelity_done else ''})")

    # 3. trials: after a random number of finished trials (not all).
    done = rng.randint(1, max(1, n_trials - 2))
    run = Run(tmp_path, args, "trials")
    run.wait_for(lambda: _finished(run_dir) >= done, 900, f"{done} finished trials")
    _kill(run, f"trials ({_finished(run_dir)} of {n_trials} finished)")
    assert not (run_dir / "trials" / "manifest.json").exists()

    last = synthpat(tmp_path, *args, timeout_s=1200)
    assert last.returncode == 0, last.stderr[-3000:]
    want, got = _artifacts(ref_dir), _artifacts(run_dir)
    assert sorted(got) == sorted(want)
    for name, frame in want.items():
        pd.testing.assert_frame_equal(got[name], frame, obj=name)
