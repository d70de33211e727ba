"""Greedy k-means++ seeding of several k-means runs in lockstep.

Arthur & Vassilvitskii (2007), with scikit-learn's greedy variant: each step draws
``2 + int(log k)`` candidates and keeps the one that most reduces the potential. The
runs advance together so that each step streams the samples once for all of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sslwatch.metrics.clustering._nearest import augment_centers
from sslwatch.metrics.clustering._workers import Workers, cpu_rows

# Rows per block of the numpy k-means++ distances (a skinny GEMM).
_CPU_SEED_ROWS = 8192
# Candidate distances of the runs seeded in lockstep: at most this many bytes at a time.
_SEED_BYTES = 256 * 2**20


def kmeans_plusplus(
    xa: torch.Tensor,
    xat: torch.Tensor,
    k: int,
    gens: list[torch.Generator],
    workers: Workers | None,
) -> list[torch.Tensor]:
    """Greedy k-means++ seeding (scikit-learn's ``_kmeans_plusplus``), one (k, D) set of
    centres per generator in ``gens``.

    ``xa`` is the augmented data ``[x, 1, ||x||^2]`` (see
    :func:`~sslwatch.metrics.clustering._nearest.augment`), ``xat`` its transpose (a
    contiguous copy is fastest; ``xa.T`` works). The first centre is a uniformly drawn
    sample; each further centre is the best, by resulting potential
    ``sum_i min_j ||x_i - c_j||^2``, of ``2 + int(log k)`` samples drawn with probability
    proportional to their current squared distance. If every sample already sits on a
    centre (potential 0), the draw falls on sample 0.

    The runs advance in lockstep, so each step streams the samples once for the
    candidates of all runs (the skinny GEMM is memory-bound); every run draws only from
    its own generator, so its centres do not depend on which runs share a pass (at most
    ``_SEED_BYTES`` of candidate distances at a time).
    """
    n = xa.shape[0]
    n_trials = 2 + int(math.log(k))
    per_run = n_trials * n * xa.element_size()
    group = max(1, _SEED_BYTES // per_run)
    out: list[torch.Tensor] = []
    for g0 in range(0, len(gens), group):
        out.extend(_kmeans_plusplus_group(xa, xat, k, gens[g0 : g0 + group], n_trials, workers))
    return out


def _kmeans_plusplus_group(
    xa: torch.Tensor,
    xat: torch.Tensor,
    k: int,
    gens: list[torch.Generator],
    n_trials: int,
    workers: Workers | None,
) -> list[torch.Tensor]:
    """:func:`kmeans_plusplus` for runs that share every pass over the samples."""
    n = xa.shape[0]
    dev = xa.device
    runs = torch.arange(len(gens), device=dev)
    first = [int(torch.randint(n, (1,), generator=g)) for g in gens]
    idx = [[f] for f in first]
    inf = torch.full((len(gens), n), math.inf, dtype=xa.dtype, device=dev)
    closest, pot = seed_candidates(xa, xat, torch.tensor(first, device=dev)[:, None], inf, workers)
    closest, pot = closest[:, 0], pot[:, 0]
    for _ in range(1, k):
        rand = torch.stack([torch.rand(n_trials, generator=g, dtype=torch.float64) for g in gens])
        rand = rand.to(dev) * pot.unsqueeze(1)
        cum = torch.cumsum(closest, dim=1, dtype=torch.float64)
        cand = torch.searchsorted(cum, rand).clamp_(max=n - 1)
        d, pots = seed_candidates(xa, xat, cand, closest, workers)
        best = torch.argmin(pots, dim=1)
        pot = pots[runs, best]
        closest = d[runs, best]
        for r, c in enumerate(cand[runs, best].tolist()):
            idx[r].append(c)
    return [xa[:, :-2].index_select(0, torch.tensor(i, device=dev)) for i in idx]


def seed_candidates(
    xa: torch.Tensor,
    xat: torch.Tensor,
    rows: torch.Tensor,
    closest: torch.Tensor,
    workers: Workers | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each run r and each of its candidate centres ``x_c`` (c in ``rows[r]``, rows is
    (R, T)): the squared distance of every sample to the run's nearest centre once
    ``x_c`` is added, ``min(closest[r], ||x - x_c||^2)`` ((R, T, N), distances clamped
    at 0), and the resulting potentials ((R, T) float64 sums over the samples). One
    skinny GEMM ``[-2x_c, ||x_c||^2, 1] . xat`` per block of samples, for all runs."""
    n_runs, t = rows.shape
    n = xa.shape[0]
    sel = xa.index_select(0, rows.flatten())
    ca = augment_centers(sel[:, :-2], sel[:, -1])
    if workers is None:
        d = torch.mm(ca, xat).clamp_(min=0.0).view(n_runs, t, n)
        torch.minimum(d, closest.unsqueeze(1), out=d)
        return d, d.sum(dim=2, dtype=torch.float64)
    d = torch.empty(n_runs, t, n, dtype=xa.dtype)
    step = cpu_rows(_CPU_SEED_ROWS, xa.shape[1] * n_runs * t)
    part = np.empty((len(range(0, n, step)), n_runs, t), dtype=np.float64)
    xat_np, ca_np, d_np, cl_np = xat.numpy(), ca.numpy(), d.numpy(), closest.numpy()

    def block(s: int, e: int) -> None:
        g = np.matmul(
            ca_np, xat_np[:, s:e], out=workers.scratch("s", (n_runs * t, e - s), d_np.dtype)
        )
        np.maximum(g, 0.0, out=g)
        g3 = g.reshape(n_runs, t, e - s)
        np.minimum(g3, cl_np[:, None, s:e], out=d_np[:, :, s:e])
        np.sum(d_np[:, :, s:e], axis=2, dtype=np.float64, out=part[s // step])

    workers.run(block, n, step)
    return d, torch.from_numpy(part.sum(axis=0))
