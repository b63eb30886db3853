import json

import pandas as pd
import pytest

from tasks.records import load_records, main_group_of, subclass_of

GOOD = {
    "id": "US1",
    "title": "",
    "abstract": "A widget.",
    "claims": None,
    "labels": ["G06F"],
    "codes": ["G06F17/30"],
}


def test_jsonl_good_and_malformed_lines(tmp_path):
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps({**GOOD, "id": "US2", "abstract": "   "}),
        json.dumps({**GOOD, "id": "US3", "labels": [], "codes": []}),
        json.dumps({**GOOD, "id": "US4", "labels": "G06F"}),  # string -> one label, accepted
        json.dumps({**GOOD, "id": "US5", "labels": [3]}),
        "",
        json.dumps({**GOOD, "id": "US6", "labels": [], "codes": ["H04L 29/06", "H04W4/00"]}),
        json.dumps([1, 2]),
    ]
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(lines) + "\n")
    res = load_records(p)
    assert [r.id for r in res.records] == ["US1", "US4", "US6"]
    assert res.records[2].labels == ("H04L", "H04W")
    got = [(r.line, r.reason.split(":")[0]) for r in res.rejected]
    assert got == [
        (2, "not valid JSON (Expecting property name enclosed in double quotes)"),
        (3, "abstract"),
        (4, "labels"),
        (6, "labels"),
        (9, "expected a JSON object, got list"),
    ]
    assert all(r.file == str(p) for r in res.rejected)


def test_csv_loader(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text(
        "id,title,abstract,claims,labels,codes\n"
        'US1,T,"An abstract, with comma.",,G06F;H04L,\n'
        "US2,,,,G06F,\n"
        'US3,,Body,,"[""A61K""]",\n'
    )
    res = load_records(p)
    assert [(r.id, r.labels) for r in res.records] == [
        ("US1", ("G06F", "H04L")),
        ("US3", ("A61K",)),
    ]
    assert res.records[0].text == "T\nAn abstract, with comma."
    assert [(r.line, r.reason) for r in res.rejected] == [(3, "abstract: missing or empty")]


def test_parquet_loader(tmp_path):
    p = tmp_path / "p.parquet"
    pd.DataFrame(
        [
            {**GOOD, "claims": "1. A claim."},
            {**GOOD, "id": "US2", "labels": []},
        ]
    ).to_parquet(p)
    res = load_records(p)
    # second row: labels empty, but its codes give G06F
    assert [(r.id, r.labels) for r in res.records] == [("US1", ("G06F",)), ("US2", ("G06F",))]
    assert res.records[0].claims == "1. A claim."
    assert res.rejected == []
    res2 = load_records(p, limit=1)
    assert len(res2.records) == 1


def test_hupd_folder(tmp_path):
    d = tmp_path / "hupd"
    d.mkdir()
    (d / "a.json").write_text(
        json.dumps(
            {
                "publication_number": "US2016-0001",
                "title": "Engine",
                "abstract": "An engine.",
                "claims": "1. An engine.",
                "cpc_labels": ["F02B75/02", "F02M 26/00"],
                "ipcr_labels": [],
            }
        )
    )
    (d / "b.json").write_text(
        json.dumps(
            {
                "application_number": "14000002",
                "title": "",
                "abstract": "A valve.",
                "cpc_labels": [],
                "ipcr_labels": ["F16K1/00"],
            }
        )
    )
    (d / "c.json").write_text("{broken")
    res = load_records(d)
    assert [(r.id, r.labels) for r in res.records] == [
        ("US2016-0001", ("F02B", "F02M")),
        ("14000002", ("F16K",)),
    ]
    assert len(res.rejected) == 1 and res.rejected[0].file.endswith("c.json")


def test_missing_file_names_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.source.path"):
        load_records(tmp_path / "nope.jsonl")


def test_code_parsing():
    assert subclass_of("G06F 17/30") == "G06F"
    assert main_group_of("G06F 17/30") == "G06F17"
    assert main_group_of("H04L0029060000") == "H04L29"  # zero-padded IPC style
    assert subclass_of("nonsense") is None
