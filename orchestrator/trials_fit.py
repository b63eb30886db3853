"""One trial's work, without Ray Tune: build the mix, train the family, evaluate, save.

`run_cell(cell, data, family, ...)` is what the Tune trainable calls; it is plain Python so the
trial can also be run and debugged in-process. Embeddings for `frozen_head` come precomputed in
`TrialData` (the shared embedding cache, filled once per corpus by the stage), and tokenization
for `finetune` goes through `tokenize_cached`, so nothing is computed once per trial that could
be computed once per corpus.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.trials import TrialCell

#: results.parquet columns (docs/artifacts.md).
RESULT_COLUMNS = [
    "trial_id",
    "regime",
    "draw",
    "arm",
    "controls",
    "ratio",
    "real_fraction",
    "ordering",
    "generator",
    "strategy",
    "variant",
    "family",
    "family_kind",
    "loss",
    "precision",
    "attention",
    "seed",
    "n_train",
    "n_real",
    "n_synthetic",
    "budget",
    "train_steps",
    "status",
    "reason",
    "val_micro_f1",
    "test_micro_f1",
    "test_macro_f1",
    "test_samples_f1",
    "test_precision",
    "test_recall",
    "test_ndcg10",
    "numerics_flag",
    "checkpoint",
    "trained_at",
    "train_seconds",
]


@dataclass
class TrialData:
    """Everything a trial reads, shipped once to the object store (`tune.with_parameters`)."""

    labels: list[str]
    names: list[str]
    real: dict[str, pd.DataFrame]  # regime key (TrialCell.regime_key) -> real rows
    corpora: dict[str, pd.DataFrame]  # corpus_id -> synthetic rows
    val: pd.DataFrame
    test: pd.DataFrame
    retrieval: pd.DataFrame | None = None  # ranked documents; None: the test set itself
    emb_index: dict[str, int] = field(default_factory=dict)  # text -> row of `emb`
    emb: np.ndarray | None = None
    encoder: dict[str, Any] = field(default_factory=dict)  # {model, max_length}
    fidelity: dict[str, dict[str, float]] = field(default_factory=dict)  # corpus -> id -> score
    keep_ids: dict[str, list[str]] = field(default_factory=dict)  # "<corpus>@<ratio>" -> ids
    cache_dir: str = ""
    thresholds: str = "per_label_where_supported"
    threshold_min_positives: int = 5  # per_label_where_supported: val positives for a label's own
    retrieval_k: int = 10

    def embeddings(self, texts: list[str]) -> np.ndarray:
        if self.emb is None:
            raise ValueError("frozen_head trials need embeddings; none were computed")
        return self.emb[[self.emb_index[t] for t in texts]]

    def y(self, df: pd.DataFrame) -> np.ndarray:
        from orchestrator.train import label_matrix

        return label_matrix(df, self.labels)


def budget_of(cell: TrialCell) -> str:
    """The results' `budget`: `steps` when the cell trains a fixed number of optimizer steps,
    else `epochs` (TF-IDF too: it has no steps, its `train_steps` stays empty)."""
    return "steps" if cell.steps is not None else "epochs"


def cell_columns(cell: TrialCell) -> dict[str, Any]:
    """The results columns a cell fixes before it runs."""
    row = {k: getattr(cell, k) for k in RESULT_COLUMNS if hasattr(cell, k)}
    # The cell's own `budget` is the fixed_budget arm's row count; the column is the training
    # budget.
    row["budget"] = budget_of(cell)
    return row


def keep_key(corpus_id: str, ratio: float | None) -> str:
    return f"{corpus_id}@{ratio}"


def build_cell_mix(
    cell: TrialCell, data: TrialData, member: str | None = None, index: int = 0
) -> pd.DataFrame:
    """The training rows of a cell, or of its `index`-th ensemble member `member`: a corpus id
    for an ensemble, `duplicate_to_match-i-N` for the members of an ensemble's control."""
    from orchestrator.trials import CONTROL_MEMBER_PREFIX, control_member_size
    from tasks.mixes import MixSpec, build_mix

    dup_member = member is not None and member.startswith(CONTROL_MEMBER_PREFIX)
    cid = cell.corpus_id if member is None or dup_member else member
    arm = "real_plus_synthetic" if cell.arm == "ensemble" else cell.arm
    target = control_member_size(member) if dup_member else cell.n_train
    keep = data.keep_ids.get(keep_key(cid, cell.ratio)) if arm == "filtered" else None
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
    return build_mix(data.real[cell.regime_key], synthetic, spec, fid)


