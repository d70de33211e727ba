"""The monitor's mergeable state: a torchmetrics ``Metric`` of moments and key sketches.

:class:`StreamState` holds what :class:`~sslwatch.online.monitor.Monitor` accumulates:
row counts and the float64 second moments (reduced by ``sum`` across ranks), and the
reservoir rows with their content keys (:mod:`sslwatch.online.keys`; gathered by
``cat`` and cut to the bottom R). Both are additive, so a DDP sync is torchmetrics' own;
:meth:`StreamState._agree_layout` first makes ranks that saw no batch hold empty states
of the agreed shape and dtype.

Labelled rows (``Monitor.update(..., labels=)``) add the ridge probe's sufficient
statistics of the train-side rows (count, sum, D x D second moment, per-class sums and
counts; ``sum``) and two keyed reservoirs with their labels (train side: the kNN bank;
held out: the test rows; ``cat``). These states stay empty (zero-size) until labels
arrive, so an unlabelled monitor carries nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from sslwatch.metrics.spectrum import ShiftedGram, add_gram, add_gram_device
from sslwatch.online.keys import NO_KEY

__all__ = [
    "FiniteRows",
    "LabelBatch",
    "StreamBatch",
    "StreamSnapshot",
    "StreamState",
    "finite_rows",
    "on_host",
]

_DTYPE_CODES = {torch.float32: 1, torch.float64: 2}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}


def on_host(t: torch.Tensor) -> bool:
    """Whether ``t`` takes the host path: CPU tensors, handled through numpy.

    The host path drops non-finite rows at once, offers the reservoir only rows below
    its current threshold and folds the moments with BLAS ``syrk``. Tensors on
    accelerators take the sync-free path instead, so that an update never waits for the
    device: non-finite rows are zeroed (and keyed :data:`~sslwatch.online.keys.NO_KEY`)
    rather than dropped, counts stay tensors, and nothing is filtered per step.
    """
    return t.device.type == "cpu"


@dataclass
class FiniteRows:
    """A batch screened for NaN and Inf (see :func:`finite_rows`)."""

    rows: torch.Tensor  # host path: the finite rows; sync-free path: all, non-finite zeroed
    mask: torch.Tensor | None  # sync-free path: which rows are finite; None on the host
    n_finite: torch.Tensor | int
    nonfinite: torch.Tensor | int
    kept: np.ndarray | None = None  # host path: which input rows were kept, if any dropped

    def mask_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """``keys`` of :attr:`rows`, with :data:`~sslwatch.online.keys.NO_KEY` for the
        zeroed non-finite rows, which the reservoir must never keep."""
        if self.mask is None:
            return keys
        return torch.where(self.mask, keys, torch.full_like(keys, NO_KEY))


def finite_rows(z: torch.Tensor) -> FiniteRows:
    """Screen the (n, w) rows ``z`` for NaN and Inf, on the path :func:`on_host` picks."""
    if on_host(z):
        a = np.ascontiguousarray(z.numpy())  # numpy: no thread wake-ups for small ops
        ok = np.isfinite(a).all(axis=1)
        bad = int(a.shape[0] - np.count_nonzero(ok))
        if bad:
            a = a[ok]
        return FiniteRows(torch.from_numpy(a), None, int(a.shape[0]), bad, ok if bad else None)
    mask = torch.isfinite(z).all(dim=1)
    zeroed = torch.where(mask[:, None], z, torch.zeros((), dtype=z.dtype, device=z.device))
    return FiniteRows(zeroed, mask, mask.sum(), (~mask).sum())


@dataclass
class LabelBatch:
    """The labelled rows of one update, split by content key (see ``Monitor.update``).

    Host path: ``rows`` are the finite rows and ``train`` / ``held`` partition them.
    Sync-free path: ``rows`` are all rows with non-finite ones zeroed, and ``train`` /
    ``held`` are both False for them (their keys are ``NO_KEY``).
    """

    rows: torch.Tensor  # (n, D)
    labels: torch.Tensor  # (n,) int64 class indices, on the rows' device
    keys: torch.Tensor  # (n,) int64 content keys (label salt)
    train: torch.Tensor  # (n,) bool: train side (folded into the statistics, kNN bank)
    held: torch.Tensor  # (n,) bool: held out (test rows)
    n_classes: int  # 1 + the largest label of this batch


@dataclass
class StreamBatch:
    """One update, prepared by :meth:`Monitor.update` (all on one device)."""

    fold: torch.Tensor | None  # rows for the moments (non-finite ones removed or zeroed)
    n_fold: torch.Tensor | int
    n_seen: torch.Tensor | int  # finite rows in the batch
    rows: torch.Tensor | None  # candidate reservoir rows
    keys: torch.Tensor | None
    nonfinite: torch.Tensor | int
    view_rows: torch.Tensor | None = None  # (n, q * d)
    view_keys: torch.Tensor | None = None
    view_nonfinite: torch.Tensor | int = 0
    gram32: bool = False
    labelled: LabelBatch | None = None


def _as_list(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    return list(state)


def _bottom(
    rows: list[torch.Tensor],
    keys: list[torch.Tensor],
    size: int,
    extra: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The ``size`` finite rows with the smallest keys, sorted by key (ties: stable),
    with the ``extra`` values (labels) aligned to them.

    Ignores torchmetrics' 1-D placeholders for states no rank filled.
    """
    rows = [r for r in rows if r.ndim == 2]
    keys = [k for k in keys if k.dtype == torch.int64]
    extras = [e for e in extra or [] if e.dtype == torch.int64]
    if not rows or not keys:
        return None, None, None
    r, k = torch.cat(rows), torch.cat(keys)
    e = torch.cat(extras) if extra is not None and extras else None
    order = torch.argsort(k, stable=True)[:size]
    r, k = r[order], k[order]
    e = None if e is None else e[order]
    valid = k != NO_KEY
    if not bool(valid.all()):
        r, k = r[valid], k[valid]
        e = None if e is None else e[valid]
    if r.shape[0] == 0:
        return None, None, None
    return r, k, e


