"""Exact nearest-centre search for Lloyd's k-means, with Yinyang bounds.

Squared distances come from one GEMM per block of samples, ``[x, 1, ||x||^2] .
[-2c, ||c||^2, 1] = ||x - c||^2`` (:func:`augment`, :func:`augment_centers`).
:class:`NearestCentres` skips the samples whose nearest centre provably did not change
(Ding et al., "Yinyang K-Means", ICML 2015), with the bounds widened by the GEMM's
worst-case rounding, so the labels are a full pass's up to floating-point ties.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sslwatch.metrics.clustering._workers import Workers, block_rows, cpu_rows

# Rows per block of the numpy nearest-centre search (the (rows, k) block of distances
# stays in cache).
_CPU_ROWS = 2048
# One group of centres per _GROUP_SIZE centres, at most _BOUND_BYTES of (t, N) float64
# lower bounds; a block whose share of samples to recompute exceeds _FULL_BLOCK is
# recomputed whole.
_GROUP_SIZE = 10
_BOUND_BYTES = 256 * 2**20
_FULL_BLOCK = 0.7
# A bounded pass that recomputes more than this share of the samples is followed by
# _BOUNDS_BACKOFF plain passes (doubling while it keeps happening, up to 16), then a
# fresh full bounded pass: where the bounds cannot skip, their bookkeeping only costs.
_BOUNDS_GIVE_UP = 0.75
_BOUNDS_BACKOFF = 2


def augment(x: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """(N, D + 2) ``[x, 1, ||x||^2]``, whose product with ``[-2c, ||c||^2, 1]`` (see
    :func:`augment_centers`) is ``||x - c||^2``."""
    n, dim = x.shape
    xa = torch.empty(n, dim + 2, dtype=x.dtype, device=x.device)
    xa[:, :dim] = x
    xa[:, dim] = 1.0
    xa[:, dim + 1] = x_sq
    return xa


def augment_centers(centers: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(k, D + 2) ``[-2c, ||c||^2, 1]`` (see :func:`augment`)."""
    k, dim = centers.shape
    ca = torch.empty(k, dim + 2, dtype=centers.dtype, device=centers.device)
    torch.mul(centers, -2.0, out=ca[:, :dim])
    ca[:, dim] = torch.einsum("ij,ij->i", centers, centers) if c_sq is None else c_sq
    ca[:, dim + 1] = 1.0
    return ca


@dataclass(frozen=True)
class _BoundStep:
    """What the bounds of :class:`NearestCentres` need from one Lloyd step."""

    shift: torch.Tensor  # (k,) float64: how far each centre moved since the last call
    group_shift: torch.Tensor  # (t,) float64: the largest shift within each group
    c_max: float  # max_j ||c_j|| of the new centres
    guard: float  # margin for the float64 rounding of the bound updates
    first: bool  # no bounds yet: a full pass
    search: bool  # no labels yet: a full argmin (else the old label is checked first)


def matmul_unit_roundoff(x: torch.Tensor, workers: Workers | None) -> float:
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


class NearestCentres:
    """Exact nearest-centre search over the augmented samples ``xa`` (:func:`augment`)
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
    ``k`` distances in one BLAS GEMM. The group filter (searching only the groups whose
    bound fails) computes fewer distances, but through small GEMMs of gathered samples
    or a per-sample kernel, where each distance costs several times a large GEMM's.
    """

    def __init__(self, xa: torch.Tensor, k: int, bounds: bool, workers: Workers | None) -> None:
        self.xa = xa
        self.workers = workers
        n = xa.shape[0]
        dev = xa.device
        unit = matmul_unit_roundoff(xa, workers)
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
        ca = augment_centers(centers).index_select(0, self.perm)
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
        """:meth:`assign`'s pass with the numpy kernels: blocks of samples on the workers."""
        assert self.workers is not None
        n, width, k = self.xa.shape[0], self.xa.shape[1], ca.shape[0]
        rows = cpu_rows(_CPU_ROWS, width * k)
        work: list[slice | np.ndarray] = [slice(s, min(n, s + rows)) for s in range(0, n, rows)]
        if step is not None and not step.first:
            work = self._failing_blocks(step, work, rows)
        sizes = [w.stop - w.start if isinstance(w, slice) else w.size for w in work]
        refresh = self._numpy_refresh(ca, step)

        def run(w0: int, w1: int) -> None:
            for w, m in zip(work[w0:w1], sizes[w0:w1], strict=True):
                refresh(w, m)

        self.workers.run(run, len(work), 1)
        self.rows_computed += sum(sizes)

    def _failing_blocks(
        self, step: _BoundStep, blocks: list[slice | np.ndarray], rows: int
    ) -> list[slice | np.ndarray]:
        """Moves every sample's bounds by the centres' shifts (in a few large chunks) and
        returns the samples whose bound fails: the ``blocks`` in which most samples fail
        (more than ``_FULL_BLOCK``) whole, the other failing samples gathered into blocks
        of ``rows``."""
        assert self.workers is not None
        n = self.xa.shape[0]
        upper, lower, labels = self.upper.numpy(), self.lower.numpy(), self.labels.numpy()
        shift, gshift = step.shift.numpy(), step.group_shift.numpy()[:, None]
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

        self.workers.run(test, n, chunk)
        fail = np.concatenate(found)
        n_blocks = len(blocks)
        block_sizes = np.full(n_blocks, rows)
        block_sizes[-1] = n - rows * (n_blocks - 1)
        whole = np.bincount(fail // rows, minlength=n_blocks) > _FULL_BLOCK * block_sizes
        rest = fail[~whole[fail // rows]]
        work = [blocks[b] for b in np.flatnonzero(whole)]
        work += [rest[s : s + rows] for s in range(0, rest.size, rows)]
        return work

    def _numpy_refresh(
        self, ca: torch.Tensor, step: _BoundStep | None
    ) -> Callable[[slice | np.ndarray, int], None]:
        """The numpy kernel of one block: ``refresh(idx, m)`` computes the distances of
        the ``m`` samples ``idx`` to every centre, hence their labels and, with ``step``,
        fresh bounds (widened by the GEMM's worst-case rounding, see the class doc)."""
        assert self.workers is not None
        workers = self.workers
        xa_t = self.xa
        xa, ca_np = xa_t.numpy(), ca.numpy()
        cat_np = np.ascontiguousarray(ca_np.T) if step is None else ca_np.T
        labels, perm, starts = self.labels.numpy(), self.perm.numpy(), self.starts
        inv_perm = np.argsort(perm)
        width, k = xa.shape[1], ca_np.shape[0]
        if step is not None:
            assert self.x_norm is not None
            upper, lower, x_norm = self.upper.numpy(), self.lower.numpy(), self.x_norm.numpy()

        def refresh(idx: slice | np.ndarray, m: int) -> None:
            if isinstance(idx, slice):
                a = xa[idx]
            else:  # gathered samples: torch's gather is the faster one here
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

        return refresh

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
        blk = min(m, _CPU_ROWS) if cpu else block_rows(k, xa.element_size(), m)
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
