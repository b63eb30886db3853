"""The prepare stage end to end through the CLI, on the real uspto-9k patents."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app


def _config(tmp_path: Path, source: Path, **data_extra) -> Path:
    tree = {
        "study": "prep",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "data": {
            "source": {"path": str(source), "min_good_records": 50},
            "labels": {"top_k": 12},
            "split": {"test_size": 300, "val_size": 150},
            "regimes": [{"name": "r24", "size": 24}, {"name": "r60", "size": 60}],
            **data_extra,
        },
        "resources": {"runs_dir": str(tmp_path / "runs")},
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


def test_prepare_real_data_then_up_to_date_then_rerun_on_change(tmp_path, uspto_path):
    runner = CliRunner()
    cfg = _config(tmp_path, uspto_path)
    res = runner.invoke(app, ["prepare", str(cfg)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "prep" / "prepare"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["records"] == 8000 and manifest["rows"]["rejected"] == 0
    labels = json.loads((out / "labels.json").read_text())
    assert [d["code"] for d in labels][:3] == ["G06F", "H01L", "H04L"]
    assert labels[0]["name"] == "Electric digital data processing"
    test = pd.read_parquet(out / "test.parquet")
    pool = pd.read_parquet(out / "train_pool.parquet")
    r24 = pd.read_parquet(out / "regimes" / "r24.parquet")
    r60 = pd.read_parquet(out / "regimes" / "r60.parquet")
    assert set(test.id).isdisjoint(pool.id)
    assert set(r24.id) <= set(r60.id) <= set(pool.id)
    assert {lab for ls in r24.labels for lab in ls} == {d["code"] for d in labels}

    res = runner.invoke(app, ["prepare", str(cfg)])
    assert res.exit_code == 0 and "up to date" in res.output
    assert json.loads((out / "manifest.json").read_text())["started_at"] == manifest["started_at"]

    res = runner.invoke(app, ["prepare", str(cfg), "data.seed=99"])
    assert res.exit_code == 0 and "up to date" not in res.output
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] != manifest["fingerprint"]

    res = runner.invoke(app, ["status", str(tmp_path / "runs" / "prep")])
    assert res.exit_code == 0 and "prepare" in res.output and "done" in res.output


def test_regime_draws_share_the_split_and_keep_draw_zero(tmp_path, uspto_path):
    runner = CliRunner()
    cfg = _config(tmp_path, uspto_path)
    out = tmp_path / "runs" / "prep" / "prepare"
    assert runner.invoke(app, ["prepare", str(cfg)]).exit_code == 0
    single = json.loads((out / "manifest.json").read_text())
    assert "regime_draws" not in single["config"]
    before = {
        k: pd.read_parquet(out / "regimes" / f"{k}.parquet").id.tolist() for k in ("r24", "r60")
    }
    test_ids = pd.read_parquet(out / "test.parquet").id.tolist()

    res = runner.invoke(app, ["prepare", str(cfg), "data.regime_draws=3"])
    assert res.exit_code == 0 and "up to date" not in res.output, res.output
    keys = ["r24", "r60", "r24-d1", "r60-d1", "r24-d2", "r60-d2"]
    for key in keys:
        assert f"regime {key}" in res.output  # the printed table lists every regime draw
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"] != single["fingerprint"]
    assert {k for k in manifest["rows"] if k.startswith("regime:")} == {f"regime:{k}" for k in keys}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["regimes"]) == set(keys) and len(summary["label_cover_sizes"]) == 3
    ids = {k: pd.read_parquet(out / "regimes" / f"{k}.parquet").id.tolist() for k in keys}
    assert {k: ids[k] for k in before} == before  # draw 0: the same rows as without draws
    assert pd.read_parquet(out / "test.parquet").id.tolist() == test_ids
    pool = set(pd.read_parquet(out / "train_pool.parquet").id)
    codes = {d["code"] for d in json.loads((out / "labels.json").read_text())}
    for d in ("", "-d1", "-d2"):
        small, large = set(ids[f"r24{d}"]), set(ids[f"r60{d}"])
        assert len(small) == 24 and len(large) == 60 and small <= large <= pool
        labels = pd.read_parquet(out / "regimes" / f"r24{d}.parquet").labels
        assert {lab for ls in labels for lab in ls} == codes  # the label cover comes first
    assert len({frozenset(ids[f"r60{d}"]) for d in ("", "-d1", "-d2")}) == 3


def test_bad_records_are_set_aside_and_too_few_fails(tmp_path, uspto_path):
    lines = uspto_path.read_text().splitlines()[:400]
    lines.insert(10, "{broken json")
    lines.insert(20, json.dumps({"id": "X1", "abstract": "", "labels": ["G06F"]}))
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, src)
    tree = yaml.safe_load(cfg.read_text())
    tree["data"]["split"] = {"test_size": 40, "val_size": 20}
    tree["data"]["labels"] = {"top_k": 6}
    cfg.write_text(yaml.safe_dump(tree))
    res = CliRunner().invoke(app, ["prepare", str(cfg)])
    assert res.exit_code == 0, res.output
    assert f"{src}:11: not valid JSON" in res.output
    rejected = [
        json.loads(x)
        for x in (tmp_path / "runs/prep/prepare/rejected.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (11, "not valid JSON (Expecting property name enclosed in double quotes)"),
        (21, "abstract: missing or empty"),
    ]
    res = CliRunner().invoke(app, ["prepare", str(cfg), "data.source.min_good_records=1000"])
    assert res.exit_code == 1
    assert "only 400 valid records" in res.output and "min_good_records=1000" in res.output
    # the failed attempt left the earlier, complete artifact untouched
    assert (
        json.loads((tmp_path / "runs/prep/prepare/manifest.json").read_text())["rows"]["records"]
        == 400
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_other_formats_through_the_stage(tmp_path, uspto_path, fmt):
    rows = [json.loads(x) for x in uspto_path.read_text().splitlines()[:600]]
    df = pd.DataFrame(rows)
    if fmt == "csv":
        df["labels"] = df["labels"].map(";".join)
        df["codes"] = df["codes"].map(";".join)
        src = tmp_path / "p.csv"
        df.drop(columns=["y_tags"]).to_csv(src, index=False)
    else:
        src = tmp_path / "p.parquet"
        df.to_parquet(src)
    cfg = _config(tmp_path, src, split={"test_size": 60, "val_size": 30})
    res = CliRunner().invoke(app, ["prepare", str(cfg), "data.labels.top_k=6"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "runs/prep/prepare/manifest.json").read_text())
    assert m["rows"]["records"] == 600 and m["rows"]["rejected"] == 0
