"""The stage outputs, each with its typed load and save: stages, the report and serve read and
write a run's files only through here (their layout: docs/artifacts.md).

- prepare/: `labels.json`, `train_pool|val|test.parquet`, `regimes/<regime key>.parquet`
- generate/: `corpora.json` (one `CorpusEntry` per corpus), `corpora/<id>.parquet`,
  `removed/<id>.parquet`
- fidelity/: `summary.parquet` (one row per corpus)
- trials/: `results.parquet`, `predictions/<trial_id>.npz`, `checkpoints/<trial_id>/`,
  `numerics.json` (section at the end)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import numpy as np
import pandas as pd

from tasks.files import atomic_path, write_json_atomic, write_parquet_atomic
from tasks.labels import LabelSpace

# --- prepare/ ---------------------------------------------------------------------------------

#: Columns every corpus table (real or synthetic) has.
REQUIRED_COLUMNS = ("id", "text", "labels")
HELD_SPLITS = ("train_pool", "val", "test")


def split_path(prepare_dir: Path, split: str) -> Path:
    """`train_pool`, `val`, `test`, or a regime key (under regimes/)."""
    if split in HELD_SPLITS:
        return Path(prepare_dir) / f"{split}.parquet"
    return Path(prepare_dir) / "regimes" / f"{split}.parquet"


def save_table(path: Path, df: pd.DataFrame) -> None:
    """A corpus table as Parquet, through a temp file and a rename (never half a file)."""
    write_parquet_atomic(path, df)


def load_table(path: Path) -> pd.DataFrame:
    """A corpus table; labels come back as Python lists of codes."""
    df = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    df["labels"] = df["labels"].map(list)
    return df


def save_split(prepare_dir: Path, split: str, df: pd.DataFrame) -> None:
    save_table(split_path(prepare_dir, split), df)


def load_split(prepare_dir: Path, split: str) -> pd.DataFrame:
    """One prepared table: a held split or a regime key's rows."""
    path = split_path(prepare_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prepared split or regime {split!r}")
    return load_table(path)


def save_labels(prepare_dir: Path, labels: LabelSpace) -> None:
    write_json_atomic(Path(prepare_dir) / "labels.json", labels.to_json())


def load_labels(prepare_dir: Path) -> LabelSpace:
    return LabelSpace.from_json(json.loads((Path(prepare_dir) / "labels.json").read_text()))


# --- generate/ --------------------------------------------------------------------------------


#: Columns of a synthetic corpus table, generate/corpora/<id>.parquet (docs/artifacts.md).
CORPUS_COLUMNS = [
    "id",
    "text",
    "labels",
    "source",
    "regime",
    "draw",
    "generator",
    "strategy",
    "variant",
    "prompt_hash",
    "seed",
    "exemplar_ids",
    "source_id",
    "target_labels",
    "prompt_tokens",
    "output_tokens",
    "gen_seconds",
    "attempts",
    "finish_reason",
    "volume_rank",
]


class CorpusId(NamedTuple):
    """What names a synthetic corpus: `<regime key>__<generator>__<strategy>__<variant>`."""

    regime_key: str
    generator: str
    strategy: str
    variant: str

    def __str__(self) -> str:
        return "__".join(self)

    @classmethod
    def parse(cls, text: str) -> CorpusId:
        parts = str(text).split("__")
        if len(parts) != 4:
            raise ValueError(f"corpus id {text!r}: expected regime__generator__strategy__variant")
        return cls(*parts)


class CorpusEntry(TypedDict, total=False):
    """One corpus in corpora.json."""

    corpus_id: str
    regime: str
    draw: int
    regime_key: str
    generator: str
    strategy: str
    variant: str
    n_real: int
    planned: int  # rows generated for it (largest ratio plus headroom)
    rows: int  # rows kept by the filters
    removed: int
    removed_by_filter: dict[str, int]
    ratios: list[float]
    path: str  # relative to generate/


def corpus_path(generate_dir: Path, corpus_id: str, removed: bool = False) -> Path:
    return Path(generate_dir) / ("removed" if removed else "corpora") / f"{corpus_id}.parquet"


def save_corpus(
    generate_dir: Path, corpus_id: str, kept: pd.DataFrame, removed: pd.DataFrame
) -> str:
    """A corpus's kept and removed rows; returns the kept table's path relative to generate/."""
    save_table(corpus_path(generate_dir, corpus_id), kept)
    save_table(corpus_path(generate_dir, corpus_id, removed=True), removed)
    return str(corpus_path(Path(), corpus_id))


def save_corpora(generate_dir: Path, entries: list[CorpusEntry]) -> None:
    write_json_atomic(Path(generate_dir) / "corpora.json", list(entries))


def load_corpora(generate_dir: Path) -> list[CorpusEntry]:
    """corpora.json, each entry checked and with its regime key (older entries: the regime)."""
    path = Path(generate_dir) / "corpora.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the generate stage first")
    corpora = json.loads(path.read_text())
    for i, c in enumerate(corpora):
        missing = [k for k in ("corpus_id", "regime") if k not in c]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {missing}")
        c["regime_key"] = str(c.get("regime_key") or c["regime"])
    return corpora