class _Fitted:
    """A trained classifier plus how to score texts with it (cached embeddings when possible)."""

    def __init__(self, clf: Any, scorer: Any, steps: int | None = None):
        self.clf = clf
        self.scorer = scorer  # texts -> (proba, doc embeddings)
        self.steps = steps  # optimizer steps it trained; None: no steps (TF-IDF)


def _fit_one(
    cell: TrialCell, mix: pd.DataFrame, data: TrialData, family: Any, env: dict[str, Any]
) -> _Fitted:
    from tasks.heads import HeadConfig, TfidfConfig, train_frozen_head, train_tfidf_linear

    common = {"labels": data.labels, "names": data.names}
    y = data.y(mix)
    texts = mix["text"].astype(str).tolist()
    blocks = mix["block"].to_numpy(dtype=np.int64)  # the ordering: fresh order per epoch
    if cell.family_kind == "frozen_head":
        from tasks.checkpoint import FrozenHeadClassifier

        cfg = HeadConfig(
            head=family.head,
            hidden=family.hidden,
            epochs=family.epochs,
            learning_rate=family.learning_rate,
        )
        taken = [0]

        def count(_epoch: int, _rows: np.ndarray) -> None:
            taken[0] += 1

        head = train_frozen_head(
            data.embeddings(texts),
            y,
            cfg,
            cell.loss,
            cell.seed,
            blocks=blocks,
            threads=env.get("threads"),
            steps=cell.steps,
            on_step=count,
        )
        clf = FrozenHeadClassifier(
            head, data.encoder["model"], int(data.encoder["max_length"]), **common
        )

        def score(t: list[str]) -> tuple[np.ndarray, np.ndarray]:
            x = data.embeddings(t)
            return clf.proba_from_embeddings(x), clf.embed_from_embeddings(x)

        return _Fitted(clf, score, taken[0])
    if cell.family_kind == "tfidf_linear":
        cfg_t = TfidfConfig(ngram_max=family.ngram_max, C=family.C)
        # Row order and step budgets do not apply: liblinear solves each label to convergence.
        clf = train_tfidf_linear(texts, y, cfg_t, cell.loss, cell.seed, **common)
        return _Fitted(clf, clf.proba_and_embed)
    if cell.family_kind == "setfit":
        from tasks.setfit_family import setfit_config, train_setfit

        # SetFit draws its own pairs from the rows: the mix's ordering does not apply.
        clf = train_setfit(
            texts, y, setfit_config(family), cell.seed, threads=env.get("threads"), **common
        )
        return _Fitted(clf, clf.proba_and_embed, clf.steps_trained)
    if cell.family_kind == "finetune":
        from orchestrator.train import train_and_score
        from tasks.finetune import predict_cached

        sets = {"val": data.val["text"].tolist(), "test": data.test["text"].tolist()}
        if data.retrieval is not None:
            sets["retrieval"] = data.retrieval["text"].tolist()
        fit = train_and_score(
            family,
            mix,
            data.val,
            data.labels,
            cell.loss,
            cell.precision,
            cell.attention,
            cell.seed,
            Path(data.cache_dir),
            env["storage_dir"],
            names=data.names,
            blocks=blocks,
            steps=cell.steps,
            cpus_per_worker=env.get("cpus", 1.0),
            gpus_per_worker=env.get("gpus", 0.0),
            custom_per_worker=env.get("custom", {}),
            # The trial itself holds no GPU and a sliver of a CPU: val, test and retrieval are
            # scored on the Train worker (`score_sets`); the copy here is only saved.
            device="cpu",
            score_sets=sets,
        )
        clf = fit.classifier
        clf.meta["attention"] = cell.attention
        scored = {tuple(sets[name]): fit.scores[name] for name in fit.scores}
        cache_dir = Path(data.cache_dir)

        def score_ft(t: list[str]) -> tuple[np.ndarray, np.ndarray]:
            hit = scored.get(tuple(t))
            return hit if hit is not None else predict_cached(clf, family.model, t, cache_dir)

        return _Fitted(clf, score_ft, int(clf.meta["provenance"]["train_steps"]))
    raise ValueError(f"family kind {cell.family_kind!r} is not known")


