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

Then the backends (`--backends`): the ONNX Runtime encoder (`tasks.onnx_encoder`, fp32 and the
int8 dynamically quantized one) against sentence-transformers on torch, on the same texts and
the same passes (synthpat's default size and the baseline's, bulk and serve, and single): texts/s,
the ratio to torch, the largest absolute difference of the vectors from torch's and, for int8,
their mean cosine to torch's. The exports are made (or found) before any timing.

    .venv/bin/python bench/encoder.py [--rows 256] [--repeats 2] [--sizes 4,8,16,32,64]
                                      [--backends onnx,int8]
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
    ap.add_argument("--backends", default="onnx,int8", help="ONNX encoders against torch; '' none")
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
    backends = [b for b in args.backends.split(",") if b]
    if backends:
        torch_rates = {**{f"bulk {s}": results["bulk"][s] for s in (default, BASELINE)}}
        torch_rates |= {f"serve {s}": results["serve"][s] for s in (default, BASELINE)}
        torch_rates["single"] = single
        compare_backends(texts, calls, enc, torch_rates, backends, args)


def _cases(texts: list[str], calls: list[list[str]], enc, sizes: tuple[int, ...]) -> dict:
    """Case name -> (call, texts it embeds): bulk and serve at each size, and single."""
    from tasks.embeddings import encode_texts

    cases = {}
    for size in sizes:
        cases[f"bulk {size}"] = (lambda s=size: encode_texts(texts, enc, batch_size=s), len(texts))
        cases[f"serve {size}"] = (
            lambda s=size: [encode_texts(c, enc, batch_size=s) for c in calls],
            len(texts),
        )
    cases["single"] = (lambda: [encode_texts([t], enc) for t in texts[:64]], len(texts[:64]))
    return cases


def compare_backends(
    texts: list[str], calls: list[list[str]], torch_enc, torch_rates: dict, backends, args
) -> None:
    """ONNX Runtime (fp32, int8) against the torch rates measured above, on the same cases."""
    import numpy as np

    from tasks.embeddings import encode_texts, forward_batch_size, load_encoder

    reference = encode_texts(texts, torch_enc)
    sizes = (forward_batch_size("cpu"), BASELINE)
    for name in backends:
        quantize = {"onnx": "none", "int8": "int8"}[name]
        t0 = time.perf_counter()
        enc = load_encoder("embedded:minilm-l6", args.max_length, "cpu", "onnx", quantize)
        ready = time.perf_counter() - t0
        vecs = encode_texts(texts, enc)  # also the warm-up
        diff = float(np.abs(vecs - reference).max())
        cosine = float((vecs * reference).sum(axis=1).mean())
        print(
            f"{name} (ONNX Runtime, {'int8' if quantize == 'int8' else 'fp32'}): export found or "
            f"made in {ready:.1f} s; max abs diff to torch {diff:.2e}, mean cosine {cosine:.5f}"
        )
        for case, (fn, n) in _cases(texts, calls, enc, sizes).items():
            rate = _rate(fn, n, args.repeats)
            base = torch_rates[case]
            print(f"  {case:9s} {rate:7.1f} texts/s  torch {base:7.1f}  x{rate / base:.2f}")


if __name__ == "__main__":
    main()
