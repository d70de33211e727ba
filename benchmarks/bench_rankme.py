"""Benchmark: sslwatch RankMe vs torch.linalg.svdvals + the RankMe formula.

Times, side by side in one process on the same float32 (N, D) input:

* ``sslwatch.metrics.spectrum.rankme(z)`` (default: float64 Gram products of row
  chunks, ``dsyrk``, then a float64 ``eigvalsh``);
* the reference a user would otherwise write: ``torch.linalg.svdvals(z)`` followed by the
  RankMe formula (Garrido et al., ICML 2023);
* one float32 product ``z.T @ z`` (2 N D^2 flops), the physical floor of any method that
  reads the data through a Gram matrix;

and checks that the default agrees with the reference to 1e-6 relative. A float64 SVD of
the same input (timed once) is the exact value for all of them. A second, low-rank input
(rank 50 plus a mean, exact in float32: a collapsing encoder) checks accuracy where float32
Gram products would leave a noise floor in the spectrum's tail. The data are seeded
Gaussian rows times a power-law column scale, so the spectrum decays like i^-1 as in
trained encoders. The methods are timed round-robin (best of ``--repeats``) so that load
changes on a shared machine hit them alike.

Run: ``python benchmarks/bench_rankme.py`` (25,600 x 2048, the RankMe paper's N; a few
minutes on 2 cores) or ``--quick`` (4096 x 512, seconds). Exit status 1 if the values
disagree or, in the full run, if sslwatch is less than 2x faster than svdvals.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from sslwatch.metrics.spectrum import rankme

RTOL = 1e-6
MIN_SPEEDUP = 2.0


def rankme_formula(sigma: torch.Tensor, eps: float = 1e-7) -> float:
    """The RankMe formula as a user would apply it to torch.linalg.svdvals output."""
    s = sigma.detach().cpu().double().numpy()
    p = s / s.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def make_data(n: int, d: int, seed: int, decay: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, d + 1, dtype=torch.float32) ** (-decay / 2)
    return torch.randn(n, d, generator=gen) * scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096 x 512 instead of 25600 x 2048")
    parser.add_argument("--n", type=int, default=None, help="rows (overrides --quick)")
    parser.add_argument("--d", type=int, default=None, help="columns (overrides --quick)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many rounds")
    parser.add_argument(
        "--svd-repeats", type=int, default=2, help="rounds that include svdvals (slow)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decay", type=float, default=1.0, help="eigenvalues ~ i^-decay")
    parser.add_argument("--no-exact", action="store_true", help="skip the float64 SVD")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for torch and every BLAS, same for all methods (default: libraries')",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        limits: contextlib.AbstractContextManager[object] = threadpool_limits(args.threads)
    else:
        limits = contextlib.nullcontext()
    with limits:
        return run(args)


def run(args: argparse.Namespace) -> int:
    n = args.n or (4096 if args.quick else 25_600)
    d = args.d or (512 if args.quick else 2048)
    z = make_data(n, d, args.seed, args.decay)
    print(
        f"RankMe benchmark: N={n}, D={d}, float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, spectrum ~ i^-{args.decay:g}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    methods: dict[str, Callable[[], object]] = {
        "ours": lambda: rankme(z),
        "svdvals": lambda: rankme_formula(torch.linalg.svdvals(z)),
        "floor": lambda: z.T @ z,
    }
    # Warm-up (library initialisation, first-call allocations) on a small slice.
    small = z[: min(n, 4 * min(d, 256)), : min(d, 256)]
    rankme(small)
    torch.linalg.svdvals(small)
    _ = small.T @ small

    best = dict.fromkeys(methods, float("inf"))
    values: dict[str, float] = {}
    for r in range(max(1, args.repeats)):
        for name, fn in methods.items():
            if name == "svdvals" and r >= max(1, args.svd_repeats):
                continue
            start = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            if isinstance(out, float):
                values[name] = out

    exact: float | None = None
    t_exact = float("nan")
    if not args.no_exact:
        start = time.perf_counter()
        exact = rankme_formula(torch.linalg.svdvals(z.double()))
        t_exact = time.perf_counter() - start

    ours, ref = values["ours"], values["svdvals"]
    rows: list[tuple[str, float, float | None]] = [
        ("sslwatch rankme(z) [f64 products]", best["ours"], ours),
        ("torch.linalg.svdvals f32 + formula", best["svdvals"], ref),
        ("z.T @ z float32 (floor)", best["floor"], None),
    ]
    if exact is not None:
        rows.append(("torch.linalg.svdvals f64 (exact, 1 run)", t_exact, exact))

    header = (
        f"{'method':<42} {'time [s]':>9} {'vs svdvals':>11} {'vs floor':>9} "
        f"{'RankMe':>14} {'rel.diff ref':>13} {'rel.err f64':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, t, value in rows:
        val = diff = err = ""
        if value is not None:
            val = f"{value:.6f}"
            diff = f"{abs(value - ref) / ref:.1e}"
            err = "" if exact is None else f"{abs(value - exact) / exact:.1e}"
        print(
            f"{name:<42} {t:>9.3f} {t / best['svdvals']:>10.3f}x {t / best['floor']:>8.2f}x "
            f"{val:>14} {diff:>13} {err:>12}"
        )

    speedup = best["svdvals"] / best["ours"]
    rel = abs(ours - ref) / ref
    agree = rel <= RTOL
    fast = speedup >= MIN_SPEEDUP
    print()
    print(
        f"speed-up of rankme(z) over svdvals: {speedup:.2f}x (need >= {MIN_SPEEDUP:g}x): "
        f"{'PASS' if fast else 'FAIL'}"
    )
    print(f"rankme(z) time / float32 z.T @ z: {best['ours'] / best['floor']:.2f}x")
    print(
        f"agreement: |rankme(z) - svdvals| / svdvals = {rel:.2e} (need <= {RTOL:g}): "
        f"{'PASS' if agree else 'FAIL'}"
    )
    low_rank_ok = args.no_exact or low_rank_check(n, d, args.seed)
    if not agree or not low_rank_ok or (not fast and not args.quick):
        return 1
    return 0


def low_rank_check(n: int, d: int, seed: int, rank: int = 50) -> bool:
    """RankMe of a rank-``rank`` float32 matrix plus a mean (small integers, so exact in
    float32) against a float64 SVD: ours must agree to 1e-6, as on full-rank data."""
    gen = torch.Generator().manual_seed(seed + 1)
    a = torch.randint(-3, 4, (n, rank), generator=gen, dtype=torch.float32)
    b = torch.randint(-3, 4, (rank, d), generator=gen, dtype=torch.float32)
    z = a @ b + 3.0
    exact = rankme_formula(torch.linalg.svdvals(z.double()))
    ours = rankme(z)
    f32 = rankme_formula(torch.linalg.svdvals(z))
    err = abs(ours - exact) / exact
    print(
        f"\nlow rank ({rank} + mean, float32): exact {exact:.6f}, rankme(z) {ours:.6f} "
        f"(rel. err {err:.1e}), svdvals f32 + formula {f32:.6f} "
        f"(rel. err {abs(f32 - exact) / exact:.1e}): {'PASS' if err <= RTOL else 'FAIL'}"
    )
    return err <= RTOL


if __name__ == "__main__":
    sys.exit(main())
