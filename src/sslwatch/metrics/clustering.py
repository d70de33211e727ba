"""Clustering metrics: k-means, the silhouette score and agreement between clusterings.

Xu, Lowe and Trappenberg (2024), "Label-free Monitoring of Self-Supervised Learning
Progress" (arXiv 2409.06612) cluster the embeddings with k-means and score the result by
the silhouette coefficient (Rousseeuw 1987) and by the agreement (adjusted mutual
information) between two clusterings, e.g. of two checkpoints or two seeds.

All functions are pure: tensors in, numbers out. ``kmeans`` and ``silhouette`` run in
torch on the input's device, in chunks so that memory stays bounded; their results
match scikit-learn's ``KMeans`` (up to the random seeding) and ``silhouette_score``
(exactly, to floating-point rounding).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sslwatch.metrics._validation import as_labels, as_matrix, to_numpy

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
# Lloyd keeps a transposed (D, N) copy of the data for the assignment GEMM up to this size.
_XT_BYTES = 2 * 2**30
# Above this fraction of samples needing a search, one plain pass beats gathering them.
_FULL_PASS_FRACTION = 0.5
# Below this much work per assignment (N * k * D), Hamerly's bookkeeping costs more than
# the plain pass it saves.
_BOUNDS_MIN_WORK = 2**24


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
    a ``torch.Generator`` seeded with ``seed`` (never the global RNG), so the result is
    deterministic for a seed; the draws differ from scikit-learn's, so labels match
    scikit-learn only up to the seeding, while inertias are of the same quality.

    The work runs in torch on ``z``'s device: float32 input is clustered in float32
    (float64 stays float64, half precision is upcast to float32). The assignment step is
    one GEMM per block of rows (``argmin_j ||c_j||^2 - 2 z_i . c_j``); from the second
    iteration on, Hamerly's (2010) bounds skip the samples that provably keep their
    centre, which gives the same iterates as plain Lloyd (up to floating-point ties)
    with less work once the centres settle. Cluster sums are kept in float64 and
    updated for the samples that moved. Memory: a centred copy of ``z`` and, up to
    2 GiB, a transposed one (the ``(k, D) x (D, N)`` GEMM layout is the faster one),
    O(N) bounds, and O(N * k) distances in blocks of at most 64 MiB.

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
    x0 = as_matrix(z, name="z", min_rows=2)
    n = x0.shape[0]
    k = _check_int(k, "k", 1)
    if k > n:
        raise ValueError(
            f"k={k} clusters is more than the {n} samples; choose k <= N (or pass more samples)."
        )
    n_init = _check_int(n_init, "n_init", 1)
    max_iter = _check_int(max_iter, "max_iter", 1)
    tol = float(tol)
    if not (tol >= 0.0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0; got {tol}.")

    # Centre (as scikit-learn does, for precision); the mean is accumulated in float64.
    mean = x0.sum(dim=0, dtype=torch.float64) / n
    x = (x0 - mean.to(x0.dtype)).contiguous()
    del x0
    x_sq = torch.einsum("ij,ij->i", x, x)
    # mean_d Var(z[:, d]) = (mean_i ||x_i||^2 - ||mean_i x_i||^2) / D, x centred
    resid = x.sum(dim=0, dtype=torch.float64) / n
    variance = (x_sq.sum(dtype=torch.float64) / n - resid.dot(resid)) / x.shape[1]
    tol_abs = max(float(variance), 0.0) * tol

    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    xt = _transposed(x)
    best: tuple[float, torch.Tensor, torch.Tensor, int] | None = None
    for _ in range(n_init):
        centers = _kmeans_plusplus(x, x_sq, k, gen)
        labels, centers, inertia, n_iter = _lloyd(x, x_sq, centers, max_iter, tol_abs, xt=xt)
        if best is None or inertia < best[0]:
            best = (inertia, labels, centers, n_iter)
    assert best is not None
    inertia, labels, centers, n_iter = best
    centroids = to_numpy(centers.to(torch.float64) + mean)
    return KMeansResult(
        labels=to_numpy(labels).astype(np.int64, copy=False),
        centroids=centroids,
        inertia=inertia,
        n_iter=n_iter,
    )


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value}.")
    return int(value)


def _kmeans_plusplus(
    x: torch.Tensor, x_sq: torch.Tensor, k: int, gen: torch.Generator
) -> torch.Tensor:
    """Greedy k-means++ seeding (scikit-learn's ``_kmeans_plusplus``); returns (k, D).

    The first centre is a uniformly drawn sample; each further centre is the best, by
    resulting potential ``sum_i min_j ||x_i - c_j||^2``, of ``2 + int(log k)`` samples
    drawn with probability proportional to their current squared distance. If every
    sample already sits on a centre (potential 0), the draw falls on sample 0.
    """
    n = x.shape[0]
    dev = x.device
    n_trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=gen))
    idx = [first]
    closest = _sq_dist_to_rows(x, x_sq, torch.tensor([first], device=dev))[:, 0]
    pot = closest.sum(dtype=torch.float64)
    for _ in range(1, k):
        rand = torch.rand(n_trials, generator=gen, dtype=torch.float64).to(dev) * pot
        cum = torch.cumsum(closest, dim=0, dtype=torch.float64)
        cand = torch.searchsorted(cum, rand).clamp_(max=n - 1)
        d = _sq_dist_to_rows(x, x_sq, cand)  # (N, n_trials)
        torch.minimum(d, closest.unsqueeze(1), out=d)
        pots = d.sum(dim=0, dtype=torch.float64)
        b = int(torch.argmin(pots))
        pot = pots[b]
        closest = d[:, b].contiguous()
        idx.append(int(cand[b]))
    return x.index_select(0, torch.tensor(idx, device=dev))


def _sq_dist_to_rows(x: torch.Tensor, x_sq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Squared distances from every sample to the samples ``x[rows]``: (N, len(rows)).

    ``x @ x[rows].T`` (a tall-skinny GEMM that streams ``x`` once) plus the norms.
    """
    d = torch.addmm(x_sq[rows].unsqueeze(0), x, x[rows].T, beta=1.0, alpha=-2.0)
    d.add_(x_sq.unsqueeze(1)).clamp_(min=0.0)
    return d


def _transposed(x: torch.Tensor) -> torch.Tensor | None:
    """A contiguous (D, N) copy of ``x``, which speeds up the assignment GEMM (see
    :func:`_assign`), or None when it would exceed ``_XT_BYTES``."""
    return x.T.contiguous() if x.numel() * x.element_size() <= _XT_BYTES else None


def _block_rows(n_cols: int, itemsize: int, n: int) -> int:
    return max(1, min(n, _BLOCK_BYTES // max(1, n_cols * itemsize)))


def _assign(
    x: torch.Tensor,
    x_sq: torch.Tensor,
    centers: torch.Tensor,
    *,
    xt: torch.Tensor | None = None,
    second: bool = False,
    dist: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest centre of each sample, by blocks of samples (one GEMM per block).

    The GEMM is laid out as (k, D) x (D, m), which BLAS runs faster than (m, D) x (D, k)
    for k << m; ``xt``, a contiguous (D, N) copy of ``x``, makes it faster still.
    Returns int64 labels ``argmin_j ||c_j||^2 - 2 x.c_j``, the distance to that centre
    (if ``dist``) and the distance to the second-nearest centre (if ``second``; inf when
    k = 1); tensors not asked for are empty. Distances come from
    ``||x||^2 + ||c||^2 - 2 x.c``.
    """
    n, k = x.shape[0], centers.shape[0]
    c_sq = torch.einsum("ij,ij->i", centers, centers).unsqueeze(1)
    cols = x.T if xt is None else xt
    step = _block_rows(k, x.element_size(), n)
    parts = []
    for s in range(0, n, step):
        part = torch.addmm(c_sq, centers, cols[:, s : min(n, s + step)], beta=1.0, alpha=-2.0)
        vals, idx = part.min(dim=0)
        far = torch.empty(0, dtype=x.dtype, device=x.device)
        if second and k > 1:
            far = part.scatter_(0, idx.unsqueeze(0), math.inf).amin(dim=0)
        elif second:
            far = torch.full_like(vals, math.inf)
        parts.append((idx, vals, far))
    labels = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    empty = torch.empty(0, dtype=x.dtype, device=x.device)
    near, far = empty, empty
    if dist:
        near = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
        near.add_(x_sq).clamp_(min=0.0).sqrt_()
    if second:
        far = parts[0][2] if len(parts) == 1 else torch.cat([p[2] for p in parts])
        far.add_(x_sq).clamp_(min=0.0).sqrt_()
    return labels, near, far


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
    xt: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Lloyd iterations from ``centers`` (scikit-learn's ``_kmeans_single_lloyd``).

    Each iteration assigns every sample to its nearest centre, re-seeds empty clusters,
    moves each centre to the mean of its samples, and stops when the labels did not
    change or the total squared centre shift is at most ``tol_abs``.

    The assignment is exact Lloyd, accelerated with Hamerly's (2010) bounds: an upper
    bound ``u_i`` on the distance to the assigned centre and a lower bound ``l_i`` on the
    distance to every other centre are carried over iterations (``u_i += shift of its
    centre``, ``l_i -= largest shift of another centre``); a sample is re-assigned only
    when ``u_i > max(l_i, s_a / 2)``, ``s_a`` being the distance from its centre to the
    nearest other centre. Samples that fail the test cannot change cluster, so the labels
    equal the plain argmin (up to floating-point ties) at a fraction of the cost once
    the centres settle. Cluster sums are kept in float64 and updated for the samples
    that moved only. ``bounds`` forces the bounds on or off (default: on when the
    assignment costs at least ``_BOUNDS_MIN_WORK`` multiply-adds and k > 1).

    Returns the final labels (nearest-centre assignment of the final centres), the
    centres, the inertia and the number of iterations run.
    """
    n, dim = x.shape
    k = centers.shape[0]
    use_bounds = k > 1 and (n * k * dim >= _BOUNDS_MIN_WORK if bounds is None else bounds)
    if xt is None:
        xt = _transposed(x)
    labels, upper, lower = _assign(x, x_sq, centers, xt=xt, second=use_bounds)
    sums = _cluster_sums(x, labels, k)
    counts = torch.bincount(labels, minlength=k)
    n_iter = 0
    for it in range(max_iter):
        n_iter = it + 1
        changed = None
        if it > 0 and use_bounds:
            changed = _hamerly_update(x, xt, x_sq, centers, labels, upper, lower, sums, counts)
        elif it > 0:
            lab, _, _ = _assign(x, x_sq, centers, xt=xt, dist=False)
            changed = _apply_moves(x, None, lab, labels, sums, counts)
        if bool((counts == 0).any()):
            # Relocation changes the centres only; sums/counts keep matching labels.
            sums_c, counts_c = sums.clone(), counts.clone()
            dist = upper
            if changed is not None:
                dist = torch.linalg.vector_norm(x - centers.index_select(0, labels), dim=1)
            _relocate_empty(x, labels, dist, sums_c, counts_c)
        else:
            sums_c, counts_c = sums, counts
        new = torch.where(
            (counts_c > 0).unsqueeze(1),
            sums_c / counts_c.clamp(min=1).unsqueeze(1).to(torch.float64),
            centers.to(torch.float64),
        ).to(x.dtype)
        delta = torch.linalg.vector_norm((new - centers).to(torch.float64), dim=1)
        shift = float((delta * delta).sum())
        centers = new
        if changed == 0:  # labels identical to the previous iteration's
            break
        if shift <= tol_abs:
            break
        if use_bounds:
            _shift_bounds(labels, upper, lower, delta.to(x.dtype))
    labels, inertia = _labels_inertia(x, xt, x_sq, centers)
    return labels, centers, inertia, n_iter


def _shift_bounds(
    labels: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor, delta: torch.Tensor
) -> None:
    """Hamerly's bound update after the centres moved by ``delta`` (in place)."""
    upper.add_(delta[labels])
    if delta.numel() > 1:
        top = torch.topk(delta, 2)
        other = torch.where(labels == top.indices[0], top.values[1], top.values[0])
        lower.sub_(other)


def _hamerly_update(
    x: torch.Tensor,
    xt: torch.Tensor | None,
    x_sq: torch.Tensor,
    centers: torch.Tensor,
    labels: torch.Tensor,
    upper: torch.Tensor,
    lower: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
) -> int:
    """Exact re-assignment with Hamerly's bounds; updates every argument but x in place.

    Samples whose bounds prove they keep their centre are skipped; the others get their
    upper bound tightened to the exact distance and, if still needed, a full search.
    When most samples need a search anyway (typical in high dimension with overlapping
    clusters, where the bounds are loose), one plain pass over all samples is cheaper
    than gathering them, so that is done instead. Returns how many samples moved.
    """
    n, k = x.shape[0], centers.shape[0]
    if k == 1:
        return 0
    c64 = centers.to(torch.float64)
    cc = torch.cdist(c64, c64)
    cc.fill_diagonal_(math.inf)
    half = (0.5 * cc.min(dim=1).values).to(x.dtype)
    bound = torch.maximum(lower, half.index_select(0, labels))
    need = upper > bound
    n_need = int(need.sum())
    if n_need == 0:
        return 0
    if n_need > _FULL_PASS_FRACTION * n:
        lab, near, far = _assign(x, x_sq, centers, xt=xt, second=True)
        upper.copy_(near)
        lower.copy_(far)
        return _apply_moves(x, None, lab, labels, sums, counts)
    cand = torch.nonzero(need).flatten()
    # tighten the upper bound with the exact distance to the assigned centre
    u = torch.linalg.vector_norm(
        x.index_select(0, cand) - centers.index_select(0, labels.index_select(0, cand)),
        dim=1,
    )
    upper.index_copy_(0, cand, u)
    cand = cand.index_select(0, torch.nonzero(u > bound.index_select(0, cand)).flatten())
    if cand.numel() == 0:
        return 0
    lab, near, far = _assign(
        x.index_select(0, cand), x_sq.index_select(0, cand), centers, second=True
    )
    upper.index_copy_(0, cand, near)
    lower.index_copy_(0, cand, far)
    return _apply_moves(x, cand, lab, labels, sums, counts)


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
    old_l = labels.index_select(0, idx)
    rows = x.index_select(0, idx).to(torch.float64)
    _add_rows(sums, new_l, rows, 1.0)
    _add_rows(sums, old_l, rows, -1.0)
    ones = torch.ones_like(new_l)
    counts.index_add_(0, new_l, ones).index_add_(0, old_l, ones, alpha=-1)
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
    x: torch.Tensor, xt: torch.Tensor | None, x_sq: torch.Tensor, centers: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Nearest-centre labels and the inertia ``sum_i ||x_i - c_{l_i}||^2``.

    Computed from the differences (not from the expanded GEMM form, which cancels), per
    sample in x's dtype and summed over samples in float64.
    """
    labels, _, _ = _assign(x, x_sq, centers, xt=xt, dist=False)
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
        sample_size = _check_int(sample_size, "sample_size", 2)
        if sample_size < n:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(int(seed))
            idx = torch.randperm(n, generator=gen)[:sample_size]
            x = x[idx.to(x.device)]
            _, codes = np.unique(codes[idx.numpy()], return_inverse=True)
            codes = codes.reshape(-1)
            n = sample_size
    n_labels = int(codes.max()) + 1
    if not 1 < n_labels < n:
        return float("nan")
    lab = torch.as_tensor(codes, dtype=torch.int64, device=x.device)
    return float(_silhouette_samples(x, lab, n_labels, metric).mean())


def _silhouette_samples(
    x: torch.Tensor,
    labels: torch.Tensor,
    n_labels: int,
    metric: str,
    *,
    symmetric: bool | None = None,
    tile: int | None = None,
    reduce: str | None = None,
) -> torch.Tensor:
    """Per-sample silhouette values (float64, (N,)); labels coded 0..C-1, all used.

    Samples are first sorted by label, so each cluster is a contiguous index range, and
    the distance matrix is visited in (tile x tile) blocks. ``symmetric`` (default: when
    the (N, C) sums fit in 64 MiB) visits only the tiles on or above the diagonal and
    credits each one to its rows and, mirrored, to its columns; otherwise each row band
    is reduced on its own (twice the arithmetic, memory O(tile * (tile + C))).
    ``reduce`` picks how a tile is summed per cluster: ``"segments"`` (contiguous
    slices, falling back to ``index_add_`` when a tile spans many clusters; the CPU
    default), ``"index_add"``, or ``"onehot"`` (a GEMM with the one-hot label matrix,
    the default on accelerators, where ``index_add_`` is atomic and its summation order
    varies between runs; with very many clusters they use ``index_add_`` all the same).
    """
    n = x.shape[0]
    cpu = x.device.type == "cpu"
    order = torch.sort(labels, stable=True).indices
    labels = labels.index_select(0, order)
    aug = _augmented(x.index_select(0, order), metric)
    counts = torch.bincount(labels, minlength=n_labels)
    if symmetric is None:
        symmetric = n * n_labels * 8 <= _BLOCK_BYTES
    tile = min(n, tile or (_TILE_CPU if cpu else _TILE_ACCEL))
    if reduce is None:  # the one-hot matrix is (N, C): only when the sums are that small
        reduce = "segments" if cpu else ("onehot" if symmetric else "index_add")
    red = _ClusterReducer(labels, counts, reduce)
    counts64 = counts.to(torch.float64)
    buf = torch.empty(tile * tile, dtype=torch.float64, device=x.device)
    if symmetric:
        sums = torch.zeros(n, n_labels, dtype=torch.float64, device=x.device)
        for s in range(0, n, tile):
            e = min(n, s + tile)
            left = _left_block(aug, s, e, metric)
            for c0 in range(s, n, tile):
                c1 = min(n, c0 + tile)
                d = _distance_tile(left, aug, s, c0, c1, metric, buf)
                red.add_by_column_label(sums[s:e], d, c0)
                if c0 != s:
                    red.add_by_row_label(sums[c0:c1], d, s)
        values = _silhouette_from_sums(sums, labels, counts64)
    else:
        values = torch.empty(n, dtype=torch.float64, device=x.device)
        for s in range(0, n, tile):
            e = min(n, s + tile)
            left = _left_block(aug, s, e, metric)
            part = torch.zeros(e - s, n_labels, dtype=torch.float64, device=x.device)
            for c0 in range(0, n, tile):
                c1 = min(n, c0 + tile)
                red.add_by_column_label(part, _distance_tile(left, aug, s, c0, c1, metric, buf), c0)
            values[s:e] = _silhouette_from_sums(part, labels[s:e], counts64)
    out = torch.empty_like(values)
    out[order] = values
    return out


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
