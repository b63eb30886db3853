"""Encoder forward-pass size: synthpat's device default against sentence-transformers' default.

Real patents (`../shared/data/uspto-9k`, title + abstract, up to `--max-length` tokens) through
the embedded MiniLM encoder with `tasks.embeddings.encode_texts`, in this process, on all cores:

- bulk: `--rows` texts in one call, as the fidelity and trials embedding caches do
  (sentence-transformers sorts them by length, then runs passes of `batch_size`);
- serve: calls of `--serve-batch` texts each, as one Ray Serve batch of concurrent requests
  (mixed lengths in every call);
- single: one text per call, as the unbatched serving baseline.

Compared, in one run: the forward-pass sizes in `--sizes`, against the baseline
`sentence-transformers` default of 32 texts per pass (`SentenceTransformer.encode`). texts/s is
the median of `--repeats` timed runs after one warm-up call.

    .venv/bin/python bench/encoder.py [--rows 256] [--repeats 2] [--sizes 4,8,16,32,64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "uspto-9k" / "patents.jsonl"
BASELINE = 32  # SentenceTransformer.encode's own default batch_size


def _texts(n: int) -> list[str]:
    import pandas as pd

    df = pd.read_json(DATA, lines=True, nrows=n + 200)
    df = df[df.abstract.str.len() > 0].head(n)
    return (df.title + ". " + df.abstract).tolist()


def _rate(fn, n_texts: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(n_texts / (time.perf_counter() - t0))
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256, help="texts in the bulk case")
    ap.add_argument("--serve-batch", type=int, default=32, help="texts per call, serve case")
    ap.add_argument("--sizes", default="4,8,16,32,64", help="forward-pass sizes to compare")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    from tasks.embeddings import encode_texts, forward_batch_size, load_encoder

    texts = _texts(args.rows)
    enc = load_encoder("embedded:minilm-l6", args.max_length)
    default = forward_batch_size(enc.device)
    sizes = sorted({int(s) for s in args.sizes.split(",")} | {BASELINE, default})
    encode_texts(texts[:16], enc)  # warm-up
    calls = [texts[i : i + args.serve_batch] for i in range(0, len(texts), args.serve_batch)]
    print(
        f"MiniLM-L6, {len(texts)} real patents, max {args.max_length} tokens, "
        f"{torch.get_num_threads()} threads, device {enc.device}; "
        f"synthpat's default pass: {default}"
    )
    results: dict[str, dict[int, float]] = {"bulk": {}, "serve": {}}
    for size in sizes:
        results["bulk"][size] = _rate(
            lambda s=size: encode_texts(texts, enc, batch_size=s), len(texts), args.repeats
        )
        results["serve"][size] = _rate(
            lambda s=size: [encode_texts(c, enc, batch_size=s) for c in calls],
            len(texts),
            args.repeats,
        )
    few = texts[:64]
    single = _rate(lambda: [encode_texts([t], enc) for t in few], len(few), args.repeats)
    for case, by_size in results.items():
        print(f"{case}:")
        for size, rate in by_size.items():
            tag = {BASELINE: " (baseline)", default: " (synthpat default)"}.get(size, "")
            print(f"  {size:3d} per pass {rate:7.1f} texts/s  x{rate / by_size[BASELINE]:.2f}{tag}")
    print(f"single: {single:7.1f} texts/s (one text per call)")
    print(
        f"default / baseline: bulk x{results['bulk'][default] / results['bulk'][BASELINE]:.2f}, "
        f"serve x{results['serve'][default] / results['serve'][BASELINE]:.2f}"
    )


if __name__ == "__main__":
    main()