def _score(fits: list[_Fitted], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each member's scores through its own (cached) scorer, combined as the ensemble does."""
    from tasks.checkpoint import combine_members

    return combine_members([f.scorer(texts) for f in fits])


def run_cell(
    cell: TrialCell,
    data: TrialData,
    family: Any,
    out_dir: Path,
    env: dict[str, Any],
    predictions: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one cell; write its checkpoint to `out_dir`; return its results row.

    `env`: threads, cpus, gpus (per trial or per Train worker) and storage_dir (Ray Train runs).
    `predictions`: where to write the trial's val/test probabilities, thresholds and per-query
    nDCG (`write_predictions`), which the report resamples by test document.
    """
    from tasks.checkpoint import EnsembleClassifier, save_classifier
    from tasks.evaluation import choose_thresholds, classification_metrics, ndcg_per_query
    from tasks.mixes import mix_counts

    t0 = time.perf_counter()
    # An ensemble's members are corpora; its control's members duplicate_to_match mixes.
    members = cell.members or [None]
    mixes = [build_cell_mix(cell, data, m, i) for i, m in enumerate(members)]
    fits = [_fit_one(cell, mix, data, family, env) for mix in mixes]
    counts = mix_counts(pd.concat(mixes, ignore_index=True))
    if len(mixes) > 1:  # the members share the regime's real rows: count them once
        n_regime = len(data.real[cell.regime_key])
        counts["n_real"] = n_regime
        counts["n_train"] = n_regime + sum(len(m) - n_regime for m in mixes)
    if cell.arm == "duplicate_to_match" and counts["n_train"] != cell.n_train:
        raise RuntimeError(
            f"{cell.trial_id}: control has {counts['n_train']} rows, expected {cell.n_train}"
        )

    val_texts, test_texts = data.val["text"].tolist(), data.test["text"].tolist()
    y_val, y_test = data.y(data.val), data.y(data.test)
    p_val, _ = _score(fits, val_texts)
    thresholds = choose_thresholds(y_val, p_val, data.thresholds, data.threshold_min_positives)
    val = classification_metrics(y_val, p_val, thresholds)
    p_test, e_test = _score(fits, test_texts)
    test = classification_metrics(y_test, p_test, thresholds)
    if data.retrieval is None:
        ndcg_q = ndcg_per_query(e_test, y_test, k=data.retrieval_k)
    else:
        _, e_ret = _score(fits, data.retrieval["text"].tolist())
        ndcg_q = ndcg_per_query(e_test, y_test, e_ret, data.y(data.retrieval), k=data.retrieval_k)
    ndcg = float(ndcg_q.mean()) if len(ndcg_q) else 0.0
    if predictions is not None:
        write_predictions(predictions, p_val, p_test, thresholds, ndcg_q)

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
        clf = fits[0].clf
    else:  # one classifier folder per member; the thresholds apply to the members' mean
        clf = EnsembleClassifier(
            {str(cid): f.clf for cid, f in zip(members, fits, strict=True)},
            labels=data.labels,
            names=data.names,
        )
    clf.thresholds = thresholds
    save_classifier(
        out_dir, clf, metrics={**metrics, **per_label}, mix=mix_info, provenance=provenance
    )
    row = cell_columns(cell)
    row.update(counts, train_steps=train_steps)
    row.update(metrics)
    row.update(
        status="ok",
        reason="",
        trained_at=time.time(),
        train_seconds=round(time.perf_counter() - t0, 3),
    )
    return {k: row.get(k) for k in RESULT_COLUMNS if k in row}


#: A trial's predictions file (beside its checkpoint in the done marker; trials/predictions/).
PREDICTIONS = "predictions.npz"


def write_predictions(
    path: Path, p_val: np.ndarray, p_test: np.ndarray, thresholds: np.ndarray, ndcg: np.ndarray
) -> None:
    """val/test probabilities (float16: 3 significant digits, half the bytes), the tuned
    thresholds, the test decisions they give at full precision (`test_pred`) and per-query
    nDCG, in the order of the prepare stage's val and test tables."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez_compressed(
        tmp,
        val_proba=np.asarray(p_val, dtype=np.float16),
        test_proba=np.asarray(p_test, dtype=np.float16),
        thresholds=np.asarray(thresholds, dtype=np.float32),
        test_pred=np.asarray(p_test) >= np.asarray(thresholds)[None, :],
        test_ndcg=np.asarray(ndcg, dtype=np.float32),
    )
    os.replace(tmp, path)


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}
