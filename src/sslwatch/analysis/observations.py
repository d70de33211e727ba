"""The tidy table parsed into observations, and what the registry says about their metrics.

Every other analysis module starts here: :func:`observations` turns store rows into
:class:`Observation` objects, and the small helpers below hold the shared conventions
(point order, orientation, the epoch filter, groups of runs, where a reference is read)
so that correlations, selection and diagnosis apply them the same way.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.registry import REGISTRY, MetricSpec

PointKey = tuple[str, str, str | None, int | None, int | None]

REFERENCES: Final = ("linear_probe", "ridge_probe", "knn_accuracy", "label_ami")
"""Label-based references, in the order :func:`~sslwatch.analysis.analyze` picks the first
one present."""

_REQUIRED: Final = ("run", "representation", "metric", "value", "definition")


@dataclass(frozen=True)
class Observation:
    """One stored value, parsed: a row of the tidy table with its definition object.

    ``key`` is :meth:`MetricDefinition.comparison_key` (what must match for two values to
    be compared); ``digest`` is the store's short hash of it, for display.
    """

    run: str
    method: str | None
    architecture: str | None
    source: str
    path: str | None
    epoch: int | None
    step: int | None
    representation: str
    metric: str
    value: float
    definition: MetricDefinition
    key: str
    digest: str
    status: str = "ok"

    @property
    def point(self) -> PointKey:
        """``(run, source, path, epoch, step)``: where the value was measured."""
        return (self.run, self.source, self.path, self.epoch, self.step)

    @property
    def finite(self) -> bool:
        """True when the value is a finite number."""
        return math.isfinite(self.value)


Table = Iterable[Mapping[str, Any]] | Iterable[Observation] | Any


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None  # pandas writes missing integers as NaN
    return int(value)


def _opt_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def observations(rows: Table) -> list[Observation]:
    """Parse a tidy table (``tidy_rows()`` dicts or a DataFrame) into observations.

    Raises:
        ValueError: a row lacks a required column, or its definition is not valid JSON.
    """
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = rows.to_dict("records")
    out: list[Observation] = []
    parsed: dict[str, tuple[MetricDefinition, str, str]] = {}
    for i, row in enumerate(rows):
        if isinstance(row, Observation):
            out.append(row)
            continue
        if not isinstance(row, Mapping):
            raise ValueError(
                f"row {i} is a {type(row).__name__}; pass ResultStore.tidy_rows() dicts"
            )
        missing = [c for c in _REQUIRED if c not in row]
        if missing:
            raise ValueError(
                f"row {i} lacks column(s) {', '.join(missing)}; pass ResultStore.tidy_rows()"
            )
        raw = row["definition"]
        text = raw if isinstance(raw, str) else json.dumps(dict(raw), sort_keys=True)
        if text not in parsed:
            try:
                definition = MetricDefinition.from_dict(json.loads(text))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"row {i}: definition is not a MetricDefinition JSON ({exc}); pass the "
                    "'definition' column of ResultStore.tidy_rows()"
                ) from exc
            parsed[text] = (definition, definition.comparison_key(), definition.digest())
        definition, key, digest = parsed[text]
        if str(row["metric"]) != definition.metric:
            raise ValueError(
                f"row {i}: metric {row['metric']!r} but its definition is for "
                f"{definition.metric!r}; the table is inconsistent"
            )
        value = row["value"]
        out.append(
            Observation(
                run=str(row["run"]),
                method=_opt_str(row.get("method")),
                architecture=_opt_str(row.get("architecture")),
                source=str(row.get("source") or "checkpoint"),
                path=_opt_str(row.get("path")),
                epoch=_opt_int(row.get("epoch")),
                step=_opt_int(row.get("step")),
                representation=str(row["representation"]),
                metric=definition.metric,
                value=math.nan if value is None else float(value),
                definition=definition,
                key=key,
                digest=str(row.get("digest") or digest),
                status=str(row.get("status") or "ok"),
            )
        )
    return out


def usable_observations(
    rows: Table, *, min_epoch: int | None, source: str | None
) -> list[Observation]:
    """The finite values from ``min_epoch`` on (see :func:`past_min_epoch`) of ``source``
    (every source when None): what correlations and selections work on."""
    return [
        o
        for o in observations(rows)
        if o.finite and past_min_epoch(o, min_epoch) and (source is None or o.source == source)
    ]


def latest_values(rows: Table) -> list[Observation]:
    """The value at the latest point of each (run, representation, metric, definition)."""
    by: dict[tuple[str, str, str, str], Observation] = {}
    for o in sorted(observations(rows), key=point_order):
        by[(o.run, o.representation, o.metric, o.key)] = o
    return sorted(by.values(), key=lambda o: (o.run, o.representation, o.metric, o.digest))


# --------------------------------------------------------------------------- the registry
# Metrics missing from the registry count as having no direction and as
# architecture-bound: the cautious choice.


def metric_spec(metric: str) -> MetricSpec | None:
    """The registry's declaration of ``metric``; None when this sslwatch does not know it."""
    return REGISTRY.get(metric)


