"""The answer first: which metrics to trust here, what to keep, and what to doubt.

Trust comes from the pooled correlations (:class:`MetricTrust`), advice from the
selections by the most trusted metric (:class:`KeepAdvice`); caveats name what limits
both. :func:`verdict` writes them as plain-language lines, the way ``sslwatch analyze``
and the report print them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from sslwatch.analysis._json import plain
from sslwatch.analysis.correlation import Correlation
from sslwatch.analysis.observations import group_of, is_cross_architecture

if TYPE_CHECKING:
    from sslwatch.analysis.pipeline import Analysis

TRUST_MIN_POINTS: Final = 5
"""Fewest paired checkpoints for a pooled correlation to earn (or lose) trust."""

TrustStatus = Literal["trusted", "against", "inconclusive"]


@dataclass(frozen=True)
class MetricTrust:
    """Whether one label-free metric tracks the reference for one group and representation.

    ``status`` follows the pooled Spearman correlation (all checkpoints of the group's
    runs, epoch 0 left out) and its bootstrap interval: ``"trusted"`` when the whole
    interval lies above 0, ``"against"`` when it lies below 0, ``"inconclusive"``
    otherwise or with fewer than :data:`TRUST_MIN_POINTS` points. A metric without a
    direction (entropy, alpha-ReQ) gets a status too, but ``selectable`` is False: its
    sign says how it moves here, not which way is better elsewhere.
    """

    group: str
    representation: str
    reference_representation: str
    metric: str
    direction: str
    status: TrustStatus
    spearman: float
    low: float
    high: float
    n: int
    n_runs: int
    selectable: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (NaN as None)."""
        return dict(plain(dataclasses.asdict(self)))


@dataclass(frozen=True)
class KeepAdvice:
    """Which run and checkpoint to keep for one group and representation.

    ``metric`` is the trusted selectable metric with the highest interval floor, or None
    when no metric earned trust (then the advice is the oracle's, when labels exist).
    Run choice compares runs at ``epoch`` (their last common epoch); the checkpoint is the
    best of the chosen run by the same metric. Regrets are in reference units (e.g.
    accuracy points lost against the best candidate by the labels).
    """

    group: str
    representation: str
    metric: str | None
    run: str | None
    epoch: int | None
    checkpoint_epoch: int | None
    checkpoint_path: str | None
    n_runs: int
    oracle_run: str | None
    oracle_epoch: int | None
    oracle_path: str | None
    run_regret: float
    checkpoint_regret: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (NaN as None)."""
        return dict(plain(dataclasses.asdict(self)))


@dataclass(frozen=True)
class Verdict:
    """The answer first: which metrics to trust here, what to keep, and what to doubt.

    ``lines`` is the plain-language verdict, most important first, as ``sslwatch
    analyze`` and the report print it.
    """

    reference: str | None
    trust: tuple[MetricTrust, ...]
    keep: tuple[KeepAdvice, ...]
    caveats: tuple[str, ...]
    lines: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the ``verdict`` object of ``sslwatch analyze --json``)."""
        return {
            "reference": self.reference,
            "lines": list(self.lines),
            "trust": [t.to_dict() for t in self.trust],
            "keep": [k.to_dict() for k in self.keep],
            "caveats": list(self.caveats),
        }


def verdict(a: Analysis) -> Verdict:
    """The plain-language answer of an :class:`~sslwatch.analysis.Analysis`.

    Without a label-based reference, trust cannot be judged: the verdict then reports
    what needs no labels (the critical and warning diagnoses).
    """
    trust = tuple(
        sorted(
            (_trust_of(c) for c in a.correlations if c.scope == "pooled"),
            key=lambda t: (t.group, t.representation, t.status != "trusted", -t.low, t.metric),
        )
    )
    caveats: list[str] = []
    lines: list[str] = []
    keep: list[KeepAdvice] = []
    if a.reference is None:
        lines.append(
            "No label-based reference is stored, so whether a label-free metric tracks "
            "accuracy here cannot be judged; score a few checkpoints with labels "
            "(sslwatch sweep with a labelled data set) to get linear_probe."
        )
    for group, rep in sorted({(t.group, t.representation) for t in trust}):
        mine = [t for t in trust if t.group == group and t.representation == rep]
        lines += _trust_lines(a, group, rep, mine)
        trusted = [t for t in mine if t.status == "trusted" and t.selectable]
        advice = _keep_of(a, group, rep, trusted)
        if not trusted and advice is None:
            lines.append(
                f"{_heading(a, group, rep, mine)}: no label-free metric earned trust here."
            )
        if advice is not None:
            keep.append(advice)
            lines.append(advice.text)
            if advice.n_runs == 1:
                caveats.append(f"{group}/{rep}: one run only, so no run was chosen between runs")
            ck_best = _best_anywhere(a, group, rep, advice)
            if ck_best is not None:
                caveats.append(ck_best)
    for f in a.findings:
        if f.severity in ("critical", "warning"):
            where = f"{f.run}/{f.representation}" + (
                f" at epoch {f.epoch}" if f.epoch is not None else ""
            )
            lines.append(f"{f.severity}: {where}: {f.message}")
    caveats += _general_caveats(a, trust)
    return Verdict(a.reference, trust, tuple(keep), tuple(caveats), tuple(lines))


