"""Peak memory of ``sslwatch sweep`` over many rows: flat in N.

For N = 100k and 1M synthetic rows (8 features each, seeded Gaussian) and a tiny
encoder (``Linear(8, 256) -> GELU -> Linear(256, D)``, D = 256, so the forward pass is
cheap and the embeddings are wide), one checkpoint is swept with the default label-free
metrics and the default point sample (10,000 rows). Each N runs in a fresh process,
which first sweeps 2,000 rows (so every lazy import and allocator pool is in place),
then records its peak RSS (``ru_maxrss``), sweeps the N rows and records the peak again.

Printed per N: the input data's size (held by the data set, as for any sweep), the
N x D float32 matrix the in-memory route would have to hold, the peak RSS, the growth
of the peak during the N-row sweep, and the seconds. The streamed route keeps float64
second moments (D x D) and the sample (10,000 x D): the growth should not depend on N,
while the matrix grows tenfold.

Run: ``.venv/bin/python benchmarks/bench_sweep_memory.py`` (``--quick``: 10k and 50k rows,
D = 64, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

D_ENV = "SSLWATCH_BENCH_D"
IN_FEATURES = 8
WARMUP_ROWS = 2000


def encoder() -> nn.Module:
    """The tiny encoder (D from ``$SSLWATCH_BENCH_D``); importable by file path."""
    d = int(os.environ.get(D_ENV, "256"))
    return nn.Sequential(nn.Linear(IN_FEATURES, 256), nn.GELU(), nn.Linear(256, d))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child(n: int, batch_size: int) -> dict[str, float]:
    """One measurement in this (fresh) process; returns the figures."""
    from sslwatch.offline.data import Dataset
    from sslwatch.offline.sweep import SweepConfig, run_sweep

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "run" / "epoch_1.pt"
        ckpt.parent.mkdir()
        torch.save(encoder().state_dict(), ckpt)
        spec = f"{Path(__file__).resolve()}:encoder"

        def rows(count: int) -> torch.Tensor:
            gen = torch.Generator().manual_seed(count)
            return torch.randn(count, IN_FEATURES, generator=gen)

        def sweep(x: torch.Tensor, db: str) -> float:
            cfg = SweepConfig(
                model=spec,
                checkpoints=[str(ckpt)],
                data=Dataset(f"synthetic{len(x)}", x),
                db=Path(tmp) / db,
                labels=False,
                batch_size=batch_size,
                device="cpu",
            )
            start = time.perf_counter()
            summary = run_sweep(cfg)
            if summary.n_ok != 1:
                raise RuntimeError(f"sweep failed: {summary.failures}")
            return time.perf_counter() - start

        sweep(rows(WARMUP_ROWS), "warmup.db")
        x = rows(n)  # the data set is held by any sweep: outside the growth
        before = _peak_mib()
        seconds = sweep(x, "main.db")
        after = _peak_mib()
    data_mib = x.numel() * x.element_size() / 2**20
    return {"before": before, "after": after, "seconds": seconds, "data_mib": data_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 50k rows, D = 64")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch_size)))
        return

    sizes = [10_000, 50_000] if args.quick else [100_000, 1_000_000]
    d = 64 if args.quick else 256
    env = {**os.environ, D_ENV: str(d)}
    print(
        f"sweep of one checkpoint, D = {d}, default metrics, sample 10,000 rows, batches of "
        f"{args.batch_size}; each N in a fresh process"
    )
    header = (
        f"{'N':>10} {'data MiB':>9} {'N x D f32 MiB':>14} {'peak RSS MiB':>13} "
        f"{'growth MiB':>11} {'seconds':>8}"
    )
    print(header)
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"N={n}: the measuring process failed:\n{out.stderr}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        matrix = n * d * 4 / 2**20
        print(
            f"{n:>10,} {r['data_mib']:>9.1f} {matrix:>14.1f} {r['after']:>13.1f} "
            f"{r['after'] - r['before']:>11.1f} {r['seconds']:>8.1f}"
        )
    print(
        "growth: rise of the peak RSS during the N-row sweep (above a 2,000-row warm-up); "
        "the in-memory route would hold the N x D float32 matrix on top."
    )


if __name__ == "__main__":
    main()
