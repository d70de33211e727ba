"""Differential entropy of an embedding distribution.

Xu, Lowe and Trappenberg (2024), "Label-free Monitoring of Self-Supervised Learning
Progress" (arXiv 2409.06612), track the entropy of the embedding distribution over
training: it falls for SimCLR and MoCo-v2 and rises for SimSiam. Two estimators are
offered:

- ``"knn"``: the Kozachenko-Leonenko k-nearest-neighbour estimator (non-parametric);
- ``"gaussian"``: the entropy of a Gaussian with the sample covariance (parametric).

Both return nats.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from sslwatch.metrics._scaling import unit_scaled
from sslwatch.metrics._validation import as_int, as_matrix, to_numpy
from sslwatch.metrics.clustering import distance_pass
from sslwatch.metrics.spectrum import covariance_eigenvalues

__all__ = ["entropy", "gaussian_entropy_from_eigenvalues"]

_ESTIMATORS = ("knn", "gaussian")

# k-th neighbour distances are floored at _R_FLOOR_REL * scale (see `entropy`).
_R_FLOOR_REL = 1e-10

# On CPU, a KD-tree beats the blocked brute force only in low dimension: its cost grows
# steeply with D (the curse of dimensionality), the brute force's only linearly.
_KDTREE_MAX_DIM = 8

# The brute force keeps at most this many (chunk x N) distance entries in memory.
_MAX_BLOCK_ENTRIES = 1 << 22


def entropy(
    z: Any, *, estimator: str = "knn", k: int = 3, shortlist: torch.Tensor | None = None
) -> float:
    r"""Differential entropy (nats) of the distribution the rows of ``z`` are drawn from.

    ``estimator="knn"`` (Kozachenko & Leonenko 1987; in the form of Kraskov, Stögbauer
    & Grassberger 2004, eq. 20, with the Euclidean norm):

    .. math::

        \hat H = \psi(N) - \psi(k) + \log V_D + \frac{D}{N}\sum_{i=1}^N \log r_i,
        \qquad V_D = \frac{\pi^{D/2}}{\Gamma(D/2 + 1)},

    where :math:`r_i` is the Euclidean distance from :math:`z_i` to its k-th nearest
    neighbour among the other rows (the point itself is excluded by index, so an exact
    copy counts as a neighbour at distance 0) and :math:`V_D` is the volume of the unit
    D-ball (computed in log space). Neighbours are exact: on CPU with D <= 8 a
    ``scipy.spatial.cKDTree`` (float64); otherwise (or on GPU) the blocked pass of
    :func:`sslwatch.metrics.clustering.distance_pass` (float64 tiles of the upper
    triangle, memory O(tile^2)) shortlists the 2k+8 nearest candidates, which are then
    re-measured as float64 differences, so only near-ties within float64 rounding could
    pick another neighbour at the same distance.

    Duplicates: if a point has ``k`` or more exact copies, :math:`r_i = 0` and
    :math:`\log r_i = -\infty`. Every :math:`r_i` is therefore floored at
    ``1e-10 * s``, where ``s`` is the data scale: the root mean per-dimension variance
    :math:`\sqrt{\operatorname{tr}\hat\Sigma / D}` (population variance), or, when that is
    0 (every row identical), ``max |z|``, or 1 when ``z`` is all zeros. A fully collapsed
    set thus gives a very negative but finite value,
    :math:`\psi(N) - \psi(k) + \log V_D + D\log(10^{-10} s)`. Because the floor scales with
    the data, ``entropy(c * z) == entropy(z) + D * log(c)`` holds exactly (c > 0).

    ``estimator="gaussian"``: :math:`\tfrac12 \log\det(2\pi e\,\hat\Sigma)` with
    :math:`\hat\Sigma` the sample covariance (denominator N-1), from the float64
    covariance eigenvalues of :func:`sslwatch.metrics.spectrum.covariance_eigenvalues`
    (``method="gram"``: the D x D centred Gram matrix, or the N x N one when N < D). If
    :math:`\hat\Sigma` is singular to working precision -- an eigenvalue below that
    module's rank tolerance, always the case when N <= D, with a constant dimension, or
    with linearly dependent dimensions -- the entropy is :math:`-\infty` and
    ``float("-inf")`` is returned (no exception); ``evaluate``'s ``entropy_gaussian``
    applies the same rule (:func:`gaussian_entropy_from_eigenvalues`).

    Args:
        z: embeddings of shape (N, D), ``torch.Tensor`` (CPU or GPU, any float dtype) or
            numpy array.
        estimator: ``"knn"`` or ``"gaussian"``.
        k: neighbour rank for ``"knn"`` (1 <= k < N); ignored by ``"gaussian"``.
        shortlist: for ``"knn"``, the (N, min(N-1, 2k+8)) neighbour candidates of
            :func:`sslwatch.metrics.clustering.distance_pass` when a caller already
            visited every pairwise distance (:func:`sslwatch.evaluate` shares one pass
            with the silhouette); distances are still re-measured exactly.

    Returns:
        The entropy estimate in nats.

    Raises:
        ValueError: unknown ``estimator``; ``k`` not a positive integer or ``k >= N``;
            ``z`` not 2-D, non-float, with NaN/Inf, or with fewer than 2 rows.
    """
    if not isinstance(estimator, str) or estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}; got {estimator!r}.")
    # H(c z) = H(z) + D log c for both estimators: compute at max|z| in [0.5, 1) (an exact
    # power-of-two rescaling) and shift back, so no square overflows or underflows.
    x, exponent = unit_scaled(as_matrix(z, name="z", min_rows=2))
    shift = x.shape[1] * exponent * math.log(2.0)
    if estimator == "gaussian":
        # Centred in float64 first: the Gram route's rank tolerance then sees the spread of
        # the rows, not their offset (which cancels exactly here, unlike in raw moments).
        x64 = x.to(torch.float64)
        lam = covariance_eigenvalues(x64 - x64.mean(dim=0), method="gram")
        return gaussian_entropy_from_eigenvalues(lam) + shift
    k = as_int(k, "k", hint=" (a positive integer: the neighbour rank)")
    n = x.shape[0]
    if k >= n:
        raise ValueError(
            f"k={k} needs at least k+1={k + 1} samples but z has N={n} rows; "
            "lower k or pass more samples."
        )
    return _knn_entropy(x, k, shortlist) + shift


def _knn_entropy(x: torch.Tensor, k: int, shortlist: torch.Tensor | None = None) -> float:
    n, d = x.shape
    if shortlist is None and x.device.type == "cpu" and d <= _KDTREE_MAX_DIM:
        r, scale2 = _kth_distance_kdtree(to_numpy(x).astype(np.float64, copy=False), k)
    else:
        r_t, scale2_t = _kth_distance_brute(x, k, shortlist)
        r, scale2 = to_numpy(r_t), float(scale2_t)
    scale = math.sqrt(scale2)
    if not scale > 0.0:
        scale = float(x.abs().max())
        if not scale > 0.0:
            scale = 1.0
    r = np.maximum(r, _R_FLOOR_REL * scale)
    log_unit_ball = 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1.0))
    mean_log_r = float(np.mean(np.log(r)))
    return float(digamma(n) - digamma(k) + log_unit_ball + d * mean_log_r)


def _kth_distance_kdtree(x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """k-th neighbour distances (self excluded) and mean per-dimension variance."""
    centred = x - x.mean(axis=0)
    scale2 = float(np.mean(np.einsum("ij,ij->i", centred, centred)) / x.shape[1])
    tree = cKDTree(centred)
    # The k+1 nearest include the point itself (distance 0); with exact copies another
    # zero-distance point may come first, which leaves the (k+1)-th distance unchanged.
    dist, _ = tree.query(centred, k=k + 1, workers=max(1, torch.get_num_threads()))
    return np.asarray(dist[:, -1], dtype=np.float64), scale2


def _kth_distance_brute(
    x: torch.Tensor, k: int, candidates: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-th neighbour distances from a shortlist, on ``x.device``.

    The shortlist holds each row's ``m = min(N-1, 2k+8)`` nearest other rows by the
    float64 GEMM distance of :func:`sslwatch.metrics.clustering.distance_pass` (computed
    here unless an evaluation's shared pass already did); their distances are then
    recomputed from float64 differences of the original rows, so exact duplicates give
    exactly 0 and the rounding of the matrix product does not reach the result.
    """
    n, d = x.shape
    m = shortlist_size(k, n)
    if candidates is None:
        candidates = distance_pass(x, None, 1, "euclidean", candidates=m).candidates
    if candidates is None or candidates.shape != (n, m):
        raise ValueError(f"the kNN shortlist must have shape ({n}, {m})")
    xc = x - x.mean(dim=0, dtype=torch.float64).to(x.dtype)
    scale2 = (xc * xc).sum(dim=1).double().mean() / d
    chunk = max(1, min(n, _MAX_BLOCK_ENTRIES // max(1, m * d)))
    x64 = x.double()
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        diff = x64[candidates[a:b]].sub_(x64[a:b].unsqueeze(1))
        out[a:b] = torch.kthvalue(diff.square_().sum(dim=2), k, dim=1).values
    return out.sqrt_(), scale2


def shortlist_size(k: int, n: int) -> int:
    """Candidates kept per row for the k-th neighbour: ``min(N - 1, 2k + 8)``."""
    return min(n - 1, 2 * k + 8)


def gaussian_entropy_from_eigenvalues(lam: Any) -> float:
    """0.5 log det(2 pi e Sigma) = 0.5 (D log(2 pi e) + sum_i log lambda_i), in nats.

    ``lam`` are the D covariance eigenvalues (e.g. ``Spectra.covariance_eigenvalues``,
    whose values below the rank tolerance of :mod:`sslwatch.metrics.spectrum` are exactly
    0). A singular covariance (any eigenvalue 0: always when N <= D) has no density, and
    the result is ``-inf``. The one rule for :func:`entropy` and ``evaluate``.
    """
    e = np.asarray(lam, dtype=np.float64)
    if e.size == 0 or not np.all(e > 0.0):
        return -math.inf
    return float(0.5 * (e.size * math.log(2.0 * math.pi * math.e) + np.sum(np.log(e))))
