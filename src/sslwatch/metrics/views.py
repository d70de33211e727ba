"""Metrics on several views (augmentations) of the same samples, and on the hypersphere.

- :func:`lidar`: LiDAR, the effective rank of the LDA matrix of the surrogate
  "one class per source sample" task (Thilak et al., ICLR 2024, arXiv 2312.04000).
- :func:`alignment` and :func:`uniformity`: the two properties of contrastive
  representations of Wang & Isola (ICML 2020, arXiv 2005.10242).
- :func:`collapse_std`: the per-dimension standard deviation of L2-normalised
  embeddings used to detect collapse in SimSiam (Chen & He, CVPR 2021, arXiv 2011.10566).

L2 normalisation (``alignment``, ``uniformity``, ``collapse_std``) divides each row by its
Euclidean norm after an exact power-of-two rescaling of the row
(:func:`sslwatch.metrics._scaling.unit_rows`), so the result is the same at any scale of
z (a plain ``z / max(||z||, 1e-12)`` shrinks rows below 1e-12 and overflows float32 rows
near 1e19); an all-zero row stays the zero vector (it is not dropped and does not
produce NaN).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from sslwatch.metrics._scaling import unit_rows, unit_scaled
from sslwatch.metrics._validation import as_matrix, as_views, is_real

__all__ = ["alignment", "collapse_std", "lidar", "uniformity"]

_RIDGE_MIN, _RIDGE_MAX = 1e-300, 1e300
# Chunked computations keep at most this many (chunk x N) or (chunk x D) entries alive.
_MAX_BLOCK_ENTRIES = 1 << 22


def lidar(views: Any, *, delta: float = 1e-4, eps: float = 1e-8) -> float:
    r"""LiDAR: effective rank of the linear discriminant matrix of a multi-view sample.

    Thilak, Huang, Saremi, Dinh, Goh, Nakkiran, Susskind & Littwin, "LiDAR: Sensing
    Linear Probing Performance in Joint Embedding SSL Architectures", ICLR 2024
    (arXiv 2312.04000). Each of the ``n`` source samples is a surrogate class whose
    members are its ``q`` augmented views :math:`e_{ij}`. With class means
    :math:`\mu_i = \frac1q\sum_j e_{ij}` and grand mean :math:`\mu = \frac1n\sum_i \mu_i`:

    .. math::

        \Sigma_b = \frac{1}{n-1}\sum_i (\mu_i-\mu)(\mu_i-\mu)^\top, \qquad
        \Sigma_w = \frac{1}{n(q-1)}\sum_{i,j}(e_{ij}-\mu_i)(e_{ij}-\mu_i)^\top + \delta I,

        \Sigma_{\rm LiDAR} = \Sigma_w^{-1/2}\,\Sigma_b\,\Sigma_w^{-1/2}, \qquad
        p_k = \frac{\lambda_k}{\sum_l \lambda_l} + \epsilon, \qquad
        \mathrm{LiDAR} = \exp\Big(-\sum_k p_k \log p_k\Big),

    with :math:`\lambda_k` the eigenvalues of :math:`\Sigma_{\rm LiDAR}` (the RankMe
    effective rank of its spectrum). :math:`\Sigma_w^{-1/2}` comes from the symmetric
    eigendecomposition of :math:`\Sigma_w` (eigenvalues clamped at ``delta``, their exact
    lower bound, against rounding); :math:`\Sigma_{\rm LiDAR}` is symmetrised and its
    eigenvalues clamped at 0. Everything is computed in float64 on the input's device.

    Normalisation: the paper writes both matrices as expectations,
    :math:`\Sigma_b = E_x[(\mu_x-\mu)(\mu_x-\mu)^\top]` and
    :math:`\Sigma_w = E_x E_{\tilde x|x}[(e(\tilde x)-\mu_x)(e(\tilde x)-\mu_x)^\top] +
    \delta I`, i.e. with :math:`\delta` added to the estimated within-class covariance
    (not to the scatter sum). We use the unbiased sample estimators of those expectations,
    1/(n-1) for :math:`\Sigma_b` and 1/(n(q-1)) for :math:`\Sigma_w` (each class
    contributes q-1 degrees of freedom), with :math:`\delta I` added after normalising, as
    do the public implementations we checked (stable-pretraining's ``LiDAR`` callback and a
    standalone reference implementation). The :math:`\Sigma_b` factor cancels in p, so
    1/(n-1) vs 1/n is immaterial; the :math:`\Sigma_w` factor matters only through its
    balance with :math:`\delta` (1/(nq) instead would move typical values by 1e-6 to 1e-3
    relative). The defaults ``delta=1e-4``, ``eps=1e-8`` match that callback.

    Degenerate input: if every sample mean is identical (e.g. fully collapsed embeddings),
    :math:`\Sigma_b = 0`, the spectrum is all zeros (p would be 0/0) and 1.0 is returned,
    the smallest effective rank.

    Properties: invariant to the order of the views within a sample, to the order of the
    samples, and to a rotation plus translation of the embedding space (applied to all
    views alike). Ranges in [1, min(d, n-1)] up to ``eps``. *Not* invariant to the scale
    of the embeddings: :math:`\delta` is in squared embedding units, and
    LiDAR(c e; delta) = LiDAR(e; delta / c^2) (which is how it is computed: at max|e| ~ 1,
    so no square overflows). When :math:`\delta` exceeds 10% of the mean within-sample
    variance (trace of the estimated :math:`\Sigma_w` over d), the ridge rather than the
    views shapes the value, and a :class:`UserWarning` says so.

    Args:
        views: array of shape (n, q, d): n >= 2 source samples, q >= 2 views each, d
            features (``torch.Tensor`` on any device, or numpy).
        delta: ridge added to the within-class covariance (> 0).
        eps: smoothing added to each normalised eigenvalue (>= 0).

    Returns:
        The LiDAR score, a float in [1, d].

    Raises:
        ValueError: wrong shape, fewer than 2 samples or views, non-finite values, or an
            invalid ``delta``/``eps``.
    """
    if not is_real(delta) or not delta > 0.0 or not math.isfinite(delta):
        raise ValueError(
            f"delta must be a finite number > 0 (the ridge on Sigma_w); got {delta!r}."
        )
    if not is_real(eps) or not eps >= 0.0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}.")
    v = as_views(views, name="views")
    n, q, d = v.shape
    if n < 2:
        raise ValueError(
            f"views has n={n} source sample; LiDAR needs at least 2 samples (classes) "
            "to form a between-class covariance."
        )
    v, exponent = unit_scaled(v.to(torch.float64))
    # LiDAR(c e; delta) = LiDAR(e; delta / c^2); beyond float64's range the ridge is kept
    # at its bound, where it already dominates (or vanishes) completely.
    log2_delta = math.log2(float(delta)) - 2 * exponent
    delta = 2.0 ** min(max(log2_delta, math.log2(_RIDGE_MIN)), math.log2(_RIDGE_MAX))
    means = v.mean(dim=1)
    centred_means = means - means.mean(dim=0)
    sigma_b = centred_means.T @ centred_means / (n - 1)
    within = (v - means.unsqueeze(1)).reshape(n * q, d)
    sigma_w = within.T @ within / (n * (q - 1))
    spread = float(torch.trace(sigma_w)) / d
    if spread > 0.0 and delta > 0.1 * spread:  # (identical views: nothing to compare)
        warnings.warn(
            f"LiDAR: the ridge delta is {delta / spread:.3g}x the mean within-sample "
            "variance of these views (scale-dependent by definition), so delta rather "
            "than the views shapes the value; rescale the embeddings (e.g. to unit "
            "variance) or pass a delta about 1e-4 of their variance.",
            UserWarning,
            stacklevel=2,
        )
    sigma_w.diagonal().add_(delta)
    sigma_w = 0.5 * (sigma_w + sigma_w.T)
    w_eig, w_vec = torch.linalg.eigh(sigma_w)
    w_inv_sqrt = (w_vec * w_eig.clamp_min(delta).rsqrt().unsqueeze(0)) @ w_vec.T
    sigma_l = w_inv_sqrt @ sigma_b @ w_inv_sqrt
    sigma_l = 0.5 * (sigma_l + sigma_l.T)
    lam = torch.linalg.eigvalsh(sigma_l).clamp_min(0.0)
    total = float(lam.sum())
    if not total > 0.0:
        return 1.0
    p = lam / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def alignment(z1: Any, z2: Any, alpha: float = 2) -> float:
    r"""Alignment of positive pairs (Wang & Isola, ICML 2020, arXiv 2005.10242).

    .. math::

        \mathcal L_{\rm align} = \frac1N \sum_{i=1}^N \lVert f(x_i) - f(y_i)\rVert_2^\alpha,

    where row i of ``z1`` and row i of ``z2`` are the embeddings of two views of the same
    sample, each L2-normalised (zero rows stay zero, see the module docstring). Lower is
    better (views map to nearby points); in [0, 2^alpha]. Computed in float64, chunked.

    Args:
        z1: (N, D) embeddings of the first views.
        z2: (N, D) embeddings of the second views, same shape as ``z1``.
        alpha: exponent (> 0); 2 in the paper.

    Raises:
        ValueError: shapes differ, non-finite values, N < 1, or ``alpha <= 0``.
    """
    if not is_real(alpha) or not alpha > 0.0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number > 0; got {alpha!r}.")
    a = as_matrix(z1, name="z1", min_rows=1)
    b = as_matrix(z2, name="z2", min_rows=1)
    if a.shape != b.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape (row i of each is a positive pair); got "
            f"{tuple(a.shape)} and {tuple(b.shape)}."
        )
    if a.device != b.device:
        raise ValueError(f"z1 is on {a.device} but z2 is on {b.device}; move them together.")
    n, d = a.shape
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for lo, hi in _chunks(n, d):
        diff = _normalise(a[lo:hi].double()) - _normalise(b[lo:hi].double())
        total += torch.linalg.vector_norm(diff, dim=1).pow(alpha).sum()
    return float(total) / n


def uniformity(z: Any, t: float = 2) -> float:
    r"""Uniformity on the hypersphere (Wang & Isola, ICML 2020, arXiv 2005.10242).

    .. math::

        \mathcal L_{\rm uniform} = \log \frac{2}{N(N-1)} \sum_{i<j}
            e^{-t \lVert f(x_i) - f(x_j)\rVert_2^2}

    on L2-normalised rows (zero rows stay zero). Lower (more negative) is more uniform;
    the value lies in [-4t, 0] for unit rows (0 = fully collapsed). Squared distances come
    from a matrix product in the input's dtype (``|a|^2 + |b|^2 - 2 a.b``, clamped at 0);
    the exponentials are summed in float64 with a running ``logsumexp`` over row chunks
    of the upper triangle, so memory is O(chunk * N) and N in the tens of thousands fits.

    Args:
        z: (N, D) embeddings, N >= 2.
        t: temperature (> 0); 2 in the paper.

    Raises:
        ValueError: fewer than 2 rows, non-finite values, or ``t <= 0``.
    """
    if not is_real(t) or not t > 0.0 or not math.isfinite(t):
        raise ValueError(f"t must be a finite number > 0; got {t!r}.")
    x = as_matrix(z, name="z", min_rows=2)
    n = x.shape[0]
    u = _normalise(x)
    sq = (u * u).sum(dim=1)
    chunk = max(1, min(n, _MAX_BLOCK_ENTRIES // n))
    acc = torch.tensor(float("-inf"), dtype=torch.float64, device=x.device)
    cols = torch.arange(n, device=x.device)
    for lo in range(0, n - 1, chunk):
        hi = min(n - 1, lo + chunk)
        # Pairs (i, j) with lo <= i < hi and j > i: columns lo+1 .. n-1.
        right = u[lo + 1 :]
        d2 = torch.addmm(sq[lo + 1 :].unsqueeze(0), u[lo:hi], right.T, alpha=-2.0)
        d2 = d2.add_(sq[lo:hi].unsqueeze(1)).clamp_min_(0.0).double()
        logits = d2.mul_(-t)
        rows = torch.arange(lo, hi, device=x.device).unsqueeze(1)
        logits.masked_fill_(cols[lo + 1 :].unsqueeze(0) <= rows, float("-inf"))
        acc = torch.logaddexp(acc, torch.logsumexp(logits.reshape(-1), dim=0))
    return float(acc) - math.log(n * (n - 1) / 2)


def collapse_std(z: Any) -> float:
    r"""Mean per-dimension standard deviation of L2-normalised embeddings.

    Chen & He, "Exploring Simple Siamese Representation Learning" (SimSiam), CVPR 2021
    (arXiv 2011.10566), Fig. 2: with :math:`u_i = z_i / \lVert z_i\rVert_2`,

    .. math::

        \mathrm{collapse\_std} = \frac1D \sum_{d=1}^D
            \sqrt{\frac{1}{N-1}\sum_i (u_{id} - \bar u_d)^2}.

    The standard deviation uses the unbiased denominator N-1 (``torch.std``'s default, as
    in the paper's and lightly's ``std_of_l2_normalized``). Near 0 means collapse to a
    single direction; for an isotropic Gaussian (unit vectors uniform on the sphere) it
    is close to :math:`1/\sqrt{D}`. Computed in float64 in two chunked passes (mean, then
    squared deviations). Zero rows stay zero (see the module docstring).

    Args:
        z: (N, D) embeddings, N >= 2.

    Raises:
        ValueError: fewer than 2 rows or non-finite values.
    """
    x = as_matrix(z, name="z", min_rows=2)
    n, d = x.shape
    total = torch.zeros(d, dtype=torch.float64, device=x.device)
    for lo, hi in _chunks(n, d):
        total += _normalise(x[lo:hi].double()).sum(dim=0)
    mean = total / n
    ss = torch.zeros(d, dtype=torch.float64, device=x.device)
    for lo, hi in _chunks(n, d):
        dev = _normalise(x[lo:hi].double()) - mean
        ss += (dev * dev).sum(dim=0)
    return float(torch.sqrt(ss / (n - 1)).mean())


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return unit_rows(x)


def _chunks(n: int, d: int) -> Iterator[tuple[int, int]]:
    step = max(1, _MAX_BLOCK_ENTRIES // max(d, 1))
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)