def metric_direction(metric: str) -> str:
    """``"higher"``, ``"lower"`` or ``"none"`` (also for an unknown metric)."""
    spec = metric_spec(metric)
    return "none" if spec is None else spec.direction


def is_cross_architecture(metric: str) -> bool:
    """True when values of ``metric`` compare across architectures (False when unknown)."""
    spec = metric_spec(metric)
    return False if spec is None else spec.cross_architecture


def is_label_based(metric: str) -> bool:
    """True for a label-based reference such as linear-probe accuracy."""
    spec = metric_spec(metric)
    return False if spec is None else spec.label_based


def oriented(metric: str, value: float) -> float:
    """Higher-is-better value; the raw value when the metric has no direction."""
    return -value if metric_direction(metric) == "lower" else value


# --------------------------------------------------------------------------- conventions


def point_order(o: Observation) -> tuple[Any, ...]:
    """Sort key of points: epoch, then step, then path, then source (missing ones last)."""
    return (
        o.epoch is None,
        o.epoch or 0,
        o.step is None,
        o.step or 0,
        o.path or "",
        o.source,
    )


def past_min_epoch(o: Observation, min_epoch: int | None) -> bool:
    """False for a point before ``min_epoch``; points without an epoch are kept."""
    return min_epoch is None or o.epoch is None or o.epoch >= min_epoch


def reference_rep_for(
    representation: str, reference: str | None, explicit: str | None, obs: Sequence[Observation]
) -> str:
    """Where the reference of ``representation`` is read: ``explicit`` when given, else the
    representation itself when it has reference values, else the representation holding
    the most of them (ties: alphabetical), e.g. backbone accuracy for projector metrics."""
    if explicit is not None or reference is None:
        return explicit or representation
    counts = Counter(o.representation for o in obs if o.metric == reference)
    if counts.get(representation) or not counts:
        return representation
    return min(counts, key=lambda r: (-counts[r], r))


def check_group_by(group_by: str | None) -> None:
    """Refuse a ``group_by`` that is not a run column."""
    if group_by not in (None, "method", "architecture"):
        raise ValueError(f"group_by must be 'method', 'architecture' or None, got {group_by!r}")


def group_name(group_by: str | None, method: str | None, architecture: str | None) -> str:
    """The group of a run with this method and architecture: the ``group_by`` value,
    ``"(no method)"`` when it is unset, ``"all runs"`` without grouping."""
    if group_by is None:
        return "all runs"
    value = method if group_by == "method" else architecture
    return f"(no {group_by})" if value is None else str(value)


def group_of(item: Any, group_by: str | None) -> str:
    """The group of the run of ``item`` (an observation or a checkpoint selection)."""
    return group_name(group_by, item.method, item.architecture)


def last_common_epoch(per_run: Mapping[str, Iterable[int]]) -> int | None:
    """The last epoch every run has; None when they share none."""
    sets = [set(v) for v in per_run.values()]
    if not sets:
        return None
    common = set.intersection(*sets)
    return max(common) if common else None
