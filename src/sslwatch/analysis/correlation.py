"""How well each label-free metric tracks a label-based reference, in three scopes.

:func:`correlations` pairs a metric and its reference at the same point and correlates
them within each run (``"run"``), over all checkpoints of the runs of one group
(``"pooled"``, bootstrap stratified by run) and across runs at their last common epoch
(``"final"``), each comparable group of definitions on its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sslwatch.analysis.bootstrap import CorrelationEstimate, correlate
from sslwatch.analysis.comparability import ComparabilityWarning, OnIncomparable, partition
from sslwatch.analysis.observations import (
    REFERENCES,
    Observation,
    PointKey,
    Table,
    check_group_by,
    group_of,
    is_cross_architecture,
    is_label_based,
    last_common_epoch,
    metric_direction,
    oriented,
    point_order,
    reference_rep_for,
    usable_observations,
)
from sslwatch.core.definitions import MetricDefinition

Scope = Literal["run", "pooled", "final"]
Pairs = list[tuple[Observation, Observation]]

_SCOPE_ORDER = {"run": 0, "pooled": 1, "final": 2}


@dataclass(frozen=True)
class Correlation:
    """How well one label-free metric tracks a label-based reference, in one scope.

    Attributes:
        scope: ``"run"`` (checkpoints of one run), ``"pooled"`` (all checkpoints of the
            runs of one group) or ``"final"`` (one point per run, at the runs' last
            common epoch).
        group: the run name (``"run"``) or the group value, e.g. the method.
        method: the runs' method (None when unknown or mixed).
        architecture: the architecture, when all values share one; else None.
        representation / reference_representation: where metric and reference were read.
        metric / reference: registry names.
        direction: the metric's direction; values were negated for ``"lower"``, and
            correlated raw for ``"none"`` (then the sign says nothing about trust).
        runs: runs contributing points.
        epoch: the common epoch for scope ``"final"``; else None.
        digest / reference_digest: definitions of the compared values.
        definition: the metric's definition (N, D, parameters).
        stats: the estimates (n = paired points).
        values / reference_values: the paired raw values (for plots), with
            ``point_runs`` and ``point_epochs`` of each pair.
    """

    scope: Scope
    group: str
    method: str | None
    architecture: str | None
    representation: str
    reference_representation: str
    metric: str
    reference: str
    direction: str
    runs: tuple[str, ...]
    epoch: int | None
    digest: str
    reference_digest: str
    definition: MetricDefinition
    stats: CorrelationEstimate
    values: tuple[float, ...] = ()
    reference_values: tuple[float, ...] = ()
    point_runs: tuple[str, ...] = ()
    point_epochs: tuple[int | None, ...] = ()

    @property
    def oriented(self) -> bool:
        """True when the sign is meaningful (the metric has a direction)."""
        return self.direction != "none"

    @property
    def n(self) -> int:
        """Number of paired points."""
        return self.stats.n

    @property
    def architecture_bound(self) -> bool:
        """True for an architecture-bound metric (``cross_architecture=False``) correlated
        within one architecture."""
        return self.architecture is not None and not is_cross_architecture(self.metric)


@dataclass(frozen=True)
class _Pairing:
    """What one metric is correlated with, and the bootstrap settings."""

    metric: str
    reference: str
    representation: str
    reference_representation: str
    n_boot: int
    confidence: float
    seed: int

    @property
    def where(self) -> str:
        return (
            f"{self.metric} on {self.representation} vs {self.reference} on "
            f"{self.reference_representation}"
        )


def correlations(
    rows: Table,
    *,
    reference: str = "linear_probe",
    metrics: Sequence[str] | None = None,
    representations: Sequence[str] | None = None,
    reference_representation: str | None = None,
    scopes: Sequence[Scope] = ("run", "pooled", "final"),
    group_by: str | None = "method",
    source: str | None = None,
    min_epoch: int | None = 1,
    n_boot: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
    on_incomparable: OnIncomparable = "raise",
    warnings_out: list[ComparabilityWarning] | None = None,
) -> list[Correlation]:
    """Correlate every label-free metric with ``reference``, per run and per group.

    Args:
        rows: the tidy table.
        reference: a label-based metric (default linear-probe accuracy).
        metrics: metrics to correlate (default: every label-free metric in the table).
        representations: representations to analyse (default: all).
        reference_representation: read the reference on this representation instead of
            the metric's own (default: its own, or the one holding the reference values
            when it has none; see the package docstring).
        scopes: any of ``"run"``, ``"pooled"``, ``"final"`` (see :class:`Correlation`).
        group_by: run column grouping runs for the pooled and final scopes.
        source: only points of this source (``"checkpoint"`` or ``"online"``).
        min_epoch: drop points with an epoch below this (None keeps all).
        n_boot, confidence, seed: bootstrap settings (see :func:`correlate`).
        on_incomparable: ``"raise"`` or ``"split"`` (see :func:`partition`).
        warnings_out: receives the :class:`ComparabilityWarning` in ``"split"`` mode.

    Returns:
        Correlations ordered by scope, group, representation, metric.
    """
    check_group_by(group_by)
    for s in scopes:
        if s not in _SCOPE_ORDER:
            raise ValueError(f"scopes must be among 'run', 'pooled', 'final', got {s!r}")
    obs = usable_observations(rows, min_epoch=min_epoch, source=source)
    _check_reference(reference, obs)
    if metrics is None:
        metrics = sorted({o.metric for o in obs if not is_label_based(o.metric)})
    metrics = [m for m in metrics if m != reference]
    reps = sorted({o.representation for o in obs}) if representations is None else representations
    by: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for o in obs:
        by[(o.metric, o.representation)].append(o)

    out: list[Correlation] = []
    mode: dict[str, Any] = {"on_incomparable": on_incomparable, "warnings_out": warnings_out}
    for rep in reps:
        ref_rep = reference_rep_for(rep, reference, reference_representation, obs)
        ref_all = by.get((reference, ref_rep), [])
        for metric in metrics:
            m_all = by.get((metric, rep), [])
            if not m_all or not ref_all:
                continue
            pairing = _Pairing(metric, reference, rep, ref_rep, n_boot, confidence, seed)
            if "run" in scopes:
                out += _per_run(m_all, ref_all, pairing, mode)
            if "pooled" in scopes or "final" in scopes:
                out += _per_group(m_all, ref_all, pairing, scopes, group_by, mode)
    out.sort(key=lambda c: (_SCOPE_ORDER[c.scope], c.group, c.representation, c.metric, c.digest))
    return out


def _per_run(
    m_all: Sequence[Observation],
    ref_all: Sequence[Observation],
    pairing: _Pairing,
    mode: dict[str, Any],
) -> list[Correlation]:
    """Scope ``"run"``: the checkpoints of each run."""
    out = []
    for run, m_items, r_items in _buckets(m_all, ref_all, lambda o: o.run):
        context = f"run {run}: {pairing.where}"
        for dig, ref_dig, pairs in _comparable_pairs(m_items, r_items, context=context, **mode):
            out.append(_make_correlation("run", run, pairs, pairing, None, dig, ref_dig, False))
    return out


def _per_group(
    m_all: Sequence[Observation],
    ref_all: Sequence[Observation],
    pairing: _Pairing,
    scopes: Sequence[Scope],
    group_by: str | None,
    mode: dict[str, Any],
) -> list[Correlation]:
    """Scopes ``"pooled"`` and ``"final"``: the runs of each group together."""
    out = []
    for gname, m_items, r_items in _buckets(m_all, ref_all, lambda o: group_of(o, group_by)):
        context = f"{group_by or 'all runs'} {gname}: {pairing.where}"
        for dig, ref_dig, pairs in _comparable_pairs(m_items, r_items, context=context, **mode):
            if "pooled" in scopes:
                out.append(
                    _make_correlation("pooled", gname, pairs, pairing, None, dig, ref_dig, True)
                )
            final = _final_pairs(pairs) if "final" in scopes else None
            if final is not None:
                epoch, at_epoch = final
                out.append(
                    _make_correlation("final", gname, at_epoch, pairing, epoch, dig, ref_dig, False)
                )
    return out


def _make_correlation(
    scope: Scope,
    group: str,
    pairs: Pairs,
    pairing: _Pairing,
    epoch: int | None,
    digest: str,
    reference_digest: str,
    stratify: bool,
) -> Correlation:
    """Correlate the oriented values of ``pairs``; ``stratify`` resamples within runs."""
    metric, reference = pairing.metric, pairing.reference
    x = [oriented(metric, m.value) for m, _ in pairs]
    y = [oriented(reference, r.value) for _, r in pairs]
    runs = [m.run for m, _ in pairs]
    est = correlate(
        x,
        y,
        n_boot=pairing.n_boot,
        confidence=pairing.confidence,
        seed=pairing.seed,
        strata=runs if stratify and len(set(runs)) > 1 else None,
    )
    return Correlation(
        scope=scope,
        group=group,
        method=_single(m.method for m, _ in pairs),
        architecture=_single(m.architecture for m, _ in pairs),
        representation=pairing.representation,
        reference_representation=pairing.reference_representation,
        metric=metric,
        reference=reference,
        direction=metric_direction(metric),
        runs=tuple(sorted(set(runs))),
        epoch=epoch,
        digest=digest,
        reference_digest=reference_digest,
        definition=pairs[0][0].definition,
        stats=est,
        values=tuple(m.value for m, _ in pairs),
        reference_values=tuple(r.value for _, r in pairs),
        point_runs=tuple(runs),
        point_epochs=tuple(m.epoch for m, _ in pairs),
    )


def _single(values: Iterable[str | None]) -> str | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _check_reference(reference: str, obs: Sequence[Observation]) -> None:
    if metric_direction(reference) == "none":
        raise ValueError(
            f"reference {reference!r} has no direction (higher_is_better=None); pass a "
            f"label-based reference such as {', '.join(REFERENCES)}"
        )
    if not any(o.metric == reference for o in obs):
        stored = sorted({o.metric for o in obs if is_label_based(o.metric)})
        hint = (
            f"stored label-based metrics: {', '.join(stored)}"
            if stored
            else ("no label-based metric is stored (score with labels to get one)")
        )
        raise ValueError(f"no values of reference {reference!r} in the table; {hint}")


def _buckets(
    metric_obs: Sequence[Observation],
    ref_obs: Sequence[Observation],
    key: Callable[[Observation], str],
) -> list[tuple[str, list[Observation], list[Observation]]]:
    """``(key, metric values, reference values)`` for every key that has both, sorted."""
    m: dict[str, list[Observation]] = defaultdict(list)
    r: dict[str, list[Observation]] = defaultdict(list)
    for o in metric_obs:
        m[key(o)].append(o)
    for o in ref_obs:
        r[key(o)].append(o)
    return [(k, m[k], r[k]) for k in sorted(m) if k in r]


def _comparable_pairs(
    metric_obs: Sequence[Observation],
    ref_obs: Sequence[Observation],
    *,
    context: str,
    on_incomparable: OnIncomparable,
    warnings_out: list[ComparabilityWarning] | None,
) -> list[tuple[str, str, Pairs]]:
    """``(digest, reference digest, pairs)`` for each comparable group of metric x reference."""
    out = []
    mode: dict[str, Any] = {"on_incomparable": on_incomparable, "warnings_out": warnings_out}
    for mg in partition(metric_obs, context=context, **mode):
        for rg in partition(ref_obs, context=context, **mode):
            pairs = _pairs(mg.items, rg.items)
            if pairs:
                out.append((mg.digest, rg.digest, pairs))
    return out


def _pairs(metric_obs: Sequence[Observation], ref_obs: Sequence[Observation]) -> Pairs:
    """Pair metric and reference values measured at the same point, in point order."""
    ref: dict[PointKey, Observation] = {}
    for o in sorted(ref_obs, key=point_order):
        ref.setdefault(o.point, o)
    out = []
    seen: set[PointKey] = set()
    for o in sorted(metric_obs, key=lambda o: (o.run, *point_order(o))):
        if o.point in ref and o.point not in seen:
            seen.add(o.point)
            out.append((o, ref[o.point]))
    return out


def _final_pairs(pairs: Pairs) -> tuple[int, Pairs] | None:
    """One pair per run at the runs' last common epoch (the last point of that epoch)."""
    per_run: dict[str, dict[int, tuple[Observation, Observation]]] = defaultdict(dict)
    for m, r in sorted(pairs, key=lambda p: point_order(p[0])):
        if m.epoch is not None:
            per_run[m.run][m.epoch] = (m, r)  # the last point of an epoch wins
    if len(per_run) < 2:
        return None
    epoch = last_common_epoch({run: d.keys() for run, d in per_run.items()})
    if epoch is None:
        return None
    return epoch, [per_run[run][epoch] for run in sorted(per_run)]
