"""The two papers' claims, judged on the reproduction study's results store.

Each claim is a one-sided statement about one number, ``statistic > bound`` or
``statistic < bound``, judged by one rule on its 90% bootstrap interval (the level of
:func:`sslwatch.analysis.correlations` and the analysis verdict):

* **holds**: the whole interval lies on the claimed side of the bound;
* **does not hold**: the whole interval lies on the other side;
* **inconclusive**: the interval contains the bound, or it is undefined (NaN), or the
  statistic rests on fewer than :data:`MIN_N` points.

Bounds: 0 for "tracks", "rises", "falls" and "beats" (the sign of a Spearman
correlation or of a difference); "does not track" is ``Spearman < 0.3`` and "does not
fall" is ``Spearman > -0.3`` -- at most a weak association, so a clearly negative
correlation also satisfies "does not track"; "within 0.5 points of the oracle on
average" is ``mean regret < 0.005`` (linear-probe accuracy is a fraction).

Bounds of the two comparative claims: "comparable only within one architecture" is a
pooling loss ``> 0``; "comparable across architectures" a pooling loss ``< 0.3`` (at most
a weak association lost), both defined below.

What is measured (representation: backbone; LP: backbone linear-probe accuracy, as in
the study's correlation table; epoch 0, the random initialisation, is left out):

* Xu, Lowe, Trappenberg 2024 (arXiv 2409.06612), on each method's progress run
  ``progress/<method>`` over epochs 1..E: Spearman of a metric with LP, or with the
  epoch, over checkpoints, with :func:`sslwatch.analysis.correlate`'s percentile
  bootstrap over checkpoints; and ``|rho_late| - |rho_early|`` of entropy with LP, the
  later half (epochs > E/2, the correlation table's window) against the first half,
  each half resampled on its own. Embedding entropy is the study's ``entropy`` metric.
* Xu et al.'s cross-architecture claim, on a method trained on two (or more)
  backbones (its progress run and an ``arch/<backbone>/<method>`` run; the store's
  ``architecture`` column tells them apart), over epochs 1..E: the *pooling loss*
  ``mean_a |rho_a| - |rho_pooled|``, where ``rho_a`` is Spearman(metric, LP) over the
  checkpoints of architecture ``a`` and ``rho_pooled`` the same over the checkpoints of
  all architectures together. A metric whose values mean the same on every backbone
  keeps its association when pooled (loss near 0, or negative); one whose scale moves
  with the backbone loses it. Interval: percentile bootstrap of checkpoints resampled
  within each architecture. Clustering metrics (silhouette, cluster agreement): loss
  ``> 0``; entropy: loss ``< 0.3``. The registry's ``cross_architecture`` flag declares
  the same split; this claim tests it.
* Garrido et al. 2023 (RankMe), on the runs at the last epoch E (selection runs
  ``select/<method>/...`` and the progress run): RankMe's pick per method by
  :func:`sslwatch.analysis.select_runs`, its regret against the LP oracle and the
  expected regret of a uniformly random pick; and per method the Spearman of RankMe with
  LP across that method's runs. Each is averaged over methods with a percentile
  bootstrap over methods (:func:`scipy.stats.bootstrap`): with three runs per method a
  per-method correlation takes only four values and has no useful interval of its own.
  A method with a single candidate run (no selection sweep) is left out.
  The transfer claim is the last one computed on LP measured on a second, related data
  set (stored under the representation :func:`transfer_representation`, e.g.
  ``backbone@digits``), RankMe still read on the training data. A study without such a
  data set (MNIST-1D has no related one offline) gets the row with ``n = 0``, saying so.

A claim whose data are absent (the method was not trained, the preset has no selection
sweep) is kept as an ``inconclusive`` row with ``n = 0`` and NaN value; no value is
invented. Every interval is seeded, so the table is reproducible.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from scipy import stats

from sslwatch._files import atomic_path
from sslwatch.analysis import (
    RunSelection,
    correlate,
    resample_counts,
    resampled_correlations,
    select_runs,
)

__all__ = [
    "CONFIDENCE",
    "MIN_N",
    "VARIANTS_NOTE",
    "VERDICTS",
    "VERDICT_RULE",
    "Claim",
    "claim_rows",
    "claims_from_rows",
    "claims_markdown",
    "claims_text",
    "judge",
    "metric_series",
    "spearman_interval",
    "transfer_representation",
    "write_claims",
]

CONFIDENCE: Final = 0.9
"""Level of every interval (the analysis verdict's level)."""
MIN_N: Final = 5
"""Fewest points (checkpoints, or methods) a verdict other than inconclusive rests on."""
N_BOOT: Final = 2000
SEED: Final = 0
VERDICTS: Final = ("holds", "does not hold", "inconclusive")
VARIANTS_NOTE: Final = (
    "Judged on sslwatch's default variants, fixed before any claim was measured: the "
    "Euclidean silhouette (scikit-learn's default) on raw backbone embeddings (the "
    "representation users keep and the probe reads), k = number of classes (as Xu et al. "
    "choose it), AMI across two augmented views, kNN entropy with k = 3; "
    "`sslwatch reproduce --variants` judges the other declared choices (variants.md)."
)
VERDICT_RULE: Final = (
    f"Verdict: holds when the whole {CONFIDENCE:.0%} bootstrap interval is on the claimed "
    "side of the bound, does not hold when it is wholly on the other side, inconclusive "
    f"otherwise (or with fewer than {MIN_N} points)."
)

XU: Final = "Xu et al. 2024"
GARRIDO: Final = "Garrido et al. 2023"
REPRESENTATION: Final = "backbone"
REFERENCE: Final = "linear_probe"
WEAK: Final = 0.3
"""Largest |Spearman| still read as "no more than a weak association"."""
ORACLE_POINTS: Final = 0.005
"""0.5 points of linear-probe accuracy (a fraction)."""
TRACKING_METHODS: Final = ("simclr", "moco_v2")
"""Methods for which Xu et al. report that clustering metrics track LP and entropy falls."""
NON_TRACKING_METHODS: Final = ("simsiam",)
"""Methods for which Xu et al. report that they do not."""

TRANSFER_SEPARATOR: Final = "@"


def transfer_representation(data: str) -> str:
    """Where the backbone's linear probe on a second data set ``data`` is stored:
    ``backbone@<data>``, a representation of its own, so that the study's reference
    (``linear_probe`` on ``backbone``) stays one definition per point."""
    return f"{REPRESENTATION}{TRANSFER_SEPARATOR}{data}"


Side = Literal[">", "<"]
Verdict = Literal["holds", "does not hold", "inconclusive"]


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, the statistic that tests it, and the verdict.

    ``statistic`` states the number and the claimed inequality in words (``side``,
    ``bound``); ``ci`` is the :data:`CONFIDENCE` bootstrap interval of ``value``;
    ``n`` the points it rests on (checkpoints, or methods). ``method`` is the method
    the claim concerns, or ``"all"`` for a statement over methods.
    """

    claim: str
    paper: str
    statistic: str
    value: float
    ci: tuple[float, float]
    n: int
    verdict: Verdict
    method: str
    representation: str
    side: Side
    bound: float


def judge(
    ci: tuple[float, float], n: int, side: Side, bound: float, *, min_n: int = MIN_N
) -> Verdict:
    """The verdict of ``statistic <side> bound`` from its interval (module docstring)."""
    low, high = ci
    if n < min_n or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    above, below = low > bound, high < bound
    if (above and side == ">") or (below and side == "<"):
        return "holds"
    if above or below:
        return "does not hold"
    return "inconclusive"


def _claim(
    claim: str,
    paper: str,
    statistic: str,
    where: str,
    method: str,
    side: Side,
    bound: float,
    found: tuple[float, tuple[float, float], int],
) -> Claim:
    value, (low, high), n = found
    return Claim(
        claim=claim,
        paper=paper,
        statistic=f"{statistic} {side} {bound:g} ({where})",
        value=float(value),
        ci=(float(low), float(high)),
        n=int(n),
        verdict=judge((float(low), float(high)), int(n), side, bound),
        method=method,
        representation=REPRESENTATION,
        side=side,
        bound=bound,
    )


# --------------------------------------------------------------------------- reading rows


Series = dict[int, float]
Pair = tuple[np.ndarray, np.ndarray]
Found = tuple[float, tuple[float, float], int]
"""A statistic's value, interval and number of points."""
NOTHING: Final[Found] = (math.nan, (math.nan, math.nan), 0)


def metric_series(
    rows: Sequence[Mapping[str, Any]],
    run: str,
    metric: str,
    epochs: int,
    representation: str = REPRESENTATION,
) -> Series:
    """``{epoch: value}`` of ``metric`` on ``representation`` of ``run``, epochs 1..``epochs``,
    finite values only; when the run holds several definitions of the metric (a resumed
    study with other settings), the one with the most epochs (then the smallest digest)."""
    by_digest: dict[str, Series] = {}
    for r in rows:
        epoch = r.get("epoch")
        value = r.get("value")
        if (
            r["run"] != run
            or r["metric"] != metric
            or r["representation"] != representation
            or epoch is None
            or not 1 <= int(epoch) <= epochs
            or value is None
            or not math.isfinite(float(value))
        ):
            continue
        by_digest.setdefault(str(r.get("digest")), {})[int(epoch)] = float(value)
    if not by_digest:
        return {}
    return by_digest[min(by_digest, key=lambda d: (-len(by_digest[d]), d))]


def _paired(a: Series, b: Series) -> Pair:
    common = sorted(set(a) & set(b))
    return np.array([a[e] for e in common]), np.array([b[e] for e in common])


def spearman_interval(x: np.ndarray, y: np.ndarray) -> Found:
    """Spearman with its seeded percentile-bootstrap interval over the pairs."""
    if x.size == 0:
        return NOTHING
    est = correlate(x, y, n_boot=N_BOOT, confidence=CONFIDENCE, seed=SEED).spearman
    return est.value, (est.low, est.high), int(x.size)


def _abs_spearman_gain(early: Pair, late: Pair) -> Found:
    """``|rho_late| - |rho_early|`` (Spearman), each half resampled on its own."""
    (x_early, y_early), (x_late, y_late) = early, late
    n = int(x_early.size + x_late.size)
    nan = (math.nan, (math.nan, math.nan), n)
    if min(x_early.size, x_late.size) < 3:
        return nan
    value = abs(correlate(x_late, y_late, n_boot=0).spearman.value) - abs(
        correlate(x_early, y_early, n_boot=0).spearman.value
    )
    if not math.isfinite(value):
        return nan
    rng = np.random.default_rng(SEED)
    rho = []
    for x, y in ((x_early, y_early), (x_late, y_late)):
        counts = resample_counts(x.size, N_BOOT, rng, None)
        rho.append(np.abs(resampled_correlations(x, y, counts)["spearman"]))
    return _percentile_found(value, rho[1] - rho[0], n)


def _abs_spearman_pooling_loss(pairs: Sequence[Pair]) -> Found:
    """``mean_a |rho_a| - |rho_pooled|`` (Spearman) over groups ``a`` of pairs; the
    interval resamples the pairs within each group."""
    n = int(sum(x.size for x, _ in pairs))
    nan = (math.nan, (math.nan, math.nan), n)
    if len(pairs) < 2 or min(x.size for x, _ in pairs) < 3:
        return nan
    x_all = np.concatenate([x for x, _ in pairs])
    y_all = np.concatenate([y for _, y in pairs])
    within = [abs(correlate(x, y, n_boot=0).spearman.value) for x, y in pairs]
    value = float(np.mean(within)) - abs(correlate(x_all, y_all, n_boot=0).spearman.value)
    if not math.isfinite(value):
        return nan
    rng = np.random.default_rng(SEED)
    counts = []
    rho_within = []
    for x, y in pairs:
        c = resample_counts(x.size, N_BOOT, rng, None)
        counts.append(c)
        rho_within.append(np.abs(resampled_correlations(x, y, c)["spearman"]))
    pooled = np.abs(resampled_correlations(x_all, y_all, np.hstack(counts))["spearman"])
    return _percentile_found(value, np.mean(rho_within, axis=0) - pooled, n)


def _percentile_found(value: float, resamples: np.ndarray, n: int) -> Found:
    """``value`` with the percentile interval of its finite bootstrap ``resamples``; no
    interval when most resamples are undefined (the rule of ``correlate``)."""
    finite = resamples[np.isfinite(resamples)]
    if finite.size * 2 < N_BOOT:
        return value, (math.nan, math.nan), n
    alpha = (1.0 - CONFIDENCE) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return value, (float(low), float(high)), n


def _mean_over_methods(values: Sequence[float]) -> Found:
    """Mean with a seeded percentile-bootstrap interval over methods."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return NOTHING
    if data.size == 1:
        return float(data[0]), (math.nan, math.nan), 1
    res = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=N_BOOT,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    ci = res.confidence_interval
    return float(np.mean(data)), (float(ci.low), float(ci.high)), int(data.size)


# --------------------------------------------------------------------------- the claims


def _xu_claims(rows: Sequence[Mapping[str, Any]], epochs: int) -> list[Claim]:
    progress = [r for r in rows if str(r["run"]).startswith("progress/")]
    present = {str(r["run"]).removeprefix("progress/") for r in progress}
    paper_methods = [*TRACKING_METHODS, *NON_TRACKING_METHODS]
    every = [*paper_methods, *sorted(present - set(paper_methods))]
    half = epochs // 2
    where = f"{REPRESENTATION}, epochs 1..{epochs}"

    def series(method: str, metric: str) -> Series:
        return metric_series(progress, f"progress/{method}", metric, epochs)

    def with_epoch(method: str, metric: str) -> Pair:
        s = series(method, metric)
        return _paired(s, {e: float(e) for e in s})

    def with_lp(method: str, metric: str) -> Pair:
        return _paired(series(method, metric), series(method, REFERENCE))

    def spearman(
        claim: str, statistic: str, method: str, side: Side, bound: float, xy: Pair
    ) -> Claim:
        return _claim(claim, XU, statistic, where, method, side, bound, spearman_interval(*xy))

    out = [
        spearman(
            "k-means clusters agree better with the labels as training progresses",
            "Spearman(label_ami, epoch)",
            method,
            ">",
            0.0,
            with_epoch(method, "label_ami"),
        )
        for method in every
    ]
    for metric, words in (("silhouette", "silhouette"), ("cluster_agreement", "cluster agreement")):
        statistic = f"Spearman({metric}, LP)"
        out += [
            spearman(
                f"{words} tracks linear-probe accuracy",
                statistic,
                method,
                ">",
                0.0,
                with_lp(method, metric),
            )
            for method in TRACKING_METHODS
        ]
        out += [
            spearman(
                f"{words} does not track linear-probe accuracy (at most weakly)",
                statistic,
                method,
                "<",
                WEAK,
                with_lp(method, metric),
            )
            for method in NON_TRACKING_METHODS
        ]
    out += [
        spearman(
            "embedding entropy falls during training",
            "Spearman(entropy, epoch)",
            method,
            "<",
            0.0,
            with_epoch(method, "entropy"),
        )
        for method in TRACKING_METHODS
    ]
    out += [
        spearman(
            "embedding entropy does not fall during training (at most weakly)",
            "Spearman(entropy, epoch)",
            method,
            ">",
            -WEAK,
            with_epoch(method, "entropy"),
        )
        for method in NON_TRACKING_METHODS
    ]
    for method in every:
        entropy, lp = series(method, "entropy"), series(method, REFERENCE)
        early = _paired({e: v for e, v in entropy.items() if e <= half}, lp)
        late = _paired({e: v for e, v in entropy.items() if e > half}, lp)
        out.append(
            _claim(
                "entropy tracks linear-probe accuracy more closely late in training than early",
                XU,
                f"|Spearman(entropy, LP)| over epochs {half + 1}..{epochs} minus over 1..{half}",
                REPRESENTATION,
                method,
                ">",
                0.0,
                _abs_spearman_gain(early, late),
            )
        )
    return out + _cross_architecture_claims(rows, epochs)


_WITHIN_ONLY: Final = (
    "is comparable only within one architecture: pooling the checkpoints of two backbones "
    "weakens its association with linear-probe accuracy"
)
CROSS_ARCHITECTURE: Final[tuple[tuple[str, str, Side, float, str], ...]] = (
    ("silhouette", "silhouette", ">", 0.0, _WITHIN_ONLY),
    ("cluster_agreement", "cluster agreement", ">", 0.0, _WITHIN_ONLY),
    (
        "entropy",
        "embedding entropy",
        "<",
        WEAK,
        "is comparable across architectures: pooling the checkpoints of two backbones "
        "loses at most a weak association with linear-probe accuracy",
    ),
)
"""(metric, words, side, bound, claim) of the cross-architecture claim."""


def _cross_architecture_claims(rows: Sequence[Mapping[str, Any]], epochs: int) -> list[Claim]:
    runs: dict[str, dict[str, str]] = {}
    for r in rows:
        run = str(r["run"])
        if run.startswith(("progress/", "arch/")) and r.get("method") and r.get("architecture"):
            per_arch = runs.setdefault(str(r["method"]), {})
            arch = str(r["architecture"])
            per_arch[arch] = min(per_arch.get(arch, run), run)
    methods = sorted(m for m, per_arch in runs.items() if len(per_arch) >= 2)
    out = []
    for metric, words, side, bound, claim in CROSS_ARCHITECTURE:
        statistic = (
            f"mean over architectures of |Spearman({metric}, LP)| minus |Spearman({metric}, "
            "LP)| with the architectures' checkpoints pooled"
        )
        claim_text = f"{words} {claim}"
        if not methods:
            where = f"{REPRESENTATION}; no method was trained on two backbones"
            out.append(_claim(claim_text, XU, statistic, where, "all", side, bound, NOTHING))
        for method in methods:
            per_arch = runs[method]
            pairs = [
                _paired(
                    metric_series(rows, per_arch[a], metric, epochs),
                    metric_series(rows, per_arch[a], REFERENCE, epochs),
                )
                for a in sorted(per_arch)
            ]
            where = f"{REPRESENTATION}, {' vs '.join(sorted(per_arch))}, epochs 1..{epochs}"
            found = _abs_spearman_pooling_loss([p for p in pairs if p[0].size])
            out.append(_claim(claim_text, XU, statistic, where, method, side, bound, found))
    return out


def _garrido_claims(rows: Sequence[Mapping[str, Any]], epochs: int) -> list[Claim]:
    at_end = [
        r
        for r in rows
        if str(r["run"]).startswith(("select/", "progress/"))
        and r.get("epoch") == epochs
        and r["metric"] in ("rankme", REFERENCE)
    ]
    per_method: dict[str, RunSelection] = {}
    if any(r["metric"] == "rankme" for r in at_end) and any(
        r["metric"] == REFERENCE for r in at_end
    ):
        for sel in select_runs(
            at_end,
            "rankme",
            representation=REPRESENTATION,
            epoch=epochs,
            on_incomparable="split",
        ):
            best = per_method.get(sel.group)
            if len(sel.ranking) >= 2 and (best is None or len(sel.ranking) > len(best.ranking)):
                per_method[sel.group] = sel
    selections = [per_method[m] for m in sorted(per_method)]
    regrets = [s.regret for s in selections]
    gains = [s.random_regret - s.regret for s in selections]
    rhos = []
    for s in selections:
        pairs = np.array([(v, ref) for _, v, ref in s.ranking if math.isfinite(ref)])
        if len(pairs) >= 3:
            rhos.append(correlate(pairs[:, 0], pairs[:, 1], n_boot=0).spearman.value)
    where = f"{REPRESENTATION}, epoch {epochs}"
    return [
        *_selection_claims(regrets, gains, rhos, where),
        *_transfer_claims(rows, epochs),
    ]


def _selection_claims(
    regrets: Sequence[float], gains: Sequence[float], rhos: Sequence[float], where: str
) -> list[Claim]:
    return [
        _claim(
            "RankMe's pick is within 0.5 points of the oracle's accuracy on average",
            GARRIDO,
            "mean over methods of the LP regret of RankMe's pick",
            where,
            "all",
            "<",
            ORACLE_POINTS,
            _mean_over_methods(regrets),
        ),
        _claim(
            "RankMe's pick beats a random pick",
            GARRIDO,
            "mean over methods of (random-pick regret - RankMe's regret)",
            where,
            "all",
            ">",
            0.0,
            _mean_over_methods(gains),
        ),
        _claim(
            "RankMe correlates with linear-probe accuracy across the runs of one method",
            GARRIDO,
            "mean over methods of Spearman(rankme, LP) across the method's runs",
            where,
            "all",
            ">",
            0.0,
            _mean_over_methods(rhos),
        ),
    ]


def _at_epoch(
    rows: Sequence[Mapping[str, Any]], metric: str, representation: str, epoch: int
) -> dict[str, tuple[str, float]]:
    """``{run: (method, value)}`` of ``metric`` on ``representation`` at ``epoch``, finite
    values of selection and progress runs; of several definitions, the one covering the
    most runs (then the smallest digest)."""
    by_digest: dict[str, dict[str, tuple[str, float]]] = {}
    for r in rows:
        value = r.get("value")
        if (
            str(r["run"]).startswith(("select/", "progress/"))
            and r["metric"] == metric
            and r["representation"] == representation
            and r.get("epoch") == epoch
            and r.get("method")
            and value is not None
            and math.isfinite(float(value))
        ):
            by_digest.setdefault(str(r.get("digest")), {})[str(r["run"])] = (
                str(r["method"]),
                float(value),
            )
    if not by_digest:
        return {}
    return by_digest[min(by_digest, key=lambda d: (-len(by_digest[d]), d))]


def _transfer_claims(rows: Sequence[Mapping[str, Any]], epochs: int) -> list[Claim]:
    claim = "RankMe also tracks linear-probe accuracy on a related data set it was not trained on"
    prefix = REPRESENTATION + TRANSFER_SEPARATOR
    targets = sorted(
        {
            str(r["representation"]).removeprefix(prefix)
            for r in rows
            if str(r["representation"]).startswith(prefix) and r["metric"] == REFERENCE
        }
    )
    if not targets:
        statistic = (
            "mean over methods of Spearman(rankme, LP on a second data set) across the "
            "method's runs"
        )
        where = "no second data set in this study: none related to its data is at hand offline"
        return [_claim(claim, GARRIDO, statistic, where, "all", ">", 0.0, NOTHING)]
    rankme = _at_epoch(rows, "rankme", REPRESENTATION, epochs)
    out = []
    for target in targets:
        lp = _at_epoch(rows, REFERENCE, prefix + target, epochs)
        per_method: dict[str, list[tuple[float, float]]] = {}
        for run in sorted(set(rankme) & set(lp)):
            per_method.setdefault(rankme[run][0], []).append((rankme[run][1], lp[run][1]))
        rhos = [
            correlate(*np.array(pairs).T, n_boot=0).spearman.value
            for _, pairs in sorted(per_method.items())
            if len(pairs) >= 3
        ]
        statistic = (
            f"mean over methods of Spearman(rankme, LP on {target}) across the method's runs"
        )
        where = f"rankme on the training data, {prefix + target}, epoch {epochs}"
        out.append(
            _claim(claim, GARRIDO, statistic, where, "all", ">", 0.0, _mean_over_methods(rhos))
        )
    return out


def claims_from_rows(rows: Sequence[Mapping[str, Any]], epochs: int) -> list[Claim]:
    """Every claim of both papers, judged on a study's tidy rows
    (:meth:`sslwatch.offline.store.ResultStore.tidy_rows`) trained for ``epochs`` epochs."""
    return _xu_claims(rows, epochs) + _garrido_claims(rows, epochs)


# --------------------------------------------------------------------------- output


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def claim_rows(claims: Sequence[Claim]) -> list[dict[str, Any]]:
    """JSON-ready rows: ``claim, paper, statistic, value, ci [low, high], n, verdict,
    method``; NaN (and inf) as ``None``."""
    return [
        {
            "claim": c.claim,
            "paper": c.paper,
            "statistic": c.statistic,
            "value": _number(c.value),
            "ci": [_number(c.ci[0]), _number(c.ci[1])],
            "n": c.n,
            "verdict": c.verdict,
            "method": c.method,
        }
        for c in claims
    ]


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "nan"


def _interval(c: Claim) -> str:
    return f"[{_fmt(c.ci[0])}, {_fmt(c.ci[1])}]"


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The claims as a Markdown table, with the verdict rule underneath."""
    head = ["paper", "claim", "method", "statistic", "value", f"{CONFIDENCE:.0%} CI", "n"]
    lines = ["| " + " | ".join([*head, "verdict"]) + " |", "|" + "---|" * (len(head) + 1)]
    for c in claims:
        cells = [c.paper, c.claim, c.method, c.statistic, _fmt(c.value), _interval(c), str(c.n)]
        cells = [cell.replace("|", "\\|").replace("\n", " ") for cell in cells]
        lines.append("| " + " | ".join([*cells, f"**{c.verdict}**"]) + " |")
    return "\n".join([*lines, "", VERDICT_RULE, "", VARIANTS_NOTE]) + "\n"


def claims_text(claims: Sequence[Claim], width: int = 100) -> str:
    """The claims as plain text for a terminal: per claim, the verdict with the claim,
    then the statistic, its value, interval and n, wrapped at ``width`` columns."""
    pad = max(len(v) for v in VERDICTS) + 2
    lines = [f"The papers' claims, judged ({CONFIDENCE:.0%} bootstrap intervals)"]
    for c in claims:
        head = f"{c.verdict:<{pad}}{c.paper}, {c.method}: {c.claim}"
        body = f"{c.statistic}: {_fmt(c.value)} {_interval(c)}, n={c.n}"
        for text, first in ((head, ""), (body, " " * pad)):
            lines += textwrap.wrap(text, width, initial_indent=first, subsequent_indent=" " * pad)
    lines += textwrap.wrap(VERDICT_RULE, width)
    return "\n".join(lines) + "\n"


def write_claims(out_dir: str | Path, claims: Sequence[Claim]) -> list[Path]:
    """Write ``claims.json`` (:func:`claim_rows`, strict JSON) and ``claims.md`` into
    ``out_dir``; return both paths."""
    out = Path(out_dir)
    files = [out / "claims.json", out / "claims.md"]
    texts = [
        json.dumps(claim_rows(claims), indent=2, allow_nan=False) + "\n",
        claims_markdown(claims),
    ]
    for path, text in zip(files, texts, strict=True):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return files
