"""The comparability guard: values are compared only when their definitions match.

Two values of a metric may be compared when their
:class:`~sslwatch.core.definitions.MetricDefinition` match (same N, D, parameters, dtype,
revision) and, for metrics the registry marks as architecture-bound (clustering,
``cross_architecture=False``), when they come from one architecture. :func:`partition`
splits values into such groups; mixing groups either raises :class:`IncomparableError`
or, in ``"split"`` mode, records a :class:`ComparabilityWarning`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sslwatch.analysis.observations import Observation, is_cross_architecture
from sslwatch.core.definitions import MetricDefinition

OnIncomparable = Literal["raise", "split"]


class IncomparableError(ValueError):
    """A comparison mixed values whose definitions or architectures differ."""


@dataclass(frozen=True)
class ComparabilityWarning:
    """Values that were *not* compared with each other, and why.

    Attributes:
        context: what was being compared (e.g. ``"pooled correlation, method simclr"``).
        metric: the metric concerned.
        message: the differing fields (``"n: 2000 vs 25600"``) or architectures.
        groups: labels of the groups shown separately (or skipped).
    """

    context: str
    metric: str
    message: str
    groups: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.context}: {self.message}"


@dataclass(frozen=True)
class ComparableGroup:
    """Values of one metric that may be compared: one definition (and architecture).

    ``architecture`` is set only for architecture-bound metrics; ``items`` are the
    observations; ``label`` names the group in warnings.
    """

    key: str
    architecture: str | None
    definition: MetricDefinition
    digest: str
    items: list[Observation] = field(hash=False)

    @property
    def label(self) -> str:
        d = self.definition
        arch = f", architecture {self.architecture}" if self.architecture is not None else ""
        return f"{self.digest[:8]} (N={d.n}, D={d.d}{arch})"


def _describe_mix(groups: Sequence[ComparableGroup], metric: str) -> str:
    parts: list[str] = []
    groups = sorted(
        groups, key=lambda g: (g.definition.n, g.definition.d, g.digest, str(g.architecture))
    )
    base = groups[0].definition
    diffs: list[str] = []
    for g in groups[1:]:
        for d in base.differences(g.definition):
            if d not in diffs:
                diffs.append(d)
    if diffs:
        parts.append(
            f"{metric} values have {len({g.key for g in groups})} definitions ("
            + "; ".join(diffs)
            + ")"
        )
    archs = sorted({str(g.architecture) for g in groups if g.architecture is not None})
    if len(archs) > 1:
        counts = Counter(str(g.architecture) for g in groups for _ in g.items)
        listed = " vs ".join(f"{a} ({counts[a]} values)" for a in archs)
        parts.append(
            f"{metric} is architecture-bound (cross_architecture=False: Xu et al. 2024 "
            f"compare clustering metrics within one architecture only): {listed}"
        )
    return "; ".join(parts)


def partition(
    obs: Sequence[Observation],
    *,
    context: str,
    on_incomparable: OnIncomparable = "raise",
    warnings_out: list[ComparabilityWarning] | None = None,
) -> list[ComparableGroup]:
    """Split the values of ONE metric into groups that may be compared with each other.

    Groups by definition (:meth:`MetricDefinition.comparison_key`) and, for metrics that
    are not ``cross_architecture``, by architecture.

    Args:
        obs: observations of a single metric.
        context: what is being compared, for messages.
        on_incomparable: ``"raise"``: more than one group raises :class:`IncomparableError`;
            ``"split"``: return every group and append a :class:`ComparabilityWarning`.
        warnings_out: list receiving the warning in ``"split"`` mode.

    Returns:
        The groups, largest first (ties by digest, then architecture).
    """
    if on_incomparable not in ("raise", "split"):
        raise ValueError(f"on_incomparable must be 'raise' or 'split', got {on_incomparable!r}")
    metrics = {o.metric for o in obs}
    if len(metrics) > 1:
        raise ValueError(f"partition() takes one metric at a time, got {sorted(metrics)}")
    if not obs:
        return []
    metric = next(iter(metrics))
    cross = is_cross_architecture(metric)
    buckets: dict[tuple[str, str | None], list[Observation]] = defaultdict(list)
    for o in obs:
        buckets[(o.key, None if cross else o.architecture)].append(o)
    groups = [
        ComparableGroup(key, arch, items[0].definition, items[0].digest, items)
        for (key, arch), items in buckets.items()
    ]
    groups.sort(key=lambda g: (-len(g.items), g.digest, str(g.architecture)))
    if len(groups) > 1:
        message = _describe_mix(groups, metric)
        if on_incomparable == "raise":
            raise IncomparableError(
                f"{context}: refusing to compare: {message}. Filter the rows to one "
                "definition (e.g. by 'digest' or 'n') and one architecture, or use "
                "on_incomparable='split' to analyse each group separately."
            )
        if warnings_out is not None:
            warnings_out.append(
                ComparabilityWarning(
                    context=context,
                    metric=metric,
                    message=message + "; analysed separately",
                    groups=tuple(g.label for g in groups),
                )
            )
    return groups


def merge_warnings(warns: Sequence[ComparabilityWarning]) -> list[ComparabilityWarning]:
    """One warning per (metric, message); the contexts it arose in are counted."""
    first: dict[tuple[str, str], ComparabilityWarning] = {}
    count: Counter[tuple[str, str]] = Counter()
    for w in warns:
        k = (w.metric, w.message)
        first.setdefault(k, w)
        count[k] += 1
    out = []
    for k, w in first.items():
        more = count[k] - 1
        context = w.context + (f" (and {more} more comparison{'s' * (more > 1)})" if more else "")
        out.append(ComparabilityWarning(context, w.metric, w.message, w.groups))
    return out
