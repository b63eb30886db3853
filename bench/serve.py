"""Serving load test: Ray Serve with dynamic batching against an unbatched plain FastAPI server.

Same model, same API code (`serve.api.create_api`), same texts, same run, loopback only:

- baseline: the same FastAPI app under one uvicorn process, one model call per request;
- batched: `synthpat serve`'s application (`@serve.batch`; behind HAProxy, or Ray Serve's HTTP
  proxy with `--ingress proxy`);
- Serve unbatched: the same live deployment reconfigured to max_batch_size=1.

Before the servers start, the ceiling: the same model alone (`ClassifierServer.predict_proba`, no
HTTP) on the same texts in bulk, on the same cores, two ways: one process with a torch thread per
core, and one process per core with one thread each (all at once). The better of the two is what
the encoder can do here; the script prints served req/s at each level against it.

Each client sends one real test patent per request. The three servers run side by side and are
measured in interleaved rounds (baseline, batched, unbatched, again ...), so that a shared
machine's changing load falls on all three alike. Per concurrency level (1, 8, 32 clients) each
server gets at most `--requests` requests and `--seconds`; the script prints requests/s, p50/p99
latency, the count of 5xx answers, and the ratios.

    .venv/bin/python bench/serve.py [--family frozen_head|tfidf_linear] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the demo run builder (tests/demo_run.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
PATENTS = ROOT.parent / "shared" / "data" / "uspto-9k" / "patents.jsonl"
TRIAL = {"frozen_head": "t003-head", "tfidf_linear": "t000-c10"}


async def load(url: str, texts: list[str], clients: int, max_requests: int, seconds: float):
    """`clients` concurrent loops posting one text each; latencies (s), statuses, elapsed (s),
    and this process's CPU seconds.

    aiohttp, not httpx: the load generator runs on the same cores as the servers, and at 32
    clients httpx took 2.0-2.4 ms of CPU a request against aiohttp's 0.4 (BENCHMARKS.md, serve).
    aiohttp comes with ray[serve]."""
    import aiohttp

    latencies: list[float] = []
    statuses: list[int] = []
    sent = 0
    deadline = time.perf_counter() + seconds
    endpoint = f"{url}/v1/classify"

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            text = texts[sent % len(texts)]
            sent += 1
            t0 = time.perf_counter()
            try:
                async with session.post(endpoint, json={"texts": [text]}) as r:
                    await r.read()
                    statuses.append(r.status)
            except (TimeoutError, aiohttp.ClientError):
                statuses.append(599)  # no answer counts as a server failure
            latencies.append(time.perf_counter() - t0)

    timeout = aiohttp.ClientTimeout(total=120.0)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as s:
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(s) for _ in range(clients)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return np.array(latencies), statuses, elapsed, cpu


def summarize(
    clients: int, lat: list[float], statuses: list[int], elapsed: float, client_cpu: float
) -> dict:
    arr = np.array(lat)
    return {
        "clients": clients,
        "requests": len(arr),
        "rps": len(arr) / elapsed,
        # The load generator runs on the same cores as the servers: its CPU per request is
        # taken from what the servers could use.
        "client_cpu_ms": float(client_cpu / max(len(arr), 1) * 1000),
        "p50_ms": float(np.percentile(arr, 50) * 1000),
        "p99_ms": float(np.percentile(arr, 99) * 1000),
        "non_200": sum(s != 200 for s in statuses),
        "5xx": sum(s >= 500 for s in statuses),
    }


def http_path_ms(url: str) -> float:
    """Median latency of GET /healthz: what each request pays before any inference."""
    import httpx

    hops = []
    with httpx.Client(base_url=url, timeout=30.0) as c:
        for _ in range(30):
            t0 = time.perf_counter()
            c.get("/healthz")
            hops.append(time.perf_counter() - t0)
    return float(np.median(hops) * 1000)


def ceiling_worker(checkpoint: str, threads: int, texts_file: str, go_file: str) -> None:
    """One process of the ceiling: the model alone in bulk (one call over its texts, which the
    encoder sorts by length and runs in passes), `threads` torch threads; starts when `go_file`
    exists (so that every process of a round is loaded first), prints texts/s of 2 repeats."""
    import torch

    from serve.server import ClassifierServer

    torch.set_num_threads(threads)
    server = ClassifierServer({"checkpoint": checkpoint, "trial_id": Path(checkpoint).name})
    texts = json.loads(Path(texts_file).read_text())
    server.predict_proba(texts[:8])  # warm-up
    print("loaded", flush=True)
    while not Path(go_file).exists():
        time.sleep(0.01)
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        server.predict_proba(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    print(json.dumps({"texts_per_s": max(rates), "seconds": len(texts) / max(rates)}), flush=True)


def ceiling(checkpoint: Path, texts: list[str], work: Path, repeat: int = 4) -> dict:
    """The model alone on these cores: {one process, N threads; N processes, 1 thread}: texts/s."""
    cores = len(os.sched_getaffinity(0))
    out = {}
    for name, procs, threads in (("1 process x all threads", 1, cores),
                                 (f"{cores} processes x 1 thread", cores, 1)):  # fmt: skip
        go = work / "ceiling.go"
        go.unlink(missing_ok=True)
        share = texts * repeat
        files, running = [], []
        for i in range(procs):
            f = work / f"ceiling-texts-{i}.json"
            f.write_text(json.dumps(share[i::procs]))
            cmd = [sys.executable, __file__, "--ceiling-worker", str(checkpoint)]
            cmd += ["--threads", str(threads), "--texts-file", str(f), "--go-file", str(go)]
            running.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True))
            files.append(f)
        for proc in running:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "loaded"
        t0 = time.perf_counter()
        go.touch()
        results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in running]
        # All processes ran at once: the round's rate is all texts over the slowest one's time.
        slowest = max(r["seconds"] for r in results)
        out[name] = len(share) / slowest
        wall = time.perf_counter() - t0
        print(f"ceiling, model alone, {name}: {out[name]:.1f} texts/s "
              f"({len(share)} texts, {wall:.1f}s for 2 repeats)")  # fmt: skip
        for f in files:
            f.unlink()
    go.unlink(missing_ok=True)
    return out


def baseline_server(checkpoint: str, port: int, gpus: float) -> None:
    """The baseline process: the same API, one model call per request, plain uvicorn."""
    import uvicorn

    from serve.api import ApiSettings, create_api
    from serve.server import ClassifierServer

    spec = {"checkpoint": checkpoint, "trial_id": Path(checkpoint).name, "num_gpus": gpus}
    server = ClassifierServer(spec)

    async def infer(texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(server.predict_proba, texts)

    app = create_api(server, infer, ApiSettings())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class ServeSide:
    """Two Serve apps on one local Ray: batched at /, the same deployment with max_batch_size=1
    at /unbatched. Side by side, not one reconfigured: a `serve.run` of a changed deployment
    replaces its replica, which would land in the measurement.
    """

    def __init__(self, run_dir: Path, trial: str, args):
        import ray
        from ray import serve

        from config.serve import ServeConfig
        from serve.app import build_app
        from serve.ingress import ray_env
        from serve.launch import start_server, wait_ready
        from serve.select import select_checkpoint
        from tasks.net import free_port

        cfg = ServeConfig(
            ingress=args.ingress,
            num_cpus=args.replica_cpus,
            num_gpus=args.replica_gpus,
            max_batch_size=args.max_batch_size,
            batch_wait_timeout_s=args.batch_wait,
            autoscaling={"min_replicas": args.replicas, "max_replicas": args.replicas},
        )
        # Logical CPUs: every replica gets `replica_cpus` (and as many torch threads; the
        # baseline process has as many threads as the machine has cores), on the same physical
        # cores. With --replica-gpus the replicas share the GPU(s) with the baseline process.
        replicas = 2 * args.replicas
        os.environ.update(ray_env(args.ingress))  # Serve reads its front where Ray starts
        ray.init(
            address="local",
            num_cpus=math.ceil(replicas * args.replica_cpus) + 1,
            num_gpus=math.ceil(replicas * args.replica_gpus) if args.replica_gpus else None,
            include_dashboard=False,
            object_store_memory=300 << 20,
        )
        port = free_port()
        running = start_server(run_dir, cfg, trial, host="127.0.0.1", port=port)
        self.url = running.url
        print(f"Serve front: {running.ingress} (--ingress {args.ingress})")
        one = cfg.model_copy(update={"max_batch_size": 1, "batch_wait_timeout_s": 0.0})
        selection = select_checkpoint(run_dir, trial_id=trial)
        serve.run(build_app(one, selection), name="unbatched", route_prefix="/unbatched")
        self.unbatched_url = f"{self.url}/unbatched"
        wait_ready(self.unbatched_url)

    def close(self) -> None:
        import ray
        from ray import serve

        from serve.launch import stop_server

        serve.delete("unbatched")
        stop_server()
        ray.shutdown()


def run_all(checkpoint: Path, run_dir: Path, trial: str, texts, levels, args) -> dict:
    import httpx

    from serve.launch import wait_ready
    from tasks.net import free_port

    port = free_port()
    cmd = [sys.executable, __file__, "--baseline-server", str(checkpoint), "--port", str(port)]
    cmd += ["--replica-gpus", str(args.replica_gpus)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    side = None
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, 300)
        side = ServeSide(run_dir, trial, args)
        servers = {"baseline": base_url, "batched": side.url, "serve_unbatched": side.unbatched_url}
        for name, url in servers.items():
            asyncio.run(load(url, texts, 4, 16, 30.0))  # warm-up: lazy parts load on first calls
            device = httpx.get(f"{url}/v1/model", timeout=30).json()["device"]
            print(
                f"{name}: model on {device}; GET /healthz p50 {http_path_ms(url):.1f} ms "
                "(the HTTP path alone)"
            )
        out: dict[str, list[dict]] = {name: [] for name in servers}
        per_round = max(1, args.requests // args.rounds)
        for clients in levels:
            acc = {name: ([], [], 0.0, 0.0) for name in servers}
            for _ in range(args.rounds):
                for name, url in servers.items():
                    lat, st, el, cpu = asyncio.run(
                        load(url, texts, clients, per_round, args.seconds / args.rounds)
                    )
                    a = acc[name]
                    acc[name] = (a[0] + list(lat), a[1] + st, a[2] + el, a[3] + cpu)
            for name in servers:
                row = summarize(clients, *acc[name])
                out[name].append(row)
                print(
                    f"  {clients:>3} clients {name:>15}: {row['requests']:>4} req, "
                    f"{row['rps']:7.1f} req/s, p50 {row['p50_ms']:7.1f} ms, "
                    f"p99 {row['p99_ms']:7.1f} ms, 5xx {row['5xx']}, "
                    f"client CPU {row['client_cpu_ms']:.1f} ms/req",
                    flush=True,
                )
        return out
    finally:
        if side is not None:
            side.close()
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(TRIAL), default="frozen_head")
    p.add_argument("--requests", type=int, default=300, help="Most requests per level and server.")
    p.add_argument("--seconds", type=float, default=60.0, help="Longest time per level and server.")
    p.add_argument("--rounds", type=int, default=3, help="Interleaved rounds per level.")
    p.add_argument("--levels", default="1,8,32")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-wait", type=float, default=0.01)
    p.add_argument("--replica-cpus", type=float, default=2)
    p.add_argument("--replicas", type=int, default=1, help="Replicas per Serve app.")
    p.add_argument(
        "--ingress",
        choices=["auto", "haproxy", "proxy"],
        default="auto",
        help="Serve's HTTP front (serve.ingress): HAProxy in throughput mode, or Ray's proxy.",
    )
    p.add_argument(
        "--replica-gpus",
        type=float,
        default=0,
        help="GPU per replica (0.5 fits two replicas on one GPU); the baseline then uses it too.",
    )
    p.add_argument("--reuse", action="store_true", help="Reuse the trained model in --work.")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "serve")
    p.add_argument(
        "--no-ceiling", action="store_true", help="Skip the model-alone ceiling (a GPU run)."
    )
    p.add_argument("--baseline-server", help=argparse.SUPPRESS)
    p.add_argument("--ceiling-worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--texts-file", help=argparse.SUPPRESS)
    p.add_argument("--go-file", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server, args.port, args.replica_gpus)
        return
    if args.ceiling_worker:
        ceiling_worker(args.ceiling_worker, args.threads, args.texts_file, args.go_file)
        return

    levels = [int(x) for x in args.levels.split(",")]
    trial = TRIAL[args.family]
    texts = _texts(args, trial)
    checkpoint = args.work / "trials" / "checkpoints" / trial
    print(f"model {trial} ({args.family}); {len(texts)} real test patents, one per request")
    limit = {} if args.no_ceiling else ceiling(checkpoint, texts, args.work)
    res = run_all(checkpoint, args.work, trial, texts, levels, args)
    print("ratios at each level (batched / baseline; batched / Serve unbatched):")
    for b, s, u in zip(res["baseline"], res["batched"], res["serve_unbatched"], strict=True):
        print(
            f"  {b['clients']:>3} clients: vs baseline req/s x{s['rps'] / b['rps']:.2f} "
            f"p99 x{s['p99_ms'] / b['p99_ms']:.2f}; vs Serve unbatched req/s "
            f"x{s['rps'] / u['rps']:.2f} p99 x{s['p99_ms'] / u['p99_ms']:.2f}"
        )
    if limit:
        best_way, best = max(limit.items(), key=lambda kv: kv[1])
        print(f"served req/s against the ceiling ({best:.1f} texts/s, {best_way}):")
        for b, s in zip(res["baseline"], res["batched"], strict=True):
            print(f"  {b['clients']:>3} clients: batched x{s['rps'] / best:.2f}, "
                  f"baseline x{b['rps'] / best:.2f}")  # fmt: skip
    total_5xx = sum(r["5xx"] for rows in res.values() for r in rows)
    print(f"5xx across the run: {total_5xx}")
    result = {"family": args.family, **res, "5xx": total_5xx, "ceiling_texts_per_s": limit}
    (args.work / f"result-{args.family}.json").write_text(json.dumps(result, indent=2) + "\n")


def _texts(args, trial: str) -> list[str]:
    """Real held-out patents; the model is trained unless --reuse finds it in --work."""
    from demo_run import make_demo_run

    saved = args.work / "test_texts.json"
    if args.reuse and saved.is_file() and (args.work / "trials" / "checkpoints" / trial).is_dir():
        return json.loads(saved.read_text())
    head = "embedded:minilm-l6" if args.family == "frozen_head" else None
    demo = make_demo_run(args.work, PATENTS, n_train=300, n_test=64, frozen_head=head)
    saved.write_text(json.dumps(demo.test_texts))
    return demo.test_texts


if __name__ == "__main__":
    main()
