"""One checkpoint (:func:`_process`): load, forward pass (held whole with views, else
streamed into second moments and the point sample), score what is missing, store it."""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sslwatch.core.context import MetricContext, resolve_k
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.evaluate import Evaluation, compute_metrics, evaluate, sample_indices
from sslwatch.core.registry import REGISTRY, check_params
from sslwatch.metrics._threads import torch_threads
from sslwatch.metrics.spectrum import SecondMoments, second_moments
from sslwatch.offline.checkpoints import load_model
from sslwatch.offline.embed import (
    VIEWS_SUFFIX,
    best_device,
    extract_embeddings,
    iter_embeddings,
    recalibrate_batchnorm,
)
from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep.config import EMBEDDING_DTYPE, CheckpointTask
from sslwatch.offline.sweep.outcomes import CheckpointOutcome, _error_text, _one_line
from sslwatch.offline.sweep.prepare import _Pass, _Prepared

_METRIC_FAILED = re.compile(r"metric '\w+' failed: ")


def _process(
    task: CheckpointTask,
    prep: _Prepared,
    store: ResultStore,
    *,
    known: Iterable[tuple[str, str]] = (),
    rank: int | None = None,
) -> CheckpointOutcome:
    """Load, embed, score what is missing and store it; never raises an ``Exception``.

    ``known``: ``(representation, digest)`` pairs stored elsewhere (a distributed sweep's
    ``--db`` while this rank writes its shard), not computed again. ``rank`` is recorded
    on the outcome.
    """
    cfg = prep.config
    timings = dict.fromkeys(("load", "recalibrate", "embed", "metrics", "store"), 0.0)
    steps: dict[str, dict[str, float]] = {}
    costs: dict[str, float] = {}
    start = time.perf_counter()
    seen: list[str] = []

    def outcome(status: str, error: str | None, loaded: bool, stored: int) -> CheckpointOutcome:
        timings["total"] = time.perf_counter() - start
        return CheckpointOutcome(
            task.path,
            task.run,
            task.epoch,
            task.step,
            status,
            error,
            loaded,
            stored,
            tuple(dict.fromkeys(seen)),
            dict(timings),
            dict(costs),
            rank,
        )

    def save_timings(point: int) -> None:
        """Store the stages and shared steps (total: up to this write); never raises."""
        timings["total"] = time.perf_counter() - start
        try:
            store.record_timings(point, {"": timings, **steps})
        except Exception as exc:  # the values are stored; only the timings are missing
            seen.append(f"could not store the timings of {task.path}: {_one_line(str(exc))}")

    t = time.perf_counter()
    try:
        run_id = store.ensure_run(
            task.run, method=cfg.method, architecture=cfg.architecture, meta=prep.run_meta
        )
        point = store.ensure_point(run_id, path=task.path, epoch=task.epoch, step=task.step)
        stored_before = store.stored_digests(point) | set(known)
    except Exception as exc:  # a conflicting stored point, a locked database...
        timings["store"] += time.perf_counter() - t
        return outcome("failed", _error_text(exc, task.path, "recording"), False, 0)
    timings["store"] += time.perf_counter() - t

    def fail(error: str, loaded: bool) -> CheckpointOutcome:
        t0 = time.perf_counter()
        try:
            store.record_failure(point, error)
        except Exception as exc:  # pragma: no cover - the database itself failed
            error = f"{error} (could not record the failure: {exc})"
        timings["store"] += time.perf_counter() - t0
        save_timings(point)
        return outcome("failed", error, loaded, 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            t = time.perf_counter()
            model = load_model(
                prep.factory,
                task.path,
                state_key=cfg.state_key,
                trust_checkpoints=cfg.trust_checkpoints,
            )
            timings["load"] = time.perf_counter() - t
        except Exception as exc:
            timings["load"] = time.perf_counter() - t
            seen.extend(_warning_texts(caught))
            return fail(_error_text(exc, task.path, "loading the model"), False)
        try:
            dev = torch.device(cfg.device) if cfg.device else best_device()
            threads = (
                torch_threads(prep.model_threads) if dev.type == "cpu" else contextlib.nullcontext()
            )
            with threads:
                if cfg.views:  # views metrics read every sample's (q, D) views
                    source: _Embedded | _Streamed = _Embedded(_forward(model, prep, dev, timings))
                else:
                    source = _stream_forward(model, prep, dev, timings, stored_before)
        except Exception as exc:
            seen.extend(_warning_texts(caught))
            return fail(_error_text(exc, task.path, "embedding"), True)
        del model

        t = time.perf_counter()
        rows, errors = _score(prep, source, stored_before, steps, costs)
        timings["metrics"] = time.perf_counter() - t + source.reduce_seconds
        seen.extend(_warning_texts(caught))

    t = time.perf_counter()
    try:
        n_new = store.record_results(point, rows, status="failed" if errors else "ok")
        if errors:
            error = _one_line(f"checkpoint {task.path}: " + "; ".join(errors))
            store.record_failure(point, error)
    except Exception as exc:
        timings["store"] += time.perf_counter() - t
        return outcome("failed", _error_text(exc, task.path, "storing the results"), True, 0)
    timings["store"] += time.perf_counter() - t
    save_timings(point)
    if errors:
        return outcome("failed", error, True, n_new)
    return outcome("ok", None, True, n_new)


def _recalibrate(
    model: torch.nn.Module, prep: _Prepared, dev: torch.device, timings: dict[str, float]
) -> None:
    """BatchNorm re-estimation on the sweep's data, when the config asks for it, timed."""
    cfg = prep.config
    if cfg.recalibrate_bn:
        t = time.perf_counter()
        model.to(dev)
        recalibrate_batchnorm(
            model, prep.dataset, batches=cfg.bn_batches, batch_size=cfg.batch_size, seed=cfg.seed
        )
        timings["recalibrate"] = time.perf_counter() - t


def _pass_options(prep: _Prepared, dev: torch.device) -> dict[str, Any]:
    """The embedding pass's options shared by the whole-matrix and the streamed route."""
    cfg = prep.config
    return {
        "layers": dict(cfg.layers) if cfg.layers is not None else None,
        "batch_size": cfg.batch_size,
        "device": dev,
        "autocast": cfg.autocast,
        "progress": False,
    }


def _forward(
    model: torch.nn.Module, prep: _Prepared, dev: torch.device, timings: dict[str, float]
) -> dict[str, torch.Tensor]:
    """BatchNorm re-estimation (when asked) and the embedding pass, timed."""
    cfg = prep.config
    _recalibrate(model, prep, dev, timings)
    t = time.perf_counter()
    emb = extract_embeddings(
        model,
        prep.dataset,
        **_pass_options(prep, dev),
        views=cfg.views,
        augment=prep.augment,
        seed=cfg.seed,
    )
    timings["embed"] = time.perf_counter() - t
    return emb


class _Embedded:
    """Every representation's (N, D) embeddings (and views), held whole."""

    reduce_seconds = 0.0

    def __init__(self, emb: Mapping[str, torch.Tensor]) -> None:
        self.emb = emb

    def dim(self, rep: str) -> int:
        return int(self.emb[rep].shape[1])

    def evaluate(self, prep: _Prepared, rep: str, index: int, names: list[str]) -> Evaluation:
        p = prep.passes[index]
        z = self.emb[rep]
        views = self.emb.get(rep + VIEWS_SUFFIX)
        return evaluate(
            z if p.rows is None else z[torch.from_numpy(p.rows)],
            views=views if p.use_views else None,
            labels=p.labels,
            k=prep.k,
            metrics=names,
            sample_size=prep.config.sample_size,
            seed=prep.config.seed,
            params={n: v for n, v in prep.overrides.items() if n in names},
            on_error="warn",
        )


@dataclass
class _PassStream:
    """One pass of one representation, reduced while the embedding batches stream by.

    Route (fixed by the pass's metrics, N and D, never by what is missing, so a value is
    computed the same way in every sweep): ``keep_all`` keeps every row of the pass and
    scores it with ``evaluate`` as an embedded matrix, when the point sample is every row
    anyway or the spectrum metrics take the N x N Gram route of N < D. Otherwise only
    the float64 second moments of the pass's rows (spectrum metrics) and the rows of its
    seeded sample (point metrics: :func:`~sslwatch.core.evaluate.sample_indices`, the rows
    ``evaluate`` would draw) are kept: memory O(D^2 + sample_size * D), flat in N.
    """

    names: list[str]  # the metrics to compute (those not stored yet)
    rows: np.ndarray | None  # sorted row ids of the pass; None = every row
    keep_all: bool
    accumulate: bool  # second moments wanted (streamed route)
    sample_rows: np.ndarray | None  # sorted row ids of the sample (streamed route), or None
    sample_labels: np.ndarray | None
    moments: SecondMoments | None = None
    parts: list[torch.Tensor] = field(default_factory=list)  # every row (keep_all route)
    # The sample's rows, in one buffer allocated at the first batch: appending many
    # small copies between the large per-batch buffers fragments the heap, and the
    # process's memory then grows with N after all.
    sample: torch.Tensor | None = None
    filled: int = 0
    seconds: float = 0.0  # accumulating the moments
    seen: int = 0
    bad_rows: int = 0

    @classmethod
    def plan(
        cls, prep: _Prepared, p: _Pass, rep: str, d: int, stored: set[tuple[str, str]]
    ) -> _PassStream:
        cfg = prep.config
        expected = prep.expected(d)
        missing = [s for s in p.specs if (rep, expected[s.name][1]) not in stored]
        point_kinds = ("sample", "labels")
        index = sample_indices(p.n_total, cfg.sample_size, cfg.seed)
        keep_all = (any(s.kind in point_kinds for s in p.specs) and index is None) or (
            any(s.kind == "spectrum" for s in p.specs) and p.n_total < d
        )
        wants_sample = not keep_all and any(s.kind in point_kinds for s in missing)
        sample_rows = sample_labels = None
        if wants_sample and index is not None:
            sample_rows = index if p.rows is None else p.rows[index]
            sample_labels = None if p.labels is None else p.labels[index]
        return cls(
            names=[s.name for s in missing],
            rows=p.rows,
            keep_all=keep_all,
            accumulate=not keep_all and any(s.kind == "spectrum" for s in missing),
            sample_rows=sample_rows,
            sample_labels=sample_labels,
        )

    def feed(self, zb: torch.Tensor, start: int) -> None:
        """Take the batch of rows ``start .. start + len(zb)`` of the data set."""
        if not self.names:
            return
        zp = zb if self.rows is None else zb[_rows_within(self.rows, start, len(zb))]
        self.seen += int(zp.shape[0])
        if zp.shape[0] == 0:
            return
        if not bool(torch.isfinite(zp).all()):
            self.bad_rows += int((~torch.isfinite(zp)).any(dim=1).sum())
        if self.bad_rows:  # the pass cannot be scored; only the count goes on
            self.parts.clear()
            self.moments = None
            self.sample, self.filled = None, 0
            return
        if self.keep_all:
            self.parts.append(zp)
            return
        if self.accumulate:
            t = time.perf_counter()
            m = second_moments(zp)
            self.moments = m if self.moments is None else self.moments.merge(m)
            self.seconds += time.perf_counter() - t
        if self.sample_rows is not None:
            local = _rows_within(self.sample_rows, start, len(zb))
            if local.numel():
                if self.sample is None:
                    shape = (len(self.sample_rows), *zb.shape[1:])
                    self.sample = torch.empty(shape, dtype=zb.dtype)
                end = self.filled + local.numel()
                self.sample[self.filled : end] = zb[local]
                self.filled = end


def _rows_within(rows: np.ndarray, start: int, size: int) -> torch.Tensor:
    """Positions, within the batch of rows ``start .. start + size``, of the sorted ``rows``
    that fall in it."""
    lo, hi = np.searchsorted(rows, [start, start + size])
    return torch.from_numpy(rows[lo:hi] - start)


class _Streamed:
    """Every representation's passes, reduced batch by batch (:class:`_PassStream`)."""

    def __init__(
        self, dims: Mapping[str, int], streams: Mapping[str, list[_PassStream]], seconds: float
    ) -> None:
        self.dims = dict(dims)
        self.streams = streams
        self.reduce_seconds = seconds

    def dim(self, rep: str) -> int:
        return self.dims[rep]

    def evaluate(self, prep: _Prepared, rep: str, index: int, names: list[str]) -> Evaluation:
        """The pass's metrics ``names``, as :func:`evaluate` gives them on the whole
        matrix: the same sample rows and labels, the second moments of the same rows."""
        cfg, p, ps = prep.config, prep.passes[index], self.streams[rep][index]
        params = {n: v for n, v in prep.overrides.items() if n in names}
        if ps.bad_rows:
            raise ValueError(
                f"z contains NaN or Inf in {ps.bad_rows} of {ps.seen} rows; drop or fix those "
                "rows (non-finite embeddings usually mean the training diverged)."
            )
        if ps.keep_all:
            return evaluate(
                torch.cat(ps.parts),
                labels=p.labels,
                k=prep.k,
                metrics=names,
                sample_size=cfg.sample_size,
                seed=cfg.seed,
                params=params,
                on_error="warn",
            )
        specs = REGISTRY.select(names, has_views=False, has_labels=p.labels is not None)
        overrides = check_params(params, specs)
        point = any(s.kind in ("sample", "labels") for s in specs)
        sample = ps.sample[: ps.filled] if point and ps.sample is not None else None
        labels = ps.sample_labels if point else p.labels
        n_points = p.n_total if sample is None else int(sample.shape[0])
        k = resolve_k(prep.k, n_points, labels)
        if point and k >= n_points:
            raise ValueError(
                f"the point metrics cluster {n_points} points into k={k} clusters, which "
                f"needs at least {k + 1} points; lower k or raise sample_size."
            )
        ctx = MetricContext(
            n_total=p.n_total,
            d=self.dims[rep],
            dtype=EMBEDDING_DTYPE,
            sample=sample,
            labels=labels,
            k=k,
            seed=cfg.seed,
            sample_size=cfg.sample_size,
        )
        if ps.moments is not None:
            moments = ps.moments
            ctx.moments = ctx.cached("second_moments", lambda: moments)
            ctx.timings["second_moments"] = ps.seconds  # accumulated during the pass
        return Evaluation(compute_metrics(ctx, specs, overrides, on_error="warn"), ctx.timings)


def _stream_forward(
    model: torch.nn.Module,
    prep: _Prepared,
    dev: torch.device,
    timings: dict[str, float],
    stored: set[tuple[str, str]],
) -> _Streamed:
    """BatchNorm re-estimation (when asked) and the embedding pass, reduced batch by batch
    into second moments and sample rows; ``embed`` excludes the reduction's seconds."""
    _recalibrate(model, prep, dev, timings)
    t = time.perf_counter()
    dims: dict[str, int] = {}
    streams: dict[str, list[_PassStream]] = {}
    start, reduce_seconds = 0, 0.0
    batches = iter_embeddings(model, prep.dataset, **_pass_options(prep, dev))
    with contextlib.closing(batches):
        for out in batches:
            t0 = time.perf_counter()
            if not streams:
                for rep in prep.representations:
                    dims[rep] = int(out[rep].shape[1])
                    streams[rep] = [
                        _PassStream.plan(prep, p, rep, dims[rep], stored) for p in prep.passes
                    ]
            size = 0
            for rep in prep.representations:
                size = int(out[rep].shape[0])
                for ps in streams[rep]:
                    ps.feed(out[rep], start)
            start += size
            reduce_seconds += time.perf_counter() - t0
    if not streams:
        raise ValueError("data is empty: no batch was produced, so there is nothing to embed.")
    timings["embed"] = time.perf_counter() - t - reduce_seconds
    return _Streamed(dims, streams, reduce_seconds)


def _score(
    prep: _Prepared,
    source: _Embedded | _Streamed,
    stored: set[tuple[str, str]],
    steps: dict[str, dict[str, float]],
    costs: dict[str, float],
) -> tuple[list[tuple[str, MetricDefinition, float, float]], list[str]]:
    """Compute the missing values of every representation; (rows, error texts).

    Rows are ``(representation, definition, value, seconds)``. Adds the seconds of shared
    steps to ``steps[representation]`` and those of metrics and steps, summed over
    representations, to ``costs``.
    """
    rows: list[tuple[str, MetricDefinition, float, float]] = []
    errors: list[str] = []
    for rep in prep.representations:
        expected = prep.expected(source.dim(rep))
        for index, p in enumerate(prep.passes):
            names = [s.name for s in p.specs if (rep, expected[s.name][1]) not in stored]
            if not names:
                continue
            try:
                result = source.evaluate(prep, rep, index, names)
            except Exception as exc:
                errors.append(f"{rep}: {type(exc).__name__}: {_one_line(str(exc), 300)}")
                continue
            for key, seconds in result.timings.items():
                costs[key] = costs.get(key, 0.0) + seconds
                if key not in result.records:  # a shared step (a pass may repeat one)
                    mine = steps.setdefault(rep, {})
                    mine[key] = mine.get(key, 0.0) + seconds
            for name, rec in result.records.items():
                if rec.error:
                    errors.append(f"{rep}/{name}: {_one_line(rec.error, 300)}")
                    continue
                defn = prep.decorate(REGISTRY[name], rec.definition)
                if defn.digest() != expected[name][1]:  # the skip rule would miss this value
                    warnings.warn(
                        f"sslwatch sweep: the predicted definition of {name!r} on {rep!r} "
                        f"differs from the computed one "
                        f"({'; '.join(defn.differences(expected[name][0]))}); re-runs will "
                        "recompute it. Please report this.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                rows.append((rep, defn, rec.value, max(0.0, rec.seconds)))
    return rows, errors


def _warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    out = []
    for w in caught:
        message = str(w.message)
        if issubclass(w.category, RuntimeWarning) and _METRIC_FAILED.match(message):
            continue  # already recorded as the point's error
        text = f"{w.category.__name__}: {_one_line(message, 300)}"
        if text not in out:
            out.append(text)
    caught.clear()
    return out
