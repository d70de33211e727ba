"""Everything at once: :func:`analyze` runs correlations, selections, diagnoses and the
verdict over a whole table (what ``sslwatch analyze`` and ``sslwatch report`` show)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sslwatch.analysis._json import plain
from sslwatch.analysis.comparability import ComparabilityWarning, merge_warnings
from sslwatch.analysis.correlation import Correlation, correlations
from sslwatch.analysis.diagnosis import Finding, diagnose
from sslwatch.analysis.observations import (
    REFERENCES,
    Observation,
    Table,
    check_group_by,
    is_label_based,
    metric_direction,
    observations,
)
from sslwatch.analysis.selection import (
    CheckpointSelection,
    RunSelection,
    select_checkpoints,
    select_runs,
)
from sslwatch.analysis.verdict import Verdict, verdict
from sslwatch.core.definitions import MetricDefinition


@dataclass(frozen=True)
class Analysis:
    """Everything :func:`analyze` found; what ``sslwatch analyze`` and ``report`` show."""

    reference: str | None
    correlations: tuple[Correlation, ...]
    checkpoint_selections: tuple[CheckpointSelection, ...]
    run_selections: tuple[RunSelection, ...]
    findings: tuple[Finding, ...]
    warnings: tuple[ComparabilityWarning, ...]
    definitions: tuple[MetricDefinition, ...]
    runs: tuple[tuple[str, str | None, str | None], ...]
    representations: tuple[str, ...]
    metrics: tuple[str, ...]
    settings: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    verdict: Verdict | None = None
    online: Analysis | None = None
    n_values: int = 0


def analyze(
    rows: Table,
    *,
    reference: str | None = None,
    reference_representation: str | None = None,
    representations: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    group_by: str | None = "method",
    epoch: int | None = None,
    source: str | None = None,
    min_epoch: int | None = 1,
    n_boot: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
) -> Analysis:
    """Correlations, selections, diagnoses and warnings for a whole table.

    Incomparable values are analysed separately and reported in ``warnings`` (the
    ``"split"`` mode of :func:`partition`), so one odd run never stops the analysis.
    With ``source=None`` and both online and checkpoint values in the table, the result
    is the checkpoint values' analysis with the online values' in ``online`` (never
    pooled). Run selections among a single run (regret 0 by construction) are folded
    into ``notes``. ``n_values`` counts the values analysed.

    Args:
        reference: the label-based reference; default the first of :data:`REFERENCES`
            present in the table (none: no correlations and NaN regrets, said in notes).
        Other arguments: as in :func:`correlations` and :func:`select_runs`.
    """
    check_group_by(group_by)
    all_obs = observations(rows)
    online: Analysis | None = None
    notes: list[str] = []
    if source is None and len({o.source for o in all_obs}) > 1:
        kwargs = {
            "reference": reference, "reference_representation": reference_representation,
            "representations": representations, "metrics": metrics, "group_by": group_by,
            "epoch": epoch, "min_epoch": min_epoch, "n_boot": n_boot,
            "confidence": confidence, "seed": seed,
        }  # fmt: skip
        online = _analyze_source(all_obs, "online", kwargs)
        source = "checkpoint"
        notes.append(
            f"{sum(o.source == 'online' for o in all_obs)} online values (training-time "
            "Monitor) are analysed apart from the checkpoint values, never pooled with them"
        )
    obs = [o for o in all_obs if source is None or o.source == source]
    present = {o.metric for o in obs}
    reference = _reference(reference, present, notes)
    if representations is None:
        representations = sorted({o.representation for o in obs})
    obs = [
        o
        for o in obs
        if o.representation in representations or o.representation == reference_representation
    ]
    label_free = sorted(
        m for m in present if not is_label_based(m) and (metrics is None or m in metrics)
    )
    warns: list[ComparabilityWarning] = []
    corr: list[Correlation] = []
    if reference is not None:
        corr = correlations(
            obs,
            reference=reference,
            metrics=label_free,
            representations=representations,
            reference_representation=reference_representation,
            group_by=group_by,
            min_epoch=min_epoch,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
            on_incomparable="split",
            warnings_out=warns,
        )
    ck, rs = _selections(
        obs,
        representations,
        label_free,
        warns,
        reference=reference,
        reference_representation=reference_representation,
        group_by=group_by,
        epoch=epoch,
        min_epoch=min_epoch,
    )
    single = [r for r in rs if len(r.ranking) < 2]
    if single:
        groups = sorted({f"{r.group}/{r.representation}" for r in single})
        notes.append("one run only, so no run selection: " + ", ".join(groups))
    defs: dict[str, MetricDefinition] = {}
    for o in obs:
        defs.setdefault(o.key, o.definition)
    result = Analysis(
        reference=reference,
        correlations=tuple(corr),
        checkpoint_selections=tuple(ck),
        run_selections=tuple(r for r in rs if len(r.ranking) >= 2),
        findings=tuple(diagnose(obs, min_epoch=min_epoch)),
        warnings=tuple(merge_warnings(warns)),
        definitions=tuple(sorted(defs.values(), key=lambda d: (d.metric, d.n, d.digest()))),
        runs=tuple(sorted({(o.run, o.method, o.architecture) for o in obs}, key=lambda r: r[0])),
        representations=tuple(representations),
        metrics=tuple(sorted(present)),
        settings={
            "reference_representation": reference_representation,
            "group_by": group_by,
            "epoch": epoch,
            "source": source,
            "min_epoch": min_epoch,
            "n_boot": n_boot,
            "confidence": confidence,
            "seed": seed,
        },
        notes=tuple(notes),
        online=online,
        n_values=len(obs),
    )
    return dataclasses.replace(result, verdict=verdict(result))


def _reference(reference: str | None, present: set[str], notes: list[str]) -> str | None:
    """The reference asked for (which must be stored), else the first of
    :data:`REFERENCES` stored; None, with a note, when there is none."""
    if reference is not None:
        if reference not in present:
            raise ValueError(
                f"reference {reference!r} is not in the table; stored: {sorted(present)}"
            )
        return reference
    found = next((r for r in REFERENCES if r in present), None)
    if found is None:
        notes.append(
            "no label-based reference is stored: correlations and regrets need one "
            "(score checkpoints with labels to get linear_probe)"
        )
    return found


def _selections(
    obs: Sequence[Observation],
    representations: Sequence[str],
    label_free: Sequence[str],
    warns: list[ComparabilityWarning],
    *,
    reference: str | None,
    reference_representation: str | None,
    group_by: str | None,
    epoch: int | None,
    min_epoch: int | None,
) -> tuple[list[CheckpointSelection], list[RunSelection]]:
    """Checkpoint and run selections by every label-free metric with a direction."""
    ck: list[CheckpointSelection] = []
    rs: list[RunSelection] = []
    for rep in representations:
        for metric in label_free:
            if metric_direction(metric) == "none":
                continue
            if not any(o.metric == metric and o.representation == rep for o in obs):
                continue
            kw: dict[str, Any] = {
                "reference": reference,
                "representation": rep,
                "reference_representation": reference_representation,
                "min_epoch": min_epoch,
                "on_incomparable": "split",
                "warnings_out": warns,
            }
            ck.extend(select_checkpoints(obs, metric, **kw))
            rs.extend(select_runs(obs, metric, group_by=group_by, epoch=epoch, **kw))
    return ck, rs


def _analyze_source(obs: Sequence[Observation], source: str, kwargs: Mapping[str, Any]) -> Analysis:
    """:func:`analyze` of the values of one source (its reference only when present)."""
    mine = [o for o in obs if o.source == source]
    kw = dict(kwargs)
    if kw["reference"] is not None and kw["reference"] not in {o.metric for o in mine}:
        kw["reference"] = None
    return analyze(mine, source=source, **kw)


def analysis_to_dict(a: Analysis) -> dict[str, Any]:
    """Strict-JSON form of an :class:`Analysis` (``sslwatch analyze --format json``).

    The ``verdict`` object comes first, beside every table: correlations (without the
    paired raw values, which plots use), selections, diagnoses, comparability warnings,
    notes, the settings and, when online values were analysed apart, ``online`` in the
    same form. Non-finite numbers become ``null``.
    """
    verdict_ = a.verdict or verdict(a)
    return {
        "verdict": verdict_.to_dict(),
        "reference": a.reference,
        "n_values": a.n_values,
        "runs": [{"run": r, "method": m, "architecture": arch} for r, m, arch in a.runs],
        "correlations": [plain(_correlation_dict(c)) for c in a.correlations],
        "run_selections": [plain(dataclasses.asdict(r)) for r in a.run_selections],
        "checkpoint_selections": [plain(dataclasses.asdict(c)) for c in a.checkpoint_selections],
        "findings": [plain(dataclasses.asdict(f)) for f in a.findings],
        "warnings": [str(w) for w in a.warnings],
        "notes": list(a.notes),
        "settings": plain(dict(a.settings)),
        "online": analysis_to_dict(a.online) if a.online is not None else None,
    }


def _correlation_dict(c: Correlation) -> dict[str, Any]:
    out = dataclasses.asdict(c)
    for key in ("values", "reference_values", "point_runs", "point_epochs"):
        out.pop(key)
    out["definition"] = c.definition.to_dict()
    return out
