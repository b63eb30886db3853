"""Trials: fine-tune throughput inside a Ray Tune trial, and core use of a frozen-head grid.

Both parts use real patents (`../shared/data/uspto-9k`, abstracts, the 16 most frequent
subclasses among the rows read) and compare against a named baseline in the same run.

1. `finetune`: one trial's whole job, the embedded MiniLM fine-tuned on the same real rows
   with the same batch size, then val and test scored and the model saved. Wall time end to
   end per trial is the figure that matters (a study is hundreds of short trials).
   - synthpat: `--trials` real_only cells through `orchestrator.trials_tune.run_grid`, one at a
     time with every CPU (a one-worker fine-tune trains in the trial's own process); Ray
     started before the clock, Tune's start-up inside it.
   - baseline (plain PyTorch script): `AutoModelForSequenceClassification`, AdamW and BCE over
     pre-tokenized batches in this process, no Ray, then val/test forward passes and
     `save_pretrained`.
   - `--ray-train`: also a Tune trial that trains through a one-worker Ray Train run
     (`orchestrator.train.fit_finetune`), the path one-worker fine-tunes took before.
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

    .venv/bin/python bench/trials.py [--part finetune|grid|stage|all] [--rows 96] [--ray-train]

With `--repeats` > 1 the fine-tune loops alternate and the medians are compared.
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
from typing import Any

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
    """The finetune settings every loop shares (a `FinetuneFamily` is built from it for Ray)."""

    def __init__(self, epochs: int, batch_size: int, max_length: int, validate_every: int):
        self.epochs, self.batch_size, self.max_length = epochs, batch_size, max_length
        self.validate_every = validate_every
        self.learning_rate = 5e-5

    def config(self, **extra: Any) -> Any:
        from config.trials import FinetuneFamily

        return FinetuneFamily(
            name="ft", model=MODEL, max_length=self.max_length, epochs=self.epochs,
            learning_rate=self.learning_rate, batch_size=self.batch_size,
            validate_every=self.validate_every, **extra,
        )  # fmt: skip


def split_rows(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list]:
    """Train, val and test tables (`--rows`, `--eval-rows` each) of real patents, with ids."""
    df, labels = load_rows(args.rows + 2 * args.eval_rows)
    df.insert(0, "id", [f"p{i:05d}" for i in range(len(df))])
    n = args.rows
    parts = (df.iloc[:n], df.iloc[n : n + args.eval_rows], df.iloc[n + args.eval_rows :])
    return (*[p.reset_index(drop=True) for p in parts], labels)


def plain_loop(
    train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, labels: list[str], fam: Family
) -> dict:
    """Baseline: what one trial has to do, as a minimal PyTorch script in this process: load the
    model, tokenize, train (AdamW, BCE, pre-tokenized batches), score val and test, save."""
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
    y = torch.from_numpy(label_matrix(train, labels))
    texts = train["text"].tolist()

    def encode(batch: list[str]) -> Any:
        return tok(batch, truncation=True, max_length=fam.max_length, padding=True,
                   return_tensors="pt")  # fmt: skip

    bs = fam.batch_size
    batches = [(encode(texts[s : s + bs]), y[s : s + bs]) for s in range(0, len(texts), bs)]
    opt = torch.optim.AdamW(model.parameters(), lr=fam.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    epoch_rates = []
    t_train = time.perf_counter()
    for _ in range(fam.epochs):
        t0 = time.perf_counter()
        for enc, yb in batches:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(**enc).logits, yb).backward()
            opt.step()
        epoch_rates.append(len(texts) / (time.perf_counter() - t0))
    train_s = time.perf_counter() - t_train
    model.eval()
    with torch.no_grad():
        for table in (val, test):
            rows = table["text"].tolist()
            for s in range(0, len(rows), 32):
                torch.sigmoid(model(**encode(rows[s : s + 32])).logits)
    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out)
    return {
        "samples_per_s": float(np.mean(epoch_rates[1:] or epoch_rates)),
        "epoch_samples_per_s": epoch_rates,
        "wall_s": time.perf_counter() - started,
        "train_s": train_s,
        "threads": torch.get_num_threads(),
    }


def real_only_grid(family: dict, n_train: int, **trials: Any) -> tuple[list, dict]:
    """The cells and families of a one-family real_only study on `n_train` real patents."""
    from config import StudyConfig
    from tasks.trials.grid import expand_grid

    cfg = StudyConfig.model_validate({
        "study": "bench",
        "data": {"source": {"path": str(DATA)}, "regimes": [{"name": "real", "size": n_train}]},
        "trials": {"families": [family], "arms": ["real_only"], **trials},
    })  # fmt: skip
    return expand_grid(cfg, corpora=[]), {f.name: f for f in cfg.trials.families}


def synthpat_trials(
    train: pd.DataFrame,
    val: pd.DataFrame,
    test: pd.DataFrame,
    labels: list[str],
    fam: Family,
    args: argparse.Namespace,
) -> dict:
    """`--trials` real_only fine-tune cells (seeds 0..) through `run_grid`, what `synthpat
    trials` runs, one at a time with every CPU: each builds its mix, tokenizes (cached), trains,
    tunes thresholds on val, scores val/test/nDCG, writes its checkpoint and done marker. Ray is
    started before the clock (a stage cost, paid once); Tune's start-up is inside it."""
    import ray

    from orchestrator.trials_tune import GridRun, collect, run_grid
    from tasks.trials.inputs import EvalData, TrialInputs, TrialSettings

    work = Path(tempfile.mkdtemp(prefix="bench-ft-"))
    shared = EvalData(labels=labels, names=labels, val=val, test=test, cache_dir=str(work / "c"))
    data = TrialInputs(shared, real={"real": train})
    cells, families = real_only_grid(
        fam.config().model_dump(), len(train), seeds=list(range(args.trials)), attentions=["sdpa"]
    )
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=300 * 1024 * 1024)  # fmt: skip
    try:
        t0 = time.perf_counter()
        run = GridRun(done_dir=str(work / "done"), train_storage=str(work / "train"),
                      settings=TrialSettings(cpus=args.cpus))  # fmt: skip
        out = run_grid(cells, data, families, run, storage_path=str(work / "tune"),
                       name="grid", max_failures=0)  # fmt: skip
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    rows = [r for t, o in out.items() if (r := collect(work / "done", t, o)) is not None]
    assert len(rows) == len(cells), [o.error for o in out.values() if o.error]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "wall_s": wall / len(rows),
        "train_s": float(np.mean([r.train_seconds for r in rows])),
        "test_micro_f1": float(np.mean([r.test_micro_f1 for r in rows])),
        "n": len(rows),
    }