def load_corpus(generate_dir: Path, entry: CorpusEntry) -> pd.DataFrame:
    """A corpus's kept rows."""
    given = Path(entry.get("path") or corpus_path(Path(), entry["corpus_id"]))
    return load_table(given if given.is_absolute() else Path(generate_dir) / given)


# --- fidelity/ --------------------------------------------------------------------------------

#: fidelity/summary.parquet columns (docs/artifacts.md).
SUMMARY_COLUMNS = [
    "corpus_id",
    "regime",
    "draw",
    "generator",
    "strategy",
    "variant",
    "n_synthetic",
    "n_real",
    "status",
    "reason",
    "mmd2",
    "mmd_p",
    "mmd_estimator",
    "frechet",
    "precision",
    "recall",
    "density",
    "coverage",
    "label_js",
    "distinct_2",
    "dispersion",
    "dispersion_real",
    "near_duplicate_rate",
    "name_mention_rate",
    "name_mention_rate_real",
    "code_mention_rate",
    "code_mention_rate_real",
    "keyword_rate",
    "keyword_rate_real",
    "nearest_train_mean",
    "nearest_train_share_above",
    "nearest_heldout_max",
    "copy_train_rate",
    "copy_heldout_rate",
]


def save_fidelity_summary(fidelity_dir: Path, rows: list[dict]) -> pd.DataFrame:
    """One row per corpus, in SUMMARY_COLUMNS order (missing figures empty); returns the table."""
    summary = pd.DataFrame.from_records(rows).reindex(columns=SUMMARY_COLUMNS)
    write_parquet_atomic(Path(fidelity_dir) / "summary.parquet", summary)
    return summary


def load_fidelity_summary(fidelity_dir: Path) -> pd.DataFrame:
    """One row per corpus: MMD, PRDC, diversity and leakage figures (docs/artifacts.md)."""
    path = Path(fidelity_dir) / "summary.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the fidelity stage first")
    return pd.read_parquet(path)


# --- trials/ ----------------------------------------------------------------------------------
# results.parquet (one `TrialRow` per trial), predictions/<trial_id>.npz, checkpoints/<trial_id>/
# (tasks.checkpoint's format) and numerics.json.

RESULTS = "results.parquet"
NUMERICS = "numerics.json"


