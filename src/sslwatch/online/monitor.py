"""Training-time monitoring: label-free metrics streamed from inside a training loop.

:class:`Monitor` is the framework-free core. Call :meth:`Monitor.update` with each batch
of embeddings (and, optionally, augmented views) inside the loop, :meth:`Monitor.compute`
whenever you want values (every N steps, every epoch), :meth:`Monitor.reset` to start a
new window. The Lightning callback (:mod:`sslwatch.online.lightning`) and the
writers for plain loops (:mod:`sslwatch.online.sinks`) are thin layers over it.

What the monitor keeps (its state is a torchmetrics ``Metric``, so DDP works the
torchmetrics way):

* **Second moments** (spectrum metrics: RankMe, alpha-ReQ, stable rank, ...): the row
  count, the float64 sum of rows (D,) and the float64 sum of outer products (D, D) of
  *every* finite embedding seen, i.e. O(D^2) memory for any number of embeddings. The
  values equal the one-shot functions on the concatenated embeddings (to about 1e-12
  relative for float64 input; see ``gram_dtype`` for float32 input).
* **A reservoir sample** (point metrics: k-means + silhouette + agreement, kNN entropy,
  collapse_std) of at most ``reservoir_size`` rows (default 4096,
  :data:`~sslwatch.online.settings.DEFAULT_RESERVOIR_SIZE`), and a second one of views
  (LiDAR, alignment, uniformity) when views are given.

The reservoir is a *bottom-R sketch with content-derived keys*
(:mod:`sslwatch.online.keys`): every row gets a pseudo-random key computed from its
exact bits by a seeded universal hash, and the sample is the R rows with the smallest
keys, sorted by key. The kept set is therefore the same whatever the batch split, the
arrival order, or the split across DDP ranks. Distinct rows get pairwise independent,
uniform keys, so the sample is a uniform sample without replacement of the distinct rows
("uniform-like": exact duplicates share a key and enter or leave together).

Labels (optional): ``update(embeddings, labels=y)`` with integer class indices adds two
label-based references to :meth:`Monitor.compute`, so the trust in each label-free
metric can be judged while training runs:

* every labelled row gets a label-salted content key; rows whose key is below
  ``heldout_fraction * KEY_SPACE`` (default 0.2) are *held out* (test rows), the rest are
  the *train side*. The choice depends only on the row's bits and the seed: the same on
  any number of ranks and in any batch split;
* ``ridge_probe``: the ridge classifier of :func:`sslwatch.ridge_probe`, solved from the
  exact sufficient statistics of *every* train-side row (count, sum, D x D second moment,
  per-class sums and counts: O(D^2 + C D) float64, summed across ranks), its L2 picked
  from the grid by accuracy on the held-out rows, and scored on them;
* ``knn_accuracy``: :func:`sslwatch.knn_accuracy` with a bank of the ``reservoir_size``
  train-side rows of smallest key, tested on the ``reservoir_size`` held-out rows of
  smallest key (the same held-out rows the ridge probe is scored on).

Both equal the offline functions on the same rows (``ridge_probe(train_side, y, held,
y_held, l2=<the chosen l2>)``), and their definitions record ``split="content_key"``.
Labels are class indices 0..C-1; C is 1 + the largest label seen (agreed across ranks in
the layout all-reduce, so no class count has to be given). Updates without labels feed
only the label-free state: the label references use the labelled updates alone. A
monitor never given labels allocates nothing for them. The split is by embedding
content: a window spanning several epochs sees each input's embedding once per epoch,
possibly on both sides; reset the monitor per epoch (the Lightning callback does) to
keep train and test rows apart. For the same reason give labels with one view of each
input only: two views of one input fall on either side independently, and a held-out
view finds its sibling in the kNN bank (the Lightning callback labels the first forward
call of a watched layer per step). Labels on an accelerator cost one small device read per
update (their range check).

Distributed: under ``torch.distributed`` (any backend), :meth:`Monitor.compute` sums the
moments over the process group (``process_group``, default: the world group that DDP
training uses) and gathers the reservoirs (uneven sizes per rank are fine) through
torchmetrics; every rank then computes the values of one process fed all the data
(spectrum metrics up to float64 summation order; point metrics on the very same sample,
because the reservoir is rank-split-invariant), and all ranks adopt the first rank's
values through one small broadcast, so logs and alarm decisions agree to the bit.
``compute`` is a collective: call it on every rank at the same point. A rank that saw no
batch is fine (``dim=`` need not be given): ranks first agree on the embedding dimension
and dtype with one small ``all_reduce``; ranks that saw embeddings of different
dimensions all get the same ``ValueError``.

Robustness: an exception inside a metric never propagates (``on_error="warn"``): it
becomes a ``RuntimeWarning`` naming the metric and the value is NaN. Rows with NaN or Inf
are never folded into the state: they are counted, reported with the step in a
:class:`NonFiniteWarning`, and in the result (:attr:`MonitorResult.n_nonfinite`).

Alarms (:mod:`sslwatch.online.alarms`): RankMe below an absolute floor or a fraction of
its running maximum, collapse_std near 0, the kNN entropy dropping sharply between
computes raise a ``CollapseWarning`` with the step and the values; with
``stop_on_collapse=True`` the monitor sets :attr:`Monitor.should_stop`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np
import torch

from sslwatch.core.context import MetricContext, resolve_k
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.evaluate import Evaluation, MetricValue, compute_metrics, definition_for
from sslwatch.core.registry import REGISTRY, MetricSpec
from sslwatch.metrics._threads import blas_threads
from sslwatch.metrics._validation import as_int, as_matrix
from sslwatch.metrics.probes import RidgeStatistics, fit_ridge_from_statistics, knn_accuracy
from sslwatch.metrics.spectrum import SecondMoments
from sslwatch.online.alarms import AlarmEvent, AlarmTracker, CollapseAlarms, CollapseWarning
from sslwatch.online.keys import KEY_SPACE, LABEL_SALT, VIEW_SALT, KeyHasher, heldout_rows
from sslwatch.online.settings import LABEL_METRICS, MAX_CLASSES, MonitorOptions, MonitorSettings

if TYPE_CHECKING:
    from sslwatch.online.hooks import LayerWatch
from sslwatch.online.state import (
    FiniteRows,
    LabelBatch,
    StreamBatch,
    StreamSnapshot,
    StreamState,
    finite_rows,
)

__all__ = [
    "CollapseAlarms",  # re-exported: the alarms a Monitor takes, beside it
    "CollapseWarning",
    "InvalidLabelsError",
    "Monitor",
    "MonitorResult",
    "MonitorSettings",
    "NonFiniteWarning",
]

# Below this fraction of the covariance trace, eigenvalues from float32 products are
# round-off (the products err by up to about 1e-8 of the trace).
_FLOAT32_RESOLUTION = 1e-8
MOMENT_WARN_BYTES = 1 << 30
"""Above this size of the D x D moment state (1 GiB), a Monitor warns when it learns D."""


class InvalidLabelsError(ValueError):
    """Labels passed to :meth:`Monitor.update` that are not one non-negative integer class
    index per row; nothing of that update was folded."""


class NonFiniteWarning(RuntimeWarning):
    """Embedding rows with NaN or Inf were seen; they were skipped, not averaged in."""


# --------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------


class MonitorResult(Evaluation):
    """What :meth:`Monitor.compute` returns: an :class:`~sslwatch.core.evaluate.Evaluation`
    (metric name -> float, with definitions) plus where in training it was taken.

    Attributes:
        name: the monitor's representation name (e.g. ``"backbone"``).
        step: the training step passed to ``compute``, else that of the last ``update``.
        epoch: the epoch passed to ``compute`` (or ``None``).
        n_rows: finite embedding rows seen since the last reset (over all ranks).
        n_nonfinite: embedding rows skipped because they held NaN or Inf (all ranks).
        n_sample: rows in the reservoir sample the point metrics used.
        nonfinite_steps: this rank's steps whose batches held non-finite rows.
        alarms: the :class:`AlarmEvent` objects this compute fired.
    """

    def __init__(
        self,
        records: Iterable[MetricValue],
        timings: Mapping[str, float],
        *,
        name: str,
        step: int | None,
        epoch: int | None,
        n_rows: int,
        n_nonfinite: int,
        n_sample: int,
        nonfinite_steps: tuple[int | None, ...] = (),
        alarms: tuple[AlarmEvent, ...] = (),
    ) -> None:
        super().__init__(records, timings)
        self.name = name
        self.step = step
        self.epoch = epoch
        self.n_rows = n_rows
        self.n_nonfinite = n_nonfinite
        self.n_sample = n_sample
        self.nonfinite_steps = nonfinite_steps
        self.alarms = alarms

    def log_dict(self, prefix: str = "sslwatch") -> dict[str, float]:
        """Flat ``{"<prefix>/<name>/<metric>": value}`` for loggers, plus
        ``"<prefix>/<name>/nonfinite_rows"`` (always present, usually 0)."""
        base = f"{prefix}/{self.name}" if prefix else self.name
        out = {f"{base}/{metric}": float(value) for metric, value in self.items()}
        out[f"{base}/nonfinite_rows"] = float(self.n_nonfinite)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.6g}" for k, v in self.items())
        return f"MonitorResult(name={self.name!r}, step={self.step}, n_rows={self.n_rows}, {inner})"


# --------------------------------------------------------------------------------------
# The monitor
# --------------------------------------------------------------------------------------


def _dtype_name(x: Any) -> str:
    dtype = getattr(x, "dtype", None)
    return str(dtype).replace("torch.", "") if dtype is not None else "float64"


class Monitor:
    """Streaming, DDP-aware label-free metrics of one representation during training.

    Args:
        metrics: registry names to compute; ``None`` = the default label-free set (plus
            the view metrics once views are passed to :meth:`update`).
        name: representation name, used in results and log keys (``"backbone"``, ...).
        dim: the embedding dimension D, if known; otherwise learned from the first update.
            Every update must have this width.
        process_group: the ``torch.distributed`` group to reduce over (``None`` = the world
            group, which is what DDP training uses).
        settings: a ready :class:`~sslwatch.online.settings.MonitorSettings` (then give
            neither ``metrics`` nor ``options``).
        **options: the other settings by keyword (``reservoir_size``, ``k``, ``seed``,
            ``alarms``, ``on_error``, ``params``, ``gram_dtype``, ``moment_fraction``,
            ``blas_threads``, ``heldout_fraction``), each documented, defaulted and checked by
            :class:`~sslwatch.online.settings.MonitorSettings`.
    """

    def __init__(
        self,
        metrics: Iterable[str] | None = None,
        *,
        name: str = "embeddings",
        dim: int | None = None,
        process_group: Any = None,
        settings: MonitorSettings | None = None,
        **options: Unpack[MonitorOptions],
    ) -> None:
        if settings is None:
            settings = MonitorSettings(
                metrics=None if metrics is None else tuple(metrics), **options
            )
        elif metrics is not None or options:
            raise ValueError("give settings= or the settings as keywords, not both")
        if dim is not None:
            as_int(dim, "dim", hint=" or None (learned)")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}")
        self.settings = settings
        candidates = settings.candidates()
        self._overrides = settings.overrides
        self._needs_moments = any(s.kind == "spectrum" for s in candidates)
        self._needs_sample = any(s.kind == "sample" for s in candidates)
        self._needs_views = any(s.uses_views for s in candidates)
        self._needs_labels = any(s.kind == "labels" for s in candidates)
        self.name = name
        self.dim = dim
        self.process_group = process_group
        self.should_stop = False
        self.alarm_events: list[AlarmEvent] = []
        alarms = settings.alarms
        self._tracker = AlarmTracker(alarms) if alarms is not None else None
        self._state = StreamState(settings.reservoir_size, process_group)
        self._hasher = KeyHasher(settings.seed)
        self._input_dtype: str | None = None
        self._warned_float32_tail = False
        self._updates = 0
        self._last_step: int | None = None
        self._nonfinite_steps: list[int | None] = []
        # (step, count tensor, batch size, what), read at compute
        self._pending_nonfinite: list[tuple[int | None, torch.Tensor, int, str]] = []
        if dim is not None:
            self._announce_moment_cost(int(dim))

    # -- public API -----------------------------------------------------------------------

    @property
    def moment_bytes(self) -> int | None:
        """Bytes per rank of the streamed moments: the float64 D x D sum of outer products
        and the D-vector of sums (8 (D^2 + D)), plus the float32 route's two D x D
        buffers (12 D^2) with ``gram_dtype="float32"``. 0 without spectrum metrics;
        ``None`` until D is known."""
        return self._moment_bytes_for(int(self.dim)) if self.dim else None

    def _moment_bytes_for(self, d: int) -> int:
        if not self._needs_moments:
            return 0
        extra = 12 * d * d if self.settings.gram_dtype == "float32" else 0
        return 8 * (d * d + d) + extra

    @property
    def metrics(self) -> list[str]:
        """The metric names this monitor computes (views metrics once views are seen,
        label references once labels are)."""
        has_views = self._state.view_shape != (0, 0)
        return [s.name for s in self._specs(has_views=has_views, has_labels=self._state.has_labels)]

    @property
    def n_updates(self) -> int:
        """Calls to :meth:`update` on this rank since the last :meth:`reset`."""
        return self._updates

    @property
    def last_step(self) -> int | None:
        """The step of the last update (``step=`` if given, else a running counter)."""
        return self._last_step

    def update(
        self,
        embeddings: Any,
        views: Any = None,
        *,
        labels: Any = None,
        step: int | None = None,
    ) -> None:
        """Fold one batch of embeddings (and optionally its views and labels) into the state.

        Args:
            embeddings: (B, D) torch tensor (any float dtype incl. fp16/bf16, any device)
                or numpy array. Detached; no gradient is kept.
            views: optional (n, q, d) augmented views (q >= 2) for the view metrics and
                for clustering agreement across views.
            labels: optional (B,) integer class indices (0..C-1; torch or numpy, any
                device) of the embedding rows, for the label references
                ``ridge_probe`` and ``knn_accuracy`` (see the module docstring). Ignored
                when neither is among the monitor's metrics.
            step: the training step, for reports (default: a counter of updates).

        Rows with NaN/Inf are skipped and reported (a :class:`NonFiniteWarning` on CPU
        immediately; on accelerators at the next :meth:`compute`, to avoid a device sync
        per step).

        Raises:
            ValueError: a wrongly shaped input, a width different from earlier updates,
                or labels that are not one non-negative integer class index per row.
        """
        device = embeddings.device if isinstance(embeddings, torch.Tensor) else torch.device("cpu")
        threads = self.settings.blas_threads
        blas = blas_threads(threads) if device.type == "cpu" else contextlib.nullcontext()
        with torch.no_grad(), _no_autocast(device), blas:
            self._update(embeddings, views, labels, step)

    def _update(self, embeddings: Any, views: Any, labels: Any, step: int | None) -> None:
        if self._input_dtype is None and hasattr(embeddings, "dtype"):
            self._input_dtype = _dtype_name(embeddings)
        z = as_matrix(embeddings, name="embeddings", min_rows=0, check_finite=False)
        step = self._updates if step is None else int(step)
        self._check_width(z)
        codes = None
        if labels is not None and self._needs_labels:
            codes = _label_codes(labels, int(z.shape[0]))
        st = self._state
        if st.row_dtype is None:
            st.row_dtype = z.dtype
        elif z.dtype != st.row_dtype:
            z = z.to(st.row_dtype)
        if st.device != z.device:
            st.to(z.device)
        screened = self._screen(z, step, "embedding rows")
        batch = self._embedding_batch(screened)
        if codes is not None:
            batch.labelled = self._label_batch(screened, codes)
        if views is not None and self._needs_views:
            screened = self._screen(self._view_matrix(views), step, "view samples")
            batch.view_rows = screened.rows
            batch.view_keys = screened.mask_keys(self._hasher(screened.rows, VIEW_SALT))
            batch.view_nonfinite = screened.nonfinite
        st.update(batch)
        self._updates += 1
        self._last_step = step

    def _screen(self, rows: torch.Tensor, step: int, what: str) -> FiniteRows:
        """Screen ``rows`` for NaN/Inf and report them: now on the host path, at the next
        :meth:`compute` on the sync-free one (reading the count would wait for the device)."""
        screened = finite_rows(rows)
        n = int(rows.shape[0])
        if screened.mask is not None:
            self._pending_nonfinite.append((step, torch.as_tensor(screened.nonfinite), n, what))
        elif screened.nonfinite:
            self._report_nonfinite(step, int(screened.nonfinite), n, what, 5)
        return screened

    def _embedding_batch(self, screened: FiniteRows) -> StreamBatch:
        """What the state folds from one batch's screened embeddings: the rows for the
        moments (the key-chosen subsample below ``moment_fraction`` 1) and the keyed
        reservoir candidates."""
        z = screened.rows
        need_keys = self._needs_sample or self.settings.moment_fraction < 1.0
        keys = screened.mask_keys(self._hasher(z)) if need_keys and z.shape[0] else None
        fold: torch.Tensor | None = z if self._needs_moments else None
        n_fold = screened.n_finite if fold is not None else 0
        if fold is not None and self.settings.moment_fraction < 1.0 and keys is not None:
            chosen = keys < int(self.settings.moment_fraction * KEY_SPACE)
            fold = z[chosen]
            mask = screened.mask
            n_fold = int(fold.shape[0]) if mask is None else (chosen & mask).sum()
        return StreamBatch(
            fold=fold,
            n_fold=n_fold,
            n_seen=screened.n_finite,
            rows=z if self._needs_sample else None,
            keys=keys if self._needs_sample else None,
            nonfinite=screened.nonfinite,
            gram32=self._gram32(z),
        )

    def _label_batch(self, screened: FiniteRows, codes: tuple[torch.Tensor, int]) -> LabelBatch:
        """The labelled rows of one update, keyed and split into train side and held out."""
        labels, n_classes = codes
        z = screened.rows
        labels = labels.to(z.device)
        if screened.kept is not None:  # host path: the non-finite rows were dropped
            labels = labels[torch.from_numpy(screened.kept)]
        keys = screened.mask_keys(self._hasher(z, LABEL_SALT))
        held = heldout_rows(keys, self.settings.heldout_fraction)
        train = ~held if screened.mask is None else screened.mask & ~held
        return LabelBatch(z, labels, keys, train, held, n_classes)

    def compute(self, *, step: int | None = None, epoch: int | None = None) -> MonitorResult:
        """Metric values over everything seen since the last :meth:`reset` (all ranks).

        A collective under ``torch.distributed``: call it on every rank. Never raises
        because a metric failed (``on_error="warn"``): failed metrics are NaN, with a
        warning. With no embeddings at all every value is NaN.

        Args:
            step: training step to attach to the result (default: the last update's).
            epoch: epoch to attach to the result.

        Returns:
            A :class:`MonitorResult` (metric name -> float, with definitions).
        """
        step = self._last_step if step is None else step
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*was called before the ``update``")
            snap = self._state.compute()
        if self._state.dim and self.dim is None:
            self.dim = self._state.dim
        self._flush_pending_nonfinite()
        ctx = self._context(snap)
        result = MonitorResult(
            self._records(snap, ctx),
            ctx.timings,
            name=self.name,
            step=step,
            epoch=epoch,
            n_rows=snap["seen"],
            n_nonfinite=snap["nonfinite"],
            n_sample=0 if ctx.sample is None else int(ctx.sample.shape[0]),
            nonfinite_steps=tuple(self._nonfinite_steps),
        )
        if self._tracker is not None and snap["seen"] > 0:
            result.alarms = self._raise_alarms(self._tracker, result, ctx.d, step)
        return result

    def sample(self) -> torch.Tensor | None:
        """The current reservoir sample (rows sorted by key, all ranks), or ``None``.

        Exactly the points the point metrics of :meth:`compute` would see. A collective
        under ``torch.distributed``, like :meth:`compute`.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*was called before the ``update``")
            rows: torch.Tensor | None = self._state.compute()["rows"]
        return rows

    @classmethod
    def watch(cls, model: torch.nn.Module, layers: Any, **kwargs: Any) -> LayerWatch:
        """Watch submodules through forward hooks, one Monitor per layer: see
        :func:`sslwatch.online.hooks.watch` (same arguments)."""
        from sslwatch.online.hooks import watch

        return watch(model, layers, **kwargs)

    def reset(self) -> None:
        """Start a new window: clear moments, reservoirs and non-finite counts.

        The learned dimension, the alarms' running references and :attr:`should_stop`
        are kept.
        """
        self._state.reset()
        self._updates = 0
        self._nonfinite_steps = []
        self._pending_nonfinite = []

    def state_dict(self) -> dict[str, Any]:
        """The alarms' running references (for checkpointing; windows are not saved)."""
        tracker = self._tracker.state_dict() if self._tracker is not None else {}
        return {"alarms": tracker, "should_stop": self.should_stop}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        if self._tracker is not None and state.get("alarms"):
            self._tracker.load_state_dict(state["alarms"])
        self.should_stop = bool(state.get("should_stop", False))

    def __repr__(self) -> str:
        size = self.settings.reservoir_size
        return (
            f"Monitor(name={self.name!r}, dim={self.dim}, reservoir_size={size}, "
            f"moment_bytes={self.moment_bytes}, updates={self._updates})"
        )

    # -- internals ------------------------------------------------------------------------

    def _context(self, snap: StreamSnapshot) -> MetricContext:
        """The metrics' inputs from the synced state: N, D, the sample, the views, k."""
        st = self._state
        rows: torch.Tensor | None = snap["rows"]
        view_rows: torch.Tensor | None = snap["view_rows"]
        q, dv = st.view_shape
        views = None
        if view_rows is not None and view_rows.shape[0] and q and dv:
            views = view_rows.reshape(-1, q, dv)
        sample = rows if rows is not None and rows.shape[0] else None
        n_sample = 0 if sample is None else int(sample.shape[0])
        dtype = self._input_dtype or _dtype_name(
            torch.empty(0, dtype=st.row_dtype or torch.float32)
        )
        return MetricContext(
            n_total=snap["count"] if self._needs_moments else snap["seen"],
            d=st.dim or (self.dim or 0),
            dtype=dtype,
            sample=sample,
            views=views,
            k=resolve_k(self.settings.k, n_sample),
            seed=self.settings.seed,
            sample_size=self.settings.reservoir_size,
        )

    def _records(self, snap: StreamSnapshot, ctx: MetricContext) -> list[MetricValue]:
        """Every selected metric's value (NaN where it failed, with a warning), the same
        on every rank."""
        labelled = snap["labelled"]
        specs = self._specs(has_views=ctx.views is not None, has_labels=labelled is not None)
        n = snap["count"]
        records: list[MetricValue]
        if snap["seen"] == 0 and ctx.views is None:
            records = self._nan_records(specs, ctx, "no finite embeddings since the last reset")
        else:
            free = [s for s in specs if s.kind != "labels"]
            try:
                if self._needs_moments and n >= 1 and snap["total"].numel():
                    ctx.moments = SecondMoments(n=n, total=snap["total"], outer=snap["outer"])
                    self._warn_float32_rank_deficient(n, ctx.d, specs)
                records = compute_metrics(
                    ctx, free, self._overrides, on_error=self.settings.on_error
                )
                self._warn_float32_unresolved(ctx, specs)
            except Exception as exc:
                if self.settings.on_error == "raise":
                    raise
                records = self._nan_records(free, ctx, f"{type(exc).__name__}: {exc}")
            by_name = {r.name: r for r in records}
            by_name.update((r.name, r) for r in self._label_records(labelled, ctx, specs))
            records = [by_name[s.name] for s in specs]
        if self.settings.moment_fraction < 1.0:
            records = [self._with_fraction(r) for r in records]
        agreed = self._state.broadcast_values([r.value for r in records])
        return [
            r if _same(r.value, v) else replace(r, value=v)
            for r, v in zip(records, agreed, strict=True)
        ]

    def _label_records(
        self, labelled: Mapping[str, Any] | None, ctx: MetricContext, specs: list[MetricSpec]
    ) -> list[MetricValue]:
        """The label references over the labelled state (NaN, with a warning, where one
        cannot be computed: no labels, too few rows or classes)."""
        label_specs = [s for s in specs if s.kind == "labels"]
        if not label_specs:
            return []
        bank_z, bank_y = (None, None) if labelled is None else labelled["bank"]
        held_z, held_y = (None, None) if labelled is None else labelled["held"]
        rows = [z for z in (bank_z, held_z) if z is not None]
        codes = [y for y in (bank_y, held_y) if y is not None]
        label_ctx = replace(
            ctx,
            sample=torch.cat(rows) if rows else None,
            labels=torch.cat(codes).cpu().numpy() if codes else None,
            probe_test_fraction=self.settings.heldout_fraction,
            timings={},
            _cache={},
        )
        out = []
        for spec in label_specs:
            p = {**spec.params, **self._overrides.get(spec.name, {})}
            definition = definition_for(spec, label_ctx, p)
            definition = replace(definition, params={**definition.params, "split": "content_key"})
            start, error, outcome = time.perf_counter(), None, None
            try:
                if labelled is None:
                    raise ValueError("no labelled rows since the last reset; pass labels=")
                if held_z is None or held_y is None:
                    raise ValueError("no held-out labelled rows yet (too few labelled rows)")
                if spec.name == "knn_accuracy":
                    if bank_z is None:
                        raise ValueError("no train-side labelled rows yet")
                    value = knn_accuracy(
                        bank_z,
                        bank_y,
                        held_z,
                        held_y,
                        k=p["k_neighbors"],
                        temperature=p["temperature"],
                    )
                else:
                    value, outcome = self._ridge(labelled, held_z, held_y, p)
                    definition = replace(definition, n=outcome["n_train"] + int(held_z.shape[0]))
            except Exception as exc:
                if self.settings.on_error == "raise":
                    raise
                error = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"sslwatch monitor {self.name!r}: metric {spec.name!r} failed: {error}",
                    RuntimeWarning,
                    stacklevel=4,
                )
                value = math.nan
            if outcome is not None:
                definition = replace(definition, outcome=outcome)
            seconds = time.perf_counter() - start
            ctx.timings[spec.name] = seconds
            out.append(MetricValue(spec.name, float(value), definition, seconds, error))
        return out

    def _ridge(
        self,
        labelled: Mapping[str, Any],
        held_z: torch.Tensor,
        held_y: torch.Tensor,
        p: Mapping[str, Any],
    ) -> tuple[float, dict[str, Any]]:
        """Ridge-probe accuracy on the held-out rows from the train-side statistics."""
        counts = labelled["class_counts"]
        stats = RidgeStatistics(
            n=labelled["count"],
            total=labelled["total"],
            outer=labelled["outer"],
            class_sums=labelled["class_sums"],
            class_counts=counts,
            classes=np.arange(int(counts.shape[0])),
        )
        held = held_y.cpu().numpy()
        fit = fit_ridge_from_statistics(
            stats, l2=p["l2"], val_z=held_z, val_y=held, l2_grid=p["l2_grid"]
        )
        outcome = {"l2": fit.l2, "n_train": stats.n, "n_test": int(held_z.shape[0])}
        return fit.score(held_z, held), outcome

    def _raise_alarms(
        self, tracker: AlarmTracker, result: MonitorResult, d: int, step: int | None
    ) -> tuple[AlarmEvent, ...]:
        """Check the alarms, warn for each that fires and stop if told to."""
        events = tracker.check(dict(result), d, step, self.name)
        for event in events:
            warnings.warn(event.message, CollapseWarning, stacklevel=3)
        if events and tracker.config.stop_on_collapse:
            self.should_stop = True
        self.alarm_events.extend(events)
        return tuple(events)

    def _specs(self, *, has_views: bool, has_labels: bool = False) -> list[MetricSpec]:
        if self.settings.metrics is not None:
            return self.settings.candidates()
        specs = REGISTRY.select(None, has_views=has_views, has_labels=has_labels)
        return [s for s in specs if s.kind != "labels" or s.name in LABEL_METRICS]

    def _check_width(self, z: torch.Tensor) -> None:
        d = int(z.shape[1])
        known = self.dim or self._state.dim
        if known and d != known:
            raise ValueError(
                f"embeddings have dimension {d}, but this monitor ({self.name!r}) holds "
                f"dimension {known}; use one Monitor per representation"
            )
        if not known:
            self._announce_moment_cost(d)
        self.dim = d
        self._state.dim = d

    def _announce_moment_cost(self, d: int) -> None:
        """Warn once D is known if the D x D moments exceed :data:`MOMENT_WARN_BYTES`."""
        cost = self._moment_bytes_for(d)
        if cost <= MOMENT_WARN_BYTES:
            return
        spectral = [s.name for s in self._specs(has_views=True) if s.kind == "spectrum"]
        warnings.warn(
            f"sslwatch monitor {self.name!r}: the streamed moments of D={d} embeddings take "
            f"{cost / 2**30:.1f} GiB ({cost:,} bytes) per rank. To avoid them, leave the "
            f"spectrum metrics ({', '.join(spectral)}) out of metrics= and score them "
            "offline with sslwatch.evaluate on a sample of N < D rows, which uses N x N "
            "Gram matrices instead.",
            UserWarning,
            stacklevel=4,
        )

    def _warn_float32_rank_deficient(self, n: int, d: int, specs: list[MetricSpec]) -> None:
        """float32 products leave round-off where a rank-deficient covariance (N <= D) has
        exact zeros, which the covariance metrics would read as spectrum."""
        covariance = {"alpha_req", "nesum", "participation_ratio", "entropy_gaussian"}
        hit = sorted(covariance & {s.name for s in specs})
        if (
            self.settings.gram_dtype != "float32"
            or self._input_dtype != "float32"
            or n > d
            or not hit
        ):
            return
        warnings.warn(
            f"sslwatch monitor {self.name!r}: {n} rows of dimension {d} give a rank-deficient "
            f"covariance, whose zero eigenvalues float32 products cannot resolve: "
            f"{', '.join(hit)} are unreliable; feed more than D rows or use "
            "gram_dtype='float64'.",
            UserWarning,
            stacklevel=4,
        )

    def _warn_float32_unresolved(self, ctx: MetricContext, specs: list[MetricSpec]) -> None:
        """With float32 products, covariance eigenvalues below ~1e-8 of the trace are
        round-off, not spectrum (float32 products err by up to ~1e-8 of the trace): warn
        that the spectrum metrics read that noise, e.g. RankMe of a low-rank embedding."""
        spectral = sorted(s.name for s in specs if s.kind == "spectrum")
        if (
            self._warned_float32_tail
            or self.settings.gram_dtype != "float32"
            or self._input_dtype != "float32"
            or ctx.moments is None
            or ctx.moments.n <= ctx.d
            or not spectral
        ):
            return
        lam = ctx.spectra.covariance_eigenvalues
        total = float(lam.sum())
        floor = _FLOAT32_RESOLUTION * total
        unresolved = int(np.count_nonzero(lam < floor)) if total > 0 else 0
        if not unresolved:
            return
        self._warned_float32_tail = True
        warnings.warn(
            f"sslwatch monitor {self.name!r}: {unresolved} of {ctx.d} covariance eigenvalues "
            f"are below float32's resolution ({_FLOAT32_RESOLUTION:.0e} of the trace) with "
            f"gram_dtype='float32': {', '.join(spectral)} read round-off there and can be "
            "inflated (by percents on low-rank embeddings); use gram_dtype='float64'.",
            UserWarning,
            stacklevel=4,
        )

    def _gram32(self, z: torch.Tensor) -> bool:
        return self.settings.gram_dtype == "float32" and z.dtype == torch.float32

    def _report_nonfinite(
        self, step: int | None, bad: int, n: int, what: str, stacklevel: int
    ) -> None:
        self._nonfinite_steps.append(step)
        warnings.warn(
            f"sslwatch monitor {self.name!r}: {bad} of {n} {what} at step {step} contain NaN "
            "or Inf; they were skipped (not folded into the metrics). Non-finite embeddings "
            "usually mean the training diverged.",
            NonFiniteWarning,
            stacklevel=stacklevel,
        )

    def _flush_pending_nonfinite(self) -> None:
        if not self._pending_nonfinite:
            return
        pending, self._pending_nonfinite = self._pending_nonfinite, []
        counts = torch.stack([c.to("cpu") for _, c, _, _ in pending]).tolist()
        for (step, _, n, what), count in zip(pending, counts, strict=True):
            if count:
                self._report_nonfinite(step, int(count), n, what, 4)

    def _view_matrix(self, views: Any) -> torch.Tensor:
        """(n, q, d) views checked against earlier updates, as (n, q * d) rows."""
        if not hasattr(views, "ndim") or views.ndim != 3:
            raise ValueError(
                "views must be 3-D with shape (n_samples, n_views, dim); got "
                f"{getattr(views, 'shape', type(views).__name__)}. Stack the views with "
                "torch.stack(views, dim=1)."
            )
        n, q, dv = (int(x) for x in views.shape)
        if q < 2:
            raise ValueError(f"views has {q} view per sample; multi-view metrics need q >= 2")
        st = self._state
        if st.view_shape != (0, 0) and st.view_shape != (q, dv):
            raise ValueError(
                f"views have shape (n, {q}, {dv}) but earlier updates had (n, "
                f"{st.view_shape[0]}, {st.view_shape[1]}); keep q and d fixed"
            )
        flat = as_matrix(views.reshape(n, q * dv), name="views", min_rows=1, check_finite=False)
        if st.view_dtype is None:
            st.view_dtype = flat.dtype
        elif flat.dtype != st.view_dtype:
            flat = flat.to(st.view_dtype)
        st.view_shape = (q, dv)
        return flat

    def _nan_records(
        self, specs: list[MetricSpec], ctx: MetricContext, reason: str
    ) -> list[MetricValue]:
        if self.settings.on_error == "raise":
            raise ValueError(f"monitor {self.name!r}: {reason}")
        warnings.warn(
            f"sslwatch monitor {self.name!r}: {reason}; every metric is NaN",
            RuntimeWarning,
            stacklevel=4,
        )
        out = []
        for spec in specs:
            p = {**spec.params, **self._overrides.get(spec.name, {})}
            out.append(MetricValue(spec.name, math.nan, definition_for(spec, ctx, p), 0.0, reason))
        return out

    def _with_fraction(self, record: MetricValue) -> MetricValue:
        if REGISTRY[record.name].kind != "spectrum":
            return record
        params = {**record.definition.params, "moment_fraction": self.settings.moment_fraction}
        definition: MetricDefinition = replace(record.definition, params=params)
        return replace(record, definition=definition)


