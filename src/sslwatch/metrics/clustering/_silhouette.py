"""The silhouette score (Rousseeuw 1987), exactly as scikit-learn's, from one blocked
pass over the pairwise distances."""

from __future__ import annotations

import math
from typing import Any

import torch

from sslwatch.metrics._validation import as_int, as_labels, as_matrix
from sslwatch.metrics.clustering._distances import distance_pass

_METRICS = ("euclidean", "cosine")


def silhouette(
    z: Any,
    labels: Any,
    *,
    metric: str = "euclidean",
    sample_size: int | None = None,
    seed: int = 0,
) -> float:
    """Mean silhouette coefficient, exactly as ``sklearn.metrics.silhouette_score``.

    For sample i in cluster A with ``|A| > 1``: ``a(i)`` is the mean distance to the
    other members of A, ``b(i) = min_{B != A} mean_{j in B} d(i, j)``, and
    ``s(i) = (b(i) - a(i)) / max(a(i), b(i))`` (0 when both are 0); ``s(i) = 0`` for a
    singleton cluster. The score is ``mean_i s(i)`` in [-1, 1] (Rousseeuw 1987), used as a
    label-free progress signal by Xu, Lowe & Trappenberg (2024, arXiv 2409.06612).

    ``metric="euclidean"`` uses ``||x - y||``; ``metric="cosine"`` uses
    ``1 - cos(x, y)`` clipped to [0, 2], with an all-zero row at distance 1 from every
    other row (as scikit-learn). A sample's distance to itself is always 0.

    Exact, fast algorithm: samples are sorted by label, so that every cluster is a
    contiguous range, and the distance matrix is visited in square tiles (2048 x 2048 on
    the CPU). Each tile is one float64 GEMM of augmented factors,
    ``[-2x, ||x||^2, 1] . [y, 1, ||y||^2] = ||x - y||^2`` (data centred first to limit
    cancellation), clamped at 0 and square-rooted. Only tiles on or above the diagonal
    are formed (the matrix is symmetric): each adds its row sums over every cluster's
    column range to its rows and, mirrored, its column sums over every cluster's row
    range to its columns (on accelerators, a one-hot GEMM). Memory: the float64 copy of
    the data, one tile, and the (N, C) per-cluster sums; with very many clusters (N * C
    beyond 64 MiB) each band of rows is reduced on its own instead (twice the
    arithmetic, O(tile * (tile + C)) for the sums).

    Args:
        z: (N, D) embeddings (``torch.Tensor`` or numpy), N >= 2.
        labels: (N,) cluster labels of any hashable type (only the partition matters).
        metric: ``"euclidean"`` or ``"cosine"``.
        sample_size: if given, score a uniform random subsample of this many samples
            drawn without replacement with a ``torch.Generator`` seeded by ``seed``
            (the same procedure as scikit-learn's ``sample_size`` + ``random_state``,
            but a different RNG, so the subsample, and hence the value, differ from
            scikit-learn's for the same integer seed). ``sample_size >= N`` scores all
            samples.
        seed: seed for the subsample; ignored when ``sample_size`` is None.

    Returns:
        The mean silhouette coefficient as a float; NaN when (after subsampling) there
        are fewer than 2 distinct labels or as many labels as samples, where the
        silhouette is undefined (scikit-learn raises a ValueError there instead).

    Raises:
        ValueError: on NaN/Inf, non 2-D input, N < 2, labels of the wrong length, an
            unknown metric or ``sample_size < 2``.
    """
    x = as_matrix(z, name="z", min_rows=2)
    n = x.shape[0]
    codes = as_labels(labels, n)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    if sample_size is not None:
        sample_size = as_int(sample_size, "sample_size", low=2)
        if sample_size < n:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(int(seed))
            idx = torch.randperm(n, generator=gen)[:sample_size]
            x = x[idx.to(x.device)]
            codes = codes[idx.numpy()]
    score, _ = silhouette_and_shortlist(x, codes, metric=metric)
    assert score is not None
    return score


def silhouette_and_shortlist(
    z: Any, labels: Any | None, *, metric: str = "euclidean", candidates: int = 0
) -> tuple[float | None, torch.Tensor | None]:
    """:func:`silhouette` of ``labels`` and each row's ``candidates`` nearest other rows,
    from one pass over the pairwise distances (:func:`distance_pass`).

    Returns ``(mean silhouette or None without labels, (N, candidates) indices or None)``;
    the silhouette is NaN where :func:`silhouette` returns NaN.
    """
    x = as_matrix(z, name="z", min_rows=2)
    n = x.shape[0]
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    lab, n_labels, score = None, 1, None
    if labels is not None:
        codes = as_labels(labels, n)
        n_labels = int(codes.max()) + 1
        score = math.nan
        if 1 < n_labels < n:
            lab = torch.as_tensor(codes, dtype=torch.int64, device=x.device)
    if lab is None and candidates <= 0:
        return score, None
    res = distance_pass(x, lab, n_labels, metric, candidates=candidates)
    if res.silhouette is not None:
        score = float(res.silhouette.mean())
    return score, res.candidates
