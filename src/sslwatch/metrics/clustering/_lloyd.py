"""Lloyd's iterations of k-means from given centres (scikit-learn's ``lloyd``).

Each iteration assigns every sample to its nearest centre (with Yinyang bounds, see
:mod:`sslwatch.metrics.clustering._nearest`), re-seeds empty clusters as scikit-learn
does, and moves each centre to the mean of its samples; cluster sums are kept in float64
and updated only for the samples that moved.
"""

from __future__ import annotations

import torch

from sslwatch.metrics.clustering._nearest import NearestCentres, augment
from sslwatch.metrics.clustering._workers import Workers, block_rows

# Lloyd skips samples by Yinyang bounds when one full pass costs at least this many
# multiply-adds (below it, their bookkeeping costs more than it saves).
_BOUNDS_MIN_WORK = 2**23


def _cluster_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster sums of the rows of ``x``: (k, D) float64 (accumulated in x's dtype)."""
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    add_rows(sums, labels, x, 1.0)
    return sums.to(torch.float64)


def lloyd(
    x: torch.Tensor,
    x_sq: torch.Tensor,
    centers: torch.Tensor,
    max_iter: int,
    tol_abs: float,
    *,
    bounds: bool | None = None,
    xa: torch.Tensor | None = None,
    workers: Workers | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Lloyd iterations from ``centers`` (scikit-learn's ``_kmeans_single_lloyd``).

    Each iteration assigns every sample to its nearest centre, re-seeds empty clusters,
    moves each centre to the mean of its samples, and stops when the labels did not
    change or the total squared centre shift is at most ``tol_abs``.

    The assignment is plain Lloyd's argmin (up to floating-point ties): with ``bounds``
    (default: when one full pass costs at least ``_BOUNDS_MIN_WORK`` multiply-adds) only
    the samples whose nearest centre may have changed are recomputed (Yinyang bounds,
    see :class:`~sslwatch.metrics.clustering._nearest.NearestCentres`), otherwise all of
    them.
    Cluster sums are kept in float64 and updated for the samples that moved only.
    ``workers`` (see :func:`~sslwatch.metrics.clustering._workers.cpu_workers`) selects
    the numpy kernels, None the torch ones.

    Returns the final labels (nearest-centre assignment of the final centres), the
    centres, the inertia and the number of iterations run.
    """
    n = x.shape[0]
    k = centers.shape[0]
    if xa is None:
        xa = augment(x, x_sq)
    if bounds is None:
        bounds = n * k * xa.shape[1] >= _BOUNDS_MIN_WORK
    dist = NearestCentres(xa, k, bounds, workers)
    labels = dist.assign(centers)
    sums = _cluster_sums(x, labels, k)
    counts = torch.bincount(labels, minlength=k)
    n_iter = 0
    for it in range(max_iter):
        n_iter = it + 1
        changed = None
        if it > 0:
            lab = dist.assign(centers)
            changed = _apply_moves(x, lab, labels, sums, counts)
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
    new_labels: torch.Tensor,
    labels: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
) -> int:
    """Set ``labels`` to ``new_labels`` and update the float64 cluster sums and counts.

    Only the samples that changed cluster are moved between sums; when more than a third
    of all samples moved, the sums are recomputed from scratch instead. Returns how many
    samples changed cluster.
    """
    moved = torch.nonzero(new_labels != labels).flatten()
    n_moved = int(moved.numel())
    if n_moved == 0:
        return 0
    new_l = new_labels.index_select(0, moved)
    if 3 * n_moved > x.shape[0]:
        labels.index_copy_(0, moved, new_l)
        sums.copy_(_cluster_sums(x, labels, sums.shape[0]))
        counts.copy_(torch.bincount(labels, minlength=counts.numel()))
        return n_moved
    # the rows join their new clusters, then leave their old ones
    old_l = labels.index_select(0, moved)
    rows = x.index_select(0, moved).to(torch.float64)
    add_rows(sums, new_l, rows, 1.0)
    add_rows(sums, old_l, rows, -1.0)
    ones = torch.ones_like(new_l)
    counts.index_add_(0, new_l, ones)
    counts.index_add_(0, old_l, ones, alpha=-1)
    labels.index_copy_(0, moved, new_l)
    return n_moved


def add_rows(
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
    step = block_rows(k, rows.element_size(), n)
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
    x: torch.Tensor, dist: NearestCentres, centers: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Nearest-centre labels of ``centers`` and the inertia ``sum_i ||x_i - c_{l_i}||^2``.

    The inertia is computed from the differences (not from the expanded GEMM form, which
    cancels), per sample in x's dtype and summed over samples in float64.
    """
    labels = dist.assign(centers)
    n, d = x.shape
    step = block_rows(d, x.element_size(), n)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for s in range(0, n, step):
        e = min(n, s + step)
        r = x[s:e] - centers.index_select(0, labels[s:e])
        total += torch.einsum("ij,ij->i", r, r).sum(dtype=torch.float64)
    return labels, float(total)
