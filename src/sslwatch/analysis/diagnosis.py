"""Diagnoses of a run that need no labels: collapse, a falling metric, non-finite values."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from sslwatch.analysis.observations import (
    Observation,
    Table,
    metric_direction,
    observations,
    oriented,
    past_min_epoch,
    point_order,
)

Severity = Literal["info", "warning", "critical"]

_SEVERITY_ORDER: Final = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One diagnosis of a run: ``severity`` is ``"info"``, ``"warning"`` or ``"critical"``."""

    run: str
    representation: str
    metric: str
    severity: Severity
    code: str
    message: str
    epoch: int | None = None


def diagnose(
    rows: Table,
    *,
    trend_metrics: Sequence[str] = ("rankme",),
    window: int = 4,
    min_drop: float = 0.05,
    collapse_ratio: float = 0.1,
    partial_collapse_ratio: float = 0.3,
    min_epoch: int | None = 1,
) -> list[Finding]:
    """Trend and collapse findings per run and representation.

    Rules (each on one definition of a metric, latest points last):

    * ``falling`` (warning): each of the last ``window`` values of a ``trend_metrics``
      metric is worse than the one before (direction-aware) and the last is at least
      ``min_drop`` (relative) worse than the first of the window; critical when the last
      value is below half of the run's best. Points before ``min_epoch`` are ignored
      (RankMe of random features is high, so it "falls" at first by design).
    * ``collapse`` (critical) / ``partial_collapse`` (warning): the latest
      ``collapse_std`` is below ``collapse_ratio`` (``partial_collapse_ratio``) times
      ``1/sqrt(D)``, its value for healthy, spread-out embeddings (Chen & He 2021).
    * ``rank_collapse`` (critical): the latest RankMe is at most 1.5 (one direction left).
    * ``n_below_d`` (warning): RankMe computed with N < D, which caps it at N.
    * ``non_finite`` (info): the metric has NaN or infinite values.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    by: dict[tuple[str, str, str, str], list[Observation]] = defaultdict(list)
    for o in observations(rows):
        by[(o.run, o.representation, o.metric, o.key)].append(o)
    out: list[Finding] = []
    for (_run, _rep, metric, _key), items in sorted(by.items()):
        items = sorted(items, key=point_order)
        out += _non_finite(items)
        vals = [o for o in items if o.finite and past_min_epoch(o, min_epoch)]
        if not vals:
            continue
        if metric == "rankme":
            out += _rank_findings(vals[-1])
        if metric == "collapse_std":
            out += _collapse_findings(vals[-1], collapse_ratio, partial_collapse_ratio)
        if metric in trend_metrics:
            out += _falling(vals, window, min_drop)
    out.sort(key=lambda f: (_SEVERITY_ORDER[f.severity], f.run, f.representation, f.metric))
    return out


def _at(o: Observation) -> str:
    """Where a value was measured, for messages: ``epoch 5``, ``step 300`` or the path."""
    if o.epoch is not None:
        return f"epoch {o.epoch}"
    return f"step {o.step}" if o.step is not None else str(o.path)


def _finding(o: Observation, severity: Severity, code: str, message: str) -> Finding:
    return Finding(o.run, o.representation, o.metric, severity, code, message, o.epoch)


def _non_finite(items: Sequence[Observation]) -> list[Finding]:
    """``non_finite``: NaN or infinite values, named by the last of them."""
    bad = [o for o in items if not o.finite]
    if not bad:
        return []
    last = bad[-1]
    message = f"{last.metric} is {last.value} at {len(bad)} point(s) (e.g. {_at(last)})"
    return [_finding(last, "info", "non_finite", message)]


def _rank_findings(last: Observation) -> list[Finding]:
    """``n_below_d`` and ``rank_collapse`` from the latest RankMe."""
    out = []
    n, d = last.definition.n, last.definition.d
    if n and d and n < d:
        message = (
            f"RankMe computed on N={n} < D={d} embeddings: it cannot exceed N; score at "
            "least D embeddings"
        )
        out.append(_finding(last, "warning", "n_below_d", message))
    if last.value <= 1.5:
        message = (
            f"RankMe is {last.value:.3g} at {_at(last)}: the embeddings span about one "
            "direction (complete collapse)"
        )
        out.append(_finding(last, "critical", "rank_collapse", message))
    return out


def _collapse_findings(
    last: Observation, collapse_ratio: float, partial_collapse_ratio: float
) -> list[Finding]:
    """``collapse`` / ``partial_collapse`` from the latest ``collapse_std`` against 1/sqrt(D)."""
    d = last.definition.d
    if d <= 0:
        return []
    healthy = 1.0 / math.sqrt(d)
    ratio = last.value / healthy
    if ratio >= partial_collapse_ratio:
        return []
    complete = ratio < collapse_ratio
    message = (
        f"collapse_std is {last.value:.3g} at {_at(last)}, {ratio:.0%} of "
        f"1/sqrt(D) = {healthy:.3g} (healthy embeddings are near 100%)"
    )
    return [
        _finding(
            last,
            "critical" if complete else "warning",
            "collapse" if complete else "partial_collapse",
            message,
        )
    ]


def _falling(vals: Sequence[Observation], window: int, min_drop: float) -> list[Finding]:
    """``falling``: worse at each of the last ``window`` points, by ``min_drop`` in all."""
    metric = vals[-1].metric
    if metric_direction(metric) == "none" or len(vals) < window:
        return []
    tail = [oriented(metric, o.value) for o in vals[-window:]]
    falling = all(b < a for a, b in itertools.pairwise(tail))
    drop = (tail[0] - tail[-1]) / max(abs(tail[0]), 1e-12)
    if not (falling and drop >= min_drop):
        return []
    best = max(oriented(metric, o.value) for o in vals)
    raw_best = max(vals, key=lambda o: oriented(metric, o.value))
    severe = best > 0 and tail[-1] < 0.5 * best
    last, first = vals[-1], vals[-window]
    message = (
        f"{metric} worsened at each of the last {window} points "
        f"({_at(first)} to {_at(last)}): {first.value:.4g} "
        f"-> {last.value:.4g} ({drop:.0%}); best {raw_best.value:.4g} at "
        f"{_at(raw_best)}"
    )
    return [_finding(last, "critical" if severe else "warning", "falling", message)]