def _label_codes(labels: Any, n: int) -> tuple[torch.Tensor, int]:
    """Checked integer class indices (int64 tensor on the labels' device) and 1 + the
    largest of them; an :class:`InvalidLabelsError` naming the problem otherwise."""
    if isinstance(labels, torch.Tensor):
        t = labels.detach()
    else:
        arr = np.asarray(labels)
        if arr.dtype.kind not in "iub":
            raise InvalidLabelsError(
                f"labels must be integer class indices (0..C-1); got dtype {arr.dtype}. "
                "Pass an integer tensor or array (e.g. labels.long()); map class names "
                "to indices first."
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise InvalidLabelsError(
            f"labels must be integer class indices (0..C-1); got dtype {t.dtype}. "
            "Pass an integer tensor or array (e.g. labels.long())."
        )
    if t.ndim != 1 or int(t.shape[0]) != n:
        raise InvalidLabelsError(
            f"labels must be 1-D with one class index per embedding row ({n}); got shape "
            f"{tuple(t.shape)}"
        )
    t = t.to(torch.int64)
    if n == 0:
        return t, 0
    low, high = (int(v) for v in torch.stack([t.min(), t.max()]).tolist())
    if low < 0:
        raise InvalidLabelsError(f"labels must be non-negative class indices (0..C-1); got {low}")
    if high >= MAX_CLASSES:
        raise InvalidLabelsError(
            f"labels must be class indices below {MAX_CLASSES}; got {high}. Map the labels "
            "to 0..C-1 first."
        )
    return t, high + 1


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Disable autocast: the moments and keys must be computed in the stated precision."""
    if device.type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
