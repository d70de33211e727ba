"""Clustering metrics: k-means, the silhouette score and agreement between clusterings.

Xu, Lowe and Trappenberg (2024), "Label-free Monitoring of Self-Supervised Learning
Progress" (arXiv 2409.06612) cluster the embeddings with k-means and score the result by
the silhouette coefficient (Rousseeuw 1987) and by the agreement (adjusted mutual
information) between two clusterings, e.g. of two checkpoints or two seeds.

All functions are pure: tensors in, numbers out. ``kmeans`` and ``silhouette`` run on
the input's device (``kmeans`` uses numpy/BLAS kernels for CPU tensors, torch on
accelerators), in chunks so that memory stays bounded; their results match
scikit-learn's ``KMeans`` (up to the random seeding) and ``silhouette_score`` (exactly,
to floating-point rounding).

One module per engine: ``_kmeans`` (the public :func:`kmeans`: the best of its seeded
runs), ``_seeding`` (k-means++ of several runs in lockstep), ``_nearest`` (the GEMM
nearest-centre search with Yinyang bounds), ``_lloyd`` (Lloyd's iterations),
``_workers`` (the CPU thread pool and block sizes), ``_distances`` (the tiled pass over
all pairwise distances), ``_silhouette`` and ``_agreement``.
"""

from sslwatch.metrics.clustering._agreement import cluster_agreement
from sslwatch.metrics.clustering._distances import SampleDistances, distance_pass
from sslwatch.metrics.clustering._kmeans import KMeansResult, kmeans
from sslwatch.metrics.clustering._silhouette import silhouette, silhouette_and_shortlist

__all__ = [
    "KMeansResult",
    "SampleDistances",
    "cluster_agreement",
    "distance_pass",
    "kmeans",
    "silhouette",
    "silhouette_and_shortlist",
]