def _trust_of(c: Correlation) -> MetricTrust:
    est = c.stats.spearman
    interval = f"rho {est.value:+.2f} [{est.low:+.2f}, {est.high:+.2f}]"
    where = f"{c.n} checkpoints of {len(c.runs)} run(s)"
    status: TrustStatus = "inconclusive"
    if c.n < TRUST_MIN_POINTS:
        reason = f"only {c.n} checkpoints (at least {TRUST_MIN_POINTS} are needed to judge)"
    elif not (math.isfinite(est.low) and math.isfinite(est.high)):
        reason = f"no stable correlation over {where} ({c.stats.note or 'undefined'})"
    else:
        moves = "with" if est.low > 0 else ("against" if est.high < 0 else None)
        if est.low > 0:
            status = "trusted"
        elif est.high < 0:
            status = "against"
        reason = f"{interval} over {where}"
        if moves is None:
            reason += ": the interval contains 0"
        elif c.direction == "none":
            reason += f": moves {moves} {c.reference} here"
    return MetricTrust(
        group=c.group,
        representation=c.representation,
        reference_representation=c.reference_representation,
        metric=c.metric,
        direction=c.direction,
        status=status,
        spearman=est.value,
        low=est.low,
        high=est.high,
        n=c.n,
        n_runs=len(c.runs),
        selectable=c.direction != "none",
        reason=reason,
    )


def _heading(a: Analysis, group: str, rep: str, mine: Sequence[MetricTrust]) -> str:
    """``group/rep``, naming the reference's representation when it is another one."""
    ref_rep = mine[0].reference_representation if mine else rep
    return f"{group}/{rep}" + (
        f" (judged against {ref_rep} {a.reference})" if ref_rep != rep else ""
    )


def _trust_lines(a: Analysis, group: str, rep: str, mine: Sequence[MetricTrust]) -> list[str]:
    """What to trust, what moves against the reference, what is undecided."""
    head = _heading(a, group, rep, mine)
    trusted = [t for t in mine if t.status == "trusted" and t.selectable]
    against = [t for t in mine if t.status == "against" and t.selectable]
    unsure = [t for t in mine if t.status == "inconclusive"]
    free = [t for t in mine if not t.selectable and t.status != "inconclusive"]
    lines = []
    if trusted:
        lines.append(
            f"{head}: trust " + ", ".join(f"{t.metric} ({t.reason})" for t in trusted) + "."
        )
    if against:
        lines.append(
            f"{head}: moves against {a.reference}: "
            + ", ".join(f"{t.metric} ({t.reason})" for t in against)
            + " - do not select by it."
        )
    if unsure:
        lines.append(f"{head}: inconclusive: " + ", ".join(t.metric for t in unsure) + ".")
    if free:
        lines.append(
            f"{head}: without a direction (reported, never used to select): "
            + ", ".join(f"{t.metric} ({t.reason})" for t in free)
            + "."
        )
    return lines


def _general_caveats(a: Analysis, trust: Sequence[MetricTrust]) -> list[str]:
    """Caveats that hold for the whole analysis."""
    caveats = []
    short = sorted({t.metric for t in trust if t.n < TRUST_MIN_POINTS})
    if short:
        caveats.append(
            f"fewer than {TRUST_MIN_POINTS} checkpoints behind "
            + ", ".join(short)
            + ": their correlations are not judged"
        )
    min_epoch = a.settings.get("min_epoch")
    if min_epoch:
        caveats.append(
            f"checkpoints before epoch {min_epoch} (random initialisation) are left out "
            "of trust and selection: random features score high on several metrics"
        )
    bound = sorted(
        {t.metric for t in trust if t.status == "trusted" and not is_cross_architecture(t.metric)}
    )
    if bound:
        caveats.append(", ".join(bound) + " compare runs of one architecture only (Xu et al. 2024)")
    if a.warnings:
        caveats.append(
            f"{len(a.warnings)} comparability warning(s): values with other definitions "
            "were analysed apart"
        )
    return caveats


