"""Two generators in one study (the embedded SmolLM2 under two names): a kill during the second
generator resumes without redoing the first. (Both corpora written one engine at a time, and a
stop during the first generator: `test_generate_stage.py`.)"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
from run_processes import Run, shard_rows, smol, study, synthpat

ROWS = 6  # 0.5 x 12 real rows, one strategy: per generator


def _config(tmp_path: Path, uspto_path: Path, **second: int) -> Path:
    cfg = study(tmp_path, uspto_path, generators=[smol("smol-a"), smol("smol-b", **second)])
    res = synthpat(tmp_path, "prepare", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    return cfg


def _check_corpora(run_dir: Path) -> None:
    gen = run_dir / "generate"
    corpora = json.loads((gen / "corpora.json").read_text())
    assert sorted(c["corpus_id"] for c in corpora) == ["r__smol-a__synthesis__plain",
                                                       "r__smol-b__synthesis__plain"]  # fmt: skip
    for meta in corpora:
        kept = pd.read_parquet(gen / meta["path"])
        assert meta["planned"] == ROWS and len(kept) == meta["rows"] >= 1
        assert set(kept.generator) == {meta["generator"]}
    manifest = json.loads((gen / "manifest.json").read_text())
    assert manifest["rows"]["generated"] == 2 * ROWS and manifest["rows"]["failed"] == 0


@pytest.mark.slow  # three engine starts: about 4 minutes on 2 shared cores
def test_a_kill_during_the_second_generator_resumes_and_keeps_the_first(tmp_path, uspto_path):
    # The second generator one row at a time, so that the kill lands between its rows.
    cfg = _config(tmp_path, uspto_path, batch_size=1, max_concurrent_batches=1)
    run_dir = tmp_path / "runs" / "stop"
    run = Run(tmp_path, ["generate", str(cfg)])
    try:
        run.wait_for(lambda: shard_rows(run_dir, "smol-b") >= 1, 420, "a row of smol-b")
        assert shard_rows(run_dir, "smol-a") == ROWS and shard_rows(run_dir, "smol-b") < ROWS
        first = sorted(run_dir.glob(".work/generate-*/shards/smol-a/shard-*.parquet"))
        run.signal_group(signal.SIGKILL)
        run.wait(30)
        left, _ = run.wait_no_leftovers(10)
        assert not left, left
    finally:
        run.kill_leftovers()
    assert not (run_dir / "generate" / "manifest.json").exists()

    res = synthpat(tmp_path, "generate", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    _check_corpora(run_dir)
    # The first generator's rows were reused, not generated again: the rerun's attempt record
    # shows two attempts, and the first generator's shards were all there before the rerun.
    manifest = json.loads((run_dir / "generate" / "manifest.json").read_text())
    assert [a["ended"] for a in manifest["attempts"]] == ["killed", "done"]
    assert len(first) >= 1
    kept = pd.read_parquet(run_dir / "generate" / "corpora" / "r__smol-a__synthesis__plain.parquet")
    assert len(kept) >= 1
    # The second engine did only smol-b's remaining rows: smol-a's engine never started again.
    assert "generate smol-a" not in res.stderr + res.stdout
