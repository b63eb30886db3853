"""Real-patent files as people have them: a BOM, CRLF, gzip and zstd, over-long records."""

import gzip
import json
import random
from pathlib import Path

import pytest
import yaml

from config import load_config
from orchestrator.cache import RunStore
from orchestrator.stages import run_stage, study_graph
from tasks.records import _zstd, detect_format, load_records

BOM = "\ufeff"
ROWS = [
    {"id": "US1", "title": "Gate", "abstract": "A gate electrode.", "labels": ["H01L"]},
    {"id": "US2", "title": "", "abstract": "A widget.", "labels": ["G06F", "H04L"]},
    {"id": "US3", "title": "Valve", "abstract": "A valve body.", "labels": ["F16K"]},
]
IDS = ["US1", "US2", "US3"]


def _jsonl(rows=ROWS, end="\n", bom=False) -> str:
    return (BOM if bom else "") + "".join(json.dumps(r) + end for r in rows)


def _csv(end="\n", bom=False) -> str:
    lines = ["id,title,abstract,labels"]
    lines += [f'{r["id"]},{r["title"]},"{r["abstract"]}",{";".join(r["labels"])}' for r in ROWS]
    return (BOM if bom else "") + end.join(lines) + end


def _compress(data: bytes, kind: str) -> bytes:
    return {"": lambda b: b, "gz": gzip.compress, "zst": _zstd().compress}[kind](data)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    kind = name.rsplit(".", 1)[-1].lower() if name.lower().endswith((".gz", ".zst")) else ""
    path = tmp_path / name
    path.write_bytes(_compress(text.encode("utf-8"), kind))
    return path


def test_a_bom_jsonl_keeps_its_first_record_and_its_line_numbers(tmp_path):
    text = _jsonl(bom=True) + "{broken\n"
    res = load_records(_write(tmp_path, "p.jsonl", text))
    assert [r.id for r in res.records] == IDS
    assert [(r.line, r.reason.split(" (")[0]) for r in res.rejected] == [(4, "not valid JSON")]


def test_a_bom_csv_reads_its_first_column(tmp_path):
    # Read as plain UTF-8 the header's first name is "\ufeffid", and every row lacks an id.
    res = load_records(_write(tmp_path, "p.csv", _csv(bom=True)))
    assert [(r.id, r.labels) for r in res.records] == [
        ("US1", ("H01L",)),
        ("US2", ("G06F", "H04L")),
        ("US3", ("F16K",)),
    ]
    assert res.rejected == []


def test_crlf_jsonl_and_csv_read_as_lf_with_the_same_line_numbers(tmp_path):
    rows = [*ROWS[:2], {"id": "US9", "abstract": "", "labels": ["G06F"]}, ROWS[2]]
    res = load_records(_write(tmp_path, "p.jsonl", _jsonl(rows, end="\r\n")))
    assert [r.id for r in res.records] == IDS
    assert [(r.line, r.reason) for r in res.rejected] == [(3, "abstract: missing or empty")]
    assert "\r" not in res.rejected[0].raw

    csv_text = _csv(end="\r\n") + 'US4,T,"two\r\nlines",G06F\r\nUS5,,,G06F\r\n'
    res = load_records(_write(tmp_path, "p.csv", csv_text))
    assert [r.id for r in res.records] == [*IDS, "US4"]
    assert res.records[0].title == "Gate" and res.records[0].abstract == "A gate electrode."
    assert res.records[3].abstract == "two lines"
    assert [(r.line, r.reason) for r in res.rejected] == [(7, "abstract: missing or empty")]


@pytest.mark.parametrize(
    "name", ["p.jsonl.gz", "p.csv.gz", "p.jsonl.zst", "p.csv.zst", "P.JSONL.GZ", "p.ndjson.zst"]
)
def test_compressed_inputs_are_read_by_their_extension(tmp_path, name):
    is_csv = ".csv" in name.lower()
    text = _csv(end="\r\n", bom=True) if is_csv else _jsonl(end="\r\n", bom=True) + "{broken\r\n"
    path = _write(tmp_path, name, text)
    assert detect_format(path) == ("csv" if is_csv else "jsonl")
    res = load_records(path)
    assert [r.id for r in res.records] == IDS
    assert [r.line for r in res.rejected] == ([] if is_csv else [4])
    assert all(r.file == str(path) for r in res.rejected)


def test_format_detection_looks_through_the_compression_suffix(tmp_path):
    assert detect_format(Path("a.csv.gz")) == "csv"
    assert detect_format(Path("a.jsonl.zst")) == "jsonl"
    assert detect_format(Path("a.parquet")) == "parquet"
    assert detect_format(Path("a.gz")) == "jsonl"  # as a bare unknown extension is
    path = _write(tmp_path, "a.parquet.gz", "x")
    with pytest.raises(ValueError, match=r"a\.parquet\.gz: a compressed parquet input"):
        load_records(path)


