"""Real patent records: one record type and loaders for JSONL, CSV, Parquet and HUPD JSON.

Every record is validated; a bad one is reported with its file and line (or row) and set aside,
never fatal on its own. JSONL and CSV files are read as people have them: a UTF-8 byte-order mark
is dropped, CRLF line ends are read as LF, and `.gz` / `.zst` files are decompressed on the fly
(chosen by the extension: `patents.jsonl.zst` is zstd-compressed JSONL).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from tasks.text import collapse_whitespace

Format = Literal["auto", "jsonl", "csv", "parquet", "hupd"]
Compression = Literal["gzip", "zstd"]

_COMPRESSION: dict[str, Compression] = {".gz": "gzip", ".zst": "zstd"}
#: What a corrupt or truncated compressed file raises while it is read (zstd's own error aside).
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
_CSV_FIELD_LIMIT = 2**31 - 1  # the largest a C long holds everywhere

_SUBCLASS = re.compile(r"^[A-HY]\d{2}[A-Z]$")
_CODE = re.compile(r"^([A-HY]\d{2}[A-Z])\s*(\d+)\s*(?:/\s*(\d+))?")


@dataclass(frozen=True)
class PatentRecord:
    id: str
    title: str
    abstract: str
    claims: str | None
    labels: tuple[str, ...]
    codes: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text classifiers and generators see: title (when present) and abstract."""
        return f"{self.title}\n{self.abstract}" if self.title else self.abstract


@dataclass(frozen=True)
class Rejection:
    file: str
    line: int
    reason: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadResult:
    records: list[PatentRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def subclass_of(code: str) -> str | None:
    """`G06F 17/30` or `G06F17/30` -> `G06F`; None when it is not a patent class symbol."""
    m = _CODE.match(code.strip().upper())
    return m.group(1) if m else None


def main_group_of(code: str) -> str | None:
    """`G06F 17/30` -> `G06F17`; None without a group number."""
    m = _CODE.match(code.strip().upper())
    if not m:
        return None
    digits = m.group(2)
    if m.group(3) is None and len(digits) >= 10:
        digits = digits[:4]  # fixed-width IPC (4-digit main group, 6-digit subgroup), no slash
    return f"{m.group(1)}{int(digits)}"


def _as_str_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return []
        if value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}: not a JSON list ({exc.msg})") from None
        else:
            return [v.strip() for v in re.split(r"[;|,]", value) if v.strip()]
    if hasattr(value, "tolist"):  # numpy / pyarrow arrays from Parquet
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: expected a list of strings, got {type(value).__name__}")
    return [v.strip() for v in value if v.strip()]


def _opt_str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, list):  # HUPD-like claims may come as a list of claim strings
        if not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: expected text")
        return "\n".join(value)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected text, got {type(value).__name__}")
    return value


