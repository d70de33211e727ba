"""Selection without labels: the best checkpoint of each run and the best run of each
group by a label-free metric, with the regret against the label oracle (ties and regret
as in the conventions of :mod:`sslwatch.analysis`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sslwatch.analysis.comparability import (
    ComparabilityWarning,
    ComparableGroup,
    IncomparableError,
    OnIncomparable,
    partition,
)
from sslwatch.analysis.observations import (
    Observation,
    Table,
    check_group_by,
    group_of,
    last_common_epoch,
    metric_direction,
    metric_spec,
    oriented,
    point_order,
    reference_rep_for,
    usable_observations,
)
from sslwatch.core.definitions import MetricDefinition


@dataclass(frozen=True)
class CheckpointSelection:
    """The best checkpoint of one run by a label-free metric, and its regret.

    Attributes:
        run, method, architecture, representation, metric: what was selected on.
        epoch, step, path: the selected point.
        value: the metric's raw value there.
        reference: the label-based reference (None when the table has none).
        reference_value: the reference at the selected point (NaN when missing).
        oracle_epoch, oracle_step, oracle_path, oracle_value: the candidate with the best
            reference value.
        regret: ``oracle - selected`` in the reference's oriented units (NaN when unknown).
        n_candidates: points with a finite metric value considered.
        digest, definition: definition of the compared metric values.
    """

    run: str
    method: str | None
    architecture: str | None
    representation: str
    metric: str
    epoch: int | None
    step: int | None
    path: str | None
    value: float
    reference: str | None
    reference_value: float
    oracle_epoch: int | None
    oracle_step: int | None
    oracle_path: str | None
    oracle_value: float
    regret: float
    n_candidates: int
    digest: str
    definition: MetricDefinition


@dataclass(frozen=True)
class RunSelection:
    """The best run of one group (e.g. method) by a metric at one epoch, and its regret.

    Attributes:
        group: the group value (e.g. the method name).
        architecture: set when the metric is architecture-bound (the group's architecture).
        representation, metric, epoch: what was compared, at which epoch.
        selected_run, value: the winner and its raw metric value.
        reference, reference_value: the reference and its value for the selected run.
        oracle_run, oracle_value: the candidate run with the best reference value.
        regret: ``oracle - selected`` in the reference's oriented units (NaN when unknown).
        ranking: ``(run, metric value, reference value)`` for every candidate, best first.
        excluded: runs of the group without a value at this epoch.
        digest, definition: definition of the compared metric values.
    """

    group: str
    architecture: str | None
    representation: str
    metric: str
    epoch: int
    selected_run: str
    value: float
    reference: str | None
    reference_value: float
    oracle_run: str | None
    oracle_value: float
    regret: float
    ranking: tuple[tuple[str, float, float], ...]
    excluded: tuple[str, ...]
    digest: str
    definition: MetricDefinition

    @property
    def random_regret(self) -> float:
        """The baseline a metric has to beat: the expected regret of a uniformly random
        pick, ``oracle - mean(reference of the candidates)`` (NaN when unknown)."""
        refs = [ref for _, _, ref in self.ranking if math.isfinite(ref)]
        if not refs or not math.isfinite(self.oracle_value):
            return math.nan
        return float(self.oracle_value - sum(refs) / len(refs))


def _require_direction(metric: str) -> None:
    if metric_direction(metric) == "none":
        known = "" if metric_spec(metric) is not None else " (it is not in the registry)"
        raise ValueError(
            f"cannot select by {metric!r}: it has no direction (higher_is_better=None)"
            f"{known}; select by a metric with a direction, such as rankme"
        )


def _best(
    items: Sequence[Observation], metric: str, tie: Callable[[Observation], Any]
) -> Observation:
    """Highest oriented value; ties broken by ``tie`` (smallest first)."""
    return min(items, key=lambda o: (-oriented(metric, o.value), tie(o)))


def _regret(
    reference: str | None, oracle: Observation | None, selected: Observation | None
) -> float:
    """``oracle - selected`` in the reference's oriented units; NaN when either is missing."""
    if oracle is None or selected is None or reference is None:
        return math.nan
    return oriented(reference, oracle.value) - oriented(reference, selected.value)


def _value(o: Observation | None) -> float:
    return o.value if o is not None else math.nan


# --------------------------------------------------------------------------- checkpoints


def select_checkpoints(
    rows: Table,
    metric: str,
    *,
    reference: str | None = "linear_probe",
    representation: str = "backbone",
    reference_representation: str | None = None,
    source: str | None = None,
    min_epoch: int | None = 1,
    on_incomparable: OnIncomparable = "raise",
    warnings_out: list[ComparabilityWarning] | None = None,
) -> list[CheckpointSelection]:
    """The best checkpoint of every run by ``metric``, with its regret against the labels.

    Ties go to the earliest point (see :mod:`sslwatch.analysis`). Points with an epoch below
    ``min_epoch`` are not candidates. ``reference=None``, or a table without it, gives
    NaN regrets. In ``"split"`` mode, reference values under several definitions use the
    largest comparable group for the oracle (and a warning says so).

    Raises:
        ValueError: ``metric`` has no direction.
        IncomparableError: a run holds values of ``metric`` under different definitions
            (``on_incomparable="raise"``).
    """
    _require_direction(metric)
    obs = usable_observations(rows, min_epoch=min_epoch, source=source)
    ref_rep = reference_rep_for(representation, reference, reference_representation, obs)
    m_runs: dict[str, list[Observation]] = defaultdict(list)
    r_runs: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        if o.metric == metric and o.representation == representation:
            m_runs[o.run].append(o)
        if reference is not None and o.metric == reference and o.representation == ref_rep:
            r_runs[o.run].append(o)
    mode: dict[str, Any] = {"on_incomparable": on_incomparable, "warnings_out": warnings_out}
    out: list[CheckpointSelection] = []
    for run in sorted(m_runs):
        ctx = f"checkpoint selection in run {run} by {metric} on {representation}"
        ref_groups = partition(r_runs[run], context=ctx, **mode) if r_runs.get(run) else []
        ref_items = ref_groups[0].items if ref_groups else []
        for g in partition(m_runs[run], context=ctx, **mode):
            out.append(_best_checkpoint(run, g, ref_items, metric, reference, representation))
    return out


def _best_checkpoint(
    run: str,
    group: ComparableGroup,
    ref_items: Sequence[Observation],
    metric: str,
    reference: str | None,
    representation: str,
) -> CheckpointSelection:
    """The best point of one comparable group of a run, and the labels' best among them."""
    chosen = _best(group.items, metric, point_order)
    ref_at = {r.point: r for r in ref_items}
    cand_refs = [ref_at[o.point] for o in group.items if o.point in ref_at]
    sel_ref = ref_at.get(chosen.point)
    oracle = _best(cand_refs, reference, point_order) if cand_refs and reference else None
    return CheckpointSelection(
        run=run,
        method=chosen.method,
        architecture=chosen.architecture,
        representation=representation,
        metric=metric,
        epoch=chosen.epoch,
        step=chosen.step,
        path=chosen.path,
        value=chosen.value,
        reference=reference if ref_items else None,
        reference_value=_value(sel_ref),
        oracle_epoch=oracle.epoch if oracle else None,
        oracle_step=oracle.step if oracle else None,
        oracle_path=oracle.path if oracle else None,
        oracle_value=_value(oracle),
        regret=_regret(reference, oracle, sel_ref),
        n_candidates=len(group.items),
        digest=group.digest,
        definition=group.definition,
    )


# --------------------------------------------------------------------------- runs


def select_runs(
    rows: Table,
    metric: str,
    *,
    reference: str | None = "linear_probe",
    representation: str = "backbone",
    reference_representation: str | None = None,
    group_by: str | None = "method",
    epoch: int | None = None,
    source: str | None = None,
    min_epoch: int | None = 1,
    on_incomparable: OnIncomparable = "raise",
    warnings_out: list[ComparabilityWarning] | None = None,
) -> list[RunSelection]:
    """The best run of every group by ``metric`` at one epoch, with its regret.

    Runs are compared at the same epoch count (the learning-rate schedule depends on
    it): ``epoch`` when given, else the last epoch at which every run of the group has a
    value. Runs without a value at that epoch are listed in ``excluded``. Ties go to the
    smallest run name. Only points with an epoch take part. In ``"split"`` mode, each
    comparable group is ranked on its own, a group whose runs share no epoch is skipped
    (with a warning), and the oracle uses the largest comparable group of reference values.

    Raises:
        ValueError: ``metric`` has no direction, or ``group_by`` is not a run column.
        IncomparableError: the group mixes definitions, architectures (for an
            architecture-bound metric) or shares no epoch (``on_incomparable="raise"``).
    """
    _require_direction(metric)
    check_group_by(group_by)
    obs = [
        o
        for o in usable_observations(rows, min_epoch=min_epoch, source=source)
        if o.epoch is not None
    ]
    ref_rep = reference_rep_for(representation, reference, reference_representation, obs)
    groups: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        if o.metric == metric and o.representation == representation:
            groups[group_of(o, group_by)].append(o)
    ref_obs = [
        o
        for o in obs
        if reference is not None and o.metric == reference and o.representation == ref_rep
    ]
    mode: dict[str, Any] = {"on_incomparable": on_incomparable, "warnings_out": warnings_out}
    out: list[RunSelection] = []
    for gname in sorted(groups):
        ctx = f"run selection in {group_by or 'all runs'} {gname} by {metric} on {representation}"
        for g in partition(groups[gname], context=ctx, **mode):
            per_run = _at_epoch(g.items)
            at = epoch if epoch is not None else _shared_epoch(per_run, metric, ctx, **mode)
            if at is None:
                continue
            cands = {run: d[at] for run, d in per_run.items() if at in d}
            if not cands:
                continue
            ref_cands = [o for o in ref_obs if o.run in cands and o.epoch == at]
            refs = _references_at(ref_cands, at, ctx, mode)
            excluded = tuple(sorted(run for run in per_run if run not in cands))
            out.append(_best_run(gname, g, at, cands, refs, excluded, reference, representation))
    return out


def _at_epoch(items: Sequence[Observation]) -> dict[str, dict[int, Observation]]:
    """run -> epoch -> observation (the last point of an epoch when there are several)."""
    out: dict[str, dict[int, Observation]] = defaultdict(dict)
    for o in sorted(items, key=point_order):
        if o.epoch is not None:
            out[o.run][o.epoch] = o
    return out


def _shared_epoch(
    per_run: dict[str, dict[int, Observation]],
    metric: str,
    ctx: str,
    *,
    on_incomparable: OnIncomparable,
    warnings_out: list[ComparabilityWarning] | None,
) -> int | None:
    """The runs' last common epoch; when there is none, raise or warn (and return None)."""
    at = last_common_epoch({run: d.keys() for run, d in per_run.items()})
    if at is not None:
        return at
    spans = ", ".join(f"{run}: epochs {min(d)}-{max(d)}" for run, d in sorted(per_run.items()))
    msg = (
        f"the runs share no epoch with a {metric} value ({spans}); runs must be "
        "compared at the same epoch count: pass epoch="
    )
    if on_incomparable == "raise":
        raise IncomparableError(f"{ctx}: {msg}")
    if warnings_out is not None:
        warnings_out.append(ComparabilityWarning(ctx, metric, msg + "; skipped"))
    return None


def _references_at(
    ref_cands: Sequence[Observation], at: int, ctx: str, mode: dict[str, Any]
) -> dict[str, Observation]:
    """run -> its reference value at epoch ``at`` (the largest comparable group)."""
    if not ref_cands:
        return {}
    rgroups = partition(ref_cands, context=ctx, **mode)
    return {run: d[at] for run, d in _at_epoch(rgroups[0].items).items()}


def _best_run(
    gname: str,
    group: ComparableGroup,
    at: int,
    cands: dict[str, Observation],
    refs: dict[str, Observation],
    excluded: tuple[str, ...],
    reference: str | None,
    representation: str,
) -> RunSelection:
    """Rank the candidate runs of one comparable group by the metric and by the labels."""
    metric = group.definition.metric
    ranked = sorted(cands.values(), key=lambda o: (-oriented(metric, o.value), o.run))
    chosen = ranked[0]
    ranking = tuple((o.run, o.value, _value(refs.get(o.run))) for o in ranked)
    oracle = (
        min(refs.values(), key=lambda r: (-oriented(str(reference), r.value), r.run))
        if refs
        else None
    )
    sel_ref = refs.get(chosen.run)
    return RunSelection(
        group=gname,
        architecture=group.architecture,
        representation=representation,
        metric=metric,
        epoch=at,
        selected_run=chosen.run,
        value=chosen.value,
        reference=reference if refs else None,
        reference_value=_value(sel_ref),
        oracle_run=oracle.run if oracle else None,
        oracle_value=_value(oracle),
        regret=_regret(reference, oracle, sel_ref),
        ranking=ranking,
        excluded=excluded,
        digest=group.digest,
        definition=group.definition,
    )
