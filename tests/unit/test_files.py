"""Atomic writes: the target is the old file or the whole new one, and no temp file is left."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.files import (
    atomic_path,
    save_npy_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def test_writers_create_folders_and_leave_only_the_target(tmp_path):
    write_json_atomic(tmp_path / "a" / "x.json", {"b": 1, "a": {"t": (1, 2)}, "p": tmp_path})
    text = (tmp_path / "a" / "x.json").read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')  # sorted keys
    assert json.loads(text) == {"a": {"t": [1, 2]}, "b": 1, "p": str(tmp_path)}
    save_npy_atomic(tmp_path / "v.vecs.npy", np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(np.load(tmp_path / "v.vecs.npy"), np.arange(4))
    write_parquet_atomic(tmp_path / "t.parquet", pd.DataFrame({"id": ["r1"]}, index=[7]))
    assert pd.read_parquet(tmp_path / "t.parquet").to_dict("list") == {"id": ["r1"]}
    write_text_atomic(tmp_path / "n.txt", "one")
    write_text_atomic(tmp_path / "n.txt", "two")
    assert (tmp_path / "n.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a",
        "n.txt",
        "t.parquet",
        "v.vecs.npy",
    ]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError), atomic_path(target) as tmp:
        tmp.write_text('{"v": 2')
        json.dumps(object())  # the writer fails half-way
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_replace_dir_swaps_a_folder_in_and_keeps_an_existing_one_when_told(tmp_path):
    from tasks.files import replace_dir

    def folder(name, text):
        d = tmp_path / name
        d.mkdir()
        (d / "a.txt").write_text(text)
        return d

    dst = tmp_path / "dst"
    assert replace_dir(folder("one", "1"), dst) and (dst / "a.txt").read_text() == "1"
    assert replace_dir(folder("two", "2"), dst) and (dst / "a.txt").read_text() == "2"
    assert not replace_dir(folder("three", "3"), dst, keep_existing=True)
    assert (dst / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]  # no temp or old folder left
