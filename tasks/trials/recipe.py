"""One trial end to end, without Ray: build the cell's mix, fit its family, choose thresholds on
val, score val, test and the retrieval proxy, write the checkpoint and predictions once, and
return the typed results row.

`run_trial(cell, family, inputs, settings, out_dir)` is what the Tune trainable calls; it is
plain Python, so a trial can also be run and debugged in-process. Embeddings for families that
read them come precomputed in `TrialInputs` (one pass per distinct encoder, filled by the stage),
and fine-tunes tokenize through `tokenize_cached`, so nothing is computed once per trial that
could be computed once per corpus.

A trial's folder (`out_dir`, the stage's done marker) holds `classifier/` (its checkpoint),
`predictions.npz` and `row.json`, written last: a folder with a row is complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.artifacts import RESULT_COLUMNS, TrialRow, save_predictions
from tasks.files import write_text_atomic
from tasks.trials.families import FitJob, Fitted, TrialFamily
from tasks.trials.grid import CONTROL_MEMBER_PREFIX, MixKey, TrialCell, control_member_size
from tasks.trials.inputs import CellData, EvalData, TrialInputs, TrialSettings

#: The parts of a trial's folder.
CLASSIFIER = "classifier"
PREDICTIONS = "predictions.npz"
ROW = "row.json"


def budget_of(cell: TrialCell) -> str:
    """The results' `budget`: `steps` when the cell trains a fixed number of optimizer steps,
    else `epochs` (TF-IDF too: it has no steps, its `train_steps` stays empty)."""
    return "steps" if cell.steps is not None else "epochs"


def cell_row(cell: TrialCell, **values: Any) -> TrialRow:
    """The results row of a cell before it runs (the columns the cell fixes), plus `values`."""
    fixed = {k: getattr(cell, k) for k in RESULT_COLUMNS if hasattr(cell, k)}
    # The cell's own `budget` is the fixed_budget arm's row count; the column is the training
    # budget.
    fixed["budget"] = budget_of(cell)
    return TrialRow(**{**fixed, **values})


def build_cell_mix(
    cell: TrialCell, data: CellData, member: str | None = None, index: int = 0
) -> pd.DataFrame:
    """The training rows of a cell, or of its `index`-th ensemble member `member`: a corpus id
    for an ensemble, `duplicate_to_match-i-N` for the members of an ensemble's control."""
    from tasks.mixes import MixSpec, build_mix

    dup_member = member is not None and member.startswith(CONTROL_MEMBER_PREFIX)
    cid = cell.corpus_id if member is None or dup_member else member
    arm = "real_plus_synthetic" if cell.arm == "ensemble" else cell.arm
    target = control_member_size(member) if dup_member else cell.n_train
    keep = None
    if arm == "filtered" and cell.ratio is not None:
        keep = data.keep_ids.get(MixKey(cid, float(cell.ratio)))
    spec = MixSpec(
        arm=arm,
        seed=cell.seed,
        ratio=cell.ratio,
        real_fraction=cell.real_fraction,
        budget=cell.budget,
        target_size=target if arm == "duplicate_to_match" else None,
        ordering=cell.ordering,
        keep_ids=frozenset(keep) if keep is not None else None,
        member=index + 1 if dup_member else 0,
    )
    fid = pd.Series(data.fidelity[cid]) if cid in data.fidelity else None
    synthetic = data.corpora[cid] if cid else None
    return build_mix(data.real, synthetic, spec, fid)


def _job(
    cell: TrialCell, mix: pd.DataFrame, shared: EvalData, data: CellData, settings: TrialSettings
) -> FitJob:
    return FitJob(
        texts=mix["text"].astype(str).tolist(),
        y=shared.y(mix),
        blocks=mix["block"].to_numpy(dtype=np.int64),  # the ordering: fresh order per epoch
        labels=shared.labels,
        names=shared.names,
        loss=cell.loss,
        seed=cell.seed,
        precision=cell.precision,
        attention=cell.attention,
        steps=cell.steps,
        settings=settings,
        val_texts=shared.val["text"].astype(str).tolist(),
        val_y=shared.y(shared.val),
        score_sets=shared.score_sets(),
        embeddings=data.embeddings,
        cache_dir=shared.cache_dir,
    )


