"""Trials: fine-tune throughput inside a Ray Tune trial, and core use of a frozen-head grid.

Both parts use real patents (`../shared/data/uspto-9k`, abstracts, the 16 most frequent
subclasses among the rows read) and compare against a named baseline in the same run.

1. `finetune`: the embedded MiniLM fine-tuned on the same rows with the same batch size.
   - tune: one Ray Tune trial that calls `orchestrator.train.fit_finetune` (a Ray Train
     TorchTrainer with one worker holding every core). The trial itself holds only a custom
     `trial_slot` resource, so the worker gets all CPUs.
   - baseline (plain PyTorch loop): `AutoModelForSequenceClassification`, AdamW and BCE over
     pre-tokenized batches in this process, no Ray.
   Samples/s is measured over epochs 2.. (the first is warm-up) inside each loop; the end-to-end
   wall time (start-up, model load, checkpoint hand-back) is printed beside it.
2. `grid`: frozen_head trials (`tasks.heads.train_frozen_head`, MLP head, one thread each) on one
   set of cached MiniLM embeddings, over losses x seeds, one CPU per trial.
   - utilization = (sum of the trials' process CPU seconds) / (grid wall seconds x CPUs);
   - baseline (sequential): the same trials one after another in this process, one thread.
3. `stage`: synthpat's own grid, `orchestrator.trials_tune.run_grid` (what `synthpat trials`
   runs) over frozen_head cells (real_only, losses x seeds) from `expand_grid`: each trial builds
   its mix, trains, tunes thresholds on val, scores test (F1s, nDCG@10), writes its safetensors
   checkpoint and done marker, and reports. Run twice in the same Ray session: Tune reusing trial
   actors (synthpat's default, `trials.resources.reuse_actors`) vs a fresh actor per trial.
   - utilization = (sum of the trials' `train_seconds`, the wall time inside `run_cell` on one
     thread) / (grid wall seconds x CPUs); the machine's busy share (/proc/stat) is printed beside.

    .venv/bin/python bench/trials.py [--part finetune|grid|stage|all] [--rows 256] [--epochs 3]

With `--repeats` > 1 the two fine-tune loops alternate and the medians are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "uspto-9k" / "patents.jsonl"
MODEL = "embedded:minilm-l6"
LOSSES = ["bce", "weighted_bce", "focal", "asymmetric"]


def load_rows(n: int, n_labels: int = 16) -> tuple[pd.DataFrame, list[str]]:
    """The first `n` patents with an abstract, labels cut to the most frequent subclasses."""
    df = pd.read_json(DATA, lines=True, nrows=n * 2)
    df = df[df["abstract"].str.len() > 0].head(n).reset_index(drop=True)
    top = [c for c, _ in Counter(c for ls in df["labels"] for c in ls).most_common(n_labels)]
    keep = set(top)
    df = pd.DataFrame(
        {"text": df["abstract"], "labels": [[c for c in ls if c in keep] for ls in df["labels"]]}
    )
    return df, top


class Family:
    """The finetune settings both loops share (a `FinetuneFamily` is built from it for Ray)."""

    def __init__(self, epochs: int, batch_size: int, max_length: int):
        self.model, self.epochs, self.batch_size, self.max_length = (
            MODEL,
            epochs,
            batch_size,
            max_length,
        )
        self.learning_rate, self.deepspeed, self.trust_remote_code, self.num_workers = (
            5e-5,
            None,
            False,
            1,
        )


def plain_loop(df: pd.DataFrame, labels: list[str], fam: Family) -> dict:
    """Baseline: a minimal PyTorch fine-tuning loop over pre-tokenized batches."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.models import resolve_model
    from tasks.trials.inputs import label_matrix

    started = time.perf_counter()
    folder = resolve_model(MODEL)
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(labels), problem_type="multi_label_classification"
    )
    y = torch.from_numpy(label_matrix(df, labels))
    texts = df["text"].tolist()
    batches = []
    for s in range(0, len(texts), fam.batch_size):
        enc = tok(texts[s : s + fam.batch_size], truncation=True, max_length=fam.max_length,
                  padding=True, return_tensors="pt")  # fmt: skip
        batches.append((enc, y[s : s + fam.batch_size]))
    opt = torch.optim.AdamW(model.parameters(), lr=fam.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    epoch_rates = []
    for _ in range(fam.epochs):
        t0 = time.perf_counter()
        for enc, yb in batches:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(**enc).logits, yb).backward()
            opt.step()
        epoch_rates.append(len(texts) / (time.perf_counter() - t0))
    return {
        "samples_per_s": float(np.mean(epoch_rates[1:] or epoch_rates)),
        "epoch_samples_per_s": epoch_rates,
        "wall_s": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }


