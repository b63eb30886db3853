"""MMD^2 permutation test: blockwise (tasks.fidelity.mmd) against a full-matrix baseline.

Same data in one run: two 10k x 384 float samples (unit-normalized like sentence embeddings, the
second slightly shifted), 1,000 permutations, median-heuristic bandwidth.

- blockwise: `tasks.fidelity.mmd.mmd_test`, K never stored, all permutations as one matrix product
  per kernel block.
- baseline (full matrix): the straightforward implementation: K = exp(-cdist^2 / 2s^2) for the
  pooled 20k rows in float64, then per permutation the unbiased MMD^2 from index sums of K.
  It is far too slow for 1,000 permutations, so it runs `--baseline-permutations` of them and the
  total is extrapolated linearly (the per-permutation cost is constant); the printout says so.

Each method runs in its own child process so its peak resident memory (ru_maxrss) is its own.

    .venv/bin/python bench/fidelity.py [--n 10000] [--permutations 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.normal(size=(n, dim)).astype(np.float32)
    y[:, :8] += 0.15  # a small real shift, so the test has something to find
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x, y


def _blockwise(n: int, dim: int, permutations: int) -> dict:
    from tasks.fidelity.mmd import mmd_test

    x, y = _data(n, dim)
    t0 = time.perf_counter()
    res = mmd_test(x, y, permutations=permutations, progress=True)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "mmd2": res.mmd2, "p_value": res.p_value, "bw": res.bandwidths[0]}


def _full_matrix(n: int, dim: int, permutations: int, bandwidth: float) -> dict:
    from scipy.spatial.distance import cdist

    x, y = _data(n, dim)
    z = np.concatenate([x, y]).astype(np.float64)
    t0 = time.perf_counter()
    k = cdist(z, z, "sqeuclidean")
    k *= -1.0 / (2 * bandwidth**2)
    np.exp(k, out=k)
    np.fill_diagonal(k, 0.0)  # the unbiased estimator leaves out i == j
    t_kernel = time.perf_counter() - t0

    def stat(ix: np.ndarray, iy: np.ndarray) -> float:
        kxx = k[np.ix_(ix, ix)].sum() / (len(ix) * (len(ix) - 1))
        kyy = k[np.ix_(iy, iy)].sum() / (len(iy) * (len(iy) - 1))
        kxy = k[np.ix_(ix, iy)].sum() / (len(ix) * len(iy))
        return float(kxx + kyy - 2 * kxy)

    observed = stat(np.arange(n), np.arange(n, 2 * n))
    rng = np.random.default_rng(0)
    t1 = time.perf_counter()
    for _ in range(permutations):
        p = rng.permutation(2 * n)
        stat(p[:n], p[n:])
    per_perm = (time.perf_counter() - t1) / max(permutations, 1)
    return {"kernel_seconds": t_kernel, "per_permutation_seconds": per_perm, "mmd2": observed}


def _child(method: str, args: argparse.Namespace, bandwidth: float = 0.0) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
        "--permutations",
        str(args.permutations),
        "--baseline-permutations",
        str(args.baseline_permutations),
        "--bandwidth",
        str(bandwidth),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="Rows per sample.")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--baseline-permutations", type=int, default=5)
    ap.add_argument("--worker", choices=["blockwise", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--bandwidth", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        res = (
            _blockwise(args.n, args.dim, args.permutations)
            if args.worker == "blockwise"
            else _full_matrix(args.n, args.dim, args.baseline_permutations, args.bandwidth)
        )
        res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return

    print(f"MMD^2, {args.n} x {args.n} rows, {args.dim}-d, {args.permutations} permutations")
    blk = _child("blockwise", args)
    print(
        f"  blockwise : {blk['seconds']:.1f} s, peak RSS {blk['peak_rss_mib']:.0f} MiB, "
        f"MMD^2={blk['mmd2']:.3e}, p={blk['p_value']:.4f}"
    )
    full = _child("full", args, bandwidth=blk["bw"])
    total = full["kernel_seconds"] + full["per_permutation_seconds"] * args.permutations
    print(
        f"  full matrix: kernel {full['kernel_seconds']:.1f} s + "
        f"{full['per_permutation_seconds']:.2f} s/permutation (measured on "
        f"{args.baseline_permutations}, extrapolated to {args.permutations}) = {total:.0f} s, "
        f"peak RSS {full['peak_rss_mib']:.0f} MiB, MMD^2={full['mmd2']:.3e}"
    )
    rel = abs(full["mmd2"] - blk["mmd2"]) / abs(full["mmd2"])
    print(f"  same statistic: relative difference {rel:.1e}")
    print(
        f"  ratio: blockwise is {total / blk['seconds']:.0f}x faster and uses "
        f"{full['peak_rss_mib'] / blk['peak_rss_mib']:.1f}x less memory"
    )


if __name__ == "__main__":
    main()
