"""The shared inputs of one evaluation, with the intermediate results metrics share.

Several metrics share expensive work: every spectrum metric reads the same singular
values; the silhouette, the clustering agreement and the label AMI read the same
k-means clustering; both probes read the same train/test split. A
:class:`MetricContext` computes each of these once, on first use, and times it, so the
suite can report where the time went. It is built either from a full embedding matrix
(:func:`sslwatch.evaluate`) or from streamed moments and a reservoir sample (the
training-time monitor): the metric glue in :mod:`sslwatch.core.catalog` cannot tell the
difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from sslwatch.metrics._validation import as_int, is_int
from sslwatch.metrics.clustering import KMeansResult, kmeans, silhouette_and_shortlist
from sslwatch.metrics.entropy import shortlist_size
from sslwatch.metrics.probes import stratified_split
from sslwatch.metrics.spectrum import SecondMoments, Spectra, spectra_from_moments

T = TypeVar("T")

DEFAULT_K = 10
"""k for k-means when no labels are given: 10 clusters, clipped to [2, N - 1]."""

KMEANS_N_INIT = 3
"""k-means restarts (best inertia kept) for every clustering metric."""

PROBE_TEST_FRACTION = 0.2
"""Share of the labelled sample held out to measure probe accuracy (stratified, seeded)."""


def resolve_k(k: Any, n: int, labels: np.ndarray | None = None) -> int:
    """The number of k-means clusters: the user's ``k``, else the documented rule.

    A given ``k`` must be an integer >= 2 (else ``ValueError``). Without one: with
    labels, k is the number of distinct classes (as in Xu et al. 2024), at least 2;
    without labels, k = 10 (the class count of the benchmarks the papers use), clipped
    to [2, n - 1] so the silhouette stays defined.
    """
    if k is not None:
        return as_int(k, "k", low=2, hint=" (number of k-means clusters)")
    if labels is not None:
        return max(2, len(np.unique(labels)))
    return int(min(max(2, DEFAULT_K), max(2, n - 1)))


@dataclass
class MetricContext:
    """Inputs and shared intermediate results for one evaluation.

    Attributes:
        n_total: number of embeddings the moments summarise (all of them).
        d: embedding dimension.
        dtype: dtype of the embeddings as given, recorded in definitions.
        moments: float64 second moments of all embeddings (spectrum metrics); ``None``
            when the spectra were computed directly (N < D).
        sample: the seeded sample of points for point-based metrics, or ``None``.
        views: (n, q, d) augmented views, or ``None``.
        labels: labels aligned with ``sample`` (int64 codes), or ``None``.
        k: number of k-means clusters.
        seed: seed for k-means, subsampling and the probe split.
        sample_size: the requested sample size (``None`` = all points), recorded.
        kmeans_n_init: k-means restarts for every clustering metric.
        probe_test_fraction: share of the labelled sample held out by the probes.
        plan: the metrics this evaluation will compute, with their parameters (set by
            :func:`sslwatch.core.evaluate.compute_metrics`), so shared work serves all of them.
        spectrum_exponent: the moments/spectra are of z * 2^-e for this e (an exact
            rescaling that keeps float64 squares in range); scale-free metrics ignore it.
    """

    n_total: int
    d: int
    dtype: str
    moments: SecondMoments | None = None
    sample: torch.Tensor | None = None
    views: torch.Tensor | None = None
    labels: np.ndarray | None = None
    k: int = DEFAULT_K
    seed: int = 0
    sample_size: int | None = None
    kmeans_n_init: int = KMEANS_N_INIT
    probe_test_fraction: float = PROBE_TEST_FRACTION
    plan: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    spectrum_exponent: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def cached(self, key: str, build: Callable[[], T]) -> T:
        """Return ``build()``, computed once per context and timed under ``key``."""
        if key not in self._cache:
            start = time.perf_counter()
            self._cache[key] = build()
            self.timings[key] = time.perf_counter() - start
        result: T = self._cache[key]
        return result

    @property
    def shared_seconds(self) -> float:
        """Total time spent building shared intermediate results so far."""
        return sum(self.timings[key] for key in self._cache if key in self.timings)

    @property
    def n_sample(self) -> int:
        """Number of points the point-based metrics see."""
        return 0 if self.sample is None else int(self.sample.shape[0])

    @property
    def n_views(self) -> int:
        """Number of source samples with views."""
        return 0 if self.views is None else int(self.views.shape[0])

    def require_sample(self) -> torch.Tensor:
        """The point sample; a clear error when the context has none."""
        if self.sample is None:
            raise ValueError("this metric needs embedding points, but none were kept")
        return self.sample

    def require_views(self) -> torch.Tensor:
        """The (n, q, d) views; a clear error when there are none."""
        if self.views is None:
            raise ValueError("this metric needs augmented views; pass views=")
        return self.views

    def require_labels(self) -> np.ndarray:
        """The labels aligned with the sample; a clear error when there are none."""
        if self.labels is None:
            raise ValueError("this metric needs labels; pass labels=")
        return self.labels

    @property
    def spectra(self) -> Spectra:
        """Singular values and covariance eigenvalues of all embeddings (cached).

        From :attr:`moments`, unless the builder cached ``"spectra"`` directly (the
        N < D route of :func:`sslwatch.evaluate`).
        """
        if "spectra" in self._cache:
            cached: Spectra = self._cache["spectra"]
            return cached
        moments = self.moments
        if moments is None:
            raise ValueError("spectrum metrics need the second moments of the embeddings")
        return self.cached("spectra", lambda: spectra_from_moments(moments))

    def kmeans_of(self, points: torch.Tensor, key: str, seed: int) -> KMeansResult:
        """k-means with this context's k on ``points`` (cached under ``key``)."""
        k = min(self.k, int(points.shape[0]))
        return self.cached(
            f"kmeans[{key},seed={seed}]",
            lambda: kmeans(points, k, n_init=self.kmeans_n_init, seed=seed),
        )

    def sample_clustering(self, seed_offset: int = 0) -> KMeansResult:
        """k-means of the point sample with seed ``seed + seed_offset``."""
        return self.kmeans_of(self.require_sample(), "sample", self.seed + seed_offset)

    def sample_distances(self, metric: str) -> tuple[float | None, torch.Tensor | None]:
        """One pass over the sample's pairwise distances for the silhouette and the kNN
        entropy (cached per ``metric``).

        Returns ``(silhouette of the seed-0 k-means clustering, kNN shortlist)``, each
        ``None`` unless :attr:`plan` computes that metric with this distance: the
        silhouette with ``metric``, the kNN entropy when ``metric`` is euclidean.
        """
        silhouette_p, entropy_p = self.plan.get("silhouette"), self.plan.get("entropy")
        labels = None
        if silhouette_p is not None and silhouette_p.get("metric") == metric:
            labels = self.sample_clustering().labels  # timed on its own, before the pass
        shortlist = 0
        if metric == "euclidean" and entropy_p is not None and entropy_p["estimator"] == "knn":
            k = entropy_p.get("k_neighbors")
            k_int = int(k) if is_int(k) else 0
            # a bad k is the entropy's own error to report, never the silhouette's
            if 1 <= k_int < self.n_sample:
                shortlist = shortlist_size(k_int, self.n_sample)
        sample = self.require_sample()
        return self.cached(
            f"sample_distances[{metric}]",
            lambda: silhouette_and_shortlist(sample, labels, metric=metric, candidates=shortlist),
        )

    def probe_split(self) -> tuple[np.ndarray, np.ndarray]:
        """Seeded stratified (train, test) indices into the labelled sample."""
        labels = self.require_labels()
        return self.cached(
            "probe_split",
            lambda: stratified_split(
                labels, test_fraction=self.probe_test_fraction, seed=self.seed
            ),
        )