def tune_trial(df: pd.DataFrame, labels: list[str], fam: Family, cpus: int) -> dict:
    """One Ray Tune trial running fit_finetune with a single worker holding `cpus` CPUs."""
    import ray
    from ray import tune

    from config.trials import FinetuneFamily
    from orchestrator.train import fit_finetune

    family = FinetuneFamily(
        model=MODEL, max_length=fam.max_length, epochs=fam.epochs,
        learning_rate=fam.learning_rate, batch_size=fam.batch_size,
    )  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-trials-"))
    val = df.head(32)

    def trial(config: dict) -> None:
        clf = fit_finetune(
            family, df, val, labels, "bce", "fp32", "sdpa", 0, work / "cache", work / "train",
            cpus_per_worker=cpus,
        )  # fmt: skip
        tune.report({"history": json.dumps(clf.meta["train_history"])})

    ray.init(num_cpus=cpus, resources={"trial_slot": 4}, include_dashboard=False,
             object_store_memory=300 * 1024 * 1024, log_to_driver=False)  # fmt: skip
    try:
        started = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(trial, {"CPU": 0, "trial_slot": 1}),
            run_config=tune.RunConfig(storage_path=str(work / "tune"), name="bench", verbose=0),
        )
        result = tuner.fit()[0]
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    if result.error:
        raise RuntimeError("the Tune trial failed") from result.error
    history = json.loads(result.metrics["history"])
    rates = [h["samples_per_s"] for h in history]
    return {
        "samples_per_s": float(np.mean(rates[1:] or rates)),
        "epoch_samples_per_s": rates,
        "wall_s": wall,
        "threads": history[0].get("threads"),
    }


def bench_finetune(args: argparse.Namespace) -> None:
    df, labels = load_rows(args.rows)
    fam = Family(args.epochs, args.batch_size, args.max_length)
    print(f"finetune: {len(df)} patents, {len(labels)} labels, MiniLM, batch {fam.batch_size}, "
          f"max_length {fam.max_length}, {fam.epochs} epochs")  # fmt: skip
    bases, tuneds = [], []
    for _ in range(args.repeats):  # alternate, so load from elsewhere hits both sides alike
        bases.append(plain_loop(df, labels, fam))
        _print("baseline plain PyTorch loop", bases[-1])
        tuneds.append(tune_trial(df, labels, fam, args.cpus))
        _print("Ray Tune trial + Ray Train ", tuneds[-1])
    base = float(np.median([b["samples_per_s"] for b in bases]))
    tuned = float(np.median([t["samples_per_s"] for t in tuneds]))
    base_wall = float(np.median([b["wall_s"] for b in bases]))
    tuned_wall = float(np.median([t["wall_s"] for t in tuneds]))
    print(f"  median samples/s: plain {base:.1f}, tune {tuned:.1f}; "
          f"ratio tune/plain {tuned / base:.2f} (target >= 0.9)")  # fmt: skip
    print(f"  median end-to-end wall: plain {base_wall:.1f} s, tune {tuned_wall:.1f} s; "
          f"ratio plain/tune {base_wall / tuned_wall:.2f}")  # fmt: skip


def _print(name: str, r: dict) -> None:
    print(f"  {name}: {r['samples_per_s']:.1f} samples/s "
          f"(epochs {[round(x, 1) for x in r['epoch_samples_per_s']]}, {r['threads']} threads), "
          f"end to end {r['wall_s']:.1f} s")  # fmt: skip


def _head_trial(x: np.ndarray, y: np.ndarray, loss: str, seed: int, epochs: int) -> dict:
    from config.trials import FrozenHeadFamily
    from tasks.heads import train_frozen_head

    cpu0, t0 = time.process_time(), time.perf_counter()
    family = FrozenHeadFamily(head="mlp", epochs=epochs)
    head = train_frozen_head(x, y, family, loss, seed, threads=1)
    return {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - t0,
            "w2_norm": float(np.linalg.norm(head["w2"]))}  # fmt: skip


