"""Metric variants, declared before they are measured: the choices a paper could have made.

Xu, Lowe and Trappenberg (2024, arXiv 2409.06612) score k-means clusterings of the
embeddings by the silhouette and by the agreement of two clusterings, and track the
entropy of the embeddings. Each number rests on choices the paper could have made
otherwise. :data:`GRID` fixes those choices in code, before any of them is measured:

* silhouette: Euclidean distance on the raw embeddings; cosine distance (the same
  k-means clustering of the raw embeddings); Euclidean distance on L2-normalised rows
  (k-means and silhouette both on the normalised rows);
* k, the number of k-means clusters of the silhouette and of cluster agreement:
  ``C`` (the number of classes, by :func:`sslwatch.core.context.resolve_k`'s rule),
  ``2C`` and ``100``;
* entropy: the Kozachenko-Leonenko kNN estimator with k = 3 and k = 10 neighbours, and
  the Gaussian estimator;
* representation: every one of these on the backbone and on the projector.

Each variant is computed by sslwatch's own metric glue (:data:`sslwatch.core.registry.
REGISTRY`'s ``compute`` on a :class:`~sslwatch.core.context.MetricContext`, or
:func:`sslwatch.evaluate` for the Gaussian entropy) on the same seeded point sample, the
same augmented views and the same checkpoints as the study, so a default variant
reproduces the study's own value. k = C holds on both representations here; the study's
projector metrics, computed without labels, use k = 10 (the same on 10-class data).

The variants are stored in the study's results store under runs ``variants/<method>``
(points: the checkpoint paths of ``progress/<method>``) and metric names
``variant/<family>/<setting>`` (:attr:`Variant.metric`, unknown to the registry), kept
apart from the study's runs so that its tables and claims never read them.

Each variant is then judged per method like the claims (:mod:`sslwatch.study.claims`):
the Spearman correlation with the backbone linear-probe accuracy over the progress
run's trained epochs (1..E; the random initialisation is left out, as in the study's
correlations) with its seeded :data:`~sslwatch.study.claims.CONFIDENCE` percentile
bootstrap interval, and the verdict of :func:`~sslwatch.study.claims.judge` with bound
0: ``tracks`` (the whole interval above 0), ``moves against`` (wholly below 0) or
``inconclusive``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from torch import nn

from sslwatch._files import atomic_path
from sslwatch.core.context import MetricContext, resolve_k
from sslwatch.core.evaluate import (
    MetricValue,
    compute_metrics,
    definition_for,
    evaluate,
    sample_indices,
)
from sslwatch.core.registry import REGISTRY
from sslwatch.offline.data import Dataset
from sslwatch.offline.store import ResultStore
from sslwatch.study.claims import CONFIDENCE, MIN_N, judge, metric_series, spearman_interval
from sslwatch.study.reproduce import (
    REFERENCE,
    REPRESENTATIONS,
    VARIANT_RUN_PREFIX,
    MethodRecipe,
    Preset,
    _config,
    checkpoint_embeddings,
    load_study_data,
    progress_run,
)
from sslwatch.train import list_checkpoints
from sslwatch.train.loop import load_checkpoint

__all__ = [
    "DEFAULTS_NOTE",
    "GRID",
    "K_RULES",
    "VARIANT_RULE",
    "VARIANT_VERDICTS",
    "Variant",
    "VariantResult",
    "run_variants",
    "variant_rows",
    "variant_run",
    "variant_values",
    "variants_markdown",
    "write_variants",
]

Family = Literal["silhouette", "cluster_agreement", "entropy"]

K_RULES: Final = ("C", "2C", "100")
"""k of the k-means metrics: C classes (the study's rule), twice that, and 100."""

VARIANT_VERDICTS: Final = {
    "holds": "tracks",
    "does not hold": "moves against",
    "inconclusive": "inconclusive",
}
"""The claims' verdict of ``Spearman(variant, LP) > 0``, in the words of this table."""

VARIANT_RULE: Final = (
    f"Spearman correlation with backbone linear-probe accuracy over the progress run's "
    f"epochs 1..E, with its {CONFIDENCE:.0%} percentile-bootstrap interval; tracks: the "
    "whole interval above 0; moves against: wholly below 0; inconclusive: it contains 0, "
    f"is undefined, or rests on fewer than {MIN_N} checkpoints (the claims' rule, bound 0). "
    "Entropy has no better direction: Xu et al. report it falling while LP rises (moves "
    "against) for SimCLR and MoCo-v2."
)

DEFAULTS_NOTE: Final = (
    "Defaults (*) are sslwatch's own settings (sslwatch.core.catalog), the ones the "
    "study's tables and claims use, fixed before this grid was measured: the silhouette "
    "with Euclidean distance (scikit-learn's default) on the raw embeddings; k = the number "
    "of classes for k-means, as Xu et al. 2024 choose it; cluster agreement as the AMI of "
    "the k-means clusterings of two augmented views; the Kozachenko-Leonenko kNN entropy "
    "with k = 3 neighbours; all read on the backbone, the representation a user keeps and "
    "the one the linear probe is read on. No default changes after looking at this table "
    "unless the grid shows it on both data sets."
)


@dataclass(frozen=True)
class Variant:
    """One declared way of computing a metric family.

    Attributes:
        name: unique in :data:`GRID`, ``<family>/<setting>[/k=<rule>]/<representation>``.
        family: ``"silhouette"``, ``"cluster_agreement"`` or ``"entropy"``.
        representation: ``"backbone"`` or ``"projector"``.
        how: how the value is computed, in words.
        default: True for sslwatch's default (what the study's own metric computes).
        distance: silhouette distance, ``"euclidean"`` or ``"cosine"``.
        rows: ``"raw"`` embeddings or ``"l2"`` (every row scaled to unit norm first).
        k: the k-means k rule of :data:`K_RULES` (clustering families).
        estimator: entropy estimator, ``"knn"`` or ``"gaussian"``.
        k_neighbors: neighbour rank of the kNN entropy.
    """

    name: str
    family: Family
    representation: str
    how: str
    default: bool = False
    distance: str | None = None
    rows: Literal["raw", "l2"] = "raw"
    k: str | None = None
    estimator: str | None = None
    k_neighbors: int | None = None

    @property
    def metric(self) -> str:
        """The metric name it is stored under (the representation is stored apart)."""
        return "variant/" + self.name.rsplit("/", 1)[0]

    def resolved_k(self, classes: int) -> int:
        """The k-means k for a data set of ``classes`` classes."""
        if self.k is None:
            raise ValueError(f"variant {self.name!r} does not cluster")
        if self.k == "C":
            return classes
        if self.k == "2C":
            return 2 * classes
        return int(self.k)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready declaration."""
        return {
            "name": self.name,
            "metric": self.metric,
            "family": self.family,
            "representation": self.representation,
            "how": self.how,
            "default": self.default,
        }


_SILHOUETTE: Final = {
    "euclidean": ("euclidean", "raw", "Euclidean silhouette of the k-means clustering"),
    "cosine": ("cosine", "raw", "cosine-distance silhouette of the k-means clustering"),
    "l2-euclidean": (
        "euclidean",
        "l2",
        "Euclidean silhouette of the k-means clustering, both on L2-normalised rows",
    ),
}
_ENTROPY: Final = {
    "knn3": ("knn", 3, "Kozachenko-Leonenko kNN entropy, k = 3 neighbours"),
    "knn10": ("knn", 10, "Kozachenko-Leonenko kNN entropy, k = 10 neighbours"),
    "gaussian": ("gaussian", None, "Gaussian entropy 0.5 log det(2 pi e Sigma) of all rows"),
}
_K_WORDS: Final = {"C": "k = classes", "2C": "k = 2 x classes", "100": "k = 100"}

GRID: Final[tuple[Variant, ...]] = (
    *(
        Variant(
            name=f"silhouette/{setting}/k={k}/{rep}",
            family="silhouette",
            representation=rep,
            how=f"{how}, {_K_WORDS[k]}, seeded point sample",
            default=(setting, k, rep) == ("euclidean", "C", "backbone"),
            distance=distance,
            rows=rows,  # type: ignore[arg-type]
            k=k,
        )
        for rep in REPRESENTATIONS
        for setting, (distance, rows, how) in _SILHOUETTE.items()
        for k in K_RULES
    ),
    *(
        Variant(
            name=f"cluster_agreement/ami/k={k}/{rep}",
            family="cluster_agreement",
            representation=rep,
            how=f"AMI of the k-means clusterings of two augmented views (else two seeds), "
            f"{_K_WORDS[k]}",
            default=(k, rep) == ("C", "backbone"),
            k=k,
        )
        for rep in REPRESENTATIONS
        for k in K_RULES
    ),
    *(
        Variant(
            name=f"entropy/{setting}/{rep}",
            family="entropy",
            representation=rep,
            how=how,
            default=(setting, rep) == ("knn3", "backbone"),
            estimator=estimator,
            k_neighbors=k_neighbors,
        )
        for rep in REPRESENTATIONS
        for setting, (estimator, k_neighbors, how) in _ENTROPY.items()
    ),
)
"""The fixed grid: 18 silhouette, 6 cluster-agreement and 6 entropy variants."""


# --------------------------------------------------------------------------- computing


def _variant_value(variant: Variant, value: MetricValue, extra: Mapping[str, Any]) -> MetricValue:
    """``value`` under the variant's metric name, its setting added to the definition."""
    params = {**value.definition.params, **extra}
    definition = replace(value.definition, metric=variant.metric, params=params)
    return replace(value, name=variant.metric, definition=definition)


def _too_few(variant: Variant, ctx: MetricContext, k: int, points: int) -> MetricValue:
    """NaN for a clustering with as many clusters as points (undefined, or a trivial 1)."""
    spec = REGISTRY[variant.family]
    p = dict(spec.params) if variant.distance is None else {"metric": variant.distance}
    error = f"ValueError: k={k} clusters need more than {points} points"
    return MetricValue(spec.name, math.nan, definition_for(spec, ctx, p), 0.0, error)


def variant_values(
    embeddings: Mapping[str, torch.Tensor],
    *,
    labels: Any,
    views: Mapping[str, torch.Tensor] | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    variants: Sequence[Variant] = GRID,
) -> dict[str, MetricValue]:
    """Every variant on one checkpoint's embeddings, by variant name.

    Args:
        embeddings: representation -> (N, D) embeddings of all samples.
        labels: (N,) labels; only their number of classes in the point sample is read
            (k = C, :func:`~sslwatch.core.context.resolve_k`).
        views: representation -> (n, 2, D) augmented views (cluster agreement across
            views, as the study); without them agreement compares two k-means seeds.
        sample_size / seed: the point sample of :func:`sslwatch.evaluate`.
        variants: the variants to compute (default: all of :data:`GRID`).

    Returns:
        Variant name -> :class:`~sslwatch.core.evaluate.MetricValue` whose definition is
        the registry metric's, renamed to :attr:`Variant.metric`, with ``rows``,
        ``sample_size`` and ``seed`` (and ``k_rule``) added. A clustering with k at least
        the number of points it clusters is NaN with an error, as is a metric that fails.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    out: dict[str, MetricValue] = {}
    for rep in dict.fromkeys(v.representation for v in variants):
        mine = [v for v in variants if v.representation == rep]
        rep_views = None if views is None else views.get(rep)
        out.update(_values(embeddings[rep], y, rep_views, sample_size, seed, mine))
    return out


def _values(
    z: torch.Tensor,
    labels: np.ndarray,
    views: torch.Tensor | None,
    sample_size: int | None,
    seed: int,
    variants: Sequence[Variant],
) -> dict[str, MetricValue]:
    """The variants of one representation (see :func:`variant_values`)."""
    n, d = int(z.shape[0]), int(z.shape[1])
    index = sample_indices(n, sample_size, seed)
    pick = None if index is None else torch.as_tensor(index)
    classes = resolve_k(None, n if index is None else len(index), _pick(labels, index))
    rows = {"raw": z, "l2": nn.functional.normalize(z, dim=1)}
    contexts: dict[tuple[str, int], MetricContext] = {}

    def context(which: str, k: int) -> MetricContext:
        """The study's point sample (and views, on raw rows) with k clusters."""
        points = rows[which]
        return MetricContext(
            n_total=n,
            d=d,
            dtype=str(z.dtype).replace("torch.", ""),
            sample=points if pick is None else points[pick],
            views=views if which == "raw" else None,
            k=k,
            seed=seed,
            sample_size=sample_size,
        )

    out = {}
    for variant in variants:
        # the sample in every definition, also the Gaussian's (which reads all rows)
        extra: dict[str, Any] = {"rows": variant.rows, "sample_size": sample_size, "seed": seed}
        if variant.family == "entropy":
            if variant.estimator == "gaussian":
                result = evaluate(
                    z,
                    metrics=["entropy_gaussian"],
                    sample_size=sample_size,
                    seed=seed,
                    on_error="warn",
                )
                value = result.records["entropy_gaussian"]
                extra["estimator"] = "gaussian"
            else:  # a context of its own: the kNN shortlist is sized for its k
                knn = {"entropy": {"k_neighbors": variant.k_neighbors}}
                value = compute_metrics(
                    context("raw", classes), [REGISTRY["entropy"]], knn, on_error="warn"
                )[0]
            out[variant.name] = _variant_value(variant, value, extra)
            continue
        k = variant.resolved_k(classes)
        extra["k_rule"] = variant.k
        if (variant.rows, k) not in contexts:  # one k-means per (rows, k), shared
            contexts[variant.rows, k] = context(variant.rows, k)
        ctx = contexts[variant.rows, k]
        spec = REGISTRY[variant.family]
        params: dict[str, dict[str, Any]] = {}
        if variant.family == "silhouette":
            points = ctx.n_sample
            params = {"silhouette": {"metric": variant.distance}}
        else:
            points = ctx.n_views if ctx.views is not None else ctx.n_sample
        if k >= points:
            value = _too_few(variant, ctx, k, points)
        else:
            value = compute_metrics(ctx, [spec], params, on_error="warn")[0]
        out[variant.name] = _variant_value(variant, value, extra)
    return out


def _pick(labels: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    return labels if index is None else labels[index]


# --------------------------------------------------------------------------- the study


@dataclass
class VariantResult:
    """Where the variants went, the judged rows, and what this call computed."""

    out_dir: Path
    db: Path
    rows: list[dict[str, Any]]
    files: list[Path]
    computed: int
    """Checkpoints whose variants this call computed (0 when all were stored)."""
    seconds: float


def variant_run(recipe: MethodRecipe) -> str:
    """Run name holding the variants of a method's progress-run checkpoints."""
    return f"{VARIANT_RUN_PREFIX}{recipe.method}"


def _stored(
    store: ResultStore, run: str, sample_size: int | None, seed: int
) -> set[tuple[str, str, str]]:
    """``(checkpoint path, representation, metric)`` of the variants stored with this
    sample (size and seed)."""
    return {
        (str(r["path"]), str(r["representation"]), str(r["metric"]))
        for r in store.tidy_rows(run=run)
        if _of_sample(r, sample_size, seed)
    }


def _of_sample(row: Mapping[str, Any], sample_size: int | None, seed: int) -> bool:
    """Whether a stored variant value was computed on this point sample (size, seed)."""
    params = json.loads(row["definition"]).get("params", {})
    return bool(params.get("seed") == seed and params.get("sample_size") == sample_size)


def run_variants(
    out_dir: str | Path,
    *,
    preset: Preset,
    data_spec: str | None = None,
    seed: int = 0,
    methods: Sequence[str] | None = None,
) -> VariantResult:
    """Compute :data:`GRID` on the checkpoints of a finished study and judge each variant.

    Reads the progress runs' checkpoints (epochs 1..E) that :func:`~sslwatch.study.
    reproduce.run_study` left under ``out_dir/runs/progress/<method>``, with the same
    preset, data, sample and seed; stores every variant in ``out_dir/results.db`` (runs
    ``variants/<method>``); skips checkpoints whose variants are all stored, so a second
    call computes nothing; writes ``variants.json`` and ``variants.md``.

    Raises:
        FileNotFoundError: no results store in ``out_dir`` (run the study first).
        ValueError: no method of the preset selected.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    db = out / "results.db"
    if not db.is_file():
        raise FileNotFoundError(
            f"no results store at {db}; run the study first (sslwatch reproduce --out {out})"
        )
    recipes = [r for r in preset.recipes if methods is None or r.method in methods]
    if not recipes:
        raise ValueError(f"no method selected; the preset has {[r.method for r in preset.recipes]}")
    data: Dataset | None = None
    computed = 0
    with ResultStore(db) as store:
        for recipe in recipes:
            run_dir = out / "runs" / progress_run(recipe)
            checkpoints = [(e, p) for e, p in list_checkpoints(run_dir) if 1 <= e <= preset.epochs]
            if not checkpoints:
                continue
            run = variant_run(recipe)
            run_id = store.ensure_run(
                run,
                method=recipe.method,
                architecture=preset.backbone,
                meta={"preset": preset.name, "checkpoints_of": progress_run(recipe)},
            )
            done = _stored(store, run, preset.sample_size, seed)
            config = _config(preset, recipe, run_dir, seed)
            for epoch, path in checkpoints:
                wanted = [v for v in GRID if (str(path), v.representation, v.metric) not in done]
                if not wanted:
                    continue
                if data is None:
                    data = load_study_data(preset, data_spec, seed)
                emb, views = checkpoint_embeddings(
                    load_checkpoint(path), data, preset=preset, config=config, seed=seed
                )
                values = variant_values(
                    emb,
                    labels=data.y,
                    views=views or None,
                    sample_size=preset.sample_size,
                    seed=seed,
                    variants=wanted,
                )
                point = store.ensure_point(run_id, source="checkpoint", path=str(path), epoch=epoch)
                store.record_results(
                    point,
                    [
                        (
                            v.representation,
                            values[v.name].definition,
                            values[v.name].value,
                            values[v.name].seconds,
                        )
                        for v in wanted
                    ],
                )
                computed += 1
        runs = [r for recipe in recipes for r in (progress_run(recipe), variant_run(recipe))]
        rows = store.tidy_rows(run=runs)
    methods = [r.method for r in recipes]
    table = variant_rows(rows, methods, preset.epochs, sample=(preset.sample_size, seed))
    files = write_variants(out, table)
    return VariantResult(out, db, table, files, computed, time.perf_counter() - start)


def variant_rows(
    rows: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    epochs: int,
    *,
    sample: tuple[int | None, int] | None = None,
) -> list[dict[str, Any]]:
    """Per method and variant of :data:`GRID`: Spearman with backbone LP over epochs
    1..``epochs``, its interval, n and verdict (:data:`VARIANT_RULE`); a method or
    variant without values is an ``inconclusive`` row with ``n = 0``.

    ``sample=(sample_size, seed)`` reads only the variant values computed on that point
    sample (a store may hold the variants of several seeds)."""
    if sample is not None:
        rows = [
            r
            for r in rows
            if not str(r["run"]).startswith(VARIANT_RUN_PREFIX) or _of_sample(r, *sample)
        ]
    out = []
    for method in methods:
        lp = metric_series(rows, f"progress/{method}", REFERENCE, epochs)
        run = f"variants/{method}"
        for variant in GRID:
            series = metric_series(rows, run, variant.metric, epochs, variant.representation)
            common = sorted(set(series) & set(lp))
            x = np.array([series[e] for e in common])
            y = np.array([lp[e] for e in common])
            value, (low, high), n = spearman_interval(x, y)
            out.append(
                {
                    "method": method,
                    "variant": variant.name,
                    "family": variant.family,
                    "representation": variant.representation,
                    "metric": variant.metric,
                    "default": variant.default,
                    "n": n,
                    "spearman": value,
                    "ci": (low, high),
                    "verdict": VARIANT_VERDICTS[judge((low, high), n, ">", 0.0)],
                }
            )
    return out


# --------------------------------------------------------------------------- output


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "nan"


def variants_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The judged variants as Markdown: one table per method, then the grid declared."""
    lines = [
        "# Metric variants",
        "",
        VARIANT_RULE,
        "",
        DEFAULTS_NOTE,
        "",
    ]
    head = ["variant", "default", "n", "Spearman", f"{CONFIDENCE:.0%} CI", "verdict"]
    for method in dict.fromkeys(str(r["method"]) for r in rows):
        lines += [f"## {method}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if r["method"] != method:
                continue
            low, high = r["ci"]
            cells = [
                str(r["variant"]),
                "*" if r["default"] else "",
                str(r["n"]),
                _fmt(r["spearman"]),
                f"[{_fmt(low)}, {_fmt(high)}]",
                str(r["verdict"]),
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += ["## The grid (declared in sslwatch.study.variants.GRID)", ""]
    lines += ["| variant | stored as | how | default |", "|---|---|---|---|"]
    for v in GRID:
        lines.append(f"| {v.name} | {v.metric} | {v.how} | {'*' if v.default else ''} |")
    return "\n".join(lines) + "\n"


def write_variants(out_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write ``variants.json`` (strict JSON: the rule, the defaults, the grid, the rows)
    and ``variants.md`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    doc = {
        "confidence": CONFIDENCE,
        "rule": VARIANT_RULE,
        "defaults": DEFAULTS_NOTE,
        "grid": [v.to_dict() for v in GRID],
        "results": [
            {
                **{k: v for k, v in r.items() if k not in ("spearman", "ci")},
                "spearman": _number(r["spearman"]),
                "ci": [_number(r["ci"][0]), _number(r["ci"][1])],
            }
            for r in rows
        ],
    }
    files = [out / "variants.json", out / "variants.md"]
    texts = [json.dumps(doc, indent=2, allow_nan=False) + "\n", variants_markdown(rows)]
    for path, text in zip(files, texts, strict=True):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return files