def ray_train_trial(
    train: pd.DataFrame, val: pd.DataFrame, labels: list[str], fam: Family, cpus: int
) -> dict:
    """The path one-worker fine-tunes took before 2026-12-02 (multi-worker ones still do): a
    Tune trial that starts a Ray Train run of one worker holding every core
    (`orchestrator.train.fit_finetune`: controller, worker group, checkpoint hand-back, load)."""
    import ray
    from ray import tune

    from orchestrator.train import fit_finetune

    family = fam.config()
    work = Path(tempfile.mkdtemp(prefix="bench-trials-"))

    def trial(config: dict) -> None:
        clf = fit_finetune(
            family, train, val, labels, "bce", "fp32", "sdpa", 0, work / "cache", work / "train",
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
    shutil.rmtree(work, ignore_errors=True)
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
    train, val, test, labels = split_rows(args)
    fam = Family(args.epochs, args.batch_size, args.max_length, args.validate_every or args.epochs)
    print(f"finetune: {len(train)} train / {len(val)} val / {len(test)} test patents, "
          f"{len(labels)} labels, MiniLM, batch {fam.batch_size}, max_length {fam.max_length}, "
          f"{fam.epochs} epochs (synthpat validates every {fam.validate_every}), "
          f"{args.cpus} CPUs")  # fmt: skip
    plain_loop(train.head(16), val.head(8), test.head(8), labels, fam)  # imports, file cache
    bases, trials, olds = [], [], []
    for _ in range(args.repeats):  # alternate, so load from elsewhere hits both sides alike
        bases.append(plain_loop(train, val, test, labels, fam))
        _print("baseline plain PyTorch script", bases[-1])
        trials.append(synthpat_trials(train, val, test, labels, fam, args))
        t = trials[-1]
        print(f"  synthpat trial (run_grid, {t['n']} trials): {t['wall_s']:.1f} s per trial "
              f"end to end, {t['train_s']:.1f} s inside the recipe, "
              f"test micro-F1 {t['test_micro_f1']:.3f}")  # fmt: skip
        if args.ray_train:
            olds.append(ray_train_trial(train, val, labels, fam, args.cpus))
            _print("Ray Train one-worker trial (before)", olds[-1])
    base_wall = float(np.median([b["wall_s"] for b in bases]))
    trial_wall = float(np.median([t["wall_s"] for t in trials]))
    print(f"  median end-to-end wall per trial: plain {base_wall:.1f} s, synthpat "
          f"{trial_wall:.1f} s; ratio plain/synthpat {base_wall / trial_wall:.2f} "
          f"(target >= 0.8)")  # fmt: skip
    if olds:
        old_wall = float(np.median([o["wall_s"] for o in olds]))
        print(f"  Ray Train one-worker trial (before): {old_wall:.1f} s; ratio plain/before "
              f"{base_wall / old_wall:.2f}")  # fmt: skip


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

    from orchestrator.trials_tune import GridRun, collect, run_grid
    from tasks.embeddings import encode_texts, load_encoder
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
    cells, families = real_only_grid(
        family, len(train), seeds=list(range(args.seeds)), losses=LOSSES
    )
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
    p.add_argument("--rows", type=int, default=96, help="fine-tune training rows")
    p.add_argument("--eval-rows", type=int, default=128, help="val and test rows each")
    p.add_argument("--trials", type=int, default=2, help="synthpat fine-tune trials per repeat")
    p.add_argument("--ray-train", action="store_true", help="also time the Ray Train path")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument(
        "--validate-every",
        type=int,
        help="synthpat's val pass every N epochs (default: --epochs, only after the last, as the "
        "plain script scores val once)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
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
