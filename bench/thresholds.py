"""Threshold rules on small validation sets, against the test-tuned oracle (a diagnostic only).

What each val-tuned threshold rule of `tasks.evaluation.choose_thresholds` costs in test micro-F1
and macro-F1, for real-only classifiers of the two cheap families at the paper's smallest regimes:

- data: `configs/paper.yaml`'s `data` section (64 subclasses, its val/test sizes and split seed)
  on `../shared/data/uspto-9k/patents.jsonl`, through `tasks.records.load_records` and
  `tasks.prepare.prepare_dataset`, with `--draws` independent draws of each regime from the one
  train pool (val and test stay the paper's);
- classifiers: `tfidf_linear` (`tasks.heads.train_tfidf_linear`, bce) and `frozen_head` (MLP head
  on the embedded MiniLM encoder, the paper config's asymmetric loss and 60 epochs), one per
  regime draw x `--seeds` seed (TF-IDF once per draw: liblinear's primal solver does not use the
  seed, its scores are the same for every seed); embeddings through
  `orchestrator.embeddings.embed_texts` in this process (no Ray), cached under `--cache`;
- rules: `global`, `per_label`, `per_label_where_supported` with K in `--ks`, each tuned on val;
- baseline (the oracle): thresholds tuned on the test set itself, for each metric: for macro-F1
  one threshold per label maximizing that label's test F1 (the exact optimum on the grid); for
  micro-F1 per-label thresholds found by coordinate ascent on test micro-F1 from the best global
  test threshold (a local optimum, never below that global one). It sees the test labels, so it
  is optimistic by construction; the question is how far below it each val-tuned rule lands.

Prints, per family x regime, each rule's mean test micro-F1 and macro-F1 over draws x seeds, the
difference to the oracle (mean and sd over the paired runs) and the ratio rule / oracle.

    .venv/bin/python bench/thresholds.py [--regimes r165,r330] [--draws 5] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs" / "paper.yaml"
ENCODER = "embedded:minilm-l6"
ORACLE = "oracle (tuned on test)"


def _prepare(draws: int):
    from config.loader import load_config
    from tasks.prepare import prepare_dataset
    from tasks.records import load_records

    data = load_config(CONFIG).data
    loaded = load_records(data.source.path, data.source.format, data.source.limit)
    prepared = prepare_dataset(
        loaded.records,
        level=data.labels.level,
        top_k=data.labels.top_k,
        test_size=data.split.test_size,
        val_size=data.split.val_size,
        regimes={r.name: r.size for r in data.regimes},
        seed=data.seed,
        draws=draws,
    )
    return data, prepared


def _rules(ks: list[int]) -> list[tuple[str, str, int]]:
    rules = [("global", "global", 1), ("per_label", "per_label", 1)]
    return rules + [(f"supported K={k}", "per_label_where_supported", k) for k in ks]


def micro_oracle(y: np.ndarray, p: np.ndarray, passes: int = 5) -> np.ndarray:
    """Per-label thresholds raising micro-F1 on (y, p) by coordinate ascent over the grid, from
    the best single threshold: each label in turn takes the value best for the total."""
    from tasks.evaluation import THRESHOLD_GRID, global_threshold, threshold_counts

    grid = THRESHOLD_GRID
    tp, fp, fn = threshold_counts(y, p, grid)
    labels = np.arange(y.shape[1])
    idx = np.full(y.shape[1], int(np.argmin(np.abs(grid - global_threshold(y, p)))))
    for _ in range(passes):
        moved = False
        for j in labels:
            rest = [c[labels, idx].sum() - c[j, idx[j]] for c in (tp, fp, fn)]
            num = 2 * (rest[0] + tp[j])
            f1 = num / np.maximum(num + rest[1] + fp[j] + rest[2] + fn[j], 1)
            if f1.max() > f1[idx[j]]:
                idx[j], moved = int(np.argmax(f1)), True
        if not moved:
            break
    return grid[idx]


def _scores(y_val, p_val, y_test, p_test, ks: list[int]) -> list[dict]:
    from tasks.evaluation import choose_thresholds, classification_metrics, per_label_thresholds

    rows = []
    for name, mode, k in _rules(ks):
        m = classification_metrics(y_test, p_test, choose_thresholds(y_val, p_val, mode, k))
        rows.append({"rule": name, "micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]})
    micro = classification_metrics(y_test, p_test, micro_oracle(y_test, p_test))["micro_f1"]
    macro = classification_metrics(y_test, p_test, per_label_thresholds(y_test, p_test))
    rows.append({"rule": ORACLE, "micro_f1": micro, "macro_f1": macro["macro_f1"]})
    return rows


def _fit(
    family: str, train: pd.DataFrame, prep, labels: list[str], seed: int, emb: dict | None
) -> tuple[np.ndarray, np.ndarray]:
    """Val and test probabilities of one real-only classifier of `family`."""
    from config.trials import FrozenHeadFamily, TfidfLinearFamily
    from tasks.checkpoint import FrozenHeadClassifier
    from tasks.heads import train_frozen_head, train_tfidf_linear
    from tasks.trials.inputs import label_matrix

    y = label_matrix(train, labels)
    common = {"labels": labels, "names": labels}
    if family == "tfidf_linear":
        clf = train_tfidf_linear(train.text.tolist(), y, TfidfLinearFamily(), "bce", seed, **common)
        return clf.predict_proba(prep.val.text.tolist()), clf.predict_proba(prep.test.text.tolist())
    if family != "frozen_head" or emb is None:
        raise ValueError(f"family {family!r}: expected tfidf_linear or frozen_head (embedded)")

    def x(df: pd.DataFrame) -> np.ndarray:
        return np.stack([emb[t] for t in df.text])

    # configs/paper.yaml's frozen head: MLP, 60 epochs, the asymmetric loss of its grid.
    head = train_frozen_head(
        x(train), y, FrozenHeadFamily(head="mlp", epochs=60), "asymmetric", seed
    )
    clf = FrozenHeadClassifier(head, ENCODER, 256, **common)
    return clf.proba_from_embeddings(x(prep.val)), clf.proba_from_embeddings(x(prep.test))


def _embeddings(texts: list[str], cache: Path) -> dict[str, np.ndarray]:
    from config.fidelity import EncoderConfig
    from orchestrator.embeddings import embed_texts

    t0 = time.perf_counter()
    vecs = embed_texts(texts, EncoderConfig(model=ENCODER), cache, use_ray=False)
    print(f"embeddings: {len(texts)} texts in {time.perf_counter() - t0:.0f} s (cache {cache})")
    return dict(zip(texts, vecs, strict=True))


def _table(runs: pd.DataFrame, reference: str = ORACLE) -> pd.DataFrame:
    """Per family x regime x rule: means, and paired differences / ratios to `reference`."""
    keys = ["family", "regime", "draw", "seed"]
    oracle = runs[runs.rule == reference][keys + ["micro_f1", "macro_f1"]]
    joined = runs.merge(oracle, on=keys, how="left", suffixes=("", "_oracle"))
    out = []
    for (fam, regime, rule), g in joined.groupby(["family", "regime", "rule"], sort=False):
        row = {"family": fam, "regime": regime, "rule": rule, "n": len(g)}
        for m in ("micro_f1", "macro_f1"):
            diff = g[m] - g[f"{m}_oracle"]
            row[m] = g[m].mean()
            row[f"d_{m}"] = diff.mean()
            row[f"sd_d_{m}"] = diff.std(ddof=1) if len(g) > 1 else 0.0
            row[f"ratio_{m}"] = g[m].mean() / g[f"{m}_oracle"].mean()
        out.append(row)
    return pd.DataFrame(out)


def _print(table: pd.DataFrame, reference: str = "oracle") -> None:
    d = f"d {reference}"
    head = (
        f"{'family':<13}{'regime':<7}{'rule':<28}{'micro-F1':>9}{d:>16}{'ratio':>7}"
        f"{'macro-F1':>10}{d:>16}{'ratio':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in table.itertuples():
        print(
            f"{r.family:<13}{r.regime:<7}{r.rule:<28}{r.micro_f1:>9.3f}"
            f"{r.d_micro_f1:>+9.3f} ±{r.sd_d_micro_f1:.3f}{r.ratio_micro_f1:>7.3f}"
            f"{r.macro_f1:>10.3f}{r.d_macro_f1:>+9.3f} ±{r.sd_d_macro_f1:.3f}"
            f"{r.ratio_macro_f1:>7.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regimes", default="r165,r330", help="regimes of configs/paper.yaml")
    ap.add_argument("--draws", type=int, default=5, help="independent draws of each regime")
    ap.add_argument("--seeds", default="0,1,2", help="classifier seeds per draw")
    ap.add_argument("--ks", default="3,5,10", help="K of per_label_where_supported")
    ap.add_argument("--families", default="tfidf_linear,frozen_head")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/synthpat-bench/embeddings"))
    ap.add_argument("--out", type=Path, default=None, help="write the per-run rows as CSV")
    args = ap.parse_args()

    import torch

    from config.data import regime_key
    from tasks.trials.inputs import label_matrix

    torch.set_num_threads(os.cpu_count() or 1)  # the encoder uses every core; heads one (below)
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    regimes = args.regimes.split(",")
    families = args.families.split(",")
    t0 = time.perf_counter()
    data, prep = _prepare(args.draws)
    labels = list(prep.labels.codes)
    y_val, y_test = label_matrix(prep.val, labels), label_matrix(prep.test, labels)
    support = y_val.sum(0)
    print(
        f"data: {len(labels)} labels, val {len(prep.val)}, test {len(prep.test)}, "
        f"split seed {data.seed}, regimes {regimes} x {args.draws} draws, seeds {seeds} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(
        "val positives per label: "
        + ", ".join(f"<{k}: {int((support < k).sum())}" for k in ks)
        + f", <=5: {int((support <= 5).sum())}; test: <5: {int((y_test.sum(0) < 5).sum())}"
    )
    emb = None
    if "frozen_head" in families:
        frames = [prep.val, prep.test] + [
            prep.regimes[regime_key(r, d)] for r in regimes for d in range(args.draws)
        ]
        emb = _embeddings(sorted({t for f in frames for t in f.text}), args.cache)

    # A 64-way MLP on a few hundred rows gains nothing from a second thread, and spinning
    # threads stall on a busy machine (as the trials stage's heads run: one thread each).
    torch.set_num_threads(1)
    runs = []
    for regime in regimes:
        for draw in range(args.draws):
            train = prep.regimes[regime_key(regime, draw)]
            for fam in families:
                for seed in seeds[:1] if fam == "tfidf_linear" else seeds:
                    t1 = time.perf_counter()
                    p_val, p_test = _fit(fam, train, prep, labels, seed, emb)
                    for r in _scores(y_val, p_val, y_test, p_test, ks):
                        runs.append(
                            {"family": fam, "regime": regime, "draw": draw, "seed": seed, **r}
                        )
                    print(
                        f"  {fam} {regime_key(regime, draw)} seed {seed}: "
                        f"{time.perf_counter() - t1:.1f} s",
                        flush=True,
                    )
    frame = pd.DataFrame(runs)
    if args.out is not None:
        frame.to_csv(args.out, index=False)
    print(f"\nbaseline: {ORACLE}; d = rule - baseline, mean ± sd over paired runs")
    _print(_table(frame))
    print("\nthe same, against per_label (the default before per_label_where_supported)")
    _print(_table(frame[frame.rule != ORACLE], "per_label"), "per_lab")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
