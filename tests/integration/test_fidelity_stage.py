"""The fidelity stage end to end through the CLI: real prepared patents, hand-made corpora."""

import json
from pathlib import Path

import pandas as pd
import yaml
from planted import plant_manifest
from typer.testing import CliRunner

from orchestrator.cli import app
from tasks.files import write_json_atomic

REGIME = "r40"


def _config(tmp_path: Path, source: Path) -> Path:
    tree = {
        "study": "fid",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "data": {
            "source": {"path": str(source), "min_good_records": 50, "limit": 1500},
            "labels": {"top_k": 8},
            "split": {"test_size": 80, "val_size": 40},
            "regimes": [{"name": REGIME, "size": 40}],
        },
        "generation": {
            "generators": [{"kind": "vllm", "name": "hand", "model": "embedded:smollm2-135m"}]
        },
        "fidelity": {
            "mmd": {"permutations": 200, "per_label_min_rows": 5, "per_label_permutations": 50},
            "copy_ngram": 6,
        },
        "resources": {"runs_dir": str(tmp_path / "runs"), "num_cpus": 2},
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


def _hand_made_generate(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Two corpora as the generate stage would write them: real held-back patents (same
    distribution as the regime) and templated text that copies label names."""
    prep = run_dir / "prepare"
    pool = pd.read_parquet(prep / "train_pool.parquet")
    regime = pd.read_parquet(prep / "regimes" / f"{REGIME}.parquet")
    labels = json.loads((prep / "labels.json").read_text())
    fresh = pool[~pool.id.isin(regime.id)].head(60)
    close = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(60)],
            "text": fresh.text.tolist(),
            "labels": [list(x) for x in fresh.labels],
            "source": "synthetic",
        }
    )
    far_rows = []
    for i in range(60):
        lab = labels[i % len(labels)]
        far_rows.append(
            {
                "id": f"t{i}",
                "text": f"Invention number {i} concerns {lab['name']} ({lab['code']}). "
                f"It is an improved {lab['name'].lower()} apparatus, variant {i % 7}.",
                "labels": [lab["code"]],
                "source": "synthetic",
            }
        )
    far = pd.DataFrame(far_rows)
    gen = run_dir / "generate"
    corpora = {f"{REGIME}__hand__synthesis__plain": close, f"{REGIME}__hand__templated__plain": far}
    entries = []
    for cid, df in corpora.items():
        (gen / "corpora").mkdir(parents=True, exist_ok=True)
        df.to_parquet(gen / "corpora" / f"{cid}.parquet", index=False)
        _, _, strategy, variant = cid.split("__")
        entries.append(
            {
                "corpus_id": cid,
                "regime": REGIME,
                "generator": "hand",
                "strategy": strategy,
                "variant": variant,
                "rows": len(df),
                "removed": 0,
                "path": f"corpora/{cid}.parquet",
            }
        )
    write_json_atomic(gen / "corpora.json", entries)
    plant_manifest(run_dir, run_dir / "config.resolved.yaml", "generate")
    return corpora


def test_fidelity_stage_scores_corpora_and_status_shows_mmd(tmp_path, uspto_path):
    runner = CliRunner()
    cfg = _config(tmp_path, uspto_path)
    res = runner.invoke(app, ["prepare", str(cfg)])
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "runs" / "fid"
    corpora = _hand_made_generate(run_dir)

    res = runner.invoke(app, ["fidelity", str(cfg)])
    assert res.exit_code == 0, res.output
    out = run_dir / "fidelity"
    summary = pd.read_parquet(out / "summary.parquet").set_index("corpus_id")
    close = summary.loc[f"{REGIME}__hand__synthesis__plain"]
    far = summary.loc[f"{REGIME}__hand__templated__plain"]
    assert list(summary.status) == ["ok", "ok"]
    assert (close.n_synthetic, close.n_real) == (60, 40)
    # Real patents against real patents: no detectable difference; templates: clearly different.
    assert close.mmd_p > 0.05 and abs(close.mmd2) < 0.02
    assert far.mmd_p < 0.01 and far.mmd2 > 10 * max(close.mmd2, 0.005)
    assert far.frechet > close.frechet and far.precision < close.precision
    # Templates name every label; real text (almost) never does.
    assert far.name_mention_rate == 1.0 and far.code_mention_rate == 1.0
    assert close.name_mention_rate < 0.2
    assert far.near_duplicate_rate >= 0.0 and far.distinct_2 < close.distinct_2

    report = json.loads((out / f"{REGIME}__hand__templated__plain" / "fidelity.json").read_text())
    assert report["mmd"]["permutations"] == 200 and report["rows"]["synthetic"] == 60
    assert report["memorization"]["copy_ngram"] == 6
    assert set(report["audited_keywords"]) == set(
        corpora[f"{REGIME}__hand__templated__plain"].labels.explode()
    )
    per_label = pd.read_parquet(out / f"{REGIME}__hand__synthesis__plain" / "per_label.parquet")
    assert len(per_label) == 8 and per_label.n_synthetic.sum() == sum(
        len(x) for x in corpora[f"{REGIME}__hand__synthesis__plain"].labels
    )
    assert per_label.mmd2.notna().any()

    # Every text was embedded once; a re-run with --force finds them all in the cache.
    cache = run_dir / "cache" / "embeddings"
    shards = list(cache.rglob("*.keys.npy"))
    assert len(shards) == 1
    res = runner.invoke(app, ["fidelity", str(cfg), "--force"])
    assert res.exit_code == 0, res.output
    assert list(cache.rglob("*.keys.npy")) == shards

    res = runner.invoke(app, ["status", str(run_dir)])
    assert res.exit_code == 0
    assert "fidelity" in res.output and "MMD2=" in res.output


def test_each_draw_s_corpus_is_compared_with_its_own_draw(tmp_path, uspto_path):
    """Copies of a draw's own real rows: every n-gram copies the draw they are compared with."""
    runner = CliRunner()
    cfg = _config(tmp_path, uspto_path)
    res = runner.invoke(app, ["prepare", str(cfg), "data.regime_draws=2"])
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "runs" / "fid"
    prep, gen = run_dir / "prepare", run_dir / "generate"
    (gen / "corpora").mkdir(parents=True)
    entries = []
    for draw, key in enumerate([REGIME, f"{REGIME}-d1"]):
        real = pd.read_parquet(prep / "regimes" / f"{key}.parquet")
        cid = f"{key}__hand__synthesis__plain"
        copies = real[["text", "labels"]].assign(id=[f"{key}-{i}" for i in range(len(real))])
        copies.assign(source="synthetic").to_parquet(gen / "corpora" / f"{cid}.parquet")
        entries.append(
            {
                "corpus_id": cid,
                "regime": REGIME,
                "draw": draw,
                "regime_key": key,
                "generator": "hand",
                "strategy": "synthesis",
                "variant": "plain",
                "rows": len(copies),
                "path": f"corpora/{cid}.parquet",
            }
        )
    write_json_atomic(gen / "corpora.json", entries)
    plant_manifest(run_dir, run_dir / "config.resolved.yaml", "generate")

    res = runner.invoke(app, ["fidelity", str(cfg), "data.regime_draws=2"])
    assert res.exit_code == 0, res.output
    summary = pd.read_parquet(run_dir / "fidelity" / "summary.parquet")
    assert summary.draw.tolist() == [0, 1] and set(summary.regime) == {REGIME}
    key = ["regime", "draw", "generator", "strategy", "variant"]
    assert not summary.duplicated(key).any()
    # Compared with another draw's rows they would copy a few n-grams, not all of them.
    assert (summary.copy_train_rate > 0.99).all(), summary[["corpus_id", "copy_train_rate"]]
    assert (summary.n_real == 40).all()
