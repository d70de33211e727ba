"""k-means: the public :func:`kmeans` and the best of its seeded runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sslwatch.metrics._scaling import unit_scaled
from sslwatch.metrics._validation import as_int, as_matrix, to_numpy
from sslwatch.metrics.clustering._lloyd import lloyd
from sslwatch.metrics.clustering._seeding import kmeans_plusplus
from sslwatch.metrics.clustering._workers import Workers, cpu_workers

# k-means++ reads a transposed copy of the data up to this size (bytes).
_XT_BYTES = 2 * 2**30


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
    n = x0.shape[0]
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
    xa, mean, tol_abs = centred(x0, tol)
    del x0
    with cpu_workers(xa) as workers:
        best = best_run(xa, k, n_init, max_iter, tol_abs, seed, workers)
    return best.result(mean, exponent)


def centred(x0: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(xa, mean, tol_abs)``: ``x0`` centred (as scikit-learn does, for precision) in
    the first D columns of the augmented matrix ``xa = [x, 1, ||x||^2]`` of
    :func:`~sslwatch.metrics.clustering._nearest.augment` (x0's dtype), the float64
    mean, and ``tol`` times the mean per-dimension variance."""
    n, dim = x0.shape
    mean = x0.sum(dim=0, dtype=torch.float64) / n
    xa = torch.empty(n, dim + 2, dtype=x0.dtype, device=x0.device)
    x = xa[:, :dim]
    torch.sub(x0, mean.to(x0.dtype), out=x)
    x_sq = torch.einsum("ij,ij->i", x, x)
    xa[:, dim] = 1.0
    xa[:, dim + 1] = x_sq
    # mean_d Var(z[:, d]) = (mean_i ||x_i||^2 - ||mean_i x_i||^2) / D, x centred
    resid = x.sum(dim=0, dtype=torch.float64) / n
    variance = (x_sq.sum(dtype=torch.float64) / n - resid.dot(resid)) / dim
    return xa, mean, max(float(variance), 0.0) * tol


@dataclass(frozen=True, eq=False)
class Run:
    """One k-means run on the centred, scaled data: its labels, centres (x's dtype),
    inertia and Lloyd iterations."""

    labels: torch.Tensor
    centers: torch.Tensor
    inertia: float
    n_iter: int

    def result(self, mean: torch.Tensor, exponent: int) -> KMeansResult:
        """The run in the input's coordinates: centres plus ``mean``, times 2^exponent."""
        centroids = to_numpy(self.centers.to(torch.float64) + mean)
        with np.errstate(over="ignore", under="ignore"):  # inf / 0 beyond float64's range
            true_inertia = float(np.ldexp(self.inertia, 2 * exponent))
        return KMeansResult(
            labels=to_numpy(self.labels).astype(np.int64, copy=False),
            centroids=np.ldexp(centroids, exponent),
            inertia=true_inertia,
            n_iter=self.n_iter,
        )


def best_run(
    xa: torch.Tensor,
    k: int,
    n_init: int,
    max_iter: int,
    tol_abs: float,
    seed: int,
    workers: Workers | None,
) -> Run:
    """The lowest-inertia of ``n_init`` runs on the augmented centred data ``xa`` (see
    :func:`centred`): k-means++ seedings in lockstep, then Lloyd from each. ``workers``
    (:func:`~sslwatch.metrics.clustering._workers.cpu_workers`) selects the numpy
    kernels, None the torch ones."""
    x = xa[:, :-2]
    # Lloyd draws no random numbers, so all runs are seeded first, in lockstep.
    # k-means++ streams the samples once per step, faster from a contiguous (D + 2, N)
    # copy (kept within _XT_BYTES, and freed before Lloyd).
    xat = xa.T.contiguous() if xa.numel() * xa.element_size() <= _XT_BYTES else xa.T
    # One generator per run, itself seeded from ``seed``: a run's centres do not
    # depend on which other runs are seeded alongside it.
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    run_seeds = torch.randint(0, 2**62, (n_init,), generator=gen).tolist()
    gens = [torch.Generator().manual_seed(s) for s in run_seeds]
    seeds = kmeans_plusplus(xa, xat, k, gens, workers)
    del xat
    best: Run | None = None
    for centers in seeds:
        run = Run(*lloyd(x, xa[:, -1], centers, max_iter, tol_abs, xa=xa, workers=workers))
        if best is None or run.inertia < best.inertia:
            best = run
    assert best is not None
    return best
