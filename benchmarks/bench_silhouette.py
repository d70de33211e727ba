"""Exact silhouette score: sslwatch vs scikit-learn, side by side in one process.

    .venv/bin/python benchmarks/bench_silhouette.py            # N = 20,000 and 100,000
    .venv/bin/python benchmarks/bench_silhouette.py --quick    # tiny sizes, seconds

Data: blobs-like float32 embeddings (D = 256, 10 clusters, labels = the generating
blob). Both libraries compute the exact mean silhouette; the values must agree to 1e-6.
Timings are the best of a few repeats (interleaved) after a warm-up; both sides use
``torch.get_num_threads()`` threads (scikit-learn through threadpoolctl). Peak memory is
the largest resident-set growth seen while the call ran (sampled from /proc every 2 ms).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from machine import machine_line  # beside this file
from sslwatch.metrics.clustering import silhouette

SKLEARN_BUDGET_S = 150.0  # skip scikit-learn when its estimated time exceeds this


def make_data(n: int, d: int, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(n_clusters, d))
    labels = rng.integers(0, n_clusters, size=n)
    x = centers[labels] + rng.normal(0.0, 1.2, size=(n, d))
    return x.astype(np.float32), labels.astype(np.int64)


class PeakRSS:
    """Largest growth of the resident set size during a ``with`` block, in MiB."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_mib = float("nan")
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._base = self._rss()
        self._max = self._base
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._rss())
        self.peak_mib = (self._max - self._base) / 2**20


def interleaved_best(
    fns: list[Callable[[], Any]], repeats: list[int]
) -> list[tuple[float, Any, float]]:
    """Run the functions in turn (function i at most ``repeats[i]`` times).

    Returns, per function, (best wall time, last result, peak RSS growth in MiB).
    """
    out: list[tuple[float, Any, float]] = [(float("inf"), None, 0.0) for _ in fns]
    for r in range(max(repeats)):
        for i, fn in enumerate(fns):
            if r >= repeats[i]:
                continue
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                result = fn()
                elapsed = time.perf_counter() - t0
            best, _, peak = out[i]
            out[i] = (min(best, elapsed), result, max(peak, mem.peak_mib))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--threads", type=int, default=None, help="threads for both (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per call")
    p.add_argument("--big", type=int, default=None, help="N of the scaling run (100,000)")
    args = p.parse_args(argv)

    n_main, n_big, d, c = (2_000, 5_000, 32, 10) if args.quick else (20_000, 100_000, 256, 10)
    n_big = args.big or n_big
    repeats = args.repeats or (2 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(machine_line())
    print(f"torch {torch.__version__}, threads={threads}, D={d}, clusters={c}, float32 data")

    # warm-up (BLAS thread pools, allocator)
    xw, yw = make_data(500, d, c, seed=1)
    silhouette(xw, yw)
    with threadpool_limits(threads):
        silhouette_score(xw, yw)

    rows = []

    def sk_score(x: np.ndarray, y: np.ndarray) -> float:
        with threadpool_limits(threads):
            return float(silhouette_score(x, y))

    x, y = make_data(n_main, d, c)
    (t_ours, v_ours, m_ours), (t_sk, v_sk, m_sk) = interleaved_best(
        [lambda: silhouette(x, y), lambda: sk_score(x, y)], [repeats, max(1, repeats - 1)]
    )
    diff = abs(v_ours - v_sk)
    rows.append((n_main, t_ours, m_ours, t_sk, m_sk, v_ours, v_sk))

    xb, yb = make_data(n_big, d, c, seed=2)
    ((t_big, v_big, m_big),) = interleaved_best([lambda: silhouette(xb, yb)], [1])
    est_sk_big = t_sk * (n_big / n_main) ** 2
    if est_sk_big <= SKLEARN_BUDGET_S:
        ((t_skb, v_skb, m_skb),) = interleaved_best([lambda: sk_score(xb, yb)], [1])
        big_note = ""
    else:
        t_skb, v_skb, m_skb = float("nan"), float("nan"), float("nan")
        big_note = (
            f"scikit-learn skipped at N={n_big}: quadratic scaling from N={n_main} estimates "
            f"{est_sk_big:.0f} s (> {SKLEARN_BUDGET_S:.0f} s budget)"
        )
    rows.append((n_big, t_big, m_big, t_skb, m_skb, v_big, v_skb))

    hdr = (
        f"{'N':>8} {'ours s':>9} {'ours MiB':>9} {'sklearn s':>10} {'sk MiB':>8} "
        f"{'speedup':>8} {'ours value':>12} {'sklearn value':>14} {'|diff|':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for n, to, mo, ts, ms, vo, vs in rows:
        sp = ts / to if np.isfinite(ts) else float("nan")
        dv = abs(vo - vs) if np.isfinite(vs) else float("nan")
        print(
            f"{n:>8} {to:>9.2f} {mo:>9.0f} {ts:>10.2f} {ms:>8.0f} {sp:>7.2f}x "
            f"{vo:>12.8f} {vs:>14.8f} {dv:>9.1e}"
        )
    if big_note:
        print(big_note)
    print(
        f"scaling N {n_main} -> {n_big} (x{n_big / n_main:g}): ours time x{t_big / t_ours:.1f} "
        f"(quadratic would be x{(n_big / n_main) ** 2:.0f}), peak memory "
        f"{m_ours:.0f} -> {m_big:.0f} MiB (inputs: {x.nbytes / 2**20:.0f} -> "
        f"{xb.nbytes / 2**20:.0f} MiB); process max RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    speedup = t_sk / t_ours
    ok_value = diff <= 1e-6
    ok_speed = speedup >= 2.0
    print(
        f"N={n_main}: speedup {speedup:.2f}x (target >= 2x: {'PASS' if ok_speed else 'FAIL'}), "
        f"|ours - sklearn| = {diff:.2e} (target <= 1e-6: {'PASS' if ok_value else 'FAIL'})"
    )
    return 0 if ok_value else 1


if __name__ == "__main__":
    sys.exit(main())
