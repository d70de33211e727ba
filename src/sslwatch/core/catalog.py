"""Declarations of every metric: :data:`METRICS`, from which the registry is built.

Each entry ties a registry name to a pure function in :mod:`sslwatch.metrics` and says
what it reads from the :class:`~sslwatch.core.context.MetricContext`. This is the one place
that lists metrics; :data:`sslwatch.core.registry.REGISTRY` holds them, and everything
else (evaluate, CLI, monitor, store, report) iterates the registry.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sslwatch.core.context import MetricContext
from sslwatch.core.spec import Measurement, MetricSpec
from sslwatch.metrics.clustering import cluster_agreement, silhouette
from sslwatch.metrics.entropy import entropy, gaussian_entropy_from_eigenvalues
from sslwatch.metrics.probes import (
    DEFAULT_RIDGE_L2_GRID,
    fit_linear_probe,
    fit_ridge_probe,
    knn_accuracy,
    linear_probe,
    ridge_probe,
)
from sslwatch.metrics.spectrum import (
    alpha_req,
    alpha_req_from_eigenvalues,
    condition_number,
    condition_number_from_singular_values,
    nesum,
    nesum_from_eigenvalues,
    participation_ratio,
    participation_ratio_from_eigenvalues,
    rankme,
    rankme_from_singular_values,
    stable_rank,
    stable_rank_from_singular_values,
    warn_if_rank_capped,
)
from sslwatch.metrics.views import alignment, collapse_std, lidar, uniformity

RANKME = "Garrido et al., RankMe, ICML 2023 (arXiv 2210.02885)"
XU = "Xu, Lowe, Trappenberg, Label-free Monitoring of SSL Progress (arXiv 2409.06612)"
WANG_ISOLA = "Wang & Isola, Understanding Contrastive Representation Learning, ICML 2020"
SAMPLE_CONTEXT = ("sample_size", "seed")
CLUSTER_CONTEXT = ("k", "kmeans_n_init", "sample_size", "seed")
PROBE_CONTEXT = ("probe_test_fraction", "sample_size", "seed")


# --- spectrum family: all embeddings, through the second moments -------------------


def _rankme(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    warn_if_rank_capped(ctx.n_total, ctx.d, stacklevel=2)
    return rankme_from_singular_values(ctx.spectra.singular_values, eps=p["eps"])


def _alpha_req(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    return alpha_req_from_eigenvalues(
        ctx.spectra.covariance_eigenvalues, fit_range=tuple(p["fit_range"])
    )


def _gaussian_entropy(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    # Spectra of z * 2^-e: entropy(c z) = entropy(z) + D log c.
    shift = ctx.d * ctx.spectrum_exponent * math.log(2.0)
    return gaussian_entropy_from_eigenvalues(ctx.spectra.covariance_eigenvalues) + shift


# --- sample family: a seeded sample of points ----------------------------------------


def _silhouette(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    score, _ = ctx.sample_distances(p["metric"])
    if score is None:  # not planned (a direct call): the standalone function
        return silhouette(ctx.require_sample(), ctx.sample_clustering().labels, metric=p["metric"])
    return score


def _cluster_agreement(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    """NaN when the clustered points are all identical: a collapsed embedding has no
    clusters to agree on, and two one-cluster partitions would score a perfect 1."""
    if ctx.views is not None:
        views = ctx.views
        if _all_rows_equal(views[:, 0]) or _all_rows_equal(views[:, 1]):
            return math.nan
        first = ctx.kmeans_of(views[:, 0], "view0", ctx.seed).labels
        second = ctx.kmeans_of(views[:, 1], "view1", ctx.seed).labels
    else:
        if _all_rows_equal(ctx.require_sample()):
            return math.nan
        first = ctx.sample_clustering(0).labels
        second = ctx.sample_clustering(1).labels
    return cluster_agreement(first, second, method=p["method"])


def _all_rows_equal(points: Any) -> bool:
    return bool((points == points[:1]).all())


def _agreement_source(ctx: MetricContext) -> dict[str, Any]:
    return {"source": "views" if ctx.views is not None else "seeds"}


def _entropy_knn(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    _, shortlist = ctx.sample_distances("euclidean")
    if ctx.plan.get("entropy") != p:  # built for the planned k, not for these parameters
        shortlist = None
    return entropy(ctx.require_sample(), estimator="knn", k=p["k_neighbors"], shortlist=shortlist)


def _collapse_std(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    return collapse_std(ctx.require_sample())


# --- views family ----------------------------------------------------------------------


def _lidar(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    return lidar(ctx.require_views(), delta=p["delta"], eps=p["eps"])


def _alignment(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    views = ctx.require_views()
    return alignment(views[:, 0], views[:, 1], alpha=p["alpha"])


def _uniformity(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    return uniformity(ctx.require_views()[:, 0], t=p["t"])


# --- label-based references ------------------------------------------------------------


def _probe_data(ctx: MetricContext) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    train, test = ctx.probe_split()
    z, y = ctx.require_sample(), ctx.require_labels()
    return z[train], y[train], z[test], y[test]


def _linear_probe(ctx: MetricContext, p: Mapping[str, Any]) -> Measurement:
    train_z, train_y, test_z, test_y = _probe_data(ctx)
    fit = fit_linear_probe(train_z, train_y, l2=p["l2"], seed=ctx.seed)
    outcome = {"l2": fit.l2, "passes": fit.n_passes, "converged": fit.converged}
    return Measurement(fit.score(test_z, test_y), outcome)


def _ridge_probe(ctx: MetricContext, p: Mapping[str, Any]) -> Measurement:
    train_z, train_y, test_z, test_y = _probe_data(ctx)
    fit = fit_ridge_probe(train_z, train_y, l2=p["l2"], seed=ctx.seed, l2_grid=p["l2_grid"])
    return Measurement(fit.score(test_z, test_y), {"l2": fit.l2})


def _knn_accuracy(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    return knn_accuracy(*_probe_data(ctx), k=p["k_neighbors"], temperature=p["temperature"])


def _label_ami(ctx: MetricContext, p: Mapping[str, Any]) -> float:
    return cluster_agreement(
        ctx.sample_clustering().labels, ctx.require_labels(), method=p["method"]
    )


def _spectral(
    name: str,
    function: Callable[..., float],
    from_spectrum: Callable[[Any], float],
    source: str,
    *,
    description: str,
    citation: str,
    higher_is_better: bool | None = True,
    default: bool = False,
) -> MetricSpec:
    """A spectrum metric without parameters: ``from_spectrum`` of one spectrum, the
    ``"singular"`` values or the ``"covariance"`` eigenvalues."""

    def compute(ctx: MetricContext, p: Mapping[str, Any]) -> float:
        spectra = ctx.spectra
        values = spectra.singular_values if source == "singular" else spectra.covariance_eigenvalues
        return float(from_spectrum(values))

    return MetricSpec(
        name=name,
        kind="spectrum",
        needs="embeddings",
        compute=compute,
        function=function,
        higher_is_better=higher_is_better,
        cross_architecture=True,
        default=default,
        description=description,
        citation=citation,
    )


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        name="rankme",
        kind="spectrum",
        needs="embeddings",
        compute=_rankme,
        function=rankme,
        higher_is_better=True,
        cross_architecture=True,
        default=True,
        params={"eps": 1e-7},
        description="effective rank exp(H(p)), p = sigma / sum sigma (uncentered)",
        citation=RANKME,
    ),
    MetricSpec(
        name="alpha_req",
        kind="spectrum",
        needs="embeddings",
        compute=_alpha_req,
        function=alpha_req,
        higher_is_better=None,
        cross_architecture=True,
        default=True,
        params={"fit_range": (4, 100)},
        description="power-law decay alpha of covariance eigenvalues (best near 1)",
        citation="Agrawal et al., alpha-ReQ, NeurIPS 2022",
    ),
    _spectral(
        "stable_rank",
        stable_rank,
        stable_rank_from_singular_values,
        "singular",
        description="sum sigma^2 / sigma_max^2",
        citation="Rudelson & Vershynin 2007",
        default=True,
    ),
    _spectral(
        "nesum",
        nesum,
        nesum_from_eigenvalues,
        "covariance",
        description="sum lambda_i / lambda_1 of the covariance",
        citation="He & Ozay, collapsed vs whitened features, ICML 2022",
    ),
    _spectral(
        "participation_ratio",
        participation_ratio,
        participation_ratio_from_eigenvalues,
        "covariance",
        description="(sum lambda)^2 / sum lambda^2 of the covariance",
        citation="Gao et al. 2017; Recanatesi et al. 2019",
    ),
    _spectral(
        "condition_number",
        condition_number,
        condition_number_from_singular_values,
        "singular",
        description="sigma_max / sigma_min over positive sigma",
        citation="standard",
        higher_is_better=False,
    ),
    MetricSpec(
        name="entropy_gaussian",
        kind="spectrum",
        needs="embeddings",
        compute=_gaussian_entropy,
        function=functools.partial(entropy, estimator="gaussian"),
        higher_is_better=None,
        cross_architecture=True,
        default=True,
        description="0.5 log det(2 pi e Sigma), nats (-inf when Sigma is singular)",
        citation=XU,
    ),
    MetricSpec(
        name="silhouette",
        kind="sample",
        needs="embeddings",
        compute=_silhouette,
        function=silhouette,
        higher_is_better=True,
        cross_architecture=False,
        default=True,
        params={"metric": "euclidean"},
        context_params=CLUSTER_CONTEXT,
        description="mean silhouette of the k-means clustering",
        citation=XU,
    ),
    MetricSpec(
        name="cluster_agreement",
        kind="sample",
        needs="embeddings",
        compute=_cluster_agreement,
        function=cluster_agreement,
        higher_is_better=True,
        cross_architecture=False,
        default=True,
        params={"method": "ami"},
        context_params=CLUSTER_CONTEXT,
        definition_params=_agreement_source,
        uses_views=True,
        description=(
            "AMI between two k-means clusterings (two views, else two seeds); "
            "NaN for identical points (collapse)"
        ),
        citation=XU,
    ),
    MetricSpec(
        name="entropy",
        kind="sample",
        needs="embeddings",
        compute=_entropy_knn,
        function=entropy,
        higher_is_better=None,
        cross_architecture=True,
        default=True,
        params={"estimator": "knn", "k_neighbors": 3},
        context_params=SAMPLE_CONTEXT,
        description="Kozachenko-Leonenko kNN differential entropy, nats",
        citation=XU,
    ),
    MetricSpec(
        name="collapse_std",
        kind="sample",
        needs="embeddings",
        compute=_collapse_std,
        function=collapse_std,
        higher_is_better=True,
        cross_architecture=False,
        default=True,
        context_params=SAMPLE_CONTEXT,
        description="mean per-dim std of L2-normalised rows (0 = collapse, 1/sqrt(D) healthy)",
        citation="Chen & He, SimSiam, CVPR 2021",
    ),
    MetricSpec(
        name="lidar",
        kind="views",
        needs="views",
        compute=_lidar,
        function=lidar,
        higher_is_better=True,
        cross_architecture=True,
        default=True,
        params={"delta": 1e-4, "eps": 1e-8},
        description="effective rank of the LDA matrix of views (between / within sample)",
        citation="Thilak et al., LiDAR, ICLR 2024",
    ),
    MetricSpec(
        name="alignment",
        kind="views",
        needs="views",
        compute=_alignment,
        function=alignment,
        higher_is_better=False,
        cross_architecture=True,
        default=True,
        params={"alpha": 2},
        description="mean ||f(x) - f(x+)||^alpha of positive pairs (views 0 and 1)",
        citation=WANG_ISOLA,
    ),
    MetricSpec(
        name="uniformity",
        kind="views",
        needs="views",
        compute=_uniformity,
        function=uniformity,
        higher_is_better=False,
        cross_architecture=True,
        default=True,
        params={"t": 2},
        description="log mean exp(-t ||z_i - z_j||^2) over pairs (view 0)",
        citation=WANG_ISOLA,
    ),
    MetricSpec(
        name="linear_probe",
        kind="labels",
        needs="labels",
        compute=_linear_probe,
        function=linear_probe,
        higher_is_better=True,
        cross_architecture=True,
        default=True,
        params={"l2": None},
        context_params=PROBE_CONTEXT,
        # 2: L2 search stopped by the held-out rule, refit to max|grad| <= 1e-3.
        revision=2,
        description="linear-probe accuracy on a seeded stratified split",
        citation="standard SSL protocol",
    ),
    MetricSpec(
        name="ridge_probe",
        kind="labels",
        needs="labels",
        compute=_ridge_probe,
        function=ridge_probe,
        higher_is_better=True,
        cross_architecture=True,
        default=True,
        params={"l2": None, "l2_grid": DEFAULT_RIDGE_L2_GRID},
        context_params=PROBE_CONTEXT,
        description="closed-form ridge classifier (one-hot targets) accuracy, stratified split",
        citation="Rifkin & Klautau, JMLR 2004; Hastie et al., ESL 3.4.1",
    ),
    MetricSpec(
        name="knn_accuracy",
        kind="labels",
        needs="labels",
        compute=_knn_accuracy,
        function=knn_accuracy,
        higher_is_better=True,
        cross_architecture=True,
        default=True,
        params={"k_neighbors": 20, "temperature": 0.07},
        context_params=PROBE_CONTEXT,
        description="weighted cosine kNN accuracy on a seeded stratified split",
        citation="Wu et al., InstDisc, CVPR 2018",
    ),
    MetricSpec(
        name="label_ami",
        kind="labels",
        needs="labels",
        compute=_label_ami,
        function=cluster_agreement,
        higher_is_better=True,
        cross_architecture=False,
        default=True,
        params={"method": "ami"},
        context_params=CLUSTER_CONTEXT,
        description="AMI between the k-means clustering and the labels",
        citation=XU,
    ),
)
"""Every metric, in the order of tables and reports."""
