"""Fault tolerance across nodes, simulated on this machine with `ray.cluster_utils.Cluster`.

A head with no CPUs and two worker nodes, each with one `sim_gpu` (a custom resource standing in
for a GPU). `synthpat run` joins the cluster: generation runs one vLLM actor per `sim_gpu`, the
trial grid one trial per `sim_gpu`. Mid-generation one worker is removed and a replacement joins;
mid-grid the other is removed and replaced, as when the autoscaler replaces preempted spot nodes.
The study must complete with exactly the planned rows and trials: nothing lost, nothing twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER = {"num_cpus": 2, "resources": {"sim_gpu": 1}, "object_store_memory": 200 * 1024**2}


def _wait(pred, proc: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            pytest.fail(
                f"study exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def test_study_completes_exactly_after_losing_a_node_mid_generation_and_mid_grid(
    tmp_path, uspto_path
):
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 200 * 1024**2},
    )
    try:
        first = [cluster.add_node(**WORKER) for _ in range(2)]
        cluster.wait_for_nodes()
        runs, log = tmp_path / "runs", tmp_path / "study.log"
        run = runs / "multinode"
        cmd = [sys.executable, "-m", "orchestrator", "run", "tests/data/multinode.yaml",
               f"resources.address={cluster.address}", f"resources.runs_dir={runs}"]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            # Mid-generation: some rows are written, the rest are not.
            _wait(lambda: len(list(run.glob(".work/generate*/**/shard-*.parquet"))) >= 1,
                  proc, log, 900, "the first generated shard")  # fmt: skip
            cluster.remove_node(first[0])
            cluster.add_node(**WORKER)
            # Mid-grid: some trials are done, the rest are not.
            _wait(lambda: len(list(run.glob(".work/trials*/done/*/row.json"))) >= 2,
                  proc, log, 900, "the first finished trials")  # fmt: skip
            cluster.remove_node(first[1])
            cluster.add_node(**WORKER)
            rc = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert rc == 0, log.read_text()[-6000:]
    finally:
        cluster.shutdown()

    # Generation: every planned row exactly once, none failed.
    gen = json.loads((run / "generate/manifest.json").read_text())
    (corpus,) = json.loads((run / "generate/corpora.json").read_text())
    assert gen["rows"]["generated"] == corpus["planned"] == 40
    assert gen["rows"]["failed"] == 0
    table = pd.read_parquet(run / "generate" / corpus["path"])
    removed = pd.read_parquet(run / "generate/removed" / f"{corpus['corpus_id']}.parquet")
    ids = pd.concat([table.id, removed.id])
    assert ids.is_unique
    assert set(ids) == {f"r40__smol__synthesis__plain__{i:06d}" for i in range(40)}
    # Trials: every planned trial exactly once, every one finished.
    results = pd.read_parquet(run / "trials/results.parquet")
    assert results.trial_id.is_unique
    # The exact planned ids: 6 seeds of real_only, real_plus_synthetic and its control.
    from config import load_config
    from tasks.trials.grid import expand_grid

    cfg = load_config(REPO / "tests/data/multinode.yaml")
    assert set(results.trial_id) == {c.trial_id for c in expand_grid(cfg, corpora=[corpus])}
    assert len(results) == json.loads((run / "trials/manifest.json").read_text())["rows"]["trials"]
    assert (results.status == "ok").all(), results[["trial_id", "status", "reason"]]