@pytest.mark.parametrize("name", ["p.jsonl.gz", "p.jsonl.zst", "p.csv.gz", "p.csv.zst"])
def test_a_truncated_archive_fails_naming_the_file_and_the_line(tmp_path, name):
    # Random text, so the first half of the archive holds whole lines (zstd: several blocks).
    rnd = random.Random(0)
    rows = [{**ROWS[0], "id": f"US{i}", "abstract": rnd.randbytes(100).hex()} for i in range(2000)]
    text = "id,abstract,labels\n" + "".join(f"{r['id']},{r['abstract']},H01L\n" for r in rows)
    if ".jsonl" in name:
        text = _jsonl(rows)
    whole = _compress(text.encode(), name.rsplit(".", 1)[-1])
    path = tmp_path / name
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"{name}: cannot read past line \d+: ") as err:
        load_records(path)
    assert 200 < int(str(err.value).split("past line ")[1].split(":")[0]) < 2000


@pytest.mark.parametrize("name", ["p.jsonl.gz", "p.csv.zst"])
def test_a_file_that_is_not_the_archive_its_name_says_fails_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_text(_jsonl())
    with pytest.raises(ValueError, match=rf"{name}: cannot read from its start: "):
        load_records(path)


def test_an_over_long_record_is_set_aside_with_its_length(tmp_path):
    long = {"id": "US4", "title": "Big", "abstract": "word " * 30, "labels": ["G06F"]}
    path = _write(tmp_path, "p.jsonl", _jsonl([ROWS[0], long, ROWS[1]]))
    text_len = len("Big\n" + ("word " * 30).strip())  # 153: title, newline, abstract
    res = load_records(path, max_text_chars=text_len - 1)
    assert [r.id for r in res.records] == ["US1", "US2"]
    (rej,) = res.rejected
    assert (rej.file, rej.line) == (str(path), 2)
    assert rej.reason == (
        f"text: {text_len} characters (title and abstract), over "
        f"data.source.max_text_chars={text_len - 1}"
    )
    assert json.loads(rej.raw)["id"] == "US4"  # set aside whole, not truncated
    assert [r.id for r in load_records(path, max_text_chars=text_len).records] == [
        "US1",
        "US4",
        "US2",
    ]
    assert len(load_records(path).records) == 3  # no limit unless asked


def test_a_csv_field_past_the_csv_modules_limit_is_set_aside_not_fatal(tmp_path):
    # The csv module's default limit is 131,072 characters a field; the row after it still reads.
    text = _csv() + f'US4,,"{"x" * 200_000}",G06F\n' + "US5,,After.,G06F\n"
    res = load_records(_write(tmp_path, "p.csv", text), max_text_chars=50_000)
    assert [r.id for r in res.records] == [*IDS, "US5"]
    assert [(r.line, r.reason.split(" (")[0]) for r in res.rejected] == [
        (5, "text: 200000 characters")
    ]


def test_max_text_chars_is_validated_with_its_field_name(tmp_path):
    from config import ConfigError

    cfg = _study(tmp_path, tmp_path / "p.jsonl", max_text_chars=0)
    with pytest.raises(ConfigError, match="data.source.max_text_chars"):
        load_config(cfg)


def _study(tmp_path: Path, source: Path, **source_extra) -> Path:
    tree = {
        "study": "inputs",
        "data": {
            "source": {"path": str(source), "min_good_records": 50, **source_extra},
            "labels": {"top_k": 4},
            "split": {"test_size": 20, "val_size": 10},
            "regimes": [{"name": "r12", "size": 12}],
        },
        "resources": {"runs_dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _patents(n: int, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    labels = ["G06F", "H04L", "H01L", "A61K"]
    words = [f"w{i}" for i in range(400)]
    return [
        {
            "id": f"US{i}",
            "title": f"Device {i}",
            "abstract": " ".join(rnd.choices(words, k=30)),
            "labels": sorted({labels[i % 4], rnd.choice(labels)}),
        }
        for i in range(n)
    ]


def test_the_prepare_stage_reports_an_over_long_record_among_its_rejects(tmp_path):
    rows = _patents(90)
    rows.insert(41, {**rows[0], "id": "US-LONG", "abstract": "long " * 400})
    src = _write(tmp_path, "patents.jsonl.gz", _jsonl(rows, end="\r\n", bom=True))
    cfg = load_config(_study(tmp_path, src, max_text_chars=1000))
    store = RunStore(tmp_path / "runs" / "inputs")
    manifest = run_stage(study_graph(cfg, store), "prepare")
    assert manifest.rows["records"] == 90 and manifest.rows["rejected"] == 1
    out = store.stage_dir("prepare")
    (rejected,) = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert rejected["file"] == str(src) and rejected["line"] == 42
    n = len("Device 0\n" + ("long " * 400).strip())
    assert rejected["reason"] == f"text: {n} characters (title and abstract), over " + (
        "data.source.max_text_chars=1000"
    )
    assert json.loads((out / "summary.json").read_text())["rejected"] == 1
    assert manifest.config["data"]["source"]["max_text_chars"] == 1000  # it is fingerprinted
