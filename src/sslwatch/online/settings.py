"""What a Monitor computes and how: its settings, declared and validated in one place.

:class:`MonitorSettings` is the one declaration of each setting, its default and its
check. :class:`~sslwatch.online.monitor.Monitor` and the Lightning callback take the
same settings as keyword arguments (:class:`MonitorOptions`), or a ready
``MonitorSettings`` (the callback validates once and passes it to every monitor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from sslwatch.core.context import PROBE_TEST_FRACTION
from sslwatch.core.evaluate import OnError
from sslwatch.core.registry import REGISTRY, MetricSpec, check_params
from sslwatch.metrics._validation import as_int
from sslwatch.online.alarms import DEFAULT_ALARMS, CollapseAlarms

__all__ = [
    "DEFAULT_RESERVOIR_SIZE",
    "LABEL_METRICS",
    "MAX_CLASSES",
    "GramDtype",
    "MonitorOptions",
    "MonitorSettings",
]

DEFAULT_RESERVOIR_SIZE = 4096
"""Rows kept for the point metrics (k-means, silhouette, kNN entropy, collapse_std).

4096 points make the O(R^2 D) point metrics take a few seconds on a CPU at D = 512 (see
``benchmarks/bench_monitor.py``) while k-means with k = 10 has ~400 points per cluster.
"""

GramDtype = Literal["auto", "float64", "float32"]

LABEL_METRICS = ("ridge_probe", "knn_accuracy")
"""The label-based references a Monitor streams when ``update`` is given labels: the
ridge probe from exact sufficient statistics, the kNN classifier on a keyed sample.
The others (``linear_probe``, ``label_ami``) need every row at once: score them offline."""

MAX_CLASSES = 100_000
"""Largest class count a Monitor accepts (labels are class indices 0..C-1; the per-class
sums take C x D float64)."""


@dataclass(frozen=True)
class MonitorSettings:
    """The settings of a :class:`~sslwatch.online.monitor.Monitor` (checked on creation).

    Attributes:
        metrics: registry names to compute; ``None`` = the default label-free set (plus
            the view metrics once views are passed to ``update``, and the references of
            :data:`LABEL_METRICS` once labels are). Other label-based references are not
            streamed: use :func:`sslwatch.evaluate`.
        reservoir_size: rows kept for the point metrics (and view samples kept for the
            view metrics); see :data:`DEFAULT_RESERVOIR_SIZE`. Recorded as
            ``sample_size`` in the definitions.
        k: k-means clusters; ``None`` = 10 clipped to [2, n_sample - 1]
            (:func:`sslwatch.core.context.resolve_k`).
        seed: seeds the reservoir keys and k-means.
        alarms: :class:`~sslwatch.online.alarms.CollapseAlarms` thresholds, or ``None``
            for no alarms.
        on_error: ``"warn"`` (default) turns an exception inside a metric into a warning
            naming it and a NaN value; ``"raise"`` propagates it.
        params: per-metric parameter overrides, e.g. ``{"rankme": {"eps": 1e-6}}``.
        gram_dtype: precision of each batch's z^T z before it is added to the float64
            moments. ``"float64"`` upcasts first: exact, the values match the one-shot
            float64 functions to ~1e-12 relative. ``"float32"``, for float32 rows, is
            cheaper on the CPU: rows centred on a fixed float32 shift (this rank's first
            batch mean), float32 ``ssyrk`` products per batch summed in float64, two
            extra D x D buffers. Float32 products cannot resolve eigenvalues below about
            1e-8 of the trace: on full-rank embeddings RankMe is within ~1e-7 of the
            exact value, but the unresolved tail of low-rank (collapsing) embeddings
            inflates the spectrum metrics (measured: 1e-5 relative on a small CNN's
            2048-d head; +1.0%, +4.6%, +7.6% at rank 100, 10, 2 in D = 2048); keep the
            default where collapse is what you watch (``compute()`` warns when
            eigenvalues fall below float32's resolution). On accelerators it is an
            uncentred float32 product (TF32 settings apply).
            ``"auto"`` (default) is ``"float64"``: exact; see
            ``benchmarks/bench_monitor.py`` for what each costs next to a training step.
        moment_fraction: fold only this fraction of the rows into the moments (rows whose
            content key is below ``moment_fraction * KEY_SPACE``: a seeded, content-derived
            Bernoulli subsample, still rank-split-invariant). 1.0 (default) folds every
            row. Lowers the O(B D^2) cost per update proportionally; the spectrum metrics
            are then those of the subsample (recorded as ``moment_fraction`` in their
            definitions, with its row count as N). Below 1 it costs a device sync per
            update on accelerators.
        blas_threads: threads of the numpy/scipy BLAS pools during a CPU ``update``
            (default 1: the training loop owns the cores, and small per-step products
            on a shared pool mostly wait for threads). ``None`` leaves the pools as they
            are. torch's thread pool is never changed.
        heldout_fraction: share of the labelled rows held out as test rows of the
            label references (rows whose label-salted content key is below
            ``heldout_fraction * KEY_SPACE``: the same rows on any number of ranks);
            default 0.2, the offline probes' test fraction. Recorded as
            ``probe_test_fraction`` in their definitions.
    """

    metrics: tuple[str, ...] | None = None
    reservoir_size: int = DEFAULT_RESERVOIR_SIZE
    k: int | None = None
    seed: int = 0
    alarms: CollapseAlarms | None = DEFAULT_ALARMS
    on_error: OnError = "warn"
    params: Mapping[str, Mapping[str, Any]] | None = None
    gram_dtype: GramDtype = "auto"
    moment_fraction: float = 1.0
    blas_threads: int | None = 1
    heldout_fraction: float = PROBE_TEST_FRACTION

    def __post_init__(self) -> None:
        if self.blas_threads is not None:
            as_int(self.blas_threads, "blas_threads", hint=" or None")
        as_int(self.reservoir_size, "reservoir_size", low=2)
        if self.k is not None:
            as_int(self.k, "k", low=2, hint=" (k-means clusters) or None")
        if self.on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn'; got {self.on_error!r}")
        if self.gram_dtype not in ("auto", "float64", "float32"):
            raise ValueError(
                f"gram_dtype must be 'auto', 'float64' or 'float32'; got {self.gram_dtype!r}"
            )
        if not (0.0 < float(self.moment_fraction) <= 1.0):
            raise ValueError(f"moment_fraction must be in (0, 1]; got {self.moment_fraction!r}")
        if self.alarms is not None and not isinstance(self.alarms, CollapseAlarms):
            raise ValueError(
                f"alarms must be a CollapseAlarms or None; got {type(self.alarms).__name__}"
            )
        if not (0.0 < float(self.heldout_fraction) < 1.0):
            raise ValueError(
                f"heldout_fraction must be strictly between 0 and 1; got {self.heldout_fraction!r}"
            )
        metrics = None if self.metrics is None else tuple(self.metrics)
        for metric in metrics or ():
            if (
                metric in REGISTRY
                and REGISTRY[metric].needs == "labels"
                and metric not in LABEL_METRICS
            ):
                raise ValueError(
                    f"metric {metric!r} needs labels and every row at once, which a "
                    "training-time monitor does not keep; the monitor streams "
                    f"{', '.join(LABEL_METRICS)} (pass labels= to update); compute "
                    f"{metric} offline with sslwatch.evaluate(..., labels=)"
                )
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "moment_fraction", float(self.moment_fraction))
        object.__setattr__(self, "heldout_fraction", float(self.heldout_fraction))
        object.__setattr__(self, "params", check_params(self.params or {}, self.candidates()))

    def candidates(self) -> list[MetricSpec]:
        """Every metric this monitor may compute (the view and label metrics included)."""
        specs = REGISTRY.select(self.metrics, has_views=True, has_labels=True)
        return [s for s in specs if s.kind != "labels" or s.name in LABEL_METRICS]

    @property
    def overrides(self) -> dict[str, dict[str, Any]]:
        """The per-metric parameter overrides, checked against the selected metrics."""
        return {name: dict(values) for name, values in (self.params or {}).items()}


class MonitorOptions(TypedDict, total=False):
    """:class:`MonitorSettings` but ``metrics``, as keyword arguments of the Monitor and
    the Lightning callback (names and types only; defaults and checks are the dataclass's)."""

    reservoir_size: int
    k: int | None
    seed: int
    alarms: CollapseAlarms | None
    on_error: OnError
    params: Mapping[str, Mapping[str, Any]] | None
    gram_dtype: GramDtype
    moment_fraction: float
    blas_threads: int | None
    heldout_fraction: float