@dataclass
class TrialRow:
    """One trial's line of results.parquet (docs/artifacts.md); fields in column order."""

    trial_id: str = ""
    regime: str = ""
    draw: int = 0
    arm: str = ""
    controls: str = ""
    ratio: float | None = None
    real_fraction: float | None = None
    ordering: str = "shuffled"
    generator: str = ""
    strategy: str = ""
    variant: str = ""
    family: str = ""
    family_kind: str = ""
    loss: str = ""
    precision: str = ""
    attention: str = ""
    seed: int = 0
    n_train: int | None = None
    n_real: int | None = None
    n_synthetic: int | None = None
    budget: str = "epochs"  # the training budget: epochs | steps
    train_steps: int | None = None
    status: str = "pending"  # ok | skipped | failed
    reason: str = ""
    val_micro_f1: float | None = None
    test_micro_f1: float | None = None
    test_macro_f1: float | None = None
    test_samples_f1: float | None = None
    test_precision: float | None = None
    test_recall: float | None = None
    test_ndcg10: float | None = None
    numerics_flag: bool = False
    checkpoint: str = ""  # relative to trials/: checkpoints/<trial_id>; empty unless ok
    trained_at: float | None = None
    train_seconds: float | None = None
    trial_key: str = ""  # what the trial computed from (a re-run reuses a trial of equal key)

    def scores(self) -> dict[str, float]:
        """The row's numeric metrics (Tune's progress table shows them)."""
        return {k: v for k, v in asdict(self).items() if k in SCORE_COLUMNS and v is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialRow:
        """A row from a mapping of column values (NaN, as Parquet gives an empty cell: None)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: _cell(v) for k, v in values.items() if k in known})


#: results.parquet columns (docs/artifacts.md).
RESULT_COLUMNS = [f.name for f in fields(TrialRow)]
SCORE_COLUMNS = [c for c in RESULT_COLUMNS if c.startswith(("val_", "test_"))]
_FLOAT_COLUMNS = [*SCORE_COLUMNS, "trained_at", "train_seconds"]


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def save_results(trials_dir: Path, rows: list[TrialRow]) -> pd.DataFrame:
    """results.parquet from the grid's rows, in RESULT_COLUMNS order; returns the table."""
    table = pd.DataFrame.from_records([asdict(r) for r in rows]).reindex(columns=RESULT_COLUMNS)
    for col in _FLOAT_COLUMNS:  # a grid without any finished trial: empty floats, not objects
        table[col] = pd.to_numeric(table[col])
    write_parquet_atomic(Path(trials_dir) / RESULTS, table)
    return table


def load_results(trials_dir: Path) -> pd.DataFrame:
    """One row per trial (RESULT_COLUMNS; tables of older runs may lack the newer columns)."""
    path = Path(trials_dir) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trial results; run the trials stage first")
    return pd.read_parquet(path)


def checkpoint_path(trials_dir: Path, trial_id: str) -> Path:
    return Path(trials_dir) / "checkpoints" / trial_id


def predictions_path(trials_dir: Path, trial_id: str) -> Path:
    return Path(trials_dir) / "predictions" / f"{trial_id}.npz"


def save_predictions(
    path: Path, p_val: np.ndarray, p_test: np.ndarray, thresholds: np.ndarray, ndcg: np.ndarray
) -> None:
    """val/test probabilities (float16: 3 significant digits, half the bytes), the tuned
    thresholds, the test decisions they give at full precision (`test_pred`) and per-query
    nDCG, in the order of the prepare stage's val and test tables."""
    arrays = {
        "val_proba": np.asarray(p_val, dtype=np.float16),
        "test_proba": np.asarray(p_test, dtype=np.float16),
        "thresholds": np.asarray(thresholds, dtype=np.float32),
        "test_pred": np.asarray(p_test) >= np.asarray(thresholds)[None, :],
        "test_ndcg": np.asarray(ndcg, dtype=np.float32),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # An open file, not a path: np.savez would append ".npz" to the temp name.
        np.savez_compressed(f, **arrays)


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    """A trial's predictions file (`save_predictions`) as arrays."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def save_numerics(trials_dir: Path, rows: list[dict[str, Any]]) -> None:
    """The numerics guard's rows (per family x precision x attention: logit differences)."""
    write_json_atomic(Path(trials_dir) / NUMERICS, rows)


def load_numerics(trials_dir: Path) -> list[dict[str, Any]]:
    """numerics.json's rows; [] when the guard did not run (no file)."""
    path = Path(trials_dir) / NUMERICS
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of numerics guard rows")
    return rows
