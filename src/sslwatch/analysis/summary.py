"""Summaries of an :class:`~sslwatch.analysis.Analysis` that every front end shows alike
(the HTML report and ``sslwatch analyze``): they format these, never recompute them."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sslwatch.analysis.correlation import Correlation
from sslwatch.analysis.observations import group_name

if TYPE_CHECKING:
    from sslwatch.analysis.pipeline import Analysis

_CorrelationKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class TrustRow:
    """One row of the trust table: a pooled correlation beside the final-epoch correlation
    of the same group, metric and definition, and the finite within-run Spearman
    correlations of the group's runs."""

    pooled: Correlation
    final: Correlation | None
    run_spearman: tuple[float, ...]


def _key(group: str, c: Correlation) -> _CorrelationKey:
    return (group, c.representation, c.metric, c.digest)


def trust_rows(a: Analysis) -> list[TrustRow]:
    """A :class:`TrustRow` for every pooled correlation, in the analysis' order."""
    group_by = a.settings.get("group_by")
    run_group = {name: group_name(group_by, method, arch) for name, method, arch in a.runs}
    per_run: dict[_CorrelationKey, list[float]] = defaultdict(list)
    for c in a.correlations:
        if c.scope == "run" and math.isfinite(c.stats.spearman.value):
            per_run[_key(run_group.get(c.group, ""), c)].append(c.stats.spearman.value)
    finals = {_key(c.group, c): c for c in a.correlations if c.scope == "final"}
    return [
        TrustRow(c, finals.get(_key(c.group, c)), tuple(per_run.get(_key(c.group, c), ())))
        for c in a.correlations
        if c.scope == "pooled"
    ]


def several_definitions(a: Analysis) -> set[str]:
    """Metrics the analysis holds under more than one definition (e.g. two values of N):
    their labels need N (and D) to tell the values apart."""
    counts = Counter(d.metric for d in a.definitions)
    return {m for m, count in counts.items() if count > 1}
