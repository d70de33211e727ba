"""Spearman, Kendall tau-b and Pearson correlation with percentile-bootstrap intervals.

Pure statistics on two arrays: :func:`correlate` gives the point estimates and p-values
(scipy) and the bootstrap interval; :func:`resampled_correlations` computes the three
statistics of many resamples at once from their multiplicities.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from scipy import stats

from sslwatch.metrics._threads import blas_threads

STATISTICS: Final = ("spearman", "kendall", "pearson")


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
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        which = "metric" if np.ptp(xa) == 0 else "reference"
        return CorrelationEstimate(
            n, nan, nan, nan, confidence, n_boot, seed, note=f"constant {which}: undefined"
        )
    intervals: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    if n_boot > 0:
        counts = resample_counts(n, n_boot, np.random.default_rng(seed), strata)
        intervals, notes = _percentile_intervals(
            resampled_correlations(xa, ya, counts), n_boot, confidence
        )
    est = {}
    for name in STATISTICS:
        value, p = _scipy_statistic(name, xa, ya)
        low, high = intervals.get(name, (math.nan, math.nan))
        est[name] = Estimate(value, low, high, p)
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


def resample_counts(
    n: int, n_boot: int, rng: np.random.Generator, strata: Sequence[Any] | None
) -> np.ndarray:
    """``(n_boot, n)`` multiplicities of the pairs in each bootstrap resample; with
    ``strata``, each stratum is resampled within itself and keeps its size."""
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
    return np.bincount(rows * n + idx.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def _percentile_intervals(
    boot: dict[str, np.ndarray], n_boot: int, confidence: float
) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """The ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of each
    statistic's resamples, and a note for each statistic undefined in over half of them
    (which then gets no interval)."""
    alpha = (1.0 - confidence) / 2.0
    intervals: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    for name in STATISTICS:
        vals = boot[name][np.isfinite(boot[name])]
        if vals.size * 2 < n_boot:
            notes.append(f"{name}: bootstrap unstable ({n_boot - vals.size} undefined)")
            continue
        lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
        intervals[name] = (float(lo), float(hi))
    return intervals, notes
