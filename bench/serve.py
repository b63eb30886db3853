"""Serving load test: Ray Serve with dynamic batching against an unbatched plain FastAPI server.

Same model, same API code (`serve.api.create_api`), same texts, same run, loopback only:

- batched: `synthpat serve`'s application (Ray Serve HTTP proxy -> replica, `@serve.batch`).
- baseline: the same FastAPI app under one uvicorn process, one model call per request.

Each client sends one real test patent per request. Per concurrency level (1, 8, 32 clients) it
sends at most `--requests` requests and stops after `--seconds`, whichever comes first; it prints
requests/s, p50/p99 latency, the count of 5xx answers, and the batched/baseline ratios.

    .venv/bin/python bench/serve.py [--family frozen_head|tfidf_linear] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
PATENTS = ROOT.parent / "shared" / "data" / "uspto-9k" / "patents.jsonl"
TRIAL = {"frozen_head": "t003-head", "tfidf_linear": "t000-c10"}


async def load(url: str, texts: list[str], clients: int, max_requests: int, seconds: float):
    """`clients` concurrent loops posting one text each; latencies (s), statuses, elapsed (s)."""
    import httpx

    latencies: list[float] = []
    statuses: list[int] = []
    sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(ac: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            text = texts[sent % len(texts)]
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await ac.post("/v1/classify", json={"texts": [text]})
                statuses.append(r.status_code)
            except httpx.HTTPError:
                statuses.append(599)  # no answer counts as a server failure
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as ac:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(ac) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return np.array(latencies), statuses, elapsed


def measure(url: str, texts: list[str], levels: list[int], args) -> list[dict]:
    import httpx

    asyncio.run(load(url, texts, 4, 16, 30.0))  # warm-up: first calls load lazy parts
    # The HTTP path alone (no model): what each request pays before any inference.
    hops = []
    with httpx.Client(base_url=url, timeout=30.0) as c:
        for _ in range(30):
            t0 = time.perf_counter()
            c.get("/healthz")
            hops.append(time.perf_counter() - t0)
    print(f"  GET /healthz (no model), 1 client: p50 {np.median(hops) * 1000:.1f} ms", flush=True)
    out = []
    for clients in levels:
        lat, statuses, elapsed = asyncio.run(load(url, texts, clients, args.requests, args.seconds))
        row = {
            "clients": clients,
            "requests": len(lat),
            "rps": len(lat) / elapsed,
            "p50_ms": float(np.percentile(lat, 50) * 1000),
            "p99_ms": float(np.percentile(lat, 99) * 1000),
            "non_200": sum(s != 200 for s in statuses),
            "5xx": sum(s >= 500 for s in statuses),
        }
        print(
            f"  {clients:>3} clients: {row['requests']:>4} req, {row['rps']:7.1f} req/s, "
            f"p50 {row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, 5xx {row['5xx']}",
            flush=True,
        )
        out.append(row)
    return out


def baseline_server(checkpoint: str, port: int) -> None:
    """The baseline process: the same API, one model call per request, plain uvicorn."""
    import uvicorn

    from serve.api import ApiSettings, create_api
    from serve.server import ClassifierServer

    server = ClassifierServer({"checkpoint": checkpoint, "trial_id": Path(checkpoint).name})

    async def infer(texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(server.predict_proba, texts)

    app = create_api(server, infer, ApiSettings())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def run_baseline(checkpoint: Path, texts, levels, args) -> list[dict]:
    from serve.launch import free_port, wait_ready

    port = free_port()
    cmd = [sys.executable, __file__, "--baseline-server", str(checkpoint), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", 300)
        return measure(f"http://127.0.0.1:{port}", texts, levels, args)
    finally:
        proc.terminate()
        proc.wait(30)


def run_serve(run_dir: Path, trial: str, texts, levels, args) -> dict[str, list[dict]]:
    """Ray Serve batched, then the same live deployment reconfigured to max_batch_size=1."""
    import ray
    from ray import serve

    from orchestrator.config.serve import ServeConfig
    from serve.app import build_app
    from serve.launch import APP_NAME, free_port, start_server, stop_server
    from serve.select import select_checkpoint

    cfg = ServeConfig(
        num_cpus=args.replica_cpus,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait,
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=300 << 20)
    out = {}
    try:
        running = start_server(run_dir, cfg, checkpoint=trial, host="127.0.0.1", port=free_port())
        print(f"batched: Ray Serve, max_batch_size={args.max_batch_size}, wait={args.batch_wait}s")
        out["batched"] = measure(running.url, texts, levels, args)
        # Same replica, user_config only: isolates what batching itself buys from Serve's hop.
        one = cfg.model_copy(update={"max_batch_size": 1, "batch_wait_timeout_s": 0.0})
        serve.run(build_app(one, select_checkpoint(run_dir, trial_id=trial)), name=APP_NAME)
        print("unbatched Serve: the same deployment with max_batch_size=1")
        out["serve_unbatched"] = measure(running.url, texts, levels, args)
    finally:
        stop_server()
        ray.shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(TRIAL), default="frozen_head")
    p.add_argument("--requests", type=int, default=400, help="Most requests per level.")
    p.add_argument("--seconds", type=float, default=60.0, help="Longest time per level.")
    p.add_argument("--levels", default="1,8,32")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-wait", type=float, default=0.01)
    p.add_argument("--replica-cpus", type=float, default=2)
    p.add_argument(
        "--baseline-last", action="store_true", help="Measure Serve first (checks load drift)."
    )
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "serve")
    p.add_argument("--baseline-server", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server, args.port)
        return

    from serve.demo import make_demo_run

    levels = [int(x) for x in args.levels.split(",")]
    head = "embedded:minilm-l6" if args.family == "frozen_head" else None
    demo = make_demo_run(args.work, PATENTS, n_train=300, n_test=64, frozen_head=head)
    trial = TRIAL[args.family]
    checkpoint = demo.run_dir / "trials" / "checkpoints" / trial
    texts = demo.test_texts
    print(f"model {trial} ({args.family}); {len(texts)} real test patents, one per request")
    served = run_serve(demo.run_dir, trial, texts, levels, args) if args.baseline_last else None
    print("baseline: plain FastAPI + uvicorn, one model call per request")
    base = run_baseline(checkpoint, texts, levels, args)
    served = served or run_serve(demo.run_dir, trial, texts, levels, args)
    batched = served["batched"]
    print("ratios (batched / baseline):")
    for b, s in zip(base, batched, strict=True):
        print(
            f"  {b['clients']:>3} clients: req/s x{s['rps'] / b['rps']:.2f}, "
            f"p99 x{s['p99_ms'] / b['p99_ms']:.2f}"
        )
    total_5xx = sum(r["5xx"] for r in base + batched)
    for b, s in zip(served["serve_unbatched"], batched, strict=True):
        print(
            f"  {b['clients']:>3} clients: batched / unbatched Serve: "
            f"req/s x{s['rps'] / b['rps']:.2f}, p99 x{s['p99_ms'] / b['p99_ms']:.2f}"
        )
    total_5xx += sum(r["5xx"] for r in served["serve_unbatched"])
    print(f"5xx across the run: {total_5xx}")
    result = {"family": args.family, "baseline": base, **served, "5xx": total_5xx}
    (args.work / f"result-{args.family}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
