"""A tiny finished run folder for the export tests: every stage's files that `synthpat export`
reads, with hand-made values the tests look for in the cards (no Ray, no generation).

Importable from every test folder (pytest puts tests/ on sys.path). Checkpoints are added by
the caller with `tasks.checkpoint.save_classifier` under `trials/checkpoints/<trial_id>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tiny_bert import LABELS, make_texts

from tasks.artifacts import TrialRow, save_results

NAMES = ["Transport for patients", "Loudspeakers, microphones", "Educational appliances"]
CORPUS = "r20__tiny__synthesis__plain"
VERDICT_SENTENCE = "At r20, no evidence that synthetic text helps beyond volume: +0.010 micro-F1"


def tfidf_classifier(seed: int = 0) -> Any:
    """A TF-IDF classifier trained on the tiny separable texts."""
    from config.trials import TfidfLinearFamily
    from tasks.heads import train_tfidf_linear
    from tasks.labels import multi_hot

    texts, label_sets = make_texts(60, seed)
    y = multi_hot(label_sets, LABELS).astype(np.float32)
    cfg = TfidfLinearFamily(name="tfidf-lr")
    return train_tfidf_linear(
        texts, y, cfg, "bce", seed, labels=LABELS, names=NAMES, thresholds=[0.3, 0.4, 0.5]
    )


def corpus_table(n: int = 6) -> pd.DataFrame:
    texts, label_sets = make_texts(n, 7)
    return pd.DataFrame(
        {
            "id": [f"{CORPUS}__{i:06d}" for i in range(n)],
            "text": texts,
            "labels": label_sets,
            "source": "synthetic",
            "regime": "r20",
            "draw": 0,
            "generator": "tiny",
            "strategy": "synthesis",
            "variant": "plain",
            "prompt_hash": "abc123def456",
            "seed": list(range(100, 100 + n)),
            "exemplar_ids": [["US1", "US2"]] * n,
            "source_id": [None] * n,
            "target_labels": label_sets,
            "prompt_tokens": 300,
            "output_tokens": 64,
            "gen_seconds": 1.5,
            "attempts": 1,
            "finish_reason": "stop",
            "volume_rank": list(range(n)),
        }
    )


def build_run(root: Path, trials: list[dict[str, Any]]) -> Path:
    """`root/runs/tiny` with prepare, generate, fidelity, report files and `trials` as
    results.parquet rows (TrialRow fields; checkpoints not written here)."""
    run = root / "runs" / "tiny"
    (run / "prepare").mkdir(parents=True)
    source = {"path": str(root / "uspto-tiny" / "p.jsonl")}
    cfg = {"study": "tiny", "data": {"source": source, "regimes": [{"name": "r20", "size": 20}]}}
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(cfg))
    labels = [
        {"index": i, "code": c, "name": n, "support": 10 + i}
        for i, (c, n) in enumerate(zip(LABELS, NAMES, strict=True))
    ]
    (run / "prepare" / "labels.json").write_text(json.dumps(labels))
    gen = run / "generate"
    (gen / "corpora").mkdir(parents=True)
    (gen / "removed").mkdir()
    kept = corpus_table()
    kept.to_parquet(gen / "corpora" / f"{CORPUS}.parquet", index=False)
    removed = corpus_table(2).assign(
        status="ok", error="", filter="too_short", reason="3 words < min 20"
    )
    removed.to_parquet(gen / "removed" / f"{CORPUS}.parquet", index=False)
    entry = {
        "corpus_id": CORPUS,
        "regime": "r20",
        "draw": 0,
        "regime_key": "r20",
        "generator": "tiny",
        "strategy": "synthesis",
        "variant": "plain",
        "n_real": 20,
        "planned": 9,
        "rows": 6,
        "removed": 2,
        "removed_by_filter": {"too_short": 2, "leakage": 0, "near_duplicate": 0},
        "ratios": [0.5],
        "path": f"corpora/{CORPUS}.parquet",
    }
    (gen / "corpora.json").write_text(json.dumps([entry]))
    generation = {
        "seed": 13,
        "exemplars": 2,
        "exemplar_words": 120,
        "filters": {"min_words": 20, "near_duplicate_threshold": 0.8},
        "generators": [
            {"name": "tiny", "model": "embedded:smollm2-135m", "temperature": 0.8, "top_p": 1.0}
            | {"top_k": 50, "max_tokens": 128}
        ],
    }
    (gen / "manifest.json").write_text(json.dumps({"config": {"generation": generation}}))
    fid = run / "fidelity"
    (fid / CORPUS).mkdir(parents=True)
    pd.DataFrame(
        [{"corpus_id": CORPUS, "mmd2": 0.0512, "mmd_p": 0.001, "frechet": 1.25, "precision": 0.9}]
    ).to_parquet(fid / "summary.parquet")
    fidelity_doc = {
        "keywords": {"name_mention_rate": 0.125, "name_mention_rate_real": 0.0625},
        "memorization": {
            "copy_ngram": 8,
            "copy_train": {"ngram_rate": 0.0288, "row_rate": 0.146, "row_max": 0.74},
            "copy_heldout": {"ngram_rate": 0.0},
            "nearest_heldout": {"mean": 0.49, "max": 0.633, "share_above": 0.0},
        },
    }
    (fid / CORPUS / "fidelity.json").write_text(json.dumps(fidelity_doc))
    rows = [TrialRow.from_dict({"status": "ok", "budget": "epochs", **t}) for t in trials]
    (run / "trials").mkdir()
    save_results(run / "trials", rows)
    _report(run, rows)
    return run


def _report(run: Path, rows: list[TrialRow]) -> None:
    tables = run / "report" / "tables"
    tables.mkdir(parents=True)
    cells = []
    for r in rows:
        cells.append(
            {
                "regime": r.regime,
                "arm": r.arm,
                "ratio": r.ratio if r.ratio is not None else np.nan,
                "real_fraction": np.nan,
                "control_size": np.nan,
                "ordering": r.ordering,
                "generator": r.generator,
                "strategy": r.strategy,
                "variant": r.variant,
                "family": r.family,
                "loss": r.loss,
                "precision": r.precision,
                "attention": r.attention,
                "val_micro_f1_mean": 0.61,
                "test_micro_f1_mean": 0.2,
                "test_micro_f1_ci_low": 0.1,
                "test_micro_f1_ci_high": 0.3,
                "over": "1 draw x 2 seeds, 40 test documents",
                "method": "t interval over training seeds",
            }
        )
    pd.DataFrame(cells).drop_duplicates(["family", "arm"]).to_parquet(tables / "aggregate.parquet")
    aug = [r for r in rows if r.arm == "real_plus_synthetic"]
    gains = [
        {
            **{k: getattr(r, k) for k in ("regime", "arm", "ratio", "ordering", "family", "loss")},
            **{k: getattr(r, k) for k in ("generator", "strategy", "variant", "precision")},
            "attention": r.attention,
            "metric": "test_micro_f1",
            "gain_control": 0.01,
            "gain_control_low": -0.02,
            "gain_control_high": 0.04,
            "gain_control_p": 0.5,
            "gain_control_q": 0.6,
            "trial_ids": r.trial_id,
        }
        for r in aug
    ]
    if gains:
        pd.DataFrame(gains).to_parquet(tables / "controlled_gains.parquet")
    verdict = {
        "study": "tiny",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "confidence": 0.95,
        "regimes": [
            {
                "regime": "r20",
                "sentence": VERDICT_SENTENCE,
                "trial_ids": [r.trial_id for r in aug],
                "control_trial_ids": [],
            }
        ],
    }
    (run / "report" / "verdict.json").write_text(json.dumps(verdict))


def trial(trial_id: str, family: str, kind: str, val: float, **kw: Any) -> dict[str, Any]:
    """A results.parquet row of a finished trial of regime r20 with checkpoint
    checkpoints/<trial_id>."""
    base = {
        "trial_id": trial_id,
        "regime": "r20",
        "arm": "real_plus_synthetic",
        "ratio": 0.5,
        "generator": "tiny",
        "strategy": "synthesis",
        "variant": "plain",
        "family": family,
        "family_kind": kind,
        "loss": "bce",
        "precision": "fp32",
        "attention": "none",
        "n_train": 30,
        "n_real": 20,
        "n_synthetic": 10,
        "val_micro_f1": val,
        "test_micro_f1": 0.21,
        "test_macro_f1": 0.18,
        "checkpoint": f"checkpoints/{trial_id}",
    }
    return {**base, **kw}


def save_checkpoint(run: Path, trial_id: str, classifier: Any, corpus: bool = True) -> Path:
    """Write `classifier` as trial `trial_id`'s checkpoint, with the mix the cards quote."""
    from tasks.checkpoint import save_classifier

    mix = {
        "arm": "real_plus_synthetic",
        "regime": "r20",
        "draw": 0,
        "ratio": 0.5,
        "ordering": "shuffled",
        "corpus_id": CORPUS if corpus else "",
        "n_train": 30,
        "n_real": 20,
        "n_synthetic": 10 if corpus else 0,
    }
    prov = {"model": "embedded:minilm-l6", "loss": "bce", "seed": 0, "trial_id": trial_id}
    return save_classifier(
        run / "trials" / "checkpoints" / trial_id,
        classifier,
        mix=mix,
        metrics={"val_micro_f1": 0.6, "test_micro_f1": 0.21},
        provenance=prov,
    )
