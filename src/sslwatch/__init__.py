"""sslwatch: label-free quality metrics for self-supervised encoders.

The metric maths live in :mod:`sslwatch.metrics` (pure functions); every metric is
declared once in :data:`REGISTRY`; :func:`evaluate` runs them on one embedding set and
records each value's :class:`MetricDefinition`.
"""

from sslwatch._version import __version__
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.evaluate import Evaluation, MetricValue, evaluate
from sslwatch.core.registry import REGISTRY, MetricSpec
from sslwatch.metrics.clustering import KMeansResult, cluster_agreement, kmeans, silhouette
from sslwatch.metrics.entropy import entropy
from sslwatch.metrics.probes import knn_accuracy, linear_probe, ridge_probe, stratified_split
from sslwatch.metrics.spectrum import (
    SecondMoments,
    alpha_req,
    condition_number,
    nesum,
    participation_ratio,
    rankme,
    second_moments,
    singular_values,
    stable_rank,
)
from sslwatch.metrics.views import alignment, collapse_std, lidar, uniformity
from sslwatch.online.hooks import LayerWatch, watch
from sslwatch.online.monitor import (
    CollapseAlarms,
    CollapseWarning,
    InvalidLabelsError,
    Monitor,
    MonitorResult,
    NonFiniteWarning,
)
from sslwatch.online.settings import MonitorSettings

__all__ = [
    "REGISTRY",
    "CollapseAlarms",
    "CollapseWarning",
    "Evaluation",
    "InvalidLabelsError",
    "KMeansResult",
    "LayerWatch",
    "MetricDefinition",
    "MetricSpec",
    "MetricValue",
    "Monitor",
    "MonitorResult",
    "MonitorSettings",
    "NonFiniteWarning",
    "SecondMoments",
    "__version__",
    "alignment",
    "alpha_req",
    "cluster_agreement",
    "collapse_std",
    "condition_number",
    "entropy",
    "evaluate",
    "kmeans",
    "knn_accuracy",
    "lidar",
    "linear_probe",
    "nesum",
    "participation_ratio",
    "rankme",
    "ridge_probe",
    "second_moments",
    "silhouette",
    "singular_values",
    "stable_rank",
    "stratified_split",
    "uniformity",
    "watch",
]
