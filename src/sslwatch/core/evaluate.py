"""`evaluate`: every registered metric on one embedding set, with its definition.

The suite validates the inputs once, builds a :class:`~sslwatch.core.context.MetricContext`
(second moments of all embeddings for the spectrum family; a seeded sample of at most
``sample_size`` points for the point-based metrics; views; labels), then runs each
selected metric from :data:`sslwatch.core.registry.REGISTRY` and records, next to each value,
the :class:`~sslwatch.core.definitions.MetricDefinition` it was computed with.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from sslwatch.core.context import MetricContext, resolve_k
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.registry import REGISTRY, Measurement, MetricSpec, check_params
from sslwatch.metrics._scaling import unit_scaled
from sslwatch.metrics._validation import as_int, as_labels, as_matrix, as_views
from sslwatch.metrics.spectrum import _safe_scale, second_moments, spectra

OnError = Literal["raise", "warn"]


@dataclass(frozen=True)
class MetricValue:
    """One computed value with its definition, own wall time and error (if any).

    ``seconds`` excludes shared steps (k-means, spectra) the metric triggered; those are
    in :attr:`Evaluation.timings` under their own keys.
    """

    name: str
    value: float
    definition: MetricDefinition
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: name, value, seconds, error and the full definition."""
        return {
            "metric": self.name,
            "value": self.value,
            "seconds": self.seconds,
            "error": self.error,
            "definition": self.definition.to_dict(),
        }


