"""Generation throughput: this pipeline against plain vLLM and transformers, same model and prompts.

Same prompts in one run: `--n` synthesis prompts planned by `tasks.prompts.plan_prompts` from real
uspto-9k abstracts, chat-templated, greedy decoding (so every method produces the same text, and
the same number of tokens, up to numerics), `--max-tokens` new tokens at most.

- (a) pipeline: `orchestrator.generation.run_generation`: Ray Data + `ray.data.llm` vLLM actor,
  Parquet shards, on a local Ray with 2 CPUs.
- (b) vllm: a plain offline script, `vllm.LLM(...).chat(all prompts)`.
- (c) hf_batched: transformers `generate` in left-padded batches of `--hf-batch`, on the first
  `--hf-n` prompts (default 64: a rate, as its batches do not speed up with more prompts).
- (d) hf_single: transformers `generate` one prompt at a time, on the first `--single-n` prompts
  (it is a rate; all prompts would take many minutes).

Times are end to end, from before the method's first heavy import (torch, vLLM, Ray) to the last
row in hand: imports, Ray start-up, model load and engine start-up included for every method
(the vLLM ones pay one engine start each); planning the prompts is not timed. Each method runs
in its own child process, one after another, so only one engine holds memory at a time. tokens/s
counts generated tokens only (up to end of sequence).

    .venv/bin/python bench/generation.py [--n 512] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "uspto-9k" / "patents.jsonl"
METHODS = ("pipeline", "vllm", "hf_batched", "hf_single")
_MARK = "BENCH_RESULT "


def _prompts(args: argparse.Namespace) -> list:
    import pandas as pd

    from tasks.cpc_names import label_name
    from tasks.prompts import plan_prompts

    real = pd.read_json(DATA, lines=True, nrows=400)
    real = real[real.abstract.str.len() > 200].head(96)
    real = pd.DataFrame({"id": real.id, "text": real.abstract, "labels": real.labels})
    names = {c: label_name(c) for labels in real.labels for c in labels}
    return plan_prompts(
        "bench",
        real,
        names,
        "synthesis",
        "plain",
        args.n,
        args.exemplars,
        0,
        seed=0,
        max_exemplar_words=args.exemplar_words,
    )


def _dtype() -> str:
    """One dtype for every method: `--dtype`, or what the pipeline's `auto` picks on this CPU
    (`orchestrator.generation.cpu_auto_dtype`)."""
    from orchestrator.generation import cpu_auto_dtype

    chosen = os.environ.get("BENCH_DTYPE", "auto")
    return cpu_auto_dtype() if chosen == "auto" else chosen


def _generator(args: argparse.Namespace):
    from config.generation import VllmGenerator

    return VllmGenerator(
        name="smol",
        model="embedded:smollm2-135m",
        dtype=_dtype(),
        max_model_len=2048,
        kv_cache_gib=1,
        enforce_eager=True,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        temperature=0.0,
        num_cpus_per_actor=args.actor_cpus,
        cpu_reserved_cores=args.reserved_cores,
    )


def run_pipeline(args: argparse.Namespace) -> dict:
    prompts = _prompts(args)
    t0 = time.perf_counter()
    import ray

    from orchestrator.generation import run_generation, templater_soon

    gen = _generator(args)
    templater = templater_soon(gen)  # as the generate stage does: it loads while Ray starts
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=300 << 20)
    all_in_flight = len(prompts) <= gen.batch_size * gen.max_concurrent_batches
    with tempfile.TemporaryDirectory() as tmp:
        out = run_generation(prompts, gen, Path(tmp), max_retries=0, templater=templater)
        seconds = time.perf_counter() - t0
    ok = out[out.status == "ok"]
    return {
        "rows": len(ok),
        "tokens": int(ok.output_tokens.sum()),
        "seconds": seconds,
        # Each row's gen_seconds is its batch's time in the engine; with every batch in flight
        # at once (batch_size x max_concurrent_batches >= --n) the longest is the generating
        # phase, the rest of the wall time start-up. With more rows, batches queue and there is
        # no such split.
        "generate_seconds": float(ok.gen_seconds.max()) if len(ok) and all_in_flight else None,
    }


def run_vllm(args: argparse.Namespace) -> dict:
    prompts = _prompts(args)
    t0 = time.perf_counter()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if args.reserved_cores is not None:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(args.reserved_cores)
    from vllm import LLM, SamplingParams

    from orchestrator.generation import cpu_engine_kwargs
    from tasks.models import resolve_model

    llm = LLM(
        model=resolve_model("embedded:smollm2-135m"),
        dtype=_dtype(),
        max_model_len=2048,
        enforce_eager=True,
        # The same engine settings as the pipeline's CPU actor (seeded rows need them).
        **cpu_engine_kwargs(2048),
    )
    t1 = time.perf_counter()
    params = [
        SamplingParams(temperature=0.0, max_tokens=args.max_tokens, seed=p.seed) for p in prompts
    ]
    outs = llm.chat([list(p.messages) for p in prompts], params, use_tqdm=True)
    t2 = time.perf_counter()
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"rows": len(outs), "tokens": tokens, "seconds": t2 - t0, "generate_seconds": t2 - t1}


def _hf(args: argparse.Namespace, batch: int, n: int) -> dict:
    prompts = _prompts(args)[:n]
    t0 = time.perf_counter()
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.models import resolve_model

    torch.set_num_threads(2)
    path = resolve_model("embedded:smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, _dtype())).eval()
    texts = [
        tok.apply_chat_template(list(p.messages), tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    tokens = 0
    with torch.inference_mode():
        for i in tqdm(range(0, len(texts), batch), desc=f"hf batch={batch}"):
            enc = tok(texts[i : i + batch], return_tensors="pt", padding=True)
            out = model.generate(
                **enc,
                max_new_tokens=args.max_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            # Count each row's tokens up to its end of sequence; the padding after it is not work
            # a caller asked for.
            for row in new.tolist():
                tokens += next(
                    (k + 1 for k, t in enumerate(row) if t == tok.eos_token_id), len(row)
                )
    return {"rows": len(texts), "tokens": tokens, "seconds": time.perf_counter() - t0}


def run_hf_batched(args: argparse.Namespace) -> dict:
    return _hf(args, args.hf_batch, args.hf_n or args.n)


def run_hf_single(args: argparse.Namespace) -> dict:
    return _hf(args, 1, args.single_n)


def _child(method: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--method", method, *_forward(args)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{method}: exit {proc.returncode}")
    # Ray and vLLM also print to stdout: the result is the line after the marker.
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(_MARK))
    res = json.loads(line[len(_MARK) :])
    res["tokens_per_s"] = res["tokens"] / res["seconds"]
    return res


def _forward(args: argparse.Namespace) -> list[str]:
    keys = ("n", "max_tokens", "batch_size", "hf_batch", "hf_n", "single_n", "actor_cpus")
    keys += ("reserved_cores", "exemplars", "exemplar_words")
    values = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    return [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--n",
        type=int,
        default=512,
        help="prompts; start-up (vLLM's ~30 s here, the pipeline's Ray ~14 s more) is a fixed "
        "cost, so small runs measure start-up more than generation",
    )
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32, help="pipeline rows per batch")
    ap.add_argument("--actor-cpus", type=float, default=1, help="CPUs of the pipeline's actor")
    ap.add_argument(
        "--reserved-cores",
        type=int,
        default=None,
        help="vllm-cpu cores kept free for the scheduler (default: vLLM's, one); 0 computes on all",
    )
    ap.add_argument("--exemplars", type=int, default=1, help="real abstracts shown in each prompt")
    ap.add_argument(
        "--exemplar-words",
        type=int,
        default=120,
        help="words kept of each exemplar (generation.exemplar_words; the quickstart's is 60)",
    )
    ap.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="every method's dtype; auto: the engine's rule for this CPU",
    )
    ap.add_argument("--hf-batch", type=int, default=32)
    ap.add_argument(
        "--hf-n",
        type=int,
        default=64,
        help="prompts for hf_batched (a rate: batches of --hf-batch do not speed up with more)",
    )
    ap.add_argument("--single-n", type=int, default=8)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["BENCH_DTYPE"] = args.dtype  # the children read it (_dtype)
    if args.method:  # child process: one method, its result as the last stdout line
        print(_MARK + json.dumps(globals()[f"run_{args.method}"](args)), flush=True)
        return
    results = {m: _child(m, args) for m in args.methods.split(",")}
    print(
        f"\n{args.n} prompts ({args.exemplars} exemplar(s) of <= {args.exemplar_words} words), "
        f"max {args.max_tokens} new tokens, greedy, SmolLM2-135M {_dtype()}"
    )
    for m, r in results.items():
        gen = r.get("generate_seconds")
        split = f"  ({r['seconds'] - gen:5.1f}s start, {gen:5.1f}s generating)" if gen else ""
        print(
            f"  {m:11s} {r['rows']:4d} rows {r['tokens']:6d} tokens {r['seconds']:7.1f}s "
            f"{r['tokens_per_s']:7.1f} tokens/s {r['rows'] / r['seconds']:6.3f} rows/s{split}"
        )
    a = results.get("pipeline")
    if a:
        targets = {"vllm": 0.9, "hf_batched": 1.2, "hf_single": 5.0}
        for m, target in targets.items():
            if m in results:
                ratio = a["tokens_per_s"] / results[m]["tokens_per_s"]
                print(f"  pipeline / {m:10s} = {ratio:5.2f}  (target >= {target})")
    out = ROOT / "bench" / "out" / "generation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