def _keep_of(
    a: Analysis, group: str, rep: str, trusted: Sequence[MetricTrust]
) -> KeepAdvice | None:
    """Advice for one group and representation from the analysis' selections."""
    best = max(trusted, key=lambda t: (t.low, t.spearman), default=None)
    metric = best.metric if best is not None else None
    chosen_run = _chosen_run(a, group, rep, metric)
    if chosen_run is None:
        return None
    chosen, epoch, n_runs, oracle_run, run_regret = chosen_run
    cks = [
        c
        for c in a.checkpoint_selections
        if c.representation == rep and c.run == chosen and (metric is None or c.metric == metric)
    ]
    ck = cks[0] if cks else None
    if metric is None:
        if ck is None or a.reference is None:
            return None
        text = (
            f"{group}/{rep}: no label-free metric earned trust; by {a.reference}, keep run "
            f"{chosen}, checkpoint epoch {ck.oracle_epoch}."
        )
        return KeepAdvice(
            group, rep, None, chosen, epoch, ck.oracle_epoch, ck.oracle_path, n_runs,
            oracle_run, ck.oracle_epoch, ck.oracle_path, 0.0, 0.0, text,
        )  # fmt: skip
    ck_regret = ck.regret if ck is not None else math.nan
    text = f"{group}/{rep}: keep run {chosen}"
    if ck is not None:
        text += f", checkpoint epoch {ck.epoch}"
    text += f" (by {metric}"
    if n_runs > 1:
        text += f", comparing {n_runs} runs at epoch {epoch}"
    text += ")"
    if a.reference is not None:
        parts = []
        if n_runs > 1 and math.isfinite(run_regret):
            parts.append(f"{_fmt_regret(run_regret)} for the run")
        if math.isfinite(ck_regret):
            parts.append(f"{_fmt_regret(ck_regret)} for the checkpoint")
        if parts:
            text += f"; {a.reference} regret " + ", ".join(parts)
    return KeepAdvice(
        group=group,
        representation=rep,
        metric=metric,
        run=chosen,
        epoch=epoch,
        checkpoint_epoch=ck.epoch if ck is not None else None,
        checkpoint_path=ck.path if ck is not None else None,
        n_runs=n_runs,
        oracle_run=oracle_run,
        oracle_epoch=ck.oracle_epoch if ck is not None else None,
        oracle_path=ck.oracle_path if ck is not None else None,
        run_regret=run_regret,
        checkpoint_regret=ck_regret,
        text=text + ".",
    )


def _chosen_run(
    a: Analysis, group: str, rep: str, metric: str | None
) -> tuple[str | None, int | None, int, str | None, float] | None:
    """``(run, epoch, runs compared, oracle run, run regret)``: the run ``metric`` selects
    (the oracle's without a metric); the group's only run when it has one; else None."""
    sels = [
        r
        for r in a.run_selections
        if r.group == group and r.representation == rep and (metric is None or r.metric == metric)
    ]
    if sels:
        run_sel = sels[0]
        chosen = run_sel.selected_run if metric is not None else run_sel.oracle_run
        run_regret = run_sel.regret if metric is not None else 0.0
        return chosen, run_sel.epoch, len(run_sel.ranking), run_sel.oracle_run, run_regret
    group_by = a.settings.get("group_by")
    only = sorted(
        {
            c.run
            for c in a.checkpoint_selections
            if c.representation == rep and group_of(c, group_by) == group
        }
    )
    if len(only) != 1:
        return None
    return only[0], None, 1, only[0], 0.0  # a group of one run: nothing to choose between


def _fmt_regret(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.1e}"


def _best_anywhere(a: Analysis, group: str, rep: str, advice: KeepAdvice) -> str | None:
    """A caveat when the labels' best checkpoint of the group lies outside the epoch at
    which runs were compared (so comparing at that epoch cannot find it)."""
    cks = [
        c
        for c in a.checkpoint_selections
        if c.representation == rep
        and group_of(c, a.settings.get("group_by")) == group
        and (advice.metric is None or c.metric == advice.metric)
        and math.isfinite(c.oracle_value)
    ]
    if not cks or advice.epoch is None:
        return None
    best = max(cks, key=lambda c: c.oracle_value)
    if best.oracle_epoch is None or best.oracle_epoch == advice.epoch:
        return None
    return (
        f"{group}/{rep}: the best checkpoint by {a.reference} (run {best.run}, epoch "
        f"{best.oracle_epoch}) lies outside epoch {advice.epoch}, where runs were compared"
    )
