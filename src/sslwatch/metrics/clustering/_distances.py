"""One blocked pass over every pairwise distance of a sample.

The silhouette needs each sample's summed distance to every cluster; the kNN entropy
needs each sample's nearest others. :func:`distance_pass` serves both from one visit of
the (N, N) distance matrix, in float64 tiles of one GEMM each, with memory O(tile^2)
plus the (N, C) per-cluster sums.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch

from sslwatch.metrics._scaling import unit_scaled
from sslwatch.metrics.clustering._workers import BLOCK_BYTES

# Tiles (rows x columns of the distance matrix): 32 MiB of float64 on the CPU (few,
# large parallel regions; mostly cache-resident for the passes after the GEMM), 128 MiB
# on accelerators.
_TILE_CPU = 2048
_TILE_ACCEL = 4096
# A tile spanning more clusters than this is reduced with index_add_ instead of slices.
_MAX_SEGMENTS = 16


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
        symmetric = n * n_labels * 8 <= BLOCK_BYTES
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