def bench_grid(args: argparse.Namespace) -> None:
    import ray
    from ray import tune

    from tasks.embeddings import encode_texts, load_encoder
    from tasks.trials.inputs import label_matrix

    df, labels = load_rows(args.grid_rows)
    t0 = time.perf_counter()
    x = encode_texts(df["text"].tolist(), load_encoder(MODEL, args.max_length), progress=True)
    y = label_matrix(df, labels)
    print(f"grid: {len(df)} patents embedded once in {time.perf_counter() - t0:.1f} s "
          f"({x.shape[1]} dims), {len(labels)} labels")  # fmt: skip
    cells = [(loss, seed) for loss in LOSSES for seed in range(args.seeds)]

    t0 = time.perf_counter()
    seq = [_head_trial(x, y, loss, seed, args.head_epochs) for loss, seed in cells]
    seq_wall = time.perf_counter() - t0
    seq_util = sum(r["cpu_s"] for r in seq) / (seq_wall * args.cpus)
    print(f"  baseline sequential ({len(cells)} trials, one process): {seq_wall:.1f} s, "
          f"core utilization {seq_util:.0%}")  # fmt: skip

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=300 * 1024 * 1024)  # fmt: skip
    try:

        def trial(config: dict, x: np.ndarray, y: np.ndarray) -> None:
            tune.report(_head_trial(x, y, config["loss"], config["seed"], args.head_epochs))

        work = Path(tempfile.mkdtemp(prefix="bench-grid-"))
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trial, x=x, y=y), {"CPU": 1}),
            param_space={"loss": tune.grid_search(LOSSES),
                         "seed": tune.grid_search(list(range(args.seeds)))},
            tune_config=tune.TuneConfig(reuse_actors=args.reuse_actors),
            run_config=tune.RunConfig(storage_path=str(work), name="grid", verbose=0),
        )  # fmt: skip
        t0 = time.perf_counter()
        grid = tuner.fit()
        grid_wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    rows = grid.get_dataframe()
    assert len(rows) == len(cells) and grid.num_errors == 0
    util = rows["cpu_s"].sum() / (grid_wall * args.cpus)
    print(f"  Ray Tune grid ({len(rows)} trials, 1 CPU each): {grid_wall:.1f} s, "
          f"core utilization {util:.0%} (target >= 80%)")  # fmt: skip
    busy = rows["wall_s"].sum() / (grid_wall * args.cpus)
    print(f"  share of grid wall time spent inside trial training: {busy:.0%}; "
          f"speed-up over sequential: {seq_wall / grid_wall:.2f}x")  # fmt: skip


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def bench_stage(args: argparse.Namespace) -> None:
    import ray

    from config import StudyConfig
    from orchestrator.trials_tune import GridRun, collect, run_grid
    from tasks.embeddings import encode_texts, load_encoder
    from tasks.trials.grid import expand_grid
    from tasks.trials.inputs import Embeddings, EncoderKey, EvalData, TrialInputs, TrialSettings

    n_eval = 128
    df, labels = load_rows(args.grid_rows + 2 * n_eval)
    df.insert(0, "id", [f"p{i:05d}" for i in range(len(df))])
    train, val, test = df.iloc[: -2 * n_eval], df.iloc[-2 * n_eval : -n_eval], df.iloc[-n_eval:]
    t0 = time.perf_counter()
    x = encode_texts(df["text"].tolist(), load_encoder(MODEL, args.max_length), progress=True)
    print(f"stage: {len(df)} patents embedded once in {time.perf_counter() - t0:.1f} s")
    key = EncoderKey(MODEL, args.max_length)
    shared = EvalData(labels=labels, names=labels, val=val.reset_index(drop=True),
                      test=test.reset_index(drop=True))  # fmt: skip
    emb = Embeddings(key, {t: i for i, t in enumerate(df["text"])}, x)
    data = TrialInputs(shared, real={"real": train.reset_index(drop=True)}, embeddings={key: emb})
    family = {"kind": "frozen_head", "name": "head", "head": "mlp", "epochs": args.head_epochs,
              "encoder": {"model": MODEL, "max_length": args.max_length}}  # fmt: skip
    cfg = StudyConfig.model_validate({
        "study": "bench",
        "data": {"source": {"path": str(DATA)},
                 "regimes": [{"name": "real", "size": len(train)}]},
        "trials": {"families": [family], "arms": ["real_only"], "losses": LOSSES,
                   "seeds": list(range(args.seeds))},
    })  # fmt: skip
    cells = expand_grid(cfg, corpora=[])
    families = {f.name: f for f in cfg.trials.families}
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=300 * 1024 * 1024)  # fmt: skip
    try:
        for reuse in (True, False):
            work = Path(tempfile.mkdtemp(prefix="bench-stage-"))
            busy0, t0 = _cpu_busy(), time.perf_counter()
            run = GridRun(done_dir=str(work / "done"), train_storage=str(work / "train"),
                          settings=TrialSettings(cpus=1))  # fmt: skip
            out = run_grid(cells, data, families, run, storage_path=str(work / "tune"),
                           name="grid", max_failures=0, reuse_actors=reuse)  # fmt: skip
            wall, busy1 = time.perf_counter() - t0, _cpu_busy()
            rows = [r for t, o in out.items() if (r := collect(work / "done", t, o)) is not None]
            assert len(rows) == len(cells), [o.error for o in out.values() if o.error]
            inside = sum(r.train_seconds for r in rows)
            machine = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1.0)
            name = "reused actors (default)" if reuse else "fresh actor per trial"
            print(f"  synthpat grid, {name}: {len(rows)} trials in {wall:.1f} s, "
                  f"utilization {inside / (wall * args.cpus):.0%} (target >= 80%), "
                  f"machine busy {machine:.0%}, mean trial {inside / len(rows):.1f} s")  # fmt: skip
            shutil.rmtree(work, ignore_errors=True)
    finally:
        ray.shutdown()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["finetune", "grid", "stage", "all"], default="all")
    p.add_argument("--rows", type=int, default=256, help="fine-tune rows")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="plain/tune pairs, alternating")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    p.add_argument("--grid-rows", type=int, default=1024)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--head-epochs", type=int, default=60)
    p.add_argument("--reuse-actors", action="store_true", help="grid: Tune reuses trial actors")
    args = p.parse_args()
    if args.part in ("finetune", "all"):
        bench_finetune(args)
    if args.part in ("grid", "all"):
        bench_grid(args)
    if args.part in ("stage", "all"):
        bench_stage(args)


if __name__ == "__main__":
    main()