# The keyed reservoirs: rows attribute -> (keys attribute, aligned labels attribute).
_RESERVOIRS: dict[str, tuple[str, str | None]] = {
    "rows": ("keys", None),
    "view_rows": ("view_keys", None),
    "lab_rows": ("lab_keys", "lab_labels"),  # labelled train side: the kNN bank
    "held_rows": ("held_keys", "held_labels"),  # labelled held-out rows: the test rows
}


class StreamState(Metric):
    """Additive, mergeable state: moments (``sum``) and key sketches (``cat``).

    ``outer`` holds the moments in its lower triangle (diagonal included); the strict
    upper triangle is scratch (the CPU path uses BLAS ``dsyrk``, half the flops of a full
    product). :meth:`compute` returns the symmetrised matrix.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    count: torch.Tensor
    seen: torch.Tensor
    nonfinite: torch.Tensor
    view_nonfinite: torch.Tensor
    total: torch.Tensor
    outer: torch.Tensor
    lab_count: torch.Tensor
    lab_total: torch.Tensor
    lab_outer: torch.Tensor
    lab_class_sums: torch.Tensor
    lab_class_counts: torch.Tensor

    def __init__(self, reservoir_size: int, process_group: Any = None) -> None:
        super().__init__(
            process_group=process_group, compute_with_cache=False, sync_on_compute=True
        )
        i64, f64 = torch.int64, torch.float64
        self.add_state("count", torch.zeros((), dtype=i64), dist_reduce_fx="sum")
        self.add_state("seen", torch.zeros((), dtype=i64), dist_reduce_fx="sum")
        self.add_state("nonfinite", torch.zeros((), dtype=i64), dist_reduce_fx="sum")
        self.add_state("view_nonfinite", torch.zeros((), dtype=i64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(0, 0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("rows", [], dist_reduce_fx="cat")
        self.add_state("keys", [], dist_reduce_fx="cat")
        self.add_state("view_rows", [], dist_reduce_fx="cat")
        self.add_state("view_keys", [], dist_reduce_fx="cat")
        # Labelled rows: zero-size until labels arrive (see _ensure_labels).
        self.add_state("lab_count", torch.zeros((), dtype=i64), dist_reduce_fx="sum")
        self.add_state("lab_total", torch.zeros(0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("lab_outer", torch.zeros(0, 0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("lab_class_sums", torch.zeros(0, 0, dtype=f64), dist_reduce_fx="sum")
        self.add_state("lab_class_counts", torch.zeros(0, dtype=i64), dist_reduce_fx="sum")
        for rows_attr, (keys_attr, labels_attr) in _RESERVOIRS.items():
            if labels_attr is not None:
                self.add_state(rows_attr, [], dist_reduce_fx="cat")
                self.add_state(keys_attr, [], dist_reduce_fx="cat")
                self.add_state(labels_attr, [], dist_reduce_fx="cat")
        self.reservoir_size = int(reservoir_size)
        # Layout, learned from the data (kept across reset: one representation per state).
        self.dim = 0
        self.row_dtype: torch.dtype | None = None
        self.view_shape: tuple[int, int] = (0, 0)  # (q, d)
        self.view_dtype: torch.dtype | None = None
        self.n_classes = 0  # 1 + the largest label seen (kept across reset, like dim)
        self._local_reset()

    def _local_reset(self) -> None:
        self._buffered = dict.fromkeys(_RESERVOIRS, 0)
        self._threshold: dict[str, int | None] = dict.fromkeys(_RESERVOIRS)
        self._mixed: ShiftedGram | None = None

    @property
    def has_labels(self) -> bool:
        """Whether labelled rows were folded since the last reset (on this rank)."""
        return self.lab_total.numel() > 0

    def reset(self) -> None:
        """Clear the accumulated state (the learned layout is kept)."""
        super().reset()
        self._local_reset()

    # -- update ---------------------------------------------------------------------------

    def update(self, batch: StreamBatch) -> None:
        """Fold one prepared batch into the state."""
        self.count += batch.n_fold
        self.seen += batch.n_seen
        self.nonfinite += batch.nonfinite
        self.view_nonfinite += batch.view_nonfinite
        if batch.fold is not None:
            self._fold(batch.fold, batch.gram32)
        if batch.rows is not None and batch.keys is not None:
            self._offer("rows", "keys", batch.rows, batch.keys)
        if batch.view_rows is not None and batch.view_keys is not None:
            self._offer("view_rows", "view_keys", batch.view_rows, batch.view_keys)
        if batch.labelled is not None:
            self._fold_labels(batch.labelled)

    def _ensure_labels(self, d: int, n_classes: int, device: torch.device) -> None:
        """Allocate the labelled statistics, or grow their class rows to ``n_classes``."""
        f64 = torch.float64
        if self.lab_total.numel() == 0:
            self.lab_total = torch.zeros(d, dtype=f64, device=device)
            self.lab_outer = torch.zeros(d, d, dtype=f64, device=device)
            self.lab_class_sums = torch.zeros(0, d, dtype=f64, device=device)
            self.lab_class_counts = torch.zeros(0, dtype=torch.int64, device=device)
        self.n_classes = max(self.n_classes, n_classes)
        grow = self.n_classes - int(self.lab_class_counts.shape[0])
        if grow > 0:
            self.lab_class_sums = torch.cat(
                [self.lab_class_sums, torch.zeros(grow, d, dtype=f64, device=device)]
            )
            self.lab_class_counts = torch.cat(
                [self.lab_class_counts, torch.zeros(grow, dtype=torch.int64, device=device)]
            )

    def _fold_labels(self, lb: LabelBatch) -> None:
        """Fold the train-side rows into the statistics; offer both sides to their
        reservoirs."""
        rows, labels = lb.rows, lb.labels
        self._ensure_labels(int(rows.shape[1]), lb.n_classes, rows.device)
        if on_host(rows):
            train_rows, train_labels = rows[lb.train], labels[lb.train]
            a = np.ascontiguousarray(train_rows.numpy(), dtype=np.float64)
            self.lab_count += int(a.shape[0])
            if a.shape[0]:
                self.lab_total.numpy()[:] += a.sum(axis=0)
                if not self.lab_outer.is_contiguous():  # pragma: no cover
                    self.lab_outer = self.lab_outer.contiguous()
                target = self.lab_outer.numpy().T  # lower triangle, as in _fold
                out = add_gram(target, a)
                if not np.shares_memory(out, target):  # pragma: no cover
                    self.lab_outer = torch.from_numpy(np.ascontiguousarray(out.T))
                self.lab_class_sums.index_add_(0, train_labels, torch.from_numpy(a))
                self.lab_class_counts += torch.bincount(
                    train_labels, minlength=self.lab_class_counts.shape[0]
                )
            for rows_attr, side in (("lab_rows", lb.train), ("held_rows", lb.held)):
                keys_attr, labels_attr = _RESERVOIRS[rows_attr]
                if bool(side.any()):
                    self._offer(
                        rows_attr, keys_attr, rows[side], lb.keys[side], labels_attr, labels[side]
                    )
            return
        # sync-free path: zero the rows that are not on the train side instead of dropping
        zeroed = torch.where(
            lb.train[:, None], rows, torch.zeros((), dtype=rows.dtype, device=rows.device)
        )
        self.lab_count += lb.train.sum()
        self.lab_total += torch.sum(zeroed, dim=0, dtype=torch.float64)
        add_gram_device(self.lab_outer, zeroed)
        self.lab_class_sums.index_add_(0, labels, zeroed.to(torch.float64))
        self.lab_class_counts.index_add_(0, labels, lb.train.to(torch.int64))
        no_key = torch.full_like(lb.keys, NO_KEY)
        for rows_attr, side in (("lab_rows", lb.train), ("held_rows", lb.held)):
            keys_attr, labels_attr = _RESERVOIRS[rows_attr]
            keys = torch.where(side, lb.keys, no_key)
            self._offer(rows_attr, keys_attr, rows, keys, labels_attr, labels)

    def _ensure_moments(self, d: int, device: torch.device) -> None:
        if self.total.numel() == 0:
            self.total = torch.zeros(d, dtype=torch.float64, device=device)
            self.outer = torch.zeros(d, d, dtype=torch.float64, device=device)

    def _fold(self, z: torch.Tensor, gram32: bool) -> None:
        self._ensure_moments(int(z.shape[1]), z.device)
        if z.shape[0] == 0:
            return
        if on_host(z):
            a = np.ascontiguousarray(z.numpy())
            total = self.total.numpy()
            total += a.sum(axis=0, dtype=np.float64)
            if gram32 and a.dtype == np.float32 and self._fold_mixed(a):
                return
            if not self.outer.is_contiguous():
                self.outer = self.outer.contiguous()
            # outer.numpy().T is a Fortran-ordered view whose upper triangle is the lower
            # triangle of ``outer``: add_gram updates it in place.
            target = self.outer.numpy().T
            out = add_gram(target, a)
            if not np.shares_memory(out, target):  # pragma: no cover
                self.outer = torch.from_numpy(np.ascontiguousarray(out.T))
            return
        self.total += torch.sum(z, dim=0, dtype=torch.float64)
        if gram32 and z.dtype == torch.float32:
            self.outer += z.T @ z
        else:
            add_gram_device(self.outer, z)

    def _fold_mixed(self, a: np.ndarray) -> bool:
        """Fold float32 rows through float32 products around a fixed shift (CPU).

        Through :class:`~sslwatch.metrics.spectrum.ShiftedGram` (shift: this rank's first
        batch mean in float32); :meth:`_flush_mixed` adds its exact raw Gram to the moments.
        Returns False (fold in float64 instead) when a value is outside the range where
        float32 squares are safe.
        """
        amax = float(np.max(np.abs(a))) if a.size else 0.0
        if not ShiftedGram.applies(amax):
            return False
        d = a.shape[1]
        if self._mixed is None or self._mixed.shift.shape[0] != d:
            self._mixed = ShiftedGram(a.mean(axis=0, dtype=np.float64).astype(np.float32))
        self._mixed.update(a)
        return True

    def _flush_mixed(self) -> None:
        """Move the shifted float32-product accumulators into the raw float64 moments."""
        if self._mixed is None or not self._mixed.n:
            return
        if not self.outer.is_contiguous():
            self.outer = self.outer.contiguous()
        # upper triangle of the Fortran view = lower triangle of ``outer``
        target = self.outer.numpy().T
        target += self._mixed.raw_gram()
        self._mixed.clear()

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """torchmetrics' sync, after folding pending float32-product sums into the state
        (torchmetrics caches the local state before reducing, so this must come first)."""
        self._flush_mixed()
        super().sync(*args, **kwargs)

    def _offer(
        self,
        rows_attr: str,
        keys_attr: str,
        rows: torch.Tensor,
        keys: torch.Tensor,
        labels_attr: str | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        threshold = self._threshold[rows_attr]
        if on_host(rows) and threshold is not None:
            keep = keys.numpy() < threshold
            if not keep.any():
                return
            rows = torch.from_numpy(rows.numpy()[keep])
            keys = torch.from_numpy(keys.numpy()[keep])
            labels = None if labels is None else torch.from_numpy(labels.numpy()[keep])
        elif on_host(rows):
            rows = torch.from_numpy(rows.numpy().copy())
            keys = torch.from_numpy(keys.numpy().copy())
            labels = None if labels is None else torch.from_numpy(labels.numpy().copy())
        else:
            rows, keys = rows.clone(), keys.clone()
            labels = None if labels is None else labels.clone()
        getattr(self, rows_attr).append(rows)
        getattr(self, keys_attr).append(keys)
        if labels_attr is not None and labels is not None:
            getattr(self, labels_attr).append(labels)
        self._buffered[rows_attr] += int(rows.shape[0])
        if self._buffered[rows_attr] >= 2 * self.reservoir_size:
            self._compact(rows_attr, keys_attr)

    def _compact(self, rows_attr: str, keys_attr: str) -> None:
        labels_attr = _RESERVOIRS[rows_attr][1]
        rows, keys, labels = _bottom(
            _as_list(getattr(self, rows_attr)),
            _as_list(getattr(self, keys_attr)),
            self.reservoir_size,
            None if labels_attr is None else _as_list(getattr(self, labels_attr)),
        )
        if rows is None or keys is None:
            return
        setattr(self, rows_attr, [rows])
        setattr(self, keys_attr, [keys])
        if labels_attr is not None and labels is not None:
            setattr(self, labels_attr, [labels])
        self._buffered[rows_attr] = int(rows.shape[0])
        if on_host(rows) and rows.shape[0] >= self.reservoir_size:
            self._threshold[rows_attr] = int(keys[-1])

    # -- distributed ----------------------------------------------------------------------

    def _sync_dist(self, dist_sync_fn: Any = gather_all_tensors, process_group: Any = None) -> None:
        self._agree_layout(process_group or self.process_group)
        super()._sync_dist(dist_sync_fn, process_group=process_group)

    def broadcast_values(self, values: list[float]) -> list[float]:
        """Every rank adopts the values of the group's first rank (no-op without DDP).

        Ranks compute on identical states, but BLAS kernels may round differently on
        different hardware; one broadcast makes alarms and logs agree to the bit, so a
        stop decision can never differ between ranks.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized() and values):
            return values
        group = self.process_group
        src = 0 if group is None else torch.distributed.get_global_rank(group, 0)
        buf = torch.tensor(values, dtype=torch.float64, device=self._comm_device(group))
        torch.distributed.broadcast(buf, src=src, group=group)
        return [float(v) for v in buf.tolist()]

    def _comm_device(self, group: Any) -> torch.device:
        backend = str(torch.distributed.get_backend(group))
        if backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return self.device

    def _agree_layout(self, group: Any) -> None:
        """Agree on dimension and dtypes across ranks; give empty ranks empty states.

        One ``all_reduce(MAX)`` of 11 integers. Ranks that saw embeddings of different
        widths raise the same ``ValueError`` everywhere (no rank is left waiting).
        """
        big = 1 << 62
        q, dv = self.view_shape
        local = [
            self.dim,
            q,
            dv,
            _DTYPE_CODES.get(self.row_dtype, 0) if self.row_dtype is not None else 0,
            _DTYPE_CODES.get(self.view_dtype, 0) if self.view_dtype is not None else 0,
            int(self.total.numel() > 0),  # this rank holds moments
            self.n_classes if self.has_labels else 0,
            int(self.has_labels),  # this rank saw labelled rows
        ]
        negated = [-x if x else -big for x in local[:3]]
        device = self._comm_device(group)
        info = torch.tensor(local + negated, dtype=torch.int64, device=device)
        torch.distributed.all_reduce(info, op=torch.distributed.ReduceOp.MAX, group=group)
        got = [int(x) for x in info.tolist()]
        d_max, q_max, dv_max, row_code, view_code, has_moments, classes, labelled = got[:8]
        mins = [-x for x in got[8:]]
        for what, hi, lo in (
            ("embedding dimension", d_max, mins[0]),
            ("number of views", q_max, mins[1]),
            ("view dimension", dv_max, mins[2]),
        ):
            if lo != big and lo != hi:
                raise ValueError(
                    f"ranks disagree on the {what} ({lo} vs {hi}); every rank must feed the "
                    "monitor the same representation"
                )
        if device != self.device:
            self.to(device)
        if d_max:
            self.dim = d_max
            if has_moments:
                self._ensure_moments(d_max, device)
            self._ensure_rows("rows", "keys", d_max, _CODE_DTYPES.get(row_code), device)
            if labelled:  # every rank holds class rows of the same (largest) count
                self._ensure_labels(d_max, classes, device)
                for rows_attr in ("lab_rows", "held_rows"):
                    keys_attr, labels_attr = _RESERVOIRS[rows_attr]
                    self._ensure_rows(
                        rows_attr, keys_attr, d_max, _CODE_DTYPES.get(row_code), device, labels_attr
                    )
        if q_max and dv_max:
            self.view_shape = (q_max, dv_max)
            self._ensure_rows(
                "view_rows", "view_keys", q_max * dv_max, _CODE_DTYPES.get(view_code), device
            )

    def _ensure_rows(
        self,
        rows_attr: str,
        keys_attr: str,
        width: int,
        dtype: torch.dtype | None,
        device: torch.device,
        labels_attr: str | None = None,
    ) -> None:
        if dtype is None:
            return
        rows = [r.to(dtype) for r in _as_list(getattr(self, rows_attr))]
        keys = _as_list(getattr(self, keys_attr))
        labels = [] if labels_attr is None else _as_list(getattr(self, labels_attr))
        if not rows:
            rows = [torch.empty(0, width, dtype=dtype, device=device)]
            keys = [torch.empty(0, dtype=torch.int64, device=device)]
            labels = [torch.empty(0, dtype=torch.int64, device=device)]
        setattr(self, rows_attr, rows)
        setattr(self, keys_attr, keys)
        if labels_attr is not None:
            setattr(self, labels_attr, labels)

    # -- compute --------------------------------------------------------------------------

    def compute(self) -> StreamSnapshot:
        """The (synced) state: counts, symmetrised moments, the two sorted samples, and
        the labelled state (``"labelled"``: ``None`` when no rank saw labels)."""
        self._flush_mixed()
        rows, keys, _ = _bottom(_as_list(self.rows), _as_list(self.keys), self.reservoir_size)
        view_rows, view_keys, _ = _bottom(
            _as_list(self.view_rows), _as_list(self.view_keys), self.reservoir_size
        )
        return StreamSnapshot(
            {
                "labelled": self._labelled() if self.has_labels else None,
                "count": int(self.count),
                "seen": int(self.seen),
                "nonfinite": int(self.nonfinite),
                "view_nonfinite": int(self.view_nonfinite),
                "total": self.total,
                "outer": _symmetric(self.outer),
                "rows": rows,
                "keys": keys,
                "view_rows": view_rows,
                "view_keys": view_keys,
            }
        )

    def _labelled(self) -> dict[str, Any]:
        """The labelled state: train-side statistics and the two labelled samples."""
        out: dict[str, Any] = {
            "count": int(self.lab_count),
            "total": self.lab_total,
            "outer": _symmetric(self.lab_outer),
            "class_sums": self.lab_class_sums,
            "class_counts": self.lab_class_counts,
        }
        for rows_attr, name in (("lab_rows", "bank"), ("held_rows", "held")):
            keys_attr, labels_attr = _RESERVOIRS[rows_attr]
            assert labels_attr is not None
            rows, _, labels = _bottom(
                _as_list(getattr(self, rows_attr)),
                _as_list(getattr(self, keys_attr)),
                self.reservoir_size,
                _as_list(getattr(self, labels_attr)),
            )
            out[name] = (rows, labels)
        return out


class StreamSnapshot:
    """What :meth:`StreamState.compute` returns: the state's values by name, each tensor a
    copy (later updates do not change it).

    A plain object, not a collection: torchmetrics' compute wrapper squeezes every
    one-element tensor of a returned collection to 0-d, which would turn one sample row,
    one class or D = 1 into tensors of the wrong shape.
    """

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = _cloned(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]


def _cloned(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_cloned(v) for v in value)
    return value


def _symmetric(outer: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose lower triangle ``outer`` holds."""
    if not outer.numel():
        return outer
    return torch.tril(outer) + torch.tril(outer, -1).T