def record_from_mapping(obj: Any, hupd: bool = False) -> PatentRecord:
    """Validate one mapping into a PatentRecord; ValueError names the bad field."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if hupd and rid is None:
        rid = obj.get("publication_number") or obj.get("application_number")
    if isinstance(rid, int):
        rid = str(rid)
    if not isinstance(rid, str) or not rid.strip():
        raise ValueError("id: missing or empty")
    abstract = _opt_str(obj, "abstract")
    if not abstract or not abstract.strip():
        raise ValueError("abstract: missing or empty")
    title = _opt_str(obj, "title") or ""
    claims = _opt_str(obj, "claims")
    if hupd:
        codes = _as_str_list(obj.get("cpc_labels"), "cpc_labels") or _as_str_list(
            obj.get("ipcr_labels"), "ipcr_labels"
        )
        labels = []
    else:
        codes = _as_str_list(obj.get("codes"), "codes")
        labels = _as_str_list(obj.get("labels"), "labels")
    if not labels:
        labels = [s for c in codes if (s := subclass_of(c))]
    labels = sorted({lab.upper() for lab in labels})
    bad = [lab for lab in labels if not _SUBCLASS.match(lab)]
    if bad:
        raise ValueError(f"labels: not subclass codes: {bad[:5]}")
    if not labels:
        raise ValueError("labels: empty (and no codes to derive them from)")
    return PatentRecord(
        id=rid.strip(),
        title=collapse_whitespace(title),
        abstract=collapse_whitespace(abstract),
        claims=claims,
        labels=tuple(labels),
        codes=tuple(codes),
    )


def compression_of(path: Path) -> Compression | None:
    """`gzip` for `*.gz`, `zstd` for `*.zst`, None for a file read as it is."""
    return _COMPRESSION.get(path.suffix.lower())


def detect_format(path: Path) -> Format:
    """The format from the extension, looked up through `.gz` / `.zst` (`p.csv.gz` is csv)."""
    if path.is_dir():
        return "hupd"
    inner = path.with_suffix("") if compression_of(path) else path
    return {
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".csv": "csv",
        ".parquet": "parquet",
        ".json": "hupd",
    }.get(inner.suffix.lower(), "jsonl")


def _zstd() -> Any:
    # The standard library has zstd from Python 3.14; `backports.zstd` is the same module before.
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        try:
            from backports import zstd
        except ImportError:
            raise ImportError(
                "reading a .zst input needs the backports-zstd package (a synthpat dependency: "
                "pip install -e .)"
            ) from None
    return zstd


def _open_text(path: Path, newline: str | None = None) -> IO[str]:
    """`path` opened as text: decompressed by its extension, a leading UTF-8 BOM dropped
    (`utf-8-sig`), undecodable bytes replaced. `newline=None` reads CRLF as LF; csv wants `""`."""
    text = {"encoding": "utf-8-sig", "errors": "replace", "newline": newline}
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rt", **text)
    if kind == "zstd":
        return _zstd().open(path, "rt", **text)
    return open(path, **text)


def _read_errors(path: Path) -> tuple[type[BaseException], ...]:
    return (*_READ_ERRORS, _zstd().ZstdError) if compression_of(path) == "zstd" else _READ_ERRORS


def _unreadable(path: Path, after_line: int, exc: BaseException) -> ValueError:
    # A truncated download or a corrupt archive ends the file, not one record: fail, naming where.
    where = f"past line {after_line}" if after_line else "from its start"
    return ValueError(f"{path}: cannot read {where}: {exc}")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    lineno = 0
    with _open_text(path) as f:
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, line, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, line, ValueError(f"not valid JSON ({exc.msg})")
        except _read_errors(path) as exc:
            raise _unreadable(path, lineno, exc) from exc


def _iter_csv(path: Path) -> Iterator[tuple[int, str, Any]]:
    # The csv module fails a whole file on a field over 131,072 characters: here
    # `data.source.max_text_chars` says what is too long, and claims have no limit. The limit is
    # process-wide; it is only ever raised.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with _open_text(path, newline="") as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                # DictReader's line_num is the line where the row ends; rows may span lines.
                if None in row:
                    yield reader.line_num, str(row), ValueError("more fields than the header")
                    continue
                yield reader.line_num, json.dumps(row), dict(row)
        except _read_errors(path) as exc:
            raise _unreadable(path, reader.line_num, exc) from exc


def _iter_parquet(path: Path) -> Iterator[tuple[int, str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for i, row in enumerate(table.to_pylist(), start=1):
        yield i, json.dumps(row, default=str), row


def _iter_hupd(path: Path) -> Iterator[tuple[str, int, str, Any]]:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    for file in files:
        raw = file.read_text(encoding="utf-8-sig", errors="replace")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield str(file), exc.lineno, raw[:200], ValueError(f"not valid JSON ({exc.msg})")
            continue
        items = obj if isinstance(obj, list) else [obj]
        for i, item in enumerate(items, start=1):
            yield str(file), i, json.dumps(item)[:2000], item


def load_records(
    path: str | Path,
    fmt: Format = "auto",
    limit: int | None = None,
    max_text_chars: int | None = None,
) -> LoadResult:
    """Load and validate every record; bad ones go to `rejected` with file, line and reason.

    `max_text_chars`: a record whose text (`PatentRecord.text`: title and abstract) is longer is
    set aside as rejected, not truncated; None reads any length."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data.source.path: {path} does not exist")
    if max_text_chars is not None and max_text_chars < 1:
        raise ValueError(f"data.source.max_text_chars={max_text_chars} must be >= 1")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in ("parquet", "hupd") and compression_of(path):
        raise ValueError(
            f"data.source.path: {path}: a compressed {fmt} input is not read; only JSONL and "
            "CSV may be .gz or .zst (Parquet compresses inside the file)"
        )
    result = LoadResult()
    if fmt == "hupd":
        stream: Iterator[tuple[str, int, str, Any]] = _iter_hupd(path)
    else:
        it = {"jsonl": _iter_jsonl, "csv": _iter_csv, "parquet": _iter_parquet}[fmt](path)
        stream = ((str(path), line, raw, obj) for line, raw, obj in it)
    for file, line, raw, obj in stream:
        if limit is not None and len(result.records) >= limit:
            break
        try:
            result.records.append(_validate(obj, fmt == "hupd", max_text_chars))
        except ValueError as exc:
            result.rejected.append(Rejection(file, line, str(exc), raw.rstrip("\n")[:2000]))
    return result


def _validate(obj: Any, hupd: bool, max_text_chars: int | None) -> PatentRecord:
    """One parsed record as a PatentRecord; ValueError with the reason it is set aside."""
    if isinstance(obj, ValueError):  # the reader could not parse it
        raise obj
    record = record_from_mapping(obj, hupd=hupd)
    if max_text_chars is not None and len(record.text) > max_text_chars:
        raise ValueError(
            f"text: {len(record.text)} characters (title and abstract), over "
            f"data.source.max_text_chars={max_text_chars}"
        )
    return record
