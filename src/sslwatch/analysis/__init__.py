"""Can this label-free metric be trusted here? Pure analysis over a tidy table of results.

Input is the tidy table of :meth:`sslwatch.offline.store.ResultStore.tidy_rows` (one mapping per
stored value, keys :data:`sslwatch.offline.store.TIDY_COLUMNS`; a pandas DataFrame with those
columns works too) or the :class:`Observation` list made from it by :func:`observations`.
Nothing here reads files, prints or logs.

What it computes:

* :func:`correlations`: Spearman, Kendall (tau-b) and Pearson correlation of every
  label-free metric with a label-based reference (default: linear-probe accuracy), within
  each run (scope ``"run"``), across all checkpoints of the runs of one method (scope
  ``"pooled"``) and across runs at their last common epoch (scope ``"final"``), each with a
  seeded percentile-bootstrap interval (:func:`correlate`).
* :func:`select_checkpoints` and :func:`select_runs`: the best checkpoint of each run and
  the best run of each group (e.g. method) by any metric with a direction, and the
  *regret* against the label oracle.
* The comparability guard (:func:`partition`): values are only compared when their
  :class:`~sslwatch.core.definitions.MetricDefinition` match (same N, D, parameters, dtype,
  revision) and, for metrics the registry marks as architecture-bound (clustering,
  ``cross_architecture=False``), only within one architecture.
* :func:`diagnose`: trend and collapse findings per run.
* :func:`analyze`: all of the above in one :class:`Analysis` (what ``sslwatch analyze``
  and ``sslwatch report`` show).

Conventions (documented once, used everywhere):

* **Points.** A point is ``(run, source, path, epoch, step)``. A metric and its reference
  are paired at the same point; the reference is read on the same representation unless
  ``reference_representation`` names another one, or the representation has no
  reference values of its own: then the one holding the most is used (e.g. projector
  metrics against backbone accuracy), and ``Correlation.reference_representation`` says
  so.
* **Sources.** Online values (a training-time ``Monitor``: augmented batches, train-mode
  BatchNorm) and checkpoint values (``sslwatch sweep``) are never pooled: when a table
  holds both and no ``source`` is asked for, :func:`analyze` analyses the checkpoint
  values and the online ones apart (``Analysis.online``).
* **Initial points.** Points with ``epoch < min_epoch`` (default 1: epoch 0, the random
  initialisation) are left out of correlations and selection: RankMe of random features
  is high and would dominate both (Garrido et al. 2023 rank *trained* checkpoints).
  Points without an epoch are kept.
* **Non-finite values** (NaN, +-inf, e.g. the Gaussian entropy ``-inf`` of a singular
  covariance) are dropped before correlating and selecting.
* **Orientation.** A metric where lower is better is negated (``MetricSpec.oriented``),
  so a positive correlation always means "better metric, better accuracy". A metric
  with no direction (``higher_is_better=None``: entropy, alpha-ReQ) is correlated raw
  and marked ``direction="none"``; selection refuses it. Metrics missing from the
  registry count as having no direction and as architecture-bound (the cautious choice).
* **Comparability.** ``on_incomparable="raise"`` (default of the building blocks) raises
  :class:`IncomparableError` naming the differing fields (``"n: 2000 vs 25600"``);
  ``"split"`` (used by :func:`analyze`) computes each comparable group separately and
  records a :class:`ComparabilityWarning`. Values are never silently merged.
* **Bootstrap.** Resampling unit: checkpoints (points), with replacement; pooled
  correlations resample within each run (stratified), keeping every run's count. The
  interval is the percentile interval of the resampled statistics (Efron & Tibshirani
  1993, ch. 13); resamples where a statistic is undefined (constant input) are dropped,
  and the interval is NaN when more than half are. Checkpoints of one run are serially
  dependent, so intervals are optimistic; read them as "how stable is this estimate
  over these checkpoints", not as a population statement.
* **Ties** in selection: equal (oriented) values are broken towards the earliest point
  (lowest epoch, then step, then path, then source) for checkpoints and towards the
  lexicographically smallest run name for runs. The oracle uses the same rule.
* **Regret** is ``oracle - selected`` in the reference's oriented units (for accuracy:
  best accuracy among the candidates minus the accuracy of the selected one, >= 0). It
  is NaN when the selected candidate has no reference value. Candidates are the points
  (runs) that have a finite metric value; the oracle is the best of those by reference.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
from scipy import stats

import sslwatch.core.catalog  # noqa: F401  (fills the registry)
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.registry import REGISTRY, MetricSpec
from sslwatch.metrics._threads import blas_threads

__all__ = [
    "REFERENCES",
    "STATISTICS",
    "Analysis",
    "CheckpointSelection",
    "ComparabilityWarning",
    "ComparableGroup",
    "Correlation",
    "CorrelationEstimate",
    "Estimate",
    "Finding",
    "IncomparableError",
    "KeepAdvice",
    "MetricTrust",
    "Observation",
    "RunSelection",
    "Verdict",
    "analysis_to_dict",
    "analyze",
    "correlate",
    "correlations",
    "diagnose",
    "latest_values",
    "observations",
    "partition",
    "resampled_correlations",
    "select_checkpoints",
    "select_runs",
    "verdict",
]

STATISTICS: Final = ("spearman", "kendall", "pearson")
REFERENCES: Final = ("linear_probe", "knn_accuracy", "label_ami")
"""Label-based references, in the order :func:`analyze` picks the first one present."""

Scope = Literal["run", "pooled", "final"]
OnIncomparable = Literal["raise", "split"]
Severity = Literal["info", "warning", "critical"]
PointKey = tuple[str, str, str | None, int | None, int | None]

_REQUIRED: Final = ("run", "representation", "metric", "value", "definition")
_SEVERITY_ORDER: Final = {"critical": 0, "warning": 1, "info": 2}


class IncomparableError(ValueError):
    """A comparison mixed values whose definitions or architectures differ."""


# --------------------------------------------------------------------------- the table


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


def _spec(metric: str) -> MetricSpec | None:
    return REGISTRY.get(metric)


def _direction(metric: str) -> str:
    spec = _spec(metric)
    return "none" if spec is None else spec.direction


def _cross_architecture(metric: str) -> bool:
    spec = _spec(metric)
    return False if spec is None else spec.cross_architecture


def _label_based(metric: str) -> bool:
    spec = _spec(metric)
    return False if spec is None else spec.label_based


def _oriented(metric: str, value: float) -> float:
    """Higher-is-better value; the raw value when the metric has no direction."""
    direction = _direction(metric)
    return -value if direction == "lower" else value


def _point_order(o: Observation) -> tuple[Any, ...]:
    return (
        o.epoch is None,
        o.epoch or 0,
        o.step is None,
        o.step or 0,
        o.path or "",
        o.source,
    )


def _at(o: Observation) -> str:
    """Where a value was measured, for messages: ``epoch 5``, ``step 300`` or the path."""
    if o.epoch is not None:
        return f"epoch {o.epoch}"
    return f"step {o.step}" if o.step is not None else str(o.path)


def _reference_rep(
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


def _keep_epoch(o: Observation, min_epoch: int | None) -> bool:
    return min_epoch is None or o.epoch is None or o.epoch >= min_epoch


# --------------------------------------------------------------------------- comparability


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
    cross = _cross_architecture(metric)
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


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Estimate:
    """A correlation coefficient with its bootstrap percentile interval and p-value."""

    value: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class CorrelationEstimate:
    """Spearman, Kendall tau-b and Pearson of ``(x, y)`` with bootstrap intervals.

    ``note`` explains NaNs (fewer than 3 points, constant input, unstable bootstrap).
    """

    n: int
    spearman: Estimate
    kendall: Estimate
    pearson: Estimate
    confidence: float
    n_boot: int
    seed: int
    note: str = ""

    def get(self, statistic: str) -> Estimate:
        """The estimate named ``statistic`` (one of :data:`STATISTICS`)."""
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        est: Estimate = getattr(self, statistic)
        return est


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise Pearson of ``a``, ``b`` (each (B, n) or (1, n)) with multiplicities ``w``.

    NaN where a resample holds a single distinct value of ``a`` or ``b`` (checked exactly,
    not through a variance that rounding leaves at 1e-17 instead of 0).
    """
    total = w.sum(axis=1, keepdims=True)
    da = a - np.sum(w * a, axis=1, keepdims=True) / total
    db = b - np.sum(w * b, axis=1, keepdims=True) / total
    num = np.sum(w * da * db, axis=1)
    den = np.sqrt(np.sum(w * da * da, axis=1) * np.sum(w * db * db, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    present = w > 0
    constant = np.zeros(w.shape[0], dtype=bool)
    for v in (np.broadcast_to(a, w.shape), np.broadcast_to(b, w.shape)):
        low = np.min(np.where(present, v, np.inf), axis=1)
        high = np.max(np.where(present, v, -np.inf), axis=1)
        constant |= low == high
    r[constant | ~(den > 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average rank (1-based, ties averaged) of each original point in each resample."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group = np.empty(x.size, dtype=np.intp)
    group[order] = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    counts = np.add.reduceat(w[:, order], starts, axis=1)  # (B, unique values)
    below = np.cumsum(counts, axis=1) - counts
    ranks = below + (counts + 1.0) / 2.0
    return ranks[:, group]


def _weighted_kendall(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Tau-b of each resample: pairs of copies of one point are tied in x and in y."""
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    s = 0.5 * np.einsum("bi,bi->b", w @ (sx * sy), w)  # concordant - discordant
    nx = 0.5 * np.einsum("bi,bi->b", w @ np.abs(sx), w)  # pairs untied in x: n0 - n1
    ny = 0.5 * np.einsum("bi,bi->b", w @ np.abs(sy), w)  # pairs untied in y: n0 - n2
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = s / np.sqrt(nx * ny)
    tau[~((nx > 0) & (ny > 0))] = np.nan
    return np.clip(tau, -1.0, 1.0)


def resampled_correlations(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    counts: np.ndarray,
) -> dict[str, np.ndarray]:
    """Spearman, Kendall tau-b and Pearson of many resamples of the pairs ``(x_i, y_i)``.

    Resample ``b`` repeats pair ``i`` ``counts[b, i]`` times (a bootstrap resample has
    non-negative integer counts summing to n). Each statistic is the one scipy computes
    on the repeated data -- ``spearmanr`` (Pearson of average ranks), ``kendalltau``
    (tau-b, ``(n_c - n_d) / sqrt((n_0 - n_1)(n_0 - n_2))``), ``pearsonr`` -- but from
    the weights, with matrix products instead of B separate calls: the Kendall sums are
    ``w^T A w / 2`` with ``A_ij = sign(x_i - x_j) sign(y_i - y_j)``. A resample with a
    constant ``x`` or ``y`` gives NaN. Memory: three n x n matrices (n <= a few
    thousand checkpoints).

    Returns:
        ``{"spearman", "kendall", "pearson"}`` -> array of length B.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    w = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    if xa.shape != ya.shape or w.shape[1] != xa.size:
        raise ValueError(
            f"x and y must have n values and counts n columns, got {xa.size}, {ya.size} "
            f"and {w.shape}"
        )
    if np.any(w < 0) or np.any(w.sum(axis=1) <= 0):
        raise ValueError("counts must be non-negative with a positive sum in every row")
    with blas_threads(1):
        return {
            "spearman": _weighted_pearson(_weighted_ranks(xa, w), _weighted_ranks(ya, w), w),
            "kendall": _weighted_kendall(xa, ya, w),
            "pearson": _weighted_pearson(xa[None, :], ya[None, :], w),
        }


def _scipy_statistic(name: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning: NaN is the documented answer
        if name == "spearman":
            res = stats.spearmanr(x, y)
        elif name == "kendall":
            res = stats.kendalltau(x, y)
        else:
            res = stats.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def correlate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
    strata: Sequence[Any] | None = None,
) -> CorrelationEstimate:
    """Spearman, Kendall tau-b and Pearson correlation with percentile-bootstrap intervals.

    Point estimates and p-values are ``scipy.stats.spearmanr``, ``kendalltau`` and
    ``pearsonr``. The interval resamples the pairs ``(x_i, y_i)`` with replacement
    ``n_boot`` times (``numpy.random.default_rng(seed)``), within each stratum when
    ``strata`` is given, and takes the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the resampled statistic (percentile interval, Efron & Tibshirani 1993).

    Degenerate input returns NaN with ``note`` set: fewer than 3 pairs, or constant ``x``
    or ``y``; an interval is NaN when more than half of the resamples are undefined.

    Raises:
        ValueError: x and y differ in length or hold non-finite values, ``confidence`` is
            not in (0, 1), ``n_boot < 0``.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("x and y must be finite; drop NaN/inf pairs before correlating")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    n = int(xa.size)
    if strata is not None and len(strata) != n:
        raise ValueError(f"strata must have one label per pair ({n}), got {len(strata)}")
    nan = Estimate(math.nan, math.nan, math.nan, math.nan)
    if n < 3:
        return CorrelationEstimate(
            n, nan, nan, nan, confidence, n_boot, seed, note=f"only {n} paired points (need 3)"
        )
    notes: list[str] = []
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        which = "metric" if np.ptp(xa) == 0 else "reference"
        return CorrelationEstimate(
            n, nan, nan, nan, confidence, n_boot, seed, note=f"constant {which}: undefined"
        )
    lows: dict[str, float] = dict.fromkeys(STATISTICS, math.nan)
    highs: dict[str, float] = dict.fromkeys(STATISTICS, math.nan)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        if strata is None:
            idx = rng.integers(0, n, size=(n_boot, n))
        else:
            labels = np.asarray([str(s) for s in strata])
            parts = []
            for label in sorted(set(labels.tolist())):
                members = np.flatnonzero(labels == label)
                parts.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
            idx = np.concatenate(parts, axis=1)
        rows = np.repeat(np.arange(n_boot), idx.shape[1])
        counts = np.bincount(rows * n + idx.ravel(), minlength=n_boot * n).reshape(n_boot, n)
        boot = resampled_correlations(xa, ya, counts)
        alpha = (1.0 - confidence) / 2.0
        for name in STATISTICS:
            vals = boot[name][np.isfinite(boot[name])]
            if vals.size * 2 < n_boot:
                notes.append(f"{name}: bootstrap unstable ({n_boot - vals.size} undefined)")
                continue
            lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
            lows[name], highs[name] = float(lo), float(hi)
    est = {}
    for name in STATISTICS:
        value, p = _scipy_statistic(name, xa, ya)
        est[name] = Estimate(value, lows[name], highs[name], p)
    return CorrelationEstimate(
        n,
        est["spearman"],
        est["kendall"],
        est["pearson"],
        confidence,
        n_boot,
        seed,
        note="; ".join(notes),
    )


# --------------------------------------------------------------------------- correlations


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


def _pairs(
    metric_obs: Sequence[Observation], ref_obs: Sequence[Observation]
) -> list[tuple[Observation, Observation]]:
    """Pair metric and reference values measured at the same point, in point order."""
    ref: dict[PointKey, Observation] = {}
    for o in sorted(ref_obs, key=_point_order):
        ref.setdefault(o.point, o)
    out = []
    seen: set[PointKey] = set()
    for o in sorted(metric_obs, key=lambda o: (o.run, *_point_order(o))):
        if o.point in ref and o.point not in seen:
            seen.add(o.point)
            out.append((o, ref[o.point]))
    return out


def _single(values: Iterable[str | None]) -> str | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _make_correlation(
    scope: Scope,
    group: str,
    pairs: Sequence[tuple[Observation, Observation]],
    *,
    metric: str,
    reference: str,
    representation: str,
    reference_representation: str,
    epoch: int | None,
    digest: str,
    reference_digest: str,
    n_boot: int,
    confidence: float,
    seed: int,
    stratify: bool,
) -> Correlation:
    x = [_oriented(metric, m.value) for m, _ in pairs]
    y = [_oriented(reference, r.value) for _, r in pairs]
    runs = [m.run for m, _ in pairs]
    est = correlate(
        x,
        y,
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
        strata=runs if stratify and len(set(runs)) > 1 else None,
    )
    return Correlation(
        scope=scope,
        group=group,
        method=_single(m.method for m, _ in pairs),
        architecture=_single(m.architecture for m, _ in pairs),
        representation=representation,
        reference_representation=reference_representation,
        metric=metric,
        reference=reference,
        direction=_direction(metric),
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


def _group_value(o: Observation, group_by: str | None) -> str:
    if group_by is None:
        return "all runs"
    value = getattr(o, group_by)
    return f"(no {group_by})" if value is None else str(value)


def _check_group_by(group_by: str | None) -> None:
    if group_by not in (None, "method", "architecture"):
        raise ValueError(f"group_by must be 'method', 'architecture' or None, got {group_by!r}")


def _check_reference(reference: str, obs: Sequence[Observation]) -> None:
    if _direction(reference) == "none":
        raise ValueError(
            f"reference {reference!r} has no direction (higher_is_better=None); pass a "
            f"label-based reference such as {', '.join(REFERENCES)}"
        )
    if not any(o.metric == reference for o in obs):
        stored = sorted({o.metric for o in obs if _label_based(o.metric)})
        hint = (
            f"stored label-based metrics: {', '.join(stored)}"
            if stored
            else ("no label-based metric is stored (score with labels to get one)")
        )
        raise ValueError(f"no values of reference {reference!r} in the table; {hint}")


def _common_epoch(per_run: Mapping[str, Iterable[int]]) -> int | None:
    sets = [set(v) for v in per_run.values()]
    if not sets:
        return None
    common = set.intersection(*sets)
    return max(common) if common else None


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
            when it has none; see the module docstring).
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
    _check_group_by(group_by)
    for s in scopes:
        if s not in ("run", "pooled", "final"):
            raise ValueError(f"scopes must be among 'run', 'pooled', 'final', got {s!r}")
    obs = [
        o
        for o in observations(rows)
        if o.finite and _keep_epoch(o, min_epoch) and (source is None or o.source == source)
    ]
    _check_reference(reference, obs)
    if metrics is None:
        metrics = sorted({o.metric for o in obs if not _label_based(o.metric)})
    metrics = [m for m in metrics if m != reference]
    reps = sorted({o.representation for o in obs}) if representations is None else representations
    by: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for o in obs:
        by[(o.metric, o.representation)].append(o)

    out: list[Correlation] = []
    mode: dict[str, Any] = {"on_incomparable": on_incomparable, "warnings_out": warnings_out}
    for rep in reps:
        ref_rep = _reference_rep(rep, reference, reference_representation, obs)
        ref_all = by.get((reference, ref_rep), [])
        for metric in metrics:
            m_all = by.get((metric, rep), [])
            if not m_all or not ref_all:
                continue
            where = f"{metric} on {rep} vs {reference} on {ref_rep}"
            kw: dict[str, Any] = {
                "metric": metric,
                "reference": reference,
                "representation": rep,
                "reference_representation": ref_rep,
                "n_boot": n_boot,
                "confidence": confidence,
                "seed": seed,
            }
            if "run" in scopes:
                for run, m_items, r_items in _buckets(m_all, ref_all, lambda o: o.run):
                    for dig, ref_dig, pairs in _comparable_pairs(
                        m_items, r_items, context=f"run {run}: {where}", **mode
                    ):
                        out.append(
                            _make_correlation(
                                "run", run, pairs, epoch=None, digest=dig,
                                reference_digest=ref_dig, stratify=False, **kw,
                            )
                        )  # fmt: skip
            if "pooled" not in scopes and "final" not in scopes:
                continue
            for gname, m_items, r_items in _buckets(
                m_all, ref_all, lambda o: _group_value(o, group_by)
            ):
                context = f"{group_by or 'all runs'} {gname}: {where}"
                for dig, ref_dig, pairs in _comparable_pairs(
                    m_items, r_items, context=context, **mode
                ):
                    if "pooled" in scopes:
                        out.append(
                            _make_correlation(
                                "pooled", gname, pairs, epoch=None, digest=dig,
                                reference_digest=ref_dig, stratify=True, **kw,
                            )
                        )  # fmt: skip
                    final = _final_pairs(pairs) if "final" in scopes else None
                    if final is not None:
                        out.append(
                            _make_correlation(
                                "final", gname, final[1], epoch=final[0], digest=dig,
                                reference_digest=ref_dig, stratify=False, **kw,
                            )
                        )  # fmt: skip
    order = {"run": 0, "pooled": 1, "final": 2}
    out.sort(key=lambda c: (order[c.scope], c.group, c.representation, c.metric, c.digest))
    return out


def _buckets(
    metric_obs: Sequence[Observation], ref_obs: Sequence[Observation], key: Any
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
) -> list[tuple[str, str, list[tuple[Observation, Observation]]]]:
    """``(digest, reference digest, pairs)`` for each comparable group of metric x reference."""
    out = []
    mode: dict[str, Any] = {"on_incomparable": on_incomparable, "warnings_out": warnings_out}
    for mg in partition(metric_obs, context=context, **mode):
        for rg in partition(ref_obs, context=context, **mode):
            pairs = _pairs(mg.items, rg.items)
            if pairs:
                out.append((mg.digest, rg.digest, pairs))
    return out


def _final_pairs(
    pairs: Sequence[tuple[Observation, Observation]],
) -> tuple[int, list[tuple[Observation, Observation]]] | None:
    """One pair per run at the runs' last common epoch (the last point of that epoch)."""
    per_run: dict[str, dict[int, tuple[Observation, Observation]]] = defaultdict(dict)
    for m, r in sorted(pairs, key=lambda p: _point_order(p[0])):
        if m.epoch is not None:
            per_run[m.run][m.epoch] = (m, r)  # the last point of an epoch wins
    if len(per_run) < 2:
        return None
    epoch = _common_epoch({run: d.keys() for run, d in per_run.items()})
    if epoch is None:
        return None
    return epoch, [per_run[run][epoch] for run in sorted(per_run)]


# --------------------------------------------------------------------------- selection


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


def _require_direction(metric: str) -> None:
    direction = _direction(metric)
    if direction == "none":
        known = "" if _spec(metric) is not None else " (it is not in the registry)"
        raise ValueError(
            f"cannot select by {metric!r}: it has no direction (higher_is_better=None)"
            f"{known}; select by a metric with a direction, such as rankme"
        )


def _best(items: Sequence[Observation], metric: str, tie: Any) -> Observation:
    """Highest oriented value; ties broken by ``tie`` (smallest first)."""
    return min(items, key=lambda o: (-_oriented(metric, o.value), tie(o)))


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

    Ties go to the earliest point (see the module docstring). Points with an epoch below
    ``min_epoch`` are not candidates. ``reference=None``, or a table without it, gives
    NaN regrets. In ``"split"`` mode, reference values under several definitions use the
    largest comparable group for the oracle (and a warning says so).

    Raises:
        ValueError: ``metric`` has no direction.
        IncomparableError: a run holds values of ``metric`` under different definitions
            (``on_incomparable="raise"``).
    """
    _require_direction(metric)
    obs = [
        o
        for o in observations(rows)
        if o.finite and _keep_epoch(o, min_epoch) and (source is None or o.source == source)
    ]
    ref_rep = _reference_rep(representation, reference, reference_representation, obs)
    m_runs: dict[str, list[Observation]] = defaultdict(list)
    r_runs: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        if o.metric == metric and o.representation == representation:
            m_runs[o.run].append(o)
        if reference is not None and o.metric == reference and o.representation == ref_rep:
            r_runs[o.run].append(o)
    out: list[CheckpointSelection] = []
    for run in sorted(m_runs):
        ctx = f"checkpoint selection in run {run} by {metric} on {representation}"
        ref_groups = (
            partition(
                r_runs[run], context=ctx, on_incomparable=on_incomparable, warnings_out=warnings_out
            )
            if r_runs.get(run)
            else []
        )
        ref_items = ref_groups[0].items if ref_groups else []
        for g in partition(
            m_runs[run], context=ctx, on_incomparable=on_incomparable, warnings_out=warnings_out
        ):
            chosen = _best(g.items, metric, _point_order)
            ref_at = {r.point: r for r in ref_items}
            cand_refs = [ref_at[o.point] for o in g.items if o.point in ref_at]
            sel_ref = ref_at.get(chosen.point)
            oracle = _best(cand_refs, reference, _point_order) if cand_refs and reference else None
            regret = math.nan
            if oracle is not None and sel_ref is not None and reference is not None:
                regret = _oriented(reference, oracle.value) - _oriented(reference, sel_ref.value)
            out.append(
                CheckpointSelection(
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
                    reference_value=sel_ref.value if sel_ref is not None else math.nan,
                    oracle_epoch=oracle.epoch if oracle else None,
                    oracle_step=oracle.step if oracle else None,
                    oracle_path=oracle.path if oracle else None,
                    oracle_value=oracle.value if oracle else math.nan,
                    regret=regret,
                    n_candidates=len(g.items),
                    digest=g.digest,
                    definition=g.definition,
                )
            )
    return out


def _at_epoch(items: Sequence[Observation]) -> dict[str, dict[int, Observation]]:
    """run -> epoch -> observation (the last point of an epoch when there are several)."""
    out: dict[str, dict[int, Observation]] = defaultdict(dict)
    for o in sorted(items, key=_point_order):
        if o.epoch is not None:
            out[o.run][o.epoch] = o
    return out


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
    _check_group_by(group_by)
    obs = [
        o
        for o in observations(rows)
        if o.finite
        and o.epoch is not None
        and _keep_epoch(o, min_epoch)
        and (source is None or o.source == source)
    ]
    ref_rep = _reference_rep(representation, reference, reference_representation, obs)
    groups: dict[str, list[Observation]] = defaultdict(list)
    refs: dict[str, Observation] = {}
    for o in obs:
        if o.metric == metric and o.representation == representation:
            groups[_group_value(o, group_by)].append(o)
    ref_obs = [
        o
        for o in obs
        if reference is not None and o.metric == reference and o.representation == ref_rep
    ]
    out: list[RunSelection] = []
    for gname in sorted(groups):
        ctx = f"run selection in {group_by or 'all runs'} {gname} by {metric} on {representation}"
        for g in partition(
            groups[gname], context=ctx, on_incomparable=on_incomparable, warnings_out=warnings_out
        ):
            per_run = _at_epoch(g.items)
            at = (
                epoch
                if epoch is not None
                else _common_epoch({run: d.keys() for run, d in per_run.items()})
            )
            if at is None:
                spans = ", ".join(
                    f"{run}: epochs {min(d)}-{max(d)}" for run, d in sorted(per_run.items())
                )
                msg = (
                    f"the runs share no epoch with a {metric} value ({spans}); runs must be "
                    "compared at the same epoch count: pass epoch="
                )
                if on_incomparable == "raise":
                    raise IncomparableError(f"{ctx}: {msg}")
                if warnings_out is not None:
                    warnings_out.append(ComparabilityWarning(ctx, metric, msg + "; skipped"))
                continue
            cands = {run: d[at] for run, d in per_run.items() if at in d}
            excluded = tuple(sorted(run for run in per_run if run not in cands))
            if not cands:
                continue
            refs = {}
            ref_cands = [o for o in ref_obs if o.run in cands and o.epoch == at]
            if ref_cands:
                rgroups = partition(
                    ref_cands,
                    context=ctx,
                    on_incomparable=on_incomparable,
                    warnings_out=warnings_out,
                )
                refs = {run: d[at] for run, d in _at_epoch(rgroups[0].items).items()}
            ranked = sorted(cands.values(), key=lambda o: (-_oriented(metric, o.value), o.run))
            chosen = ranked[0]
            ranking = tuple(
                (o.run, o.value, refs[o.run].value if o.run in refs else math.nan) for o in ranked
            )
            oracle = (
                min(refs.values(), key=lambda r: (-_oriented(str(reference), r.value), r.run))
                if refs
                else None
            )
            sel_ref = refs.get(chosen.run)
            regret = math.nan
            if oracle is not None and sel_ref is not None and reference is not None:
                regret = _oriented(reference, oracle.value) - _oriented(reference, sel_ref.value)
            out.append(
                RunSelection(
                    group=gname,
                    architecture=g.architecture,
                    representation=representation,
                    metric=metric,
                    epoch=at,
                    selected_run=chosen.run,
                    value=chosen.value,
                    reference=reference if refs else None,
                    reference_value=sel_ref.value if sel_ref is not None else math.nan,
                    oracle_run=oracle.run if oracle else None,
                    oracle_value=oracle.value if oracle else math.nan,
                    regret=regret,
                    ranking=ranking,
                    excluded=excluded,
                    digest=g.digest,
                    definition=g.definition,
                )
            )
    return out


# --------------------------------------------------------------------------- diagnosis


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
    obs = observations(rows)
    by: dict[tuple[str, str, str, str], list[Observation]] = defaultdict(list)
    for o in obs:
        by[(o.run, o.representation, o.metric, o.key)].append(o)
    out: list[Finding] = []
    for (run, rep, metric, _key), items in sorted(by.items()):
        items = sorted(items, key=_point_order)
        bad = [o for o in items if not o.finite]
        if bad:
            out.append(
                Finding(
                    run,
                    rep,
                    metric,
                    "info",
                    "non_finite",
                    f"{metric} is {bad[-1].value} at {len(bad)} point(s) (e.g. {_at(bad[-1])})",
                    bad[-1].epoch,
                )
            )
        vals = [o for o in items if o.finite and _keep_epoch(o, min_epoch)]
        if not vals:
            continue
        last = vals[-1]
        d = last.definition.d
        if metric == "rankme":
            if last.definition.n and d and last.definition.n < d:
                out.append(
                    Finding(
                        run,
                        rep,
                        metric,
                        "warning",
                        "n_below_d",
                        f"RankMe computed on N={last.definition.n} < D={d} embeddings: it cannot "
                        f"exceed N; score at least D embeddings",
                        last.epoch,
                    )
                )
            if last.value <= 1.5:
                out.append(
                    Finding(
                        run,
                        rep,
                        metric,
                        "critical",
                        "rank_collapse",
                        f"RankMe is {last.value:.3g} at {_at(last)}: the embeddings span "
                        "about one direction (complete collapse)",
                        last.epoch,
                    )
                )
        if metric == "collapse_std" and d > 0:
            healthy = 1.0 / math.sqrt(d)
            ratio = last.value / healthy
            if ratio < partial_collapse_ratio:
                severity: Severity = "critical" if ratio < collapse_ratio else "warning"
                code = "collapse" if ratio < collapse_ratio else "partial_collapse"
                out.append(
                    Finding(
                        run,
                        rep,
                        metric,
                        severity,
                        code,
                        f"collapse_std is {last.value:.3g} at {_at(last)}, {ratio:.0%} of "
                        f"1/sqrt(D) = {healthy:.3g} (healthy embeddings are near 100%)",
                        last.epoch,
                    )
                )
        if metric in trend_metrics and _direction(metric) != "none" and len(vals) >= window:
            tail = [_oriented(metric, o.value) for o in vals[-window:]]
            falling = all(b < a for a, b in itertools.pairwise(tail))
            scale = max(abs(tail[0]), 1e-12)
            drop = (tail[0] - tail[-1]) / scale
            if falling and drop >= min_drop:
                best = max(_oriented(metric, o.value) for o in vals)
                raw_best = max(vals, key=lambda o: _oriented(metric, o.value))
                severe = best > 0 and tail[-1] < 0.5 * best
                out.append(
                    Finding(
                        run,
                        rep,
                        metric,
                        "critical" if severe else "warning",
                        "falling",
                        f"{metric} worsened at each of the last {window} points "
                        f"({_at(vals[-window])} to {_at(last)}): {vals[-window].value:.4g} "
                        f"-> {last.value:.4g} ({drop:.0%}); best {raw_best.value:.4g} at "
                        f"{_at(raw_best)}",
                        last.epoch,
                    )
                )
    out.sort(key=lambda f: (_SEVERITY_ORDER[f.severity], f.run, f.representation, f.metric))
    return out


# --------------------------------------------------------------------------- latest


def latest_values(rows: Table) -> list[Observation]:
    """The value at the latest point of each (run, representation, metric, definition)."""
    by: dict[tuple[str, str, str, str], Observation] = {}
    for o in sorted(observations(rows), key=_point_order):
        by[(o.run, o.representation, o.metric, o.key)] = o
    return sorted(by.values(), key=lambda o: (o.run, o.representation, o.metric, o.digest))


# --------------------------------------------------------------------------- all of it


def _merge_warnings(warns: Sequence[ComparabilityWarning]) -> list[ComparabilityWarning]:
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
    _check_group_by(group_by)
    all_obs = observations(rows)
    sources = {o.source for o in all_obs}
    online: Analysis | None = None
    notes: list[str] = []
    if source is None and len(sources) > 1:
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
    if reference is None:
        reference = next((r for r in REFERENCES if r in present), None)
        if reference is None:
            notes.append(
                "no label-based reference is stored: correlations and regrets need one "
                "(score checkpoints with labels to get linear_probe)"
            )
    elif reference not in present:
        raise ValueError(f"reference {reference!r} is not in the table; stored: {sorted(present)}")
    if representations is None:
        representations = sorted({o.representation for o in obs})
    obs = [
        o
        for o in obs
        if o.representation in representations or o.representation == reference_representation
    ]
    label_free = sorted(
        m for m in present if not _label_based(m) and (metrics is None or m in metrics)
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
    ck: list[CheckpointSelection] = []
    rs: list[RunSelection] = []
    for rep in representations:
        for metric in label_free:
            if _direction(metric) == "none":
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
    findings = diagnose(obs, min_epoch=min_epoch)
    unique_warns = _merge_warnings(warns)
    defs: dict[str, MetricDefinition] = {}
    for o in obs:
        defs.setdefault(o.key, o.definition)
    runs = sorted({(o.run, o.method, o.architecture) for o in obs}, key=lambda r: r[0])
    result = Analysis(
        reference=reference,
        correlations=tuple(corr),
        checkpoint_selections=tuple(ck),
        run_selections=tuple(rs),
        findings=tuple(findings),
        warnings=tuple(unique_warns),
        definitions=tuple(sorted(defs.values(), key=lambda d: (d.metric, d.n, d.digest()))),
        runs=tuple(runs),
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
    )
    single = [r for r in result.run_selections if len(r.ranking) < 2]
    if single:
        groups = sorted({f"{r.group}/{r.representation}" for r in single})
        notes.append("one run only, so no run selection: " + ", ".join(groups))
    result = dataclasses.replace(
        result,
        run_selections=tuple(r for r in result.run_selections if len(r.ranking) >= 2),
        notes=tuple(notes),
        online=online,
        n_values=len(obs),
    )
    return dataclasses.replace(result, verdict=verdict(result))


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
        "correlations": [_plain(_correlation_dict(c)) for c in a.correlations],
        "run_selections": [_plain(dataclasses.asdict(r)) for r in a.run_selections],
        "checkpoint_selections": [_plain(dataclasses.asdict(c)) for c in a.checkpoint_selections],
        "findings": [_plain(dataclasses.asdict(f)) for f in a.findings],
        "warnings": [str(w) for w in a.warnings],
        "notes": list(a.notes),
        "settings": _plain(dict(a.settings)),
        "online": analysis_to_dict(a.online) if a.online is not None else None,
    }


def _correlation_dict(c: Correlation) -> dict[str, Any]:
    out = dataclasses.asdict(c)
    for key in ("values", "reference_values", "point_runs", "point_epochs"):
        out.pop(key)
    out["definition"] = c.definition.to_dict()
    return out


def _plain(value: Any) -> Any:
    """JSON-able copy: NaN/inf -> None, tuples -> lists, definitions -> dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, MetricDefinition):
        return value.to_dict()
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def _analyze_source(obs: Sequence[Observation], source: str, kwargs: Mapping[str, Any]) -> Analysis:
    """:func:`analyze` of the values of one source (its reference only when present)."""
    mine = [o for o in obs if o.source == source]
    kw = dict(kwargs)
    if kw["reference"] is not None and kw["reference"] not in {o.metric for o in mine}:
        kw["reference"] = None
    return analyze(mine, source=source, **kw)


# --------------------------------------------------------------------------- verdict

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
        return dict(_plain(dataclasses.asdict(self)))


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
        return dict(_plain(dataclasses.asdict(self)))


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


def _keep_of(
    a: Analysis, group: str, rep: str, trusted: Sequence[MetricTrust]
) -> KeepAdvice | None:
    """Advice for one group and representation from the analysis' selections."""
    best = max(trusted, key=lambda t: (t.low, t.spearman), default=None)
    metric = best.metric if best is not None else None
    sels = [
        r
        for r in a.run_selections
        if r.group == group and r.representation == rep and (metric is None or r.metric == metric)
    ]
    group_by = a.settings.get("group_by")
    if sels:
        run_sel = sels[0]
        chosen = run_sel.selected_run if metric is not None else run_sel.oracle_run
        epoch, n_runs, oracle_run = run_sel.epoch, len(run_sel.ranking), run_sel.oracle_run
        run_regret = run_sel.regret if metric is not None else 0.0
    else:  # a group of one run: nothing to choose between runs
        only = sorted(
            {
                c.run
                for c in a.checkpoint_selections
                if c.representation == rep and _selection_group(c, group_by) == group
            }
        )
        if len(only) != 1:
            return None
        chosen, epoch, n_runs, oracle_run, run_regret = only[0], None, 1, only[0], 0.0
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


def _selection_group(c: CheckpointSelection, group_by: str | None) -> str:
    """The group value of a checkpoint selection, as :func:`_group_value` gives it."""
    if group_by is None:
        return "all runs"
    value = getattr(c, group_by, None)
    return f"(no {group_by})" if value is None else str(value)


def _fmt_regret(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.1e}"


def verdict(a: Analysis) -> Verdict:
    """The plain-language answer of an :class:`Analysis` (see :class:`Verdict`).

    Trust comes from the pooled correlations (:class:`MetricTrust`), advice from the
    selections by the most trusted metric (:class:`KeepAdvice`); caveats name what
    limits both. Without a label-based reference, trust cannot be judged: the verdict
    then reports what needs no labels (the critical and warning diagnoses).
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
    groups = sorted({(t.group, t.representation) for t in trust})
    for group, rep in groups:
        mine = [t for t in trust if t.group == group and t.representation == rep]
        trusted = [t for t in mine if t.status == "trusted" and t.selectable]
        against = [t for t in mine if t.status == "against" and t.selectable]
        unsure = [t for t in mine if t.status == "inconclusive"]
        ref_rep = mine[0].reference_representation if mine else rep
        head = f"{group}/{rep}" + (
            f" (judged against {ref_rep} {a.reference})" if ref_rep != rep else ""
        )
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
        free = [t for t in mine if not t.selectable and t.status != "inconclusive"]
        if free:
            lines.append(
                f"{head}: without a direction (reported, never used to select): "
                + ", ".join(f"{t.metric} ({t.reason})" for t in free)
                + "."
            )
        advice = _keep_of(a, group, rep, trusted)
        if not trusted and advice is None:
            lines.append(f"{head}: no label-free metric earned trust here.")
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
        {t.metric for t in trust if t.status == "trusted" and not _cross_architecture(t.metric)}
    )
    if bound:
        caveats.append(", ".join(bound) + " compare runs of one architecture only (Xu et al. 2024)")
    if a.warnings:
        caveats.append(
            f"{len(a.warnings)} comparability warning(s): values with other definitions "
            "were analysed apart"
        )
    return Verdict(a.reference, trust, tuple(keep), tuple(caveats), tuple(lines))


def _best_anywhere(a: Analysis, group: str, rep: str, advice: KeepAdvice) -> str | None:
    """A caveat when the labels' best checkpoint of the group lies outside the epoch at
    which runs were compared (so comparing at that epoch cannot find it)."""
    cks = [
        c
        for c in a.checkpoint_selections
        if c.representation == rep
        and _selection_group(c, a.settings.get("group_by")) == group
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
