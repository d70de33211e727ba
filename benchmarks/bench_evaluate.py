"""Benchmark: `evaluate` on 50,000 x 2048 with the default label-free set.

Prints the total time and the share of each metric and of each shared step (second
moments, spectra, k-means). Shared steps are timed once, where they are first needed;
a metric's own time excludes them.

    python benchmarks/bench_evaluate.py            # 50,000 x 2048, sample_size 10,000
    python benchmarks/bench_evaluate.py --quick    # 5,000 x 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sslwatch import evaluate


def make_embeddings(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered float32 embeddings with a power-law spectrum (a trained-encoder look)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d)) * 2.0
    z = centres[rng.integers(0, 20, n)] + rng.normal(size=(n, d))
    z *= np.arange(1, d + 1) ** -0.5
    return z.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n, d, sample = (5000, 256, 2000) if args.quick else (50000, 2048, 10000)
    z = make_embeddings(n, d)
    start = time.perf_counter()
    result = evaluate(z, sample_size=sample)
    total = time.perf_counter() - start
    print(f"evaluate on {n} x {d} float32, sample_size={sample}, {args.threads} threads")
    print(f"total {total:.2f} s")
    shared = {k: v for k, v in result.timings.items() if k not in result.records}
    nested = sum(shared.values())
    rows = [(k, v, "shared step") for k, v in shared.items()]
    for name, rec in result.records.items():
        own = rec.seconds
        rows.append((name, own, f"value {rec.value:.6g}"))
    print(f"{'step':<34}{'seconds':>9}{'share':>8}  note")
    for name, seconds, note in sorted(rows, key=lambda r: -r[1]):
        print(f"{name:<34}{seconds:>9.2f}{seconds / total:>8.1%}  {note}")
    print(f"shared steps total {nested:.2f} s; metric rows are their own time")


if __name__ == "__main__":
    main()
