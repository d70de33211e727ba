"""Clustering metrics: k-means, the silhouette score and agreement between clusterings.

Xu, Lowe and Trappenberg (2024), "Label-free Monitoring of Self-Supervised Learning
Progress" (arXiv 2409.06612) cluster the embeddings with k-means and score the result by
the silhouette coefficient (Rousseeuw 1987) and by the agreement (adjusted mutual
information) between two clusterings, e.g. of two checkpoints or two seeds.

All functions are pure: tensors in, numbers out. ``kmeans`` and ``silhouette`` run on
the input's device (``kmeans`` uses numpy/BLAS kernels for CPU tensors, torch on
accelerators), in chunks so that memory stays bounded; their results match
scikit-learn's ``KMeans`` (up to the random seeding) and ``silhouette_score`` (exactly,
to floating-point rounding).
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sslwatch.metrics._scaling import unit_scaled
from sslwatch.metrics._threads import blas_threads, torch_single_threaded
from sslwatch.metrics._validation import as_int, as_labels, as_matrix, to_numpy

__all__ = ["KMeansResult", "cluster_agreement", "kmeans", "silhouette"]

# Working-memory budget (bytes) for one block of pairwise quantities.
_BLOCK_BYTES = 64 * 2**20
_METRICS = ("euclidean", "cosine")
_AGREEMENT = ("ami", "ari", "nmi")
# Silhouette tiles (rows x columns of the distance matrix): 32 MiB of float64 on the
# CPU (few, large parallel regions; mostly cache-resident for the passes after the
# GEMM), 128 MiB on accelerators.
_TILE_CPU = 2048
_TILE_ACCEL = 4096
# A tile spanning more clusters than this is reduced with index_add_ instead of slices.
_MAX_SEGMENTS = 16
# k-means on the CPU: rows per block of the nearest-centre search (the (rows, k) block of
# distances stays in cache) and of the k-means++ distances (a skinny GEMM).
_CPU_ROWS = 2048
_CPU_SEED_ROWS = 8192
# ... but never less work per block than this many multiply-adds (small problems run as
# one block on the calling thread: dispatching to threads costs more than it saves).
_MIN_BLOCK_WORK = 2**22
# CPU float32/float64 tensors use the numpy kernels (one single-threaded BLAS call per
# block, blocks spread over torch.get_num_threads() threads); False: torch kernels.
_CPU_NUMPY = True
# Lloyd skips samples by Yinyang bounds (see _Nearest) when one full pass costs at least
# this many multiply-adds (below it, their bookkeeping costs more than it saves); one
# group of centres per _GROUP_SIZE centres, at most _BOUND_BYTES of (t, N) float64 bounds;
# a block whose share of samples to recompute exceeds _FULL_BLOCK is recomputed whole.
_BOUNDS_MIN_WORK = 2**23
_GROUP_SIZE = 10
_BOUND_BYTES = 256 * 2**20
_FULL_BLOCK = 0.7
# A bounded pass that recomputes more than this share of the samples is followed by
# _BOUNDS_BACKOFF plain passes (doubling while it keeps happening, up to 16), then a
# fresh full bounded pass: where the bounds cannot skip, their bookkeeping only costs.
_BOUNDS_GIVE_UP = 0.75
_BOUNDS_BACKOFF = 2
# k-means++ uses a transposed copy of the data up to this size (bytes).
_XT_BYTES = 2 * 2**30
# k-means++: candidate distances of the runs seeded in lockstep, at most this many bytes
_SEED_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- k-means


@dataclass(frozen=True)
class KMeansResult:
    """Result of :func:`kmeans`.

    Attributes:
        labels: int64 numpy array (N,), the index of each sample's nearest centroid
            (always recomputed from the final ``centroids``).
        centroids: float64 numpy array (k, D) on the CPU, in the input's coordinates.
            A numpy array is used whatever the input device, so the public type is stable.
        inertia: sum over samples of the squared Euclidean distance to the assigned
            centroid, ``sum_i ||z_i - c_{labels_i}||^2``, computed from the differences
            (per sample in the working dtype, summed over samples in float64).
        n_iter: Lloyd iterations run by the best of the ``n_init`` runs.
    """

    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    n_iter: int


def kmeans(
    z: Any,
    k: int,
    *,
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: int = 0,
) -> KMeansResult:
    """k-means clustering (k-means++ seeding, Lloyd iterations), as in scikit-learn.

    Minimises the inertia ``sum_i min_j ||z_i - c_j||^2``. Each of ``n_init`` runs is
    seeded by greedy k-means++ (Arthur & Vassilvitskii 2007; ``2 + int(log k)`` candidate
    centres per step, the one that most reduces the potential is kept) and refined by
    Lloyd iterations; the run with the lowest inertia is returned. This is the
    clustering step of Xu, Lowe & Trappenberg (2024, arXiv 2409.06612).

    The semantics follow ``sklearn.cluster.KMeans(algorithm="lloyd")``: data are centred
    before clustering; ``tol`` is relative, a run stops when the labels no longer change
    or when ``sum_j ||c_j^new - c_j^old||^2 <= tol * mean_d Var(z[:, d])``; a cluster
    that becomes empty is re-seeded with the sample farthest from its own centre (the
    n_empty farthest samples go to the n_empty empty clusters). Random numbers come from
    ``torch.Generator`` objects seeded from ``seed`` (one per run; never the global
    RNG), so the result is deterministic for a seed and the same for any thread count;
    the draws differ from scikit-learn's, so labels match scikit-learn only up to the
    seeding, while inertias are of the same quality.

    float32 input is clustered in float32 (float64 stays float64, half precision is
    upcast to float32). Distances come from one GEMM per block of samples,
    ``[x, 1, ||x||^2] . [-2c, ||c||^2, 1] = ||x - c||^2``. CPU tensors use numpy/BLAS
    kernels: one single-threaded BLAS call per block, the blocks spread over
    ``torch.get_num_threads()`` threads (BLAS is held to one thread meanwhile, through
    threadpoolctl, as scikit-learn does, and torch's own thread count is set to 1 and
    restored on return, so that its OpenMP team does not spin on the same cores);
    accelerators use torch. The k-means++ seedings of the ``n_init`` runs advance in
    lockstep and share each pass over the samples. Lloyd skips the samples whose
    nearest centre provably did not change, by the triangle-inequality bounds of
    Yinyang k-means (Ding et al., ICML 2015: an upper bound on the distance to the own
    centre, a lower bound per group of about 10 centres), widened by the GEMM's
    worst-case rounding, so the iterates are plain Lloyd's up to floating-point ties
    (two centres whose distances differ by less than the float32 rounding; such a tie
    may go the other way than in a full pass and, Lloyd being chaotic, lead to another
    local optimum of the same quality). Where the bounds stop paying (most samples near
    a boundary), plain passes run for a while instead. Cluster sums are kept in float64
    and updated for the samples that moved. Memory: an augmented centred copy of ``z``
    (N, D + 2); for the seeding, a transposed copy (up to 2 GiB, freed before Lloyd);
    for Lloyd, the float64 bounds, (1 + k / 10) * N values (at most 256 MiB for the
    groups' bounds, fewer groups beyond).

    Degenerate input: when ``z`` has fewer distinct rows than ``k`` (for example fully
    collapsed embeddings), k-means++ picks duplicate centres, the surplus clusters stay
    empty (an empty cluster that cannot be re-seeded because every sample sits exactly
    on its centre keeps its previous centre), ``labels`` then use fewer than ``k``
    values and the inertia is 0 when there are at most ``k`` distinct rows. No exception
    is raised.

    Args:
        z: (N, D) embeddings, ``torch.Tensor`` or numpy array, N >= 2.
        k: number of clusters, 1 <= k <= N.
        n_init: number of seeded runs; the lowest-inertia run is returned.
        max_iter: maximum Lloyd iterations per run.
        tol: relative tolerance on the squared centre shift (see above); 0 disables it.
        seed: seed of the ``torch.Generator`` used for the k-means++ draws.

    Returns:
        KMeansResult with int64 labels, float64 numpy centroids, inertia and n_iter.

    Raises:
        ValueError: on NaN/Inf, a non 2-D input, fewer than 2 samples, ``k`` outside
            ``[1, N]``, or non-positive ``n_init``/``max_iter`` or negative ``tol``.
    """
    # k-means' labels do not depend on the scale of z: work at max|z| in [0.5, 1) (exact)
    # so float32 squares neither overflow (z ~ 1e19) nor underflow (z ~ 1e-30).
    x0, exponent = unit_scaled(as_matrix(z, name="z", min_rows=2))
    n, dim = x0.shape
    k = as_int(k, "k", low=1)
    if k > n:
        raise ValueError(
            f"k={k} clusters is more than the {n} samples; choose k <= N (or pass more samples)."
        )
    n_init = as_int(n_init, "n_init", low=1)
    max_iter = as_int(max_iter, "max_iter", low=1)
    tol = float(tol)
    if not (tol >= 0.0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0; got {tol}.")

    # Centre (as scikit-learn does, for precision); the mean is accumulated in float64.
    # The centred data live in the first D columns of the augmented matrix [x, 1, ||x||^2].
    mean = x0.sum(dim=0, dtype=torch.float64) / n
    xa = torch.empty(n, dim + 2, dtype=x0.dtype, device=x0.device)
    x = xa[:, :dim]
    torch.sub(x0, mean.to(x0.dtype), out=x)
    del x0
    x_sq = torch.einsum("ij,ij->i", x, x)
    xa[:, dim] = 1.0
    xa[:, dim + 1] = x_sq
    # mean_d Var(z[:, d]) = (mean_i ||x_i||^2 - ||mean_i x_i||^2) / D, x centred
    resid = x.sum(dim=0, dtype=torch.float64) / n
    variance = (x_sq.sum(dtype=torch.float64) / n - resid.dot(resid)) / dim
    tol_abs = max(float(variance), 0.0) * tol

    best: tuple[float, torch.Tensor, torch.Tensor, int] | None = None
    with _cpu_workers(x) as workers:
        # Lloyd draws no random numbers, so all runs are seeded first, in lockstep.
        # k-means++ streams the samples once per step: a (D + 2, N) copy makes that
        # skinny GEMM about 1.5x faster (kept within _XT_BYTES, and freed before Lloyd).
        xat = xa.T.contiguous() if xa.numel() * xa.element_size() <= _XT_BYTES else xa.T
        # One generator per run, itself seeded from ``seed``: a run's centres do not
        # depend on which other runs are seeded alongside it.
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        run_seeds = torch.randint(0, 2**62, (n_init,), generator=gen).tolist()
        gens = [torch.Generator().manual_seed(s) for s in run_seeds]
        seeds = _kmeans_plusplus(xa, xat, k, gens, workers)
        del xat
        for centers in seeds:
            labels, centers, inertia, n_iter = _lloyd(
                x, x_sq, centers, max_iter, tol_abs, xa=xa, workers=workers
            )
            if best is None or inertia < best[0]:
                best = (inertia, labels, centers, n_iter)
    assert best is not None
    inertia, labels, centers, n_iter = best
    centroids = to_numpy(centers.to(torch.float64) + mean)
    with np.errstate(over="ignore", under="ignore"):  # inf / 0 beyond float64's range
        true_inertia = float(np.ldexp(inertia, 2 * exponent))
    return KMeansResult(
        labels=to_numpy(labels).astype(np.int64, copy=False),
        centroids=np.ldexp(centroids, exponent),
        inertia=true_inertia,
        n_iter=n_iter,
    )


class _Workers:
    """Runs numpy block tasks on ``n_threads`` threads (numpy releases the GIL inside BLAS
    calls and array loops); every thread keeps its own scratch buffers."""

    def __init__(self, n_threads: int) -> None:
        self._pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        self._local = threading.local()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def run(self, fn: Callable[[int, int], None], n: int, step: int) -> None:
        """Call ``fn(start, stop)`` on consecutive blocks of ``range(n)`` (all done on
        return; a task's exception is re-raised)."""
        starts = range(0, n, step)
        if self._pool is None or len(starts) < 2:
            for s in starts:
                fn(s, min(n, s + step))
        else:
            list(self._pool.map(lambda s: fn(s, min(n, s + step)), starts))

    def scratch(self, name: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """This thread's buffer ``name`` viewed as ``shape`` (reused between calls)."""
        bufs: dict[tuple[str, np.dtype], np.ndarray] = self._local.__dict__.setdefault("bufs", {})
        size = shape[0] * shape[1]
        buf = bufs.get((name, dtype))
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            bufs[(name, dtype)] = buf
        return buf[:size].reshape(shape)


@contextmanager
def _cpu_workers(x: torch.Tensor) -> Iterator[_Workers | None]:
    """numpy workers for a float32/float64 CPU tensor, with BLAS held to one thread for
    the duration (as scikit-learn's KMeans does); None elsewhere (torch kernels)."""
    if not (_CPU_NUMPY and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)):
        yield None
        return
    with ExitStack() as stack:
        stack.enter_context(blas_threads(1))
        # torch's own small ops between the blocks run single-threaded meanwhile.
        n_threads = stack.enter_context(torch_single_threaded())
        workers = _Workers(n_threads)
        stack.callback(workers.close)
        yield workers


def _augment(x: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """(N, D + 2) ``[x, 1, ||x||^2]``, whose product with ``[-2c, ||c||^2, 1]`` (see
    :func:`_augment_centers`) is ``||x - c||^2``."""
    n, dim = x.shape
    xa = torch.empty(n, dim + 2, dtype=x.dtype, device=x.device)
    xa[:, :dim] = x
    xa[:, dim] = 1.0
    xa[:, dim + 1] = x_sq
    return xa


def _augment_centers(centers: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(k, D + 2) ``[-2c, ||c||^2, 1]`` (see :func:`_augment`)."""
    k, dim = centers.shape
    ca = torch.empty(k, dim + 2, dtype=centers.dtype, device=centers.device)
    torch.mul(centers, -2.0, out=ca[:, :dim])
    ca[:, dim] = torch.einsum("ij,ij->i", centers, centers) if c_sq is None else c_sq
    ca[:, dim + 1] = 1.0
    return ca


def _kmeans_plusplus(
    xa: torch.Tensor,
    xat: torch.Tensor,
    k: int,
    gens: list[torch.Generator],
    workers: _Workers | None,
) -> list[torch.Tensor]:
    """Greedy k-means++ seeding (scikit-learn's ``_kmeans_plusplus``), one (k, D) set of
    centres per generator in ``gens``.

    ``xa`` is the augmented data of :func:`_augment`, ``xat`` its transpose (a contiguous
    copy is fastest; ``xa.T`` works). The first centre is a uniformly drawn sample; each
    further centre is the best, by resulting potential ``sum_i min_j ||x_i - c_j||^2``, of
    ``2 + int(log k)`` samples drawn with probability proportional to their current
    squared distance. If every sample already sits on a centre (potential 0), the draw
    falls on sample 0.

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
    workers: _Workers | None,
) -> list[torch.Tensor]:
    """:func:`_kmeans_plusplus` for runs that share every pass over the samples."""
    n = xa.shape[0]
    dev = xa.device
    runs = torch.arange(len(gens), device=dev)
    first = [int(torch.randint(n, (1,), generator=g)) for g in gens]
    idx = [[f] for f in first]
    inf = torch.full((len(gens), n), math.inf, dtype=xa.dtype, device=dev)
    closest, pot = _seed_candidates(xa, xat, torch.tensor(first, device=dev)[:, None], inf, workers)
    closest, pot = closest[:, 0], pot[:, 0]
    for _ in range(1, k):
        rand = torch.stack([torch.rand(n_trials, generator=g, dtype=torch.float64) for g in gens])
        rand = rand.to(dev) * pot.unsqueeze(1)
        cum = torch.cumsum(closest, dim=1, dtype=torch.float64)
        cand = torch.searchsorted(cum, rand).clamp_(max=n - 1)
        d, pots = _seed_candidates(xa, xat, cand, closest, workers)
        best = torch.argmin(pots, dim=1)
        pot = pots[runs, best]
        closest = d[runs, best]
        for r, c in enumerate(cand[runs, best].tolist()):
            idx[r].append(c)
    return [xa[:, :-2].index_select(0, torch.tensor(i, device=dev)) for i in idx]


def _seed_candidates(
    xa: torch.Tensor,
    xat: torch.Tensor,
    rows: torch.Tensor,
    closest: torch.Tensor,
    workers: _Workers | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each run r and each of its candidate centres ``x_c`` (c in ``rows[r]``, rows is
    (R, T)): the squared distance of every sample to the run's nearest centre once
    ``x_c`` is added, ``min(closest[r], ||x - x_c||^2)`` ((R, T, N), distances clamped
    at 0), and the resulting potentials ((R, T) float64 sums over the samples). One
    skinny GEMM ``[-2x_c, ||x_c||^2, 1] . xat`` per block of samples, for all runs."""
    n_runs, t = rows.shape
    n = xa.shape[0]
    sel = xa.index_select(0, rows.flatten())
    ca = _augment_centers(sel[:, :-2], sel[:, -1])
    if workers is None:
        d = torch.mm(ca, xat).clamp_(min=0.0).view(n_runs, t, n)
        torch.minimum(d, closest.unsqueeze(1), out=d)
        return d, d.sum(dim=2, dtype=torch.float64)
    d = torch.empty(n_runs, t, n, dtype=xa.dtype)
    step = _cpu_rows(_CPU_SEED_ROWS, xa.shape[1] * n_runs * t)
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


def _cpu_rows(rows: int, work_per_row: int) -> int:
    """Rows per block of a numpy kernel: ``rows``, or more for light rows."""
    return max(rows, _MIN_BLOCK_WORK // max(1, work_per_row))


def _block_rows(n_cols: int, itemsize: int, n: int) -> int:
    return max(1, min(n, _BLOCK_BYTES // max(1, n_cols * itemsize)))


@dataclass(frozen=True)
class _BoundStep:
    """What the bounds of :class:`_Nearest` need from one Lloyd step."""

    shift: torch.Tensor  # (k,) float64: how far each centre moved since the last call
    group_shift: torch.Tensor  # (t,) float64: the largest shift within each group
    c_max: float  # max_j ||c_j|| of the new centres
    guard: float  # margin for the float64 rounding of the bound updates
    first: bool  # no bounds yet: a full pass
    search: bool  # no labels yet: a full argmin (else the old label is checked first)


def _matmul_unit_roundoff(x: torch.Tensor, workers: _Workers | None) -> float:
    """Unit roundoff of the distance GEMM's products: the dtype's, or coarser where torch
    may run float32 products in TF32 or bfloat16 (``torch.set_float32_matmul_precision``
    "high" or "medium"; numpy's BLAS never does)."""
    unit = torch.finfo(x.dtype).eps / 2
    if x.dtype == torch.float32 and workers is None:
        precision = torch.get_float32_matmul_precision()
        if precision == "high" or (
            x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        ):
            unit = 2.0**-11
        elif precision != "highest":
            unit = 2.0**-8
    return unit


class _Nearest:
    """Exact nearest-centre search over the augmented samples ``xa`` (:func:`_augment`)
    that skips the samples whose nearest centre provably did not change: the bounds of
    Yinyang k-means (Ding et al., ICML 2015), with one GEMM per block of the samples
    that need a look.

    The centres are split once into ``t`` groups (a few Lloyd steps on the initial
    centres; ``t = k / _GROUP_SIZE``). Per sample i it keeps an upper bound ``u_i`` on
    the distance to its assigned centre a and, per group g, a lower bound ``l_ig`` on
    the distance to every other centre of g. When centre j moves by ``s_j``,
    ``u_i += s_a`` and ``l_ig -= max_{j in g} s_j`` (triangle inequality), and a sample
    with ``u_i <= min_g l_ig`` keeps its centre with no distance computed. The others get
    the squared distances to all centres, ``xa . [-2c, ||c||^2, 1]^T``, hence the nearest
    centre and fresh bounds. The GEMM's rounding is absorbed in the bounds: a computed
    squared distance is widened by ``2 gamma_{D+2} (||x|| + max_j ||c_j||)^2``, twice
    the worst-case error of a length-(D + 2) dot product (Higham 2002, sec. 3.1; the
    second half covers the rounded norms in ``xa`` and ``ca``), so a skipped sample
    keeps its truly nearest centre: the iterates are plain Lloyd's up to floating-point
    ties (two centres whose distances differ by less than the rounding).

    Without ``bounds`` every call is a plain full pass (nearest centre only).

    Only the row half of Yinyang's filter is used: a sample that needs a look gets all
    ``k`` distances in one BLAS GEMM. Searching only the groups whose bound fails (the
    group filter) computes fewer distances, but each costs about 3x more on the CPU: in
    ten-centre GEMMs of gathered samples or in a compiled per-sample kernel (numba, 11-16
    ns per distance against 5.5 in the GEMM). Both were measured slower than this on
    50,000 x 256 x 100 overlapping blobs (bounded pass 0.9-1.5x a plain one, vs ~0.8).
    """

    def __init__(self, xa: torch.Tensor, k: int, bounds: bool, workers: _Workers | None) -> None:
        self.xa = xa
        self.workers = workers
        n = xa.shape[0]
        dev = xa.device
        unit = _matmul_unit_roundoff(xa, workers)
        n_terms = xa.shape[1]
        # gamma_n = n u / (1 - n u); bounds are useless once the GEMM may lose all digits
        self.bounds = bounds and k > 1 and 2 * n_terms * unit < 0.5
        self.gamma = 2.0 * n_terms * unit / (1.0 - n_terms * unit)
        self.x_norm = torch.sqrt(xa[:, -1].to(torch.float64)) if self.bounds else None
        self.x_norm_max = float(self.x_norm.max()) if self.x_norm is not None else 0.0
        self.labels = torch.empty(n, dtype=torch.int64, device=dev)
        self.perm = torch.arange(k, device=dev)  # centre order of the GEMM's columns
        self.starts = np.zeros(1, dtype=np.int64)  # first column of each group
        self.group = torch.zeros(k, dtype=torch.int64, device=dev)  # group of each centre
        self.upper = torch.empty(n if self.bounds else 0, dtype=torch.float64, device=dev)
        self.lower = torch.empty(0, n, dtype=torch.float64, device=dev)
        self.prev: torch.Tensor | None = None  # centres of the last bounded pass
        self.has_labels = False
        self.plain_left = 0  # plain passes to run before the bounds are tried again
        self.backoff = _BOUNDS_BACKOFF
        self.rows_computed = 0  # samples whose distances to all centres were computed

    def assign(self, centers: torch.Tensor) -> torch.Tensor:
        """int64 labels ``argmin_j ||x_i - c_j||^2`` for ``centers`` (a new tensor)."""
        c64 = centers.to(torch.float64)
        if self.bounds and not self.has_labels:
            self._make_groups(c64)
        # augmented centres, rows in group order: (k, D + 2)
        ca = _augment_centers(centers).index_select(0, self.perm)
        step: _BoundStep | None = None
        if self.plain_left:  # the bounds did not pay lately: plain passes for a while
            self.plain_left -= 1
            self.prev = None
        elif self.bounds:
            c_max = float(torch.linalg.vector_norm(c64, dim=1).max())
            # float64 rounding of the bound updates themselves (far below the GEMM's)
            guard = 2.0**-30 * (self.x_norm_max + c_max)
            t = self.lower.shape[0]
            shift = torch.zeros(centers.shape[0], dtype=torch.float64, device=c64.device)
            gshift = torch.zeros(t, dtype=torch.float64, device=c64.device)
            if self.prev is not None:
                shift = torch.linalg.vector_norm(c64 - self.prev, dim=1)
                gshift.scatter_reduce_(0, self.group, shift, reduce="amax")
            first, search = self.prev is None, not self.has_labels
            step = _BoundStep(shift, gshift, c_max, guard, first=first, search=search)
            self.prev = c64
        before = self.rows_computed
        if self.workers is not None:
            self._assign_numpy(ca, step)
        else:
            self._assign_torch(ca.T.contiguous(), step)
        self.has_labels = True
        if step is not None and not step.first:
            # a bounded pass that recomputes most samples costs more than a plain one
            if self.rows_computed - before > _BOUNDS_GIVE_UP * self.xa.shape[0]:
                self.plain_left, self.backoff = self.backoff, min(2 * self.backoff, 16)
            else:
                self.backoff = _BOUNDS_BACKOFF
        return self.labels.clone()

    def _make_groups(self, c64: torch.Tensor) -> None:
        """Yinyang's grouping: ``t`` groups of centres by a few Lloyd steps on the centres."""
        k = c64.shape[0]
        n = self.xa.shape[0]
        t = max(1, min(k // _GROUP_SIZE, _BOUND_BYTES // (8 * n)))
        group = torch.zeros(k, dtype=torch.int64, device=c64.device)
        if t > 1:
            means = c64[:t].clone()
            for _ in range(5):
                group = torch.cdist(c64, means).argmin(dim=1)
                sums = torch.zeros_like(means).index_add_(0, group, c64)
                cnt = torch.bincount(group, minlength=t).unsqueeze(1)
                means = torch.where(cnt > 0, sums / cnt.clamp(min=1), means)
            group = torch.unique(group, return_inverse=True)[1]  # drop empty groups
        self.perm = torch.sort(group, stable=True).indices
        self.group = group
        sizes = torch.bincount(group).cpu().numpy()
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.lower = torch.empty(len(sizes), n, dtype=torch.float64, device=c64.device)

    def _assign_numpy(self, ca: torch.Tensor, step: _BoundStep | None) -> None:
        assert self.workers is not None
        workers = self.workers
        xa_t = self.xa
        xa, ca_np = xa_t.numpy(), ca.numpy()
        cat_np = np.ascontiguousarray(ca_np.T) if step is None else ca_np.T
        labels, perm, starts = self.labels.numpy(), self.perm.numpy(), self.starts
        inv_perm = np.argsort(perm)
        n, width, k = xa.shape[0], xa.shape[1], ca_np.shape[0]
        rows = _cpu_rows(_CPU_ROWS, width * k)
        if step is not None:
            assert self.x_norm is not None
            upper, lower, x_norm = self.upper.numpy(), self.lower.numpy(), self.x_norm.numpy()
            shift, gshift = step.shift.numpy(), step.group_shift.numpy()[:, None]

        def refresh(idx: slice | np.ndarray, m: int) -> None:
            if isinstance(idx, slice):
                a = xa[idx]
            else:  # torch's gather is about twice as fast as numpy's here
                a = workers.scratch("a", (m, width), xa.dtype)
                torch.index_select(xa_t, 0, torch.from_numpy(idx), out=torch.from_numpy(a))
            if step is None:  # nearest centre only: (m, k) distances, argmin along rows
                g = np.matmul(a, cat_np, out=workers.scratch("d", (m, k), xa.dtype))
                labels[idx] = perm[g.argmin(axis=1)]
                return
            # (k, m) distances: the per-group minima are then fast minima over row ranges
            g = np.matmul(ca_np, a.T, out=workers.scratch("d", (k, m), xa.dtype))
            ar = np.arange(m)
            if step.search:
                j = g.argmin(axis=0)
            else:  # most samples keep their centre: check it, search only the others
                near = g.min(axis=0)
                j = inv_perm[labels[idx]]
                moved = np.flatnonzero(g[j, ar] != near)
                if moved.size:
                    j[moved] = g[:, moved].argmin(axis=0)
            labels[idx] = perm[j]
            # bounds in float64, widened by the GEMM's worst-case rounding (see class doc)
            slack = x_norm[idx] + step.c_max
            slack *= slack
            slack *= self.gamma
            near = g[j, ar] + slack
            upper[idx] = np.sqrt(np.maximum(near, 0.0, out=near), out=near)
            g[j, ar] = np.inf
            group_min = workers.scratch("g", (len(starts), m), xa.dtype)
            for grp, (c0, c1) in enumerate(itertools.pairwise([*starts, k])):
                np.minimum.reduce(g[c0:c1], axis=0, out=group_min[grp])
            low = np.subtract(
                group_min, slack, out=workers.scratch("l", (len(starts), m), np.dtype(np.float64))
            )
            lower[:, idx] = np.sqrt(np.maximum(low, 0.0, out=low), out=low)

        n_blocks = len(range(0, n, rows))
        work: list[slice | np.ndarray] = [slice(s, min(n, s + rows)) for s in range(0, n, rows)]
        if step is not None and not step.first:
            # the bounds of every sample, in a few large chunks; then the blocks in which
            # most samples need a look are recomputed whole, the other such samples are
            # gathered into blocks of ``rows``
            chunk = 8 * rows
            found: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(range(0, n, chunk))

            def test(s: int, e: int) -> None:
                u = upper[s:e]
                u += shift[labels[s:e]]
                low = lower[:, s:e]
                low -= gshift
                bound = low.min(axis=0)
                bound -= step.guard
                found[s // chunk] = np.flatnonzero(u > bound) + s

            workers.run(test, n, chunk)
            fail = np.concatenate(found)
            block_sizes = np.full(n_blocks, rows)
            block_sizes[-1] = n - rows * (n_blocks - 1)
            whole = np.bincount(fail // rows, minlength=n_blocks) > _FULL_BLOCK * block_sizes
            rest = fail[~whole[fail // rows]]
            work = [work[b] for b in np.flatnonzero(whole)]
            work += [rest[s : s + rows] for s in range(0, rest.size, rows)]

        sizes = [w.stop - w.start if isinstance(w, slice) else w.size for w in work]

        def run(w0: int, w1: int) -> None:
            for w, m in zip(work[w0:w1], sizes[w0:w1], strict=True):
                refresh(w, m)

        workers.run(run, len(work), 1)
        self.rows_computed += sum(sizes)

    def _assign_torch(self, cat: torch.Tensor, step: _BoundStep | None) -> None:
        xa, labels = self.xa, self.labels
        n, k = xa.shape[0], cat.shape[1]
        rows: torch.Tensor | None = None
        if step is not None and not step.first:
            self.upper += step.shift.index_select(0, labels)
            self.lower -= step.group_shift.unsqueeze(1)
            fail = torch.nonzero(self.upper > self.lower.amin(dim=0) - step.guard).flatten()
            if fail.numel() <= _FULL_BLOCK * n:
                rows = fail
        m = n if rows is None else int(rows.numel())
        cpu = xa.device.type == "cpu"
        blk = min(m, _CPU_ROWS) if cpu else _block_rows(k, xa.element_size(), m)
        bounds = self.starts.tolist() + [k]
        for s in range(0, m, max(1, blk)):
            e = min(m, s + blk)
            idx: slice | torch.Tensor = slice(s, e) if rows is None else rows[s:e]
            a = xa[idx] if rows is None else xa.index_select(0, rows[s:e])
            g = torch.mm(a, cat)
            j = torch.argmin(g, dim=1)
            labels[idx] = self.perm.index_select(0, j)
            if step is None:
                continue
            j = j.unsqueeze(1)
            near = g.gather(1, j).squeeze(1).to(torch.float64)
            g.scatter_(1, j, math.inf)
            assert self.x_norm is not None
            slack = (self.x_norm[idx] + step.c_max) ** 2 * self.gamma
            self.upper[idx] = torch.sqrt((near + slack).clamp_(min=0.0))
            low = torch.stack([g[:, a0:a1].amin(dim=1) for a0, a1 in itertools.pairwise(bounds)])
            self.lower[:, idx] = torch.sqrt((low.to(torch.float64) - slack).clamp_(min=0.0))
        self.rows_computed += m


def _cluster_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster sums of the rows of ``x``: (k, D) float64 (accumulated in x's dtype)."""
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    _add_rows(sums, labels, x, 1.0)
    return sums.to(torch.float64)


def _lloyd(
    x: torch.Tensor,
    x_sq: torch.Tensor,
    centers: torch.Tensor,
    max_iter: int,
    tol_abs: float,
    *,
    bounds: bool | None = None,
    xa: torch.Tensor | None = None,
    workers: _Workers | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Lloyd iterations from ``centers`` (scikit-learn's ``_kmeans_single_lloyd``).

    Each iteration assigns every sample to its nearest centre, re-seeds empty clusters,
    moves each centre to the mean of its samples, and stops when the labels did not
    change or the total squared centre shift is at most ``tol_abs``.

    The assignment is plain Lloyd's argmin (up to floating-point ties): with ``bounds``
    (default: when one full pass costs at least ``_BOUNDS_MIN_WORK`` multiply-adds) only
    the samples whose nearest centre may have changed are recomputed (Yinyang bounds,
    see :class:`_Nearest`), otherwise all of them.
    Cluster sums are kept in float64 and updated for the samples that moved only.
    ``workers`` (see :func:`_cpu_workers`) selects the numpy kernels, None the torch ones.

    Returns the final labels (nearest-centre assignment of the final centres), the
    centres, the inertia and the number of iterations run.
    """
    n = x.shape[0]
    k = centers.shape[0]
    if xa is None:
        xa = _augment(x, x_sq)
    if bounds is None:
        bounds = n * k * xa.shape[1] >= _BOUNDS_MIN_WORK
    dist = _Nearest(xa, k, bounds, workers)
    labels = dist.assign(centers)
    sums = _cluster_sums(x, labels, k)
    counts = torch.bincount(labels, minlength=k)
    n_iter = 0
    for it in range(max_iter):
        n_iter = it + 1
        changed = None
        if it > 0:
            lab = dist.assign(centers)
            changed = _apply_moves(x, None, lab, labels, sums, counts)
        if bool((counts == 0).any()):
            # Relocation changes the centres only; sums/counts keep matching labels.
            sums_c, counts_c = sums.clone(), counts.clone()
            far = torch.linalg.vector_norm(x - centers.index_select(0, labels), dim=1)
            _relocate_empty(x, labels, far, sums_c, counts_c)
        else:
            sums_c, counts_c = sums, counts
        new = torch.where(
            (counts_c > 0).unsqueeze(1),
            sums_c / counts_c.clamp(min=1).unsqueeze(1).to(torch.float64),
            centers.to(torch.float64),
        ).to(x.dtype)
        delta = (new - centers).to(torch.float64)
        shift = float(torch.einsum("ij,ij->", delta, delta))
        centers = new
        if changed == 0:  # labels identical to the previous iteration's
            break
        if shift <= tol_abs:
            break
    labels, inertia = _labels_inertia(x, dist, centers)
    return labels, centers, inertia, n_iter


def _apply_moves(
    x: torch.Tensor,
    cand: torch.Tensor | None,
    lab: torch.Tensor,
    labels: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
) -> int:
    """Set ``labels[cand] = lab`` (all samples if ``cand`` is None) and update the float64
    cluster sums and counts.

    Only the samples that changed cluster are moved between sums; when more than a third
    of all samples moved, the sums are recomputed from scratch instead. Returns how many
    samples changed cluster.
    """
    old = labels if cand is None else labels.index_select(0, cand)
    moved = torch.nonzero(lab != old).flatten()
    n_moved = int(moved.numel())
    if n_moved == 0:
        return 0
    idx = moved if cand is None else cand.index_select(0, moved)
    new_l = lab.index_select(0, moved)
    if 3 * n_moved > x.shape[0]:
        labels.index_copy_(0, idx, new_l)
        sums.copy_(_cluster_sums(x, labels, sums.shape[0]))
        counts.copy_(torch.bincount(labels, minlength=counts.numel()))
        return n_moved
    # the rows join their new clusters, then leave their old ones
    old_l = labels.index_select(0, idx)
    rows = x.index_select(0, idx).to(torch.float64)
    _add_rows(sums, new_l, rows, 1.0)
    _add_rows(sums, old_l, rows, -1.0)
    ones = torch.ones_like(new_l)
    counts.index_add_(0, new_l, ones)
    counts.index_add_(0, old_l, ones, alpha=-1)
    labels.index_copy_(0, idx, new_l)
    return n_moved


def _add_rows(
    sums: torch.Tensor,
    index: torch.Tensor,
    rows: torch.Tensor,
    alpha: float,
    *,
    onehot: bool | None = None,
) -> None:
    """``sums[index[i]] += alpha * rows[i]``, deterministically on every device."""
    if not (sums.device.type != "cpu" if onehot is None else onehot):
        sums.index_add_(0, index, rows, alpha=alpha)
        return
    # index_add_ on accelerators uses atomics (summation order varies between runs);
    # a one-hot GEMM gives the same sums deterministically.
    n, k = rows.shape[0], sums.shape[0]
    ar = torch.arange(k, device=sums.device).unsqueeze(1)
    step = _block_rows(k, rows.element_size(), n)
    for s in range(0, n, step):
        e = min(n, s + step)
        hot = (index[s:e].unsqueeze(0) == ar).to(sums.dtype)
        sums.addmm_(hot, rows[s:e].to(sums.dtype), alpha=alpha)


def _relocate_empty(
    x: torch.Tensor,
    labels: torch.Tensor,
    dist: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
) -> None:
    """Re-seed empty clusters with the samples farthest from their centre (in place).

    As scikit-learn's ``_relocate_empty_clusters_dense``: the i-th empty cluster gets the
    i-th farthest sample (by ``dist``, the distance to its assigned centre) as its only
    member, and that sample is removed from its old cluster's sum. Nothing happens when
    every sample sits on its centre (fewer distinct rows than k): the empty clusters then
    keep their previous centres.
    """
    empty = torch.nonzero(counts == 0).flatten()
    if float(dist.max()) <= 0.0:
        return
    far = torch.topk(dist, int(empty.numel())).indices
    for new_id, idx in zip(empty.tolist(), far.tolist(), strict=True):
        old_id = int(labels[idx])
        row = x[idx].to(torch.float64)
        sums[old_id] -= row
        sums[new_id] = row
        counts[old_id] -= 1
        counts[new_id] = 1


def _labels_inertia(
    x: torch.Tensor, dist: _Nearest, centers: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Nearest-centre labels of ``centers`` and the inertia ``sum_i ||x_i - c_{l_i}||^2``.

    The inertia is computed from the differences (not from the expanded GEMM form, which
    cancels), per sample in x's dtype and summed over samples in float64.
    """
    labels = dist.assign(centers)
    n, d = x.shape
    step = _block_rows(d, x.element_size(), n)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for s in range(0, n, step):
        e = min(n, s + step)
        r = x[s:e] - centers.index_select(0, labels[s:e])
        total += torch.einsum("ij,ij->i", r, r).sum(dtype=torch.float64)
    return labels, float(total)


# ------------------------------------------------------------------------ silhouette


def silhouette(
    z: Any,
    labels: Any,
    *,
    metric: str = "euclidean",
    sample_size: int | None = None,
    seed: int = 0,
) -> float:
    """Mean silhouette coefficient, exactly as ``sklearn.metrics.silhouette_score``.

    For sample i in cluster A with ``|A| > 1``: ``a(i)`` is the mean distance to the
    other members of A, ``b(i) = min_{B != A} mean_{j in B} d(i, j)``, and
    ``s(i) = (b(i) - a(i)) / max(a(i), b(i))`` (0 when both are 0); ``s(i) = 0`` for a
    singleton cluster. The score is ``mean_i s(i)`` in [-1, 1] (Rousseeuw 1987), used as a
    label-free progress signal by Xu, Lowe & Trappenberg (2024, arXiv 2409.06612).

    ``metric="euclidean"`` uses ``||x - y||``; ``metric="cosine"`` uses
    ``1 - cos(x, y)`` clipped to [0, 2], with an all-zero row at distance 1 from every
    other row (as scikit-learn). A sample's distance to itself is always 0.

    Exact, fast algorithm: samples are sorted by label, so that every cluster is a
    contiguous range, and the distance matrix is visited in square tiles (2048 x 2048 on
    the CPU). Each tile is one float64 GEMM of augmented factors,
    ``[-2x, ||x||^2, 1] . [y, 1, ||y||^2] = ||x - y||^2`` (data centred first to limit
    cancellation), clamped at 0 and square-rooted. Only tiles on or above the diagonal
    are formed (the matrix is symmetric): each adds its row sums over every cluster's
    column range to its rows and, mirrored, its column sums over every cluster's row
    range to its columns (on accelerators, a one-hot GEMM). Memory: the float64 copy of
    the data, one tile, and the (N, C) per-cluster sums; with very many clusters (N * C
    beyond 64 MiB) each band of rows is reduced on its own instead (twice the
    arithmetic, O(tile * (tile + C)) for the sums).

    Args:
        z: (N, D) embeddings (``torch.Tensor`` or numpy), N >= 2.
        labels: (N,) cluster labels of any hashable type (only the partition matters).
        metric: ``"euclidean"`` or ``"cosine"``.
        sample_size: if given, score a uniform random subsample of this many samples
            drawn without replacement with a ``torch.Generator`` seeded by ``seed``
            (the same procedure as scikit-learn's ``sample_size`` + ``random_state``,
            but a different RNG, so the subsample, and hence the value, differ from
            scikit-learn's for the same integer seed). ``sample_size >= N`` scores all
            samples.
        seed: seed for the subsample; ignored when ``sample_size`` is None.

    Returns:
        The mean silhouette coefficient as a float; NaN when (after subsampling) there
        are fewer than 2 distinct labels or as many labels as samples, where the
        silhouette is undefined (scikit-learn raises a ValueError there instead).

    Raises:
        ValueError: on NaN/Inf, non 2-D input, N < 2, labels of the wrong length, an
            unknown metric or ``sample_size < 2``.
    """
    x = as_matrix(z, name="z", min_rows=2)
    n = x.shape[0]
    codes = as_labels(labels, n)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    if sample_size is not None:
        sample_size = as_int(sample_size, "sample_size", low=2)
        if sample_size < n:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(int(seed))
            idx = torch.randperm(n, generator=gen)[:sample_size]
            x = x[idx.to(x.device)]
            codes = codes[idx.numpy()]
    score, _ = silhouette_and_shortlist(x, codes, metric=metric)
    assert score is not None
    return score


def silhouette_and_shortlist(
    z: Any, labels: Any | None, *, metric: str = "euclidean", candidates: int = 0
) -> tuple[float | None, torch.Tensor | None]:
    """:func:`silhouette` of ``labels`` and each row's ``candidates`` nearest other rows,
    from one pass over the pairwise distances (:func:`distance_pass`).

    Returns ``(mean silhouette or None without labels, (N, candidates) indices or None)``;
    the silhouette is NaN where :func:`silhouette` returns NaN.
    """
    x = as_matrix(z, name="z", min_rows=2)
    n = x.shape[0]
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    lab, n_labels, score = None, 1, None
    if labels is not None:
        codes = as_labels(labels, n)
        n_labels = int(codes.max()) + 1
        score = math.nan
        if 1 < n_labels < n:
            lab = torch.as_tensor(codes, dtype=torch.int64, device=x.device)
    if lab is None and candidates <= 0:
        return score, None
    res = distance_pass(x, lab, n_labels, metric, candidates=candidates)
    if res.silhouette is not None:
        score = float(res.silhouette.mean())
    return score, res.candidates


@dataclass(frozen=True, eq=False)
class SampleDistances:
    """What one blocked pass over every pairwise distance of a sample yields.

    Attributes:
        silhouette: (N,) float64 per-sample silhouette values of the given labels (input
            order), or ``None`` when no labels were given.
        candidates: (N, m) int64 indices of each row's m nearest *other* rows by the
            GEMM distance (unordered; ties broken arbitrarily), or ``None``.
    """

    silhouette: torch.Tensor | None
    candidates: torch.Tensor | None


def distance_pass(
    x: torch.Tensor,
    labels: torch.Tensor | None,
    n_labels: int,
    metric: str,
    *,
    candidates: int = 0,
    symmetric: bool | None = None,
    tile: int | None = None,
    reduce: str | None = None,
) -> SampleDistances:
    """One visit of the (N, N) distance matrix serving the silhouette and kNN searches.

    Samples are first sorted by label, so each cluster is a contiguous index range, and
    the distance matrix is visited in (tile x tile) float64 blocks. ``symmetric``
    (default: when the (N, C) sums fit in 64 MiB) visits only the tiles on or above the
    diagonal and credits each one to its rows and, mirrored, to its columns; otherwise
    each row band is reduced on its own (twice the arithmetic, memory O(tile * (tile +
    C))). ``reduce`` picks how a tile is summed per cluster: ``"segments"`` (contiguous
    slices, falling back to ``index_add_`` when a tile spans many clusters; the CPU
    default), ``"index_add"``, or ``"onehot"`` (a GEMM with the one-hot label matrix,
    the default on accelerators, where ``index_add_`` is atomic and its summation order
    varies between runs; with very many clusters they use ``index_add_`` all the same).
    With ``candidates = m > 0`` every tile also offers its m smallest distances to each
    of its rows (and columns) and a running top-m per row is kept (self excluded):
    the kNN entropy's shortlist at no extra distance arithmetic.
    """
    x, _ = unit_scaled(x)  # every output is scale-free: compute at max|x| ~ 1 (exact)
    n = x.shape[0]
    cpu = x.device.type == "cpu"
    if labels is not None:
        order = torch.sort(labels, stable=True).indices
        labels = labels.index_select(0, order)
        aug = _augmented(x.index_select(0, order), metric)
        counts = torch.bincount(labels, minlength=n_labels)
    else:
        order, aug, n_labels = None, _augmented(x, metric), 1
        counts = torch.tensor([n], device=x.device)
    if symmetric is None:
        symmetric = n * n_labels * 8 <= _BLOCK_BYTES
    tile = min(n, tile or (_TILE_CPU if cpu else _TILE_ACCEL))
    if reduce is None:  # the one-hot matrix is (N, C): only when the sums are that small
        reduce = "segments" if cpu else ("onehot" if symmetric else "index_add")
    red = _ClusterReducer(labels, counts, reduce) if labels is not None else None
    near = _NearestOthers(n, min(candidates, n - 1), x.device) if candidates > 0 else None
    counts64 = counts.to(torch.float64)
    buf = torch.empty(tile * tile, dtype=torch.float64, device=x.device)
    sums = None
    if symmetric and red is not None:
        sums = torch.zeros(n, n_labels, dtype=torch.float64, device=x.device)
    values = torch.empty(n, dtype=torch.float64, device=x.device) if red is not None else None
    for s in range(0, n, tile):
        e = min(n, s + tile)
        left = _left_block(aug, s, e, metric)
        part = None
        if red is not None and not symmetric:
            part = torch.zeros(e - s, n_labels, dtype=torch.float64, device=x.device)
        for c0 in range(s if symmetric else 0, n, tile):
            c1 = min(n, c0 + tile)
            d = _distance_tile(left, aug, s, c0, c1, metric, buf)
            if near is not None:
                near.offer(d, s, c0, mirrored=symmetric and c0 != s)
            if red is None:
                continue
            if part is not None:
                red.add_by_column_label(part, d, c0)
                continue
            assert sums is not None
            red.add_by_column_label(sums[s:e], d, c0)
            if c0 != s:
                red.add_by_row_label(sums[c0:c1], d, s)
        if part is not None and values is not None and labels is not None:
            values[s:e] = _silhouette_from_sums(part, labels[s:e], counts64)
    if sums is not None and values is not None and labels is not None:
        values = _silhouette_from_sums(sums, labels, counts64)
    found = near.indices if near is not None else None
    if order is not None:  # back to the input order
        if values is not None:
            values = torch.empty_like(values).index_copy_(0, order, values)
        if found is not None:
            found = torch.empty_like(found).index_copy_(0, order, order[found])
    return SampleDistances(values, found)


class _NearestOthers:
    """Running m smallest distances (and their column indices) of every row."""

    def __init__(self, n: int, m: int, device: torch.device) -> None:
        self.m = m
        self.dist = torch.full((n, m), math.inf, dtype=torch.float64, device=device)
        self.indices = torch.zeros((n, m), dtype=torch.int64, device=device)

    def offer(self, d: torch.Tensor, s: int, c0: int, *, mirrored: bool) -> None:
        """Offer tile ``d`` = distances of rows ``s:`` to rows ``c0:`` (and, mirrored,
        of rows ``c0:`` to rows ``s:``). A diagonal tile's self-distances are skipped."""
        if c0 == s:
            diag = d.diagonal()
            diag.fill_(math.inf)
            self._merge(d, s, c0)
            diag.zero_()
            return
        self._merge(d, s, c0)
        if mirrored:
            self._merge(d.T, c0, s)

    def _merge(self, d: torch.Tensor, r0: int, c0: int) -> None:
        rows = slice(r0, r0 + d.shape[0])
        k = min(self.m, d.shape[1])
        top_d, top_i = torch.topk(d, k, dim=1, largest=False, sorted=False)
        both_d = torch.cat([self.dist[rows], top_d], dim=1)
        both_i = torch.cat([self.indices[rows], top_i.add_(c0)], dim=1)
        keep = torch.topk(both_d, self.m, dim=1, largest=False, sorted=False).indices
        self.dist[rows] = both_d.gather(1, keep)
        self.indices[rows] = both_i.gather(1, keep)


def _augmented(x: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 (N, D + 2) factor ``[x, 1, ||x||^2]`` (euclidean, x centred first) or
    ``[x / ||x||, 1, 0]`` (cosine; all-zero rows stay 0), see :func:`_left_block`."""
    n, dim = x.shape
    aug = torch.empty(n, dim + 2, dtype=torch.float64, device=x.device)
    xs = aug[:, :dim]
    xs.copy_(x)
    aug[:, dim] = 1.0
    if metric == "euclidean":
        xs.sub_(xs.mean(dim=0))
        aug[:, dim + 1] = torch.einsum("ij,ij->i", xs, xs)
    else:
        norms = torch.linalg.vector_norm(xs, dim=1, keepdim=True)
        xs.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))
        aug[:, dim + 1] = 0.0
    return aug


def _left_block(aug: torch.Tensor, s: int, e: int, metric: str) -> torch.Tensor:
    """Rows ``s:e`` as ``[-2x, ||x||^2, 1]`` (euclidean) or ``[-x, 1, 0]`` (cosine), so
    that ``left . aug[j]`` is ``||x - x_j||^2`` or ``1 - cos(x, x_j)``: one GEMM gives a
    block of (squared) distances."""
    dim = aug.shape[1] - 2
    rows = aug[s:e]
    left = torch.empty_like(rows)
    if metric == "euclidean":
        torch.mul(rows[:, :dim], -2.0, out=left[:, :dim])
        left[:, dim] = rows[:, dim + 1]
        left[:, dim + 1] = 1.0
    else:
        torch.neg(rows[:, :dim], out=left[:, :dim])
        left[:, dim] = 1.0
        left[:, dim + 1] = 0.0
    return left


def _distance_tile(
    left: torch.Tensor,
    aug: torch.Tensor,
    s: int,
    c0: int,
    c1: int,
    metric: str,
    buf: torch.Tensor,
) -> torch.Tensor:
    """Distances from rows ``s:s+len(left)`` to rows ``c0:c1`` (in ``buf``).

    A tile with ``c0 == s`` is on the diagonal: the self-distances are set to 0.
    """
    m = left.shape[0]
    d = buf[: m * (c1 - c0)].view(m, c1 - c0)
    torch.mm(left, aug[c0:c1].T, out=d)
    if metric == "euclidean":
        d.clamp_(min=0.0).sqrt_()
    else:
        d.clamp_(min=0.0, max=2.0)
    if c0 == s:
        d.diagonal().zero_()
    return d


class _ClusterReducer:
    """Adds a tile of distances, grouped by cluster label, to per-cluster sums.

    ``labels`` are sorted, so cluster j is the index range ``bounds[j]:bounds[j+1]`` and a
    tile usually spans one or two clusters: contiguous slice sums are then cheapest.
    """

    def __init__(self, labels: torch.Tensor, counts: torch.Tensor, mode: str) -> None:
        if mode not in ("segments", "index_add", "onehot"):
            raise ValueError(f"unknown reduction {mode!r}")
        self.labels = labels
        self.mode = mode
        self.bounds = [0, *torch.cumsum(counts, 0).tolist()]
        self.onehot: torch.Tensor | None = None
        if mode == "onehot":
            n, c = labels.shape[0], int(counts.numel())
            oh = torch.zeros(n, c, dtype=torch.float64, device=labels.device)
            oh[torch.arange(n, device=labels.device), labels] = 1.0
            self.onehot = oh

    def _segments(self, lo: int, hi: int) -> list[tuple[int, int, int]] | None:
        """(cluster, start, stop) of the clusters meeting ``lo:hi``; None if too many."""
        j = bisect.bisect_right(self.bounds, lo) - 1
        out = []
        while j < len(self.bounds) - 1 and self.bounds[j] < hi:
            a, b = max(self.bounds[j], lo), min(self.bounds[j + 1], hi)
            if b > a:
                out.append((j, a - lo, b - lo))
            if len(out) > _MAX_SEGMENTS:
                return None
            j += 1
        return out

    def add_by_column_label(self, target: torch.Tensor, d: torch.Tensor, c0: int) -> None:
        """``target[i, c] += sum_{j: label(c0 + j) = c} d[i, j]`` (target (m, C))."""
        w = d.shape[1]
        if self.onehot is not None:
            target.addmm_(d, self.onehot[c0 : c0 + w])
            return
        segs = self._segments(c0, c0 + w) if self.mode == "segments" else None
        if segs is None:
            target.index_add_(1, self.labels[c0 : c0 + w], d)
            return
        for j, a, b in segs:
            target[:, j] += d[:, a:b].sum(dim=1)

    def add_by_row_label(self, target: torch.Tensor, d: torch.Tensor, s: int) -> None:
        """``target[j, c] += sum_{i: label(s + i) = c} d[i, j]`` (target (w, C))."""
        m = d.shape[0]
        if self.onehot is not None:
            target.addmm_(d.T, self.onehot[s : s + m])
            return
        segs = self._segments(s, s + m) if self.mode == "segments" else None
        if segs is None:
            target.index_add_(1, self.labels[s : s + m], d.T)
            return
        for j, a, b in segs:
            target[:, j] += d[a:b].sum(dim=0)


def _silhouette_from_sums(
    sums: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """s(i) from the (m, C) sums of distances of m samples to each cluster (consumes sums)."""
    rows = torch.arange(sums.shape[0], device=sums.device)
    own = counts[labels]
    a = sums[rows, labels] / (own - 1.0)  # singleton: 0 / 0 -> nan, set to 0 below
    sums[rows, labels] = math.inf
    b = (sums / counts.unsqueeze(0)).min(dim=1).values
    s = (b - a) / torch.maximum(a, b)
    return torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)


# ------------------------------------------------------------------------- agreement


def cluster_agreement(labels_a: Any, labels_b: Any, *, method: str = "ami") -> float:
    """Agreement between two clusterings of the same samples (scikit-learn's scores).

    ``"ami"``: adjusted mutual information with arithmetic normalisation,
    ``(MI - E[MI]) / (mean(H(A), H(B)) - E[MI])`` (Vinh, Epps & Bailey 2010), the
    agreement used by Xu, Lowe & Trappenberg (2024, arXiv 2409.06612); ``"ari"``:
    adjusted Rand index (Hubert & Arabie 1985); ``"nmi"``: normalised mutual information
    ``MI / mean(H(A), H(B))``. All three are 1 for identical partitions (up to renaming);
    AMI and ARI are about 0 for independent ones. Values are scikit-learn's
    ``adjusted_mutual_info_score(average_method="arithmetic")``,
    ``adjusted_rand_score`` and ``normalized_mutual_info_score``.

    Args:
        labels_a: (N,) labels of the first clustering (any hashable values).
        labels_b: (N,) labels of the second clustering.
        method: ``"ami"``, ``"ari"`` or ``"nmi"``.

    Raises:
        ValueError: on an unknown method, non 1-D or empty labels, or different lengths.
    """
    from sklearn.metrics import (
        adjusted_mutual_info_score,
        adjusted_rand_score,
        normalized_mutual_info_score,
    )

    if method not in _AGREEMENT:
        raise ValueError(f"method must be one of {_AGREEMENT}; got {method!r}.")
    a = _label_vector(labels_a, "labels_a")
    b = _label_vector(labels_b, "labels_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"labels_a has length {a.shape[0]} but labels_b has length {b.shape[0]}; both "
            "clusterings must label the same samples."
        )
    ca = as_labels(a, a.shape[0], name="labels_a")
    cb = as_labels(b, b.shape[0], name="labels_b")
    if method == "ami":
        return float(adjusted_mutual_info_score(ca, cb, average_method="arithmetic"))
    if method == "ari":
        return float(adjusted_rand_score(ca, cb))
    return float(normalized_mutual_info_score(ca, cb, average_method="arithmetic"))


def _label_vector(labels: Any, name: str) -> np.ndarray:
    arr = to_numpy(labels) if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one label per sample; got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass one label per sample.")
    return arr