class Evaluation(Mapping[str, float]):
    """Result of :func:`evaluate`: maps metric name -> value, and keeps definitions.

    ``result["rankme"]`` is a float; ``result.definitions["rankme"]`` the definition it
    was computed with; ``result.records`` the full :class:`MetricValue` objects;
    ``result.timings`` seconds per metric and per shared intermediate step (k-means,
    spectra, ...), for profiling.
    """

    def __init__(self, records: Iterable[MetricValue], timings: Mapping[str, float]) -> None:
        self.records: dict[str, MetricValue] = {r.name: r for r in records}
        self.timings: dict[str, float] = dict(timings)

    def __getitem__(self, name: str) -> float:
        return self.records[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def definitions(self) -> dict[str, MetricDefinition]:
        """Metric name -> the definition its value was computed with."""
        return {name: r.definition for name, r in self.records.items()}

    @property
    def errors(self) -> dict[str, str]:
        """Metric name -> error message, for metrics that failed under ``on_error='warn'``."""
        return {name: r.error for name, r in self.records.items() if r.error}

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per metric (see :meth:`MetricValue.to_dict`)."""
        return [r.to_dict() for r in self.records.values()]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.6g}" for k, v in self.items())
        return f"Evaluation({inner})"


def evaluate(
    z: Any,
    *,
    views: Any = None,
    labels: Any = None,
    k: int | None = None,
    metrics: Iterable[str] | None = None,
    sample_size: int | None = 10000,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    on_error: OnError = "raise",
) -> Evaluation:
    """Compute label-free metrics (and label-based references) on one embedding set.

    Args:
        z: (N, D) embeddings, torch or numpy, any float dtype, CPU or GPU.
        views: optional (n, q, d) augmented views (q >= 2) for LiDAR, alignment,
            uniformity, and for clustering agreement across views.
        labels: optional length-N labels; adds ``linear_probe``, ``ridge_probe``, ``knn_accuracy``
            (on a seeded stratified 80/20 split of the sample) and ``label_ami``.
        k: k-means clusters. Default: the number of label classes when labels are
            given, else 10 (clipped to [2, N - 1]); see :func:`sslwatch.core.context.resolve_k`.
        metrics: registry names to compute; ``None`` = the default set for the inputs
            given (see :meth:`sslwatch.core.registry.MetricRegistry.select`).
        sample_size: spectrum metrics use all N rows (through the float64 D x D second
            moments when N >= D, else the float64 N x N Gram matrices, which have the
            same non-zero spectrum);
            point-based metrics use a seeded sample of at most this many rows
            (``None`` = all rows).
        seed: seed for the sample, k-means and the probe split.
        params: per-metric parameter overrides, e.g. ``{"rankme": {"eps": 1e-6}}``.
        on_error: ``"raise"`` (default) propagates an exception from a metric;
            ``"warn"`` turns it into a warning and records NaN with the error message.

    Returns:
        An :class:`Evaluation` mapping metric name -> float, with definitions.
    """
    zt = as_matrix(z, name="z")
    n, d = int(zt.shape[0]), int(zt.shape[1])
    vt = as_views(views, name="views") if views is not None else None
    y = as_labels(labels, n, name="labels") if labels is not None else None
    if sample_size is not None:
        sample_size = as_int(sample_size, "sample_size", low=2, hint=" or None (all rows)")
    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn'; got {on_error!r}")
    specs = REGISTRY.select(metrics, has_views=vt is not None, has_labels=y is not None)
    overrides = check_params(params or {}, specs)

    point_kinds = {s.kind for s in specs} & {"sample", "labels"}
    sample, sample_labels = None, y
    if point_kinds:
        index = sample_indices(n, sample_size, seed)
        sample = zt if index is None else zt[torch.as_tensor(index, device=zt.device)]
        sample_labels = None if y is None else (y if index is None else y[index])
    n_points = n if sample is None else int(sample.shape[0])
    kk = resolve_k(k, n_points, sample_labels)
    if kk >= n_points and point_kinds:
        raise ValueError(_too_few_points(kk, n_points, n, sample_size, labels is not None))

    ctx = MetricContext(
        n_total=n,
        d=d,
        dtype=str(zt.dtype).replace("torch.", ""),
        sample=sample,
        views=vt,
        labels=sample_labels,
        k=kk,
        seed=seed,
        sample_size=sample_size,
    )
    if any(s.kind == "spectrum" for s in specs):
        # float64 z whose squares leave float64's range (the spectrum module's own test):
        # spectra of z * 2^-e (exact) with max|z * 2^-e| in [0.5, 1); only the Gaussian
        # entropy reads the scale back. Narrower dtypes square safely: no copy.
        zs, ctx.spectrum_exponent = zt, 0
        if _safe_scale(zt) != 1.0:
            zs, ctx.spectrum_exponent = unit_scaled(zt)
        if n >= d:  # the D x D moments, exactly what a streaming Monitor accumulates
            ctx.moments = ctx.cached("second_moments", lambda: second_moments(zs))
        else:  # the same non-zero spectra from N x N Gram matrices: O(N^2) memory
            ctx.cached("spectra", lambda: spectra(zs, method="gram"))
    return Evaluation(compute_metrics(ctx, specs, overrides, on_error=on_error), ctx.timings)


def _too_few_points(k: int, n_points: int, n: int, sample_size: int | None, labelled: bool) -> str:
    """Why k-means clusters cannot be scored on ``n_points`` points, and the fix."""
    need = k + 1
    fixes = []
    if n_points < n:
        fixes.append(f"raise sample_size to at least {need}")
    if n < need:
        fixes.append(f"pass at least {need} embeddings")
    if k > 2:
        fixes.append(f"lower k (the number of {'label classes' if labelled else 'clusters'})")
    if not fixes:  # pragma: no cover - every case above is covered
        fixes.append("pass more embeddings")
    return (
        f"the point metrics cluster {n_points} points into k={k} clusters, which needs at "
        f"least k + 1 = {need} points (the silhouette is undefined otherwise); "
        + " or ".join(fixes)
        + "."
    )


def compute_metrics(
    ctx: MetricContext,
    specs: Iterable[MetricSpec],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    on_error: OnError = "raise",
) -> list[MetricValue]:
    """Run each spec on ``ctx`` and wrap the value with its definition and timing.

    Used by :func:`evaluate` and by the training-time monitor (which builds the context
    from streamed moments and a reservoir sample).
    """
    overrides = overrides or {}
    specs = list(specs)
    ctx.plan = {spec.name: {**spec.params, **overrides.get(spec.name, {})} for spec in specs}
    out = []
    for spec in specs:
        p = ctx.plan[spec.name]
        definition = definition_for(spec, ctx, p)
        start, shared_before = time.perf_counter(), ctx.shared_seconds
        error = None
        try:
            result = spec.compute(ctx, p)
            if isinstance(result, Measurement):
                definition = replace(definition, outcome=dict(result.outcome))
                result = result.value
            value = float(result)
        except Exception as exc:
            if on_error == "raise":
                raise
            error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"metric {spec.name!r} failed: {error}", RuntimeWarning, stacklevel=2)
            value = math.nan
        # The metric's own time: shared steps it triggered are timed on their own.
        seconds = time.perf_counter() - start - (ctx.shared_seconds - shared_before)
        ctx.timings[spec.name] = seconds
        out.append(MetricValue(spec.name, value, definition, seconds, error))
    return out


def definition_for(spec: MetricSpec, ctx: MetricContext, p: Mapping[str, Any]) -> MetricDefinition:
    """The :class:`MetricDefinition` of ``spec`` with parameters ``p`` on ``ctx``."""
    params = dict(p)
    for name in spec.context_params:
        params[name] = getattr(ctx, name)
    if spec.definition_params is not None:
        params.update(spec.definition_params(ctx))
    if spec.kind == "spectrum":
        n = ctx.n_total
    elif spec.kind == "views" or (spec.uses_views and ctx.views is not None):
        n = ctx.n_views
    else:
        n = ctx.n_sample
    return MetricDefinition(
        metric=spec.name,
        params=params,
        n=n,
        d=ctx.d,
        dtype=ctx.dtype,
        revision=spec.revision,
    )


def sample_indices(n: int, sample_size: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded subset of ``range(n)`` of size ``sample_size`` (None = all rows)."""
    if sample_size is None or sample_size >= n:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=gen)[:sample_size]
    return np.sort(idx.numpy())