def _score(
    family: TrialFamily, fits: list[Fitted], texts: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Each member's scores through its family's (cached) scorer, combined as the ensemble
    does."""
    from tasks.checkpoint import combine_members

    return combine_members([family.predict(f, texts) for f in fits])


def run_trial(
    cell: TrialCell,
    family: TrialFamily,
    inputs: TrialInputs,
    settings: TrialSettings,
    out_dir: Path,
) -> TrialRow:
    """Train and evaluate one cell; write `out_dir/classifier/`, `out_dir/predictions.npz`
    (val/test probabilities, thresholds, per-query nDCG: what the report resamples by test
    document) and `out_dir/row.json`; return its results row."""
    from tasks.checkpoint import EnsembleClassifier, save_classifier
    from tasks.evaluation import choose_thresholds, classification_metrics, ndcg_per_query
    from tasks.mixes import mix_counts

    t0 = time.perf_counter()
    shared, data = inputs.shared, inputs.for_cell(cell, family)
    # An ensemble's members are corpora; its control's members duplicate_to_match mixes.
    members = cell.members or [None]
    mixes = [build_cell_mix(cell, data, m, i) for i, m in enumerate(members)]
    fits = [family.fit(_job(cell, mix, shared, data, settings)) for mix in mixes]
    counts = mix_counts(pd.concat(mixes, ignore_index=True))
    if len(mixes) > 1:  # the members share the regime's real rows: count them once
        n_regime = len(data.real)
        counts["n_real"] = n_regime
        counts["n_train"] = n_regime + sum(len(m) - n_regime for m in mixes)
    if cell.arm == "duplicate_to_match" and counts["n_train"] != cell.n_train:
        raise RuntimeError(
            f"{cell.trial_id}: control has {counts['n_train']} rows, expected {cell.n_train}"
        )

    y_val, y_test = shared.y(shared.val), shared.y(shared.test)
    sets = shared.score_sets()
    p_val, _ = _score(family, fits, sets["val"])
    thresholds = choose_thresholds(y_val, p_val, shared.thresholds, shared.threshold_min_positives)
    val = classification_metrics(y_val, p_val, thresholds)
    p_test, e_test = _score(family, fits, sets["test"])
    test = classification_metrics(y_test, p_test, thresholds)
    k = shared.retrieval_k
    if shared.retrieval is None:
        ndcg_q = ndcg_per_query(e_test, y_test, k=k)
    else:
        _, e_ret = _score(family, fits, sets["retrieval"])
        ndcg_q = ndcg_per_query(e_test, y_test, e_ret, shared.y(shared.retrieval), k=k)
    ndcg = float(ndcg_q.mean()) if len(ndcg_q) else 0.0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_predictions(out_dir / PREDICTIONS, p_val, p_test, thresholds, ndcg_q)

    metrics = {
        "val_micro_f1": val["micro_f1"],
        **{f"test_{k}": v for k, v in test.items() if k != "per_label_f1"},
        "test_ndcg10": ndcg,
    }
    mix_info = {k: getattr(cell, k) for k in ("arm", "regime", "draw", "ratio", "real_fraction")}
    mix_info.update(ordering=cell.ordering, corpus_id=cell.corpus_id, members=cell.members)
    mix_info.update(counts)
    # An ensemble's steps are its members' together; TF-IDF has none.
    steps = [f.steps for f in fits if f.steps is not None]
    train_steps = sum(steps) if len(steps) == len(fits) else None
    provenance = {"trial_id": cell.trial_id, "seed": cell.seed, "loss": cell.loss}
    provenance.update(budget=budget_of(cell), train_steps=train_steps)
    per_label = {"test_per_label_f1": test["per_label_f1"]}
    if len(fits) == 1:
        clf = fits[0].classifier
    else:  # one classifier folder per member; the thresholds apply to the members' mean
        clf = EnsembleClassifier(
            {str(cid): f.classifier for cid, f in zip(members, fits, strict=True)},
            labels=shared.labels,
            names=shared.names,
        )
    clf.thresholds = thresholds
    save_classifier(
        out_dir / CLASSIFIER,
        clf,
        metrics={**metrics, **per_label},
        mix=mix_info,
        provenance=provenance,
    )
    row = cell_row(
        cell,
        **counts,
        train_steps=train_steps,
        **metrics,
        status="ok",
        reason="",
        trained_at=time.time(),
        train_seconds=round(time.perf_counter() - t0, 3),
    )
    write_row(out_dir, row)
    return row


def write_row(folder: Path, row: TrialRow) -> None:
    """A trial folder's row.json (written last: it marks the folder complete)."""
    write_text_atomic(Path(folder) / ROW, json.dumps(asdict(row), default=str))


def read_row(folder: Path) -> TrialRow | None:
    """The row of a complete trial folder (row, checkpoint and predictions), else None."""
    folder = Path(folder)
    if not (folder / ROW).is_file() or not (folder / CLASSIFIER).is_dir():
        return None
    if not (folder / PREDICTIONS).is_file():
        return None
    return TrialRow.from_dict(json.loads((folder / ROW).read_text()))
