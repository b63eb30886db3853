"""A small real trials folder for the serve tests and bench/serve.py: TF-IDF models on real
patents (kept out of serve/, which depends only on the artifacts and the classifier loader).

Writes `trials/results.parquet` and `trials/checkpoints/<trial_id>/` as the trials stage does
(docs/artifacts.md), so serving can be exercised before, or without, a full study run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DemoRun:
    run_dir: Path
    best_trial: str
    test_texts: list[str]
    test_labels: list[list[str]]


def make_demo_run(
    run_dir: Path | str,
    patents: Path | str,
    n_train: int = 600,
    n_test: int = 64,
    top_k: int = 8,
    seed: int = 0,
    frozen_head: str | None = None,
) -> DemoRun:
    """Train two TF-IDF classifiers (C=10 and C=0.01) on real patents and write a trials folder.

    `best_trial` is the one with the higher validation micro-F1: the one serving must pick. A
    failed trial without checkpoint is listed too, as the trials stage lists them.
    `frozen_head="embedded:minilm-l6"` adds a linear head on that encoder, trial `t003-head`.
    """
    import pandas as pd
    from sklearn.metrics import f1_score

    from config.trials import TfidfLinearFamily
    from tasks.checkpoint import save_classifier
    from tasks.heads import train_tfidf_linear
    from tasks.labels import build_label_space
    from tasks.records import load_records

    records = load_records(patents, limit=n_train + 2 * n_test).records
    space = build_label_space(records, "subclass", top_k)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    train = [records[i] for i in order[:n_train]]
    val = [records[i] for i in order[n_train : n_train + n_test]]
    test = [records[i] for i in order[n_train + n_test : n_train + 2 * n_test]]
    y_train = space.encode([r.labels for r in train])
    y_val = space.encode([r.labels for r in val])

    run_dir = Path(run_dir)
    tdir = run_dir / "trials"
    rows = []
    for trial_id, c in (("t000-c10", 10.0), ("t001-c001", 0.01)):
        clf = train_tfidf_linear(
            [r.text for r in train],
            y_train,
            TfidfLinearFamily(C=c, max_features=20000),
            "weighted_bce",
            seed,
            labels=list(space.codes),
            names=list(space.names),
            thresholds=0.5,
        )
        pred = clf.predict_proba([r.text for r in val]) >= 0.5
        f1 = float(f1_score(y_val, pred, average="micro", zero_division=0))
        rel = f"checkpoints/{trial_id}"
        save_classifier(
            tdir / rel,
            clf,
            metrics={"val_micro_f1": f1},
            mix={"arm": "real_only", "regime": "demo", "ratio": 0.0},
            provenance={"source": str(patents), "n_train": n_train, "seed": seed},
        )
        rows.append(
            {
                "trial_id": trial_id,
                "regime": "demo",
                "arm": "real_only",
                "family": "tfidf_linear",
                "status": "ok",
                "n_train": n_train,
                "val_micro_f1": f1,
                "checkpoint": rel,
            }
        )
    if frozen_head:
        rows.append(_frozen_head_trial(tdir, frozen_head, train, val, space, seed))
    rows.append({"trial_id": "t002-failed", "status": "failed", "val_micro_f1": np.nan})
    pd.DataFrame.from_records(rows).to_parquet(tdir / "results.parquet", index=False)
    best = max((r for r in rows if r["status"] == "ok"), key=lambda r: r["val_micro_f1"])
    return DemoRun(
        run_dir=run_dir,
        best_trial=best["trial_id"],
        test_texts=[r.text for r in test],
        test_labels=[list(r.labels) for r in test],
    )


def _frozen_head_trial(tdir: Path, encoder_model: str, train, val, space, seed: int) -> dict:
    from sklearn.metrics import f1_score

    from config.trials import FrozenHeadFamily
    from tasks.checkpoint import FrozenHeadClassifier, save_classifier
    from tasks.embeddings import encode_texts, load_encoder
    from tasks.heads import train_frozen_head

    encoder = load_encoder(encoder_model, 256)
    x = encode_texts([r.text for r in train], encoder)
    head = train_frozen_head(
        x, space.encode([r.labels for r in train]), FrozenHeadFamily(), "weighted_bce", seed
    )
    clf = FrozenHeadClassifier(
        head,
        encoder_model,
        256,
        encoder=encoder,
        labels=list(space.codes),
        names=list(space.names),
        thresholds=0.5,
    )
    pred = clf.predict_proba([r.text for r in val]) >= 0.5
    y_val = space.encode([r.labels for r in val])
    f1 = float(f1_score(y_val, pred, average="micro", zero_division=0))
    rel = "checkpoints/t003-head"
    save_classifier(tdir / rel, clf, metrics={"val_micro_f1": f1}, mix={"arm": "real_only"})
    return {
        "trial_id": "t003-head",
        "regime": "demo",
        "arm": "real_only",
        "family": "frozen_head",
        "status": "ok",
        "n_train": len(train),
        "val_micro_f1": f1,
        "checkpoint": rel,
    }
