"""Spectrum metrics of an embedding matrix: RankMe, stable rank, NESum, alpha-ReQ, ...

Every metric here is a function of one of two spectra of the (N, D) embedding matrix z:

* the singular values sigma_1 >= ... >= sigma_m (m = min(N, D)) of the *uncentered* z
  (RankMe, stable rank, condition number), and
* the eigenvalues lambda_1 >= ... >= lambda_D of the *centered* sample covariance
  ``cov = (z - mean)^T (z - mean) / (N - 1)`` (NESum, participation ratio, alpha-ReQ).

Both only need the D x D second-moment matrices, so the module is built in three layers:

1. ``second_moments`` accumulates ``SecondMoments`` (n, sum of rows, sum of z_i z_i^T) in
   float64, chunked over rows; moments of batches (or of DDP ranks, via ``all_reduce`` on
   ``total`` and ``outer``) add up with ``merge`` / ``+``.
2. ``spectra_from_moments`` turns them into ``Spectra`` with two symmetric float64
   eigendecompositions.
3. Pure scalar functions (``rankme_from_singular_values``, ...) map a spectrum to a number.

The one-shot functions (``rankme(z)``, ...) use the same scalar functions on a spectrum
computed by the cheapest accurate route (``method``):

* ``"auto"`` (default): ``"gram"`` (``condition_number`` may then recompute with
  ``"svd"``, see there). Float32 Gram products are not used for one-shot
  values: they cannot resolve eigenvalues below about 1e-8 of the trace, and on low-rank
  (collapsing) embeddings that noise floor inflates RankMe by percents; the float64
  products cost no more on the CPU here (``benchmarks/bench_rankme.py``).
* ``"gram"``: float64 Gram matrix z^T z (D x D, N >= D) or z z^T (N x N, N < D),
  accumulated over chunks so float32 input is never upcast whole (``dsyrk`` on the CPU,
  float64 ``addmm_`` on other devices), then float64 ``eigvalsh``: float64 accuracy at
  about the cost of one float32 z^T z.
* ``"svd"``: a float64 SVD of z (slowest; full relative accuracy for tiny values).

Decompositions fall back to float64 on the CPU (numpy, then an SVD) when ``torch.linalg``
fails. Input is validated with ``as_matrix``; NaN/Inf are detected from the Gram diagonal
(a column's sum of squares) instead of a separate pass over z, and raise the same
ValueError. ``second_moments`` always uses float64 products (it is the exact reference
for streaming). Timing: the O(D^3) ``eigvalsh`` synchronises its threads once per column;
on an oversubscribed CPU, ``torch.set_num_threads(1)`` can make it several times faster.

Numerical conventions (shared by every route, so one-shot and streaming values agree to
float64 round-off):

* Float64 Gram accuracy: a singular value sigma_i comes out with an absolute error of
  about eps * sigma_1^2 / sigma_i (eps = 2.2e-16), i.e. at full relative accuracy for the
  well-resolved part of the spectrum; values below the rank tolerance are exactly 0.
  Pass ``method="svd"`` for an SVD of z in float64 when tiny singular values matter.
* Rank tolerance (as ``numpy.linalg.matrix_rank(G, hermitian=True)`` on a Gram matrix G):
  eigenvalues of the uncentered Gram below ``D * eps * lambda_max`` are set to exactly 0
  (singular values below about ``sqrt(D * eps) * sigma_1``). For the covariance, the
  tolerance is ``D * eps * max(lambda_max, sum_i |z_i|^2 / (N - 1))``: centering subtracts
  the mean, and variance below round-off of the *raw* second moment is not resolvable.
  Rank-deficient input therefore behaves like an exact SVD (zeros, not noise).
* Streaming covariance is formed as ``(outer - total total^T / n) / (n - 1)``: if the mean
  is large compared with the spread (|mean|^2 / variance ~ 1e8 and beyond), the small
  covariance eigenvalues lose digits to cancellation; center or standardise such features
  before accumulating. The one-shot functions center before forming the Gram matrix.
* Degenerate input: a spectrum whose sum is 0 (all-zero z for sigma; zero covariance, e.g.
  fully collapsed rows, for lambda) gives NaN for every scale-free ratio (0/0 has no
  value; NaN keeps a dead encoder from looking like a legitimate number). Fully collapsed
  but non-zero rows (all rows equal) have one positive singular value: RankMe ~ 1, stable
  rank 1, condition number 1, while the covariance metrics are NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import blas as _blas
from scipy.special import entr

from sslwatch.metrics._validation import as_int, as_matrix, is_int, is_real

__all__ = [
    "SecondMoments",
    "ShiftedGram",
    "Spectra",
    "add_gram",
    "add_gram_device",
    "alpha_req",
    "alpha_req_from_eigenvalues",
    "condition_number",
    "condition_number_from_singular_values",
    "covariance_eigenvalues",
    "nesum",
    "nesum_from_eigenvalues",
    "participation_ratio",
    "participation_ratio_from_eigenvalues",
    "rankme",
    "rankme_from_singular_values",
    "second_moments",
    "singular_values",
    "spectra",
    "spectra_from_moments",
    "stable_rank",
    "stable_rank_from_singular_values",
    "warn_if_rank_capped",
]

Method = Literal["auto", "gram", "svd"]

_EPS = float(np.finfo(np.float64).eps)
# Elements (not bytes) of one float64 chunk: 2**22 * 8 B = 32 MiB, e.g. 2048 rows at D=2048.
_CHUNK_ELEMENTS = 1 << 22
# condition_number(method="auto") keeps the Gram route only when its estimated relative
# error on sigma_min, D * eps * kappa^2 / 2, stays below this.
_COND_RTOL = 1e-10
# Largest / smallest |z| for which float64 squares summed over many rows stay finite and
# normal; outside, float64 inputs are rescaled by an exact power of two first.
_SAFE_MAX = 2.0**450
_SAFE_MIN = 2.0**-450
# Negative spectrum entries smaller than this fraction of the largest |entry| are round-off.
_NEG_RTOL = 1e-6
# Sample count used in the RankMe paper's experiments.
_PAPER_N = 25_600
# ShiftedGram (the Monitor's gram_dtype="float32"): rows per float32 product, and the range
# of max|z| in which float32 squares of centered chunks neither overflow nor underflow.
_MIXED_CHUNK_ROWS = 512
_MIXED_MIN = 2.0**-30
_MIXED_MAX = 2.0**30


# --------------------------------------------------------------------------------------
# Streaming state
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SecondMoments:
    """Additive float64 sufficient statistics of an embedding stream.

    Attributes:
        n: number of rows seen.
        total: (D,) float64 tensor, the sum of the rows, sum_i z_i.
        outer: (D, D) float64 tensor, the sum of outer products, sum_i z_i z_i^T.

    All three are sums, so moments of disjoint batches combine with ``merge`` (or ``+``,
    or ``sum(list_of_moments)``), and across DDP ranks with
    ``torch.distributed.all_reduce`` (op SUM) on ``total``, ``outer`` and ``n``.
    """

    n: int
    total: torch.Tensor
    outer: torch.Tensor

    def __post_init__(self) -> None:
        if not is_int(self.n):
            raise ValueError(f"SecondMoments.n must be an int row count; got {self.n!r}.")
        if self.n < 0:
            raise ValueError(f"SecondMoments.n must be >= 0; got {self.n}.")
        object.__setattr__(self, "n", int(self.n))
        if not isinstance(self.total, torch.Tensor) or not isinstance(self.outer, torch.Tensor):
            raise ValueError("SecondMoments.total and .outer must be torch.Tensors.")
        if self.total.dtype != torch.float64 or self.outer.dtype != torch.float64:
            raise ValueError(
                "SecondMoments.total and .outer must be float64 (accumulate in float64); got "
                f"{self.total.dtype} and {self.outer.dtype}."
            )
        if self.total.ndim != 1 or self.total.shape[0] == 0:
            raise ValueError(f"SecondMoments.total must have shape (D,); got {self.total.shape}.")
        d = self.total.shape[0]
        if tuple(self.outer.shape) != (d, d):
            raise ValueError(
                f"SecondMoments.outer must have shape ({d}, {d}) to match total; got "
                f"{tuple(self.outer.shape)}."
            )
        if self.total.device != self.outer.device:
            raise ValueError(
                f"SecondMoments.total is on {self.total.device} but outer is on "
                f"{self.outer.device}; keep both on one device."
            )

    @property
    def dim(self) -> int:
        """The embedding dimension D."""
        return int(self.total.shape[0])

    @property
    def device(self) -> torch.device:
        """The device holding ``total`` and ``outer``."""
        return self.total.device

    @classmethod
    def zeros(cls, dim: int, *, device: torch.device | str | None = None) -> SecondMoments:
        """The empty state (n = 0) for D = ``dim``, the identity of ``merge``."""
        dim = as_int(dim, "dim")
        return cls(
            n=0,
            total=torch.zeros(int(dim), dtype=torch.float64, device=device),
            outer=torch.zeros((int(dim), int(dim)), dtype=torch.float64, device=device),
        )

    def merge(self, other: SecondMoments) -> SecondMoments:
        """Moments of the union of both row sets (sums of every field)."""
        if not isinstance(other, SecondMoments):
            raise ValueError(f"can only merge SecondMoments; got {type(other).__name__}.")
        if other.dim != self.dim:
            raise ValueError(
                f"cannot merge SecondMoments of dimension {self.dim} and {other.dim}; "
                "accumulate one representation per state."
            )
        if other.device != self.device:
            raise ValueError(
                f"cannot merge SecondMoments on {self.device} and {other.device}; move one "
                "with SecondMoments(m.n, m.total.to(dev), m.outer.to(dev))."
            )
        return SecondMoments(
            n=self.n + other.n, total=self.total + other.total, outer=self.outer + other.outer
        )

    def __add__(self, other: object) -> SecondMoments:
        if not isinstance(other, SecondMoments):
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other: object) -> SecondMoments:
        # Lets the built-in sum() start from 0.
        if is_int(other) and other == 0:
            return self
        if isinstance(other, SecondMoments):
            return other.merge(self)
        return NotImplemented

    def mean(self) -> torch.Tensor:
        """The (D,) float64 mean of the rows; requires n >= 1."""
        if self.n < 1:
            raise ValueError("the mean of an empty SecondMoments (n = 0) is undefined.")
        return self.total / self.n

    def covariance(self) -> torch.Tensor:
        """The (D, D) float64 sample covariance (denominator n - 1); requires n >= 2."""
        if self.n < 2:
            raise ValueError(f"a sample covariance needs n >= 2 rows; this state has {self.n}.")
        return _centered_from_moments(self) / (self.n - 1)


@dataclass(frozen=True, eq=False)
class Spectra:
    """The two spectra every metric here is computed from (float64, read-only, descending).

    Attributes:
        singular_values: singular values of the uncentered (N, D) matrix, length min(N, D).
        covariance_eigenvalues: eigenvalues of the sample covariance (denominator N - 1),
            length D.
    """

    singular_values: np.ndarray
    covariance_eigenvalues: np.ndarray

    def __post_init__(self) -> None:
        sv = _as_spectrum(self.singular_values, "singular_values")
        lam = _as_spectrum(self.covariance_eigenvalues, "covariance_eigenvalues")
        if sv.size > lam.size:
            raise ValueError(
                f"Spectra has {sv.size} singular values but only {lam.size} covariance "
                "eigenvalues; expected min(N, D) <= D."
            )
        sv.setflags(write=False)
        lam.setflags(write=False)
        object.__setattr__(self, "singular_values", sv)
        object.__setattr__(self, "covariance_eigenvalues", lam)

    @property
    def dim(self) -> int:
        """The embedding dimension D."""
        return int(self.covariance_eigenvalues.size)

    @property
    def sample_limited(self) -> bool:
        """True when N < D, so rank-type metrics are capped by N rather than D."""
        return bool(self.singular_values.size < self.covariance_eigenvalues.size)


def second_moments(z: Any, *, chunk_rows: int | None = None) -> SecondMoments:
    """Accumulate the float64 ``SecondMoments`` of one batch of embeddings.

    Args:
        z: (N, D) torch.Tensor (any float dtype, any device) or numpy array, N >= 1.
        chunk_rows: rows upcast to float64 at a time; by default about 32 MiB worth
            (``2**22 // D`` rows), which was as fast as larger chunks in measurements.

    Returns:
        ``SecondMoments`` on z's device: n = N, total = sum_i z_i, outer = sum_i z_i z_i^T.

    Raises:
        ValueError: on invalid z, or if |z| is so large (> ~1e150) that float64 squares
            overflow; rescale such embeddings first.
    """
    x = _matrix(z, min_rows=1)
    outer = _gram(x, features=True, shift=None, scale=1.0, chunk=chunk_rows)
    _require_finite(outer, x)
    total = torch.sum(x, dim=0, dtype=torch.float64)
    return SecondMoments(n=int(x.shape[0]), total=total, outer=outer)


def spectra_from_moments(m: SecondMoments) -> Spectra:
    """Singular values and covariance eigenvalues from accumulated ``SecondMoments``.

    sigma = sqrt(eig(outer)) (top min(n, D) values); lambda = eig((outer - t t^T / n) /
    (n - 1)) with t = total. Both come from symmetric float64 eigendecompositions (on the
    moments' device, CPU float64 as a fallback); round-off negatives are clamped to 0 and
    values below the rank tolerance (module docstring) are set to exactly 0.

    Raises:
        ValueError: if ``m`` is not a ``SecondMoments``, has n < 2, or is not finite.
    """
    if not isinstance(m, SecondMoments):
        raise ValueError(f"expected SecondMoments; got {type(m).__name__}.")
    if m.n < 2:
        raise ValueError(
            f"spectra need at least 2 accumulated rows (the covariance divides by n - 1); "
            f"got n = {m.n}."
        )
    if not (bool(torch.isfinite(m.outer).all()) and bool(torch.isfinite(m.total).all())):
        raise ValueError("SecondMoments contain NaN or Inf; drop the non-finite batches.")
    d = m.dim
    raw = _clean(_eigvalsh_desc(m.outer), d, None)
    sv = np.sqrt(raw[: min(m.n, d)])
    centered = _centered_from_moments(m)
    raw_trace = float(torch.trace(m.outer))
    lam = _clean(_eigvalsh_desc(centered), d, raw_trace) / (m.n - 1)
    return Spectra(singular_values=sv, covariance_eigenvalues=lam)


# --------------------------------------------------------------------------------------
# Pure scalar functions of a spectrum
# --------------------------------------------------------------------------------------


def rankme_from_singular_values(sigma: Any, eps: float = 1e-7) -> float:
    """RankMe from singular values (Garrido et al., ICML 2023, arXiv 2210.02885).

    p_k = sigma_k / sum_j sigma_j + eps and RankMe = exp(-sum_k p_k log p_k), over every
    value given (min(N, D) of them for an (N, D) matrix).

    Returns:
        The effective rank (about 1 for one non-zero singular value, up to the count of
        values); NaN if every singular value is 0 (p is 0/0).
    """
    s = _as_spectrum(sigma, "sigma")
    _check_eps(eps)
    total = float(s.sum())
    if total <= 0.0:
        return math.nan
    p = s / total + eps
    return float(np.exp(np.sum(entr(p))))


def stable_rank_from_singular_values(sigma: Any) -> float:
    """Stable rank sum_k sigma_k^2 / sigma_max^2 (Rudelson & Vershynin, J. ACM 2007).

    Returns NaN if every singular value is 0.
    """
    s = _as_spectrum(sigma, "sigma")
    top = float(s[0])
    if top <= 0.0:
        return math.nan
    return float(np.sum((s / top) ** 2))


def condition_number_from_singular_values(sigma: Any, *, tol: float | None = None) -> float:
    """Condition number sigma_max / sigma_min over the strictly positive singular values.

    A value counts as positive if it exceeds ``tol``; by default ``sigma_max * len(sigma) *
    eps`` (``numpy.linalg.matrix_rank``'s tolerance, with len(sigma) = min(N, D) standing
    in for max(N, D)). Returns NaN if no value is positive.
    """
    s = _as_spectrum(sigma, "sigma")
    top = float(s[0])
    if tol is None:
        tol = top * s.size * _EPS
    elif not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}.")
    positive = s[s > tol]
    if positive.size == 0:
        return math.nan
    return float(positive[0] / positive[-1])


def nesum_from_eigenvalues(lam: Any) -> float:
    """NESum sum_i lambda_i / lambda_1 (He & Ozay, ICML 2022, arXiv 2112.14798).

    ``lam`` are covariance eigenvalues. Returns NaN if they are all 0.
    """
    e = _as_spectrum(lam, "lam")
    top = float(e[0])
    if top <= 0.0:
        return math.nan
    return float(np.sum(e / top))


def participation_ratio_from_eigenvalues(lam: Any) -> float:
    """Participation ratio (sum_i lambda_i)^2 / sum_i lambda_i^2 of covariance eigenvalues.

    See Gao et al., "A theory of multineuronal dimensionality, dynamics and measurement",
    bioRxiv 2017. Returns NaN if every eigenvalue is 0.
    """
    e = _as_spectrum(lam, "lam")
    top = float(e[0])
    if top <= 0.0:
        return math.nan
    r = e / top  # scale first: squares of tiny or huge eigenvalues stay representable
    return float(np.sum(r) ** 2 / np.sum(r * r))


def alpha_req_from_eigenvalues(lam: Any, fit_range: Sequence[int] = (4, 100)) -> float:
    """alpha-ReQ: power-law decay of the covariance eigenspectrum.

    Agrawal, Mondal, Ghosh, Richards, "alpha-ReQ: Assessing Representation Quality in
    Self-Supervised Learning by measuring eigenspectrum decay", NeurIPS 2022. With
    lambda_1 >= lambda_2 >= ..., alpha is the slope of the ordinary (unweighted) least
    squares line through the points (-log i, log lambda_i), i.e. lambda_i ~ c * i^-alpha,
    for the 1-based ranks i in ``fit_range = (first, last)`` (inclusive).

    The range is clipped to the strictly positive eigenvalues (above ``lambda_1 * len(lam)
    * eps``, the matrix_rank tolerance); zeros carry no log. If fewer than 2 ranks remain
    after clipping, the slope is undefined and the result is NaN.

    Raises:
        ValueError: if ``fit_range`` is not two ints with 1 <= first < last.
    """
    first, last = _check_fit_range(fit_range)
    e = _as_spectrum(lam, "lam")
    top = float(e[0])
    n_pos = int(np.count_nonzero(e > top * e.size * _EPS)) if top > 0.0 else 0
    last = min(last, n_pos)
    if last - first + 1 < 2:
        return math.nan
    ranks = np.arange(first, last + 1, dtype=np.float64)
    x = -np.log(ranks)
    y = np.log(e[first - 1 : last] / top)
    x = x - x.mean()
    return float(np.dot(x, y - y.mean()) / np.dot(x, x))


# --------------------------------------------------------------------------------------
# One-shot metrics on an embedding matrix
# --------------------------------------------------------------------------------------


def singular_values(z: Any, *, method: Method = "auto") -> np.ndarray:
    """Descending float64 singular values of the uncentered (N, D) matrix z.

    Args:
        z: (N, D) torch.Tensor or numpy array, N >= 2, any float dtype and device.
        method: ``"gram"``: sqrt of the eigenvalues of the float64 Gram matrix (z^T z if
            N >= D else z z^T), absolute error about eps * sigma_1^2 / sigma_i, values
            below sqrt(D * eps) * sigma_1 exactly 0. ``"auto"`` (default): ``"gram"``.
            ``"svd"``: a float64 SVD of z (slower; full relative accuracy for tiny
            singular values).

    Returns:
        np.ndarray of length min(N, D).
    """
    x = _matrix(z)
    return _unscale_sv(*_singular_values(x, _check_method(method)))


def covariance_eigenvalues(z: Any, *, method: Method = "auto") -> np.ndarray:
    """Descending float64 eigenvalues (length D) of the sample covariance of z.

    cov = (z - mean)^T (z - mean) / (N - 1). ``method`` as in ``singular_values`` (the
    Gram route eigendecomposes the centered Gram matrix; for N < D its N eigenvalues are
    padded with zeros to length D).
    """
    x = _matrix(z)
    return _unscale_eig(*_covariance_eigenvalues(x, _check_method(method)))


def spectra(z: Any, *, method: Method = "auto") -> Spectra:
    """Both spectra of z at once (``singular_values`` and ``covariance_eigenvalues``)."""
    return _both_spectra(_matrix(z), _check_method(method))


def rankme(z: Any, eps: float = 1e-7, *, method: Method = "auto") -> float:
    """RankMe, the smooth effective rank of the uncentered embedding matrix.

    Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the downstream performance of
    pretrained self-supervised representations by their rank", ICML 2023, arXiv
    2210.02885. With sigma the min(N, D) singular values of z (not centered):
    p_k = sigma_k / sum_j sigma_j + eps, RankMe = exp(-sum_k p_k log p_k).

    Args:
        z: (N, D) embeddings, N >= 2; torch (any device, any float dtype) or numpy.
        eps: the paper's smoothing constant (1e-7).
        method: spectrum route, see ``singular_values``.

    Returns:
        RankMe in [~1, min(N, D)]. Fully collapsed embeddings (all rows equal) give ~1
        (exactly exp(-(1+eps)log(1+eps) - (m-1) eps log eps)); an all-zero matrix gives
        NaN (every p_k is 0/0).

    Accuracy: with the default ``"gram"`` route the result agrees with a float64 SVD to ~1e-15
    relative when the spectrum is resolved (1.7e-15 on 25,600 x 2048 float32 data whose
    eigenvalues decay like i^-1, where ``torch.linalg.svdvals`` in float32 is off by
    1.4e-7), also on low-rank embeddings whose tail float32 products could not resolve.
    Singular values below sqrt(D * eps) * sigma_1
    (6.7e-7 * sigma_1 at D = 2048) count as 0; each shifts log RankMe by at most
    ~17 * 6.7e-7 * sigma_1 / sum(sigma). Use ``method="svd"`` if many sit in that band.

    Warns:
        UserWarning: if N < D, since the value is then capped by N (the paper uses
        N = 25,600 samples).
    """
    x = _matrix(z)
    _check_eps(eps)
    warn_if_rank_capped(x.shape[0], x.shape[1], stacklevel=2)
    return rankme_from_singular_values(_singular_values(x, _check_method(method))[0], eps=eps)


def warn_if_rank_capped(n: int, d: int, *, stacklevel: int = 2) -> None:
    """Warn that RankMe of N < D embeddings is capped at N (the paper uses N = 25,600).

    ``stacklevel`` is what the caller would pass to :func:`warnings.warn` itself.
    """
    if n < d:
        warnings.warn(
            f"rankme on N={n} samples of dimension D={d}: with N < D the rank is capped at "
            f"N and RankMe underestimates the embedding's rank; use N >= D samples (the "
            f"RankMe paper uses N = {_PAPER_N:,}).",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def stable_rank(z: Any, *, method: Method = "auto") -> float:
    """Stable rank ||z||_F^2 / ||z||_2^2 = sum_k sigma_k^2 / sigma_max^2 of uncentered z.

    Rudelson & Vershynin, "Sampling from large matrices", J. ACM 2007. NaN for an
    all-zero matrix; 1 for fully collapsed embeddings.
    """
    x = _matrix(z)
    return stable_rank_from_singular_values(_singular_values(x, _check_method(method))[0])


def condition_number(z: Any, *, method: Method = "auto") -> float:
    """Condition number sigma_max / sigma_min of uncentered z over positive singular values.

    A singular value counts as positive above ``sigma_max * max(N, D) * eps``
    (``numpy.linalg.matrix_rank``'s tolerance). ``method="auto"`` uses the float64 Gram
    route only when it resolves sigma_min to about 1e-10
    relative (full rank at the Gram tolerance and D * eps * kappa^2 / 2 <= 1e-10) and
    otherwise recomputes with a float64 SVD of z, because this ratio is the one metric
    driven by the smallest singular value.
    NaN for an all-zero matrix; 1 for fully collapsed embeddings.
    """
    x = _matrix(z)
    m = _check_method(method)
    n, d = x.shape
    if m == "svd":
        s, _ = _svd_singular_values(x)
    else:
        s, _ = _gram_singular_values(x)
        if m == "auto" and not _gram_resolves_smallest(s, d):
            s, _ = _svd_singular_values(x)
    return condition_number_from_singular_values(s, tol=float(s[0]) * max(n, d) * _EPS)


def nesum(z: Any, *, method: Method = "auto") -> float:
    """NESum sum_i lambda_i / lambda_1 over the covariance eigenvalues of z.

    He & Ozay, "Exploring the gap between collapsed and whitened features in
    self-supervised learning", ICML 2022. NaN when the covariance is 0 (collapsed rows).
    """
    x = _matrix(z)
    return nesum_from_eigenvalues(_covariance_eigenvalues(x, _check_method(method))[0])


def participation_ratio(z: Any, *, method: Method = "auto") -> float:
    """Participation ratio (sum lambda)^2 / sum lambda^2 of the covariance of z.

    Gao et al., bioRxiv 2017 ("A theory of multineuronal dimensionality, dynamics and
    measurement"). NaN when the covariance is 0 (collapsed rows).
    """
    x = _matrix(z)
    lam, _ = _covariance_eigenvalues(x, _check_method(method))
    return participation_ratio_from_eigenvalues(lam)


def alpha_req(z: Any, fit_range: Sequence[int] = (4, 100), *, method: Method = "auto") -> float:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): eigenspectrum decay of the covariance of z.

    The slope alpha of an ordinary least-squares fit of log lambda_i against -log i over
    the 1-based inclusive rank range ``fit_range``; see ``alpha_req_from_eigenvalues`` for
    clipping (NaN if fewer than 2 positive eigenvalues fall in the range).

    Raises:
        ValueError: on invalid z or an invalid ``fit_range``.
    """
    _check_fit_range(fit_range)
    x = _matrix(z)
    lam, _ = _covariance_eigenvalues(x, _check_method(method))
    return alpha_req_from_eigenvalues(lam, fit_range=fit_range)


# --------------------------------------------------------------------------------------
# Internals: spectra of a matrix
# --------------------------------------------------------------------------------------


# The routes below return spectra of (z * scale), with ``scale`` an exact power of two
# (1 unless float64 input is extreme, see _safe_scale), together with ``scale``. Every
# metric is scale-free, so metrics use the scaled spectrum directly; only the public
# spectrum functions convert back (which may overflow to inf or underflow to 0 when the
# true values are outside float64's range).


def _singular_values(x: torch.Tensor, method: Method) -> tuple[np.ndarray, float]:
    if method == "svd":
        return _svd_singular_values(x)
    return _gram_singular_values(x)


def _covariance_eigenvalues(x: torch.Tensor, method: Method) -> tuple[np.ndarray, float]:
    if method == "svd":
        return _svd_covariance_eigenvalues(x)
    return _gram_covariance_eigenvalues(x)


def _both_spectra(x: torch.Tensor, method: Method) -> Spectra:
    """Both spectra of x by ``method``."""
    return Spectra(
        singular_values=_unscale_sv(*_singular_values(x, method)),
        covariance_eigenvalues=_unscale_eig(*_covariance_eigenvalues(x, method)),
    )


def _unscale_sv(s: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return s
    with np.errstate(over="ignore", under="ignore"):
        return s / scale


def _unscale_eig(lam: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return lam
    with np.errstate(over="ignore", under="ignore"):
        return lam / scale / scale


def _gram_singular_values(x: torch.Tensor) -> tuple[np.ndarray, float]:
    n, d = x.shape
    scale = _safe_scale(x)
    g = _gram(x, features=n >= d, shift=None, scale=scale, chunk=None, symmetric=False)
    _require_finite(g, x)
    w = _clean(_eigvalsh_desc(g), d, None)
    return np.sqrt(w[: min(n, d)]), scale


def _gram_covariance_eigenvalues(x: torch.Tensor) -> tuple[np.ndarray, float]:
    n, d = x.shape
    scale = _safe_scale(x)
    mean = _scaled_mean(x, scale)
    g = _gram(x, features=n >= d, shift=mean, scale=scale, chunk=None, symmetric=False)
    _require_finite(g, x)
    # sum_i |z_i|^2 = sum_i |z_i - mean|^2 + n |mean|^2
    raw_trace = float(torch.trace(g)) + n * float(torch.dot(mean, mean))
    w = _clean(_eigvalsh_desc(g), d, raw_trace)
    out = np.zeros(d, dtype=np.float64)
    k = min(w.size, d)
    out[:k] = w[:k] / (n - 1)
    return out, scale


class ShiftedGram:
    """Float32-product Gram accumulator around a fixed float32 shift (CPU, numpy).

    With m the shift and c_i = z_i - m (exact float32 differences, up to one rounding
    relative to |c_i|), it keeps C = sum_i c_i c_i^T from float32 ``ssyrk`` products of
    at most ``_MIXED_CHUNK_ROWS`` rows at a time, summed in float64 (upper triangle
    only), s = sum_i c_i in float64 and the row count n. Any Gram matrix of the rows then
    follows exactly in float64 (:meth:`gram`):
    sum_i (z_i - a)(z_i - a)^T = C + v s^T + s v^T + n v v^T with v = m - a. Centring on
    m keeps the float32 rounding relative to the spread of the rows, not their mean.
    The Monitor's ``gram_dtype="float32"`` accumulates through this class. Its products
    are float32: eigenvalues below about 1e-8 of the trace of C are round-off, so the
    spectrum's tail is not resolved (the one-shot functions use float64 products).
    """

    def __init__(self, shift: np.ndarray) -> None:
        self.shift = np.ascontiguousarray(shift, dtype=np.float32)
        d = self.shift.shape[0]
        self.n = 0
        self.c_gram = np.zeros((d, d), dtype=np.float64, order="F")
        self.c_sum = np.zeros(d, dtype=np.float64)
        self._prod = np.zeros((d, d), dtype=np.float32, order="F")  # ssyrk's upper triangle
        self._buf = np.empty((0, d), dtype=np.float32)

    @staticmethod
    def applies(amax: float) -> bool:
        """Whether rows with max |z| = ``amax`` stay where float32 squares are safe."""
        return _MIXED_MIN < amax < _MIXED_MAX

    def update(self, a: np.ndarray) -> None:
        """Fold float32 rows ``a`` (N, D) in."""
        n, d = a.shape
        step = min(_MIXED_CHUNK_ROWS, max(n, 1))
        if self._buf.shape[0] < step:
            self._buf = np.empty((step, d), dtype=np.float32)
        for start in range(0, n, step):
            stop = min(start + step, n)
            block = self._buf[: stop - start]
            np.subtract(a[start:stop], self.shift, out=block)
            self.c_sum += block.sum(axis=0, dtype=np.float64)
            prod = _blas.ssyrk(
                1.0, block.T, beta=0.0, c=self._prod, trans=0, lower=0, overwrite_c=1
            )
            if not np.shares_memory(prod, self._prod):  # pragma: no cover - BLAS copied
                self._prod = np.asfortranarray(prod)
            np.add(self.c_gram, self._prod, out=self.c_gram)
        self.n += n

    def gram(self, v: np.ndarray) -> np.ndarray:
        """Upper triangle of sum_i (z_i - a)(z_i - a)^T for v = m - a (float64)."""
        cross = np.outer(v, self.c_sum)
        return self.c_gram + cross + cross.T + self.n * np.outer(v, v)

    def raw_gram(self) -> np.ndarray:
        """Upper triangle of the uncentred sum_i z_i z_i^T (a = 0)."""
        return self.gram(self.shift.astype(np.float64))

    def raw_trace(self) -> float:
        """sum_i |z_i|^2, exactly from C, s and m."""
        m = self.shift.astype(np.float64)
        return float(np.trace(self.c_gram)) + 2.0 * float(m @ self.c_sum) + self.n * float(m @ m)

    def clear(self) -> None:
        """Empty the sums (the shift is kept)."""
        self.n = 0
        self.c_gram.fill(0.0)
        self.c_sum.fill(0.0)


def _svd_singular_values(x: torch.Tensor) -> tuple[np.ndarray, float]:
    as_matrix(x, name="z")  # finiteness (the Gram routes check it via the diagonal)
    scale = _safe_scale(x)
    s = _svdvals_desc(_upcast(x, None, scale))
    if s is None:  # every SVD driver failed: the Gram route still gives an answer
        return _gram_singular_values(x)
    return np.where(s > s[0] * max(x.shape) * _EPS, s, 0.0), scale


def _svd_covariance_eigenvalues(x: torch.Tensor) -> tuple[np.ndarray, float]:
    as_matrix(x, name="z")
    n, d = x.shape
    scale = _safe_scale(x)
    s = _svdvals_desc(_upcast(x, _scaled_mean(x, scale), scale))
    if s is None:
        return _gram_covariance_eigenvalues(x)
    s = np.where(s > s[0] * max(n, d) * _EPS, s, 0.0)
    out = np.zeros(d, dtype=np.float64)
    out[: s.size] = s**2 / (n - 1)
    return out, scale


def _matrix(z: Any, min_rows: int = 2) -> torch.Tensor:
    """``as_matrix`` without its finiteness pass: the routes here check finiteness later,
    for free, on the Gram diagonal (``_require_finite``), or explicitly before an SVD."""
    return as_matrix(z, name="z", min_rows=min_rows, check_finite=False)


def _require_finite(g: torch.Tensor, x: torch.Tensor) -> None:
    """Raise ValueError if x had NaN/Inf, detected from the Gram diagonal.

    A diagonal entry is a sum of squares of one column (or row) of x * scale - shift; it
    is non-finite iff that column holds NaN/Inf (float32 squares cannot overflow in
    float64, and extreme float64 input was rescaled), unless float64 values are too large
    for unscaled second moments.
    """
    if bool(torch.isfinite(torch.diagonal(g)).all()):
        return
    as_matrix(x, name="z")  # raises the standard message if x holds NaN or Inf
    raise ValueError(
        "z is too large for float64 second moments (sums of squares overflow); rescale "
        "the embeddings (e.g. divide by their largest absolute value) before streaming."
    )


def _scaled_mean(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The float64 column mean of x * scale."""
    if scale == 1.0:
        return torch.sum(x, dim=0, dtype=torch.float64) / x.shape[0]
    return torch.mean(x.to(torch.float64) * scale, dim=0)


def _upcast(x: torch.Tensor, shift: torch.Tensor | None, scale: float) -> torch.Tensor:
    """float64 x * scale - shift (shift is in scaled units, so nothing can overflow)."""
    y = x.to(torch.float64)
    if scale != 1.0:
        y = y * scale
    if shift is not None:
        y = y - shift
    return y


def _svdvals_desc(y: torch.Tensor) -> np.ndarray | None:
    """Singular values of float64 y: torch on y's device, then numpy/scipy on the CPU."""
    try:
        return _desc(torch.linalg.svdvals(y).cpu().numpy())
    except RuntimeError:  # torch.linalg.LinAlgError, unsupported device/dtype, OOM
        pass
    a = y.cpu().numpy()
    try:
        return _desc(np.linalg.svd(a, compute_uv=False))
    except np.linalg.LinAlgError:
        pass
    try:
        return _desc(scipy.linalg.svd(a, compute_uv=False, lapack_driver="gesvd"))
    except (np.linalg.LinAlgError, ValueError):
        return None


def _eigvalsh_desc(g: torch.Tensor) -> np.ndarray:
    """Eigenvalues of symmetric float64 g (upper triangle read), descending.

    On the CPU numpy's LAPACK (about 2x faster than torch's at D = 2048 here); elsewhere
    torch on g's device, then numpy. An SVD if those fail.
    """
    if g.device.type != "cpu":
        try:
            return _desc(torch.linalg.eigvalsh(g, UPLO="U").cpu().numpy())
        except RuntimeError:  # torch.linalg.LinAlgError (no convergence), device/dtype errors
            pass
    a = g.cpu().numpy()
    try:
        return _desc(np.linalg.eigvalsh(a, UPLO="U"))
    except np.linalg.LinAlgError:
        # For a symmetric PSD matrix the singular values are the eigenvalues.
        return _desc(np.linalg.svd(_symmetrize_upper(np.triu(a)), compute_uv=False))


def _desc(w: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(w, dtype=np.float64))[::-1].copy()


def _clean(w: np.ndarray, dim: int, raw_trace: float | None) -> np.ndarray:
    """Clamp negatives and zero eigenvalues below D * eps * max(w_max, raw_trace)."""
    ref = float(w[0]) if w.size else 0.0
    if raw_trace is not None:
        ref = max(ref, raw_trace)
    if not ref > 0.0:
        return np.zeros_like(w)
    return np.where(w > dim * _EPS * ref, w, 0.0)


def _gram_resolves_smallest(s: np.ndarray, dim: int) -> bool:
    """Whether Gram-route singular values pin down sigma_min to ~_COND_RTOL relative."""
    if not s[-1] > 0.0:
        return False
    kappa = float(s[0] / s[-1])
    return dim * _EPS * kappa * kappa / 2.0 <= _COND_RTOL


def _safe_scale(x: torch.Tensor) -> float:
    """An exact power of two that keeps float64 squares of x finite and normal."""
    if x.dtype != torch.float64:
        return 1.0  # float32 squares (<= 1.2e77, >= 2e-90) never overflow float64 sums
    lo, hi = torch.aminmax(x)
    amax = max(-float(lo), float(hi))
    if amax > _SAFE_MAX or 0.0 < amax < _SAFE_MIN:
        return math.ldexp(1.0, -math.frexp(amax)[1])
    return 1.0


# --------------------------------------------------------------------------------------
# Internals: chunked float64 Gram matrices
# --------------------------------------------------------------------------------------


def _chunk_size(chunk: int | None, width: int) -> int:
    if chunk is None:
        return max(1, _CHUNK_ELEMENTS // max(1, width))
    return as_int(chunk, "chunk_rows", hint=" or None")


def _gram(
    x: torch.Tensor,
    *,
    features: bool,
    shift: torch.Tensor | None,
    scale: float,
    chunk: int | None,
    symmetric: bool = True,
) -> torch.Tensor:
    """Float64 Gram matrix of y = x * scale - shift, on x's device.

    ``features=True``: y^T y (D x D), accumulated over row chunks; otherwise y y^T
    (N x N), accumulated over column chunks. Only one chunk is upcast at a time. With
    ``symmetric=False`` only the upper triangle is guaranteed (enough for ``eigvalsh``
    with ``UPLO="U"``, and it saves a pass over the matrix on the CPU).
    """
    if x.device.type == "cpu":
        a = x.resolve_conj().resolve_neg().numpy()
        s = None if shift is None else shift.numpy()
        g = _gram_numpy(a, features=features, shift=s, scale=scale, chunk=chunk)
        return torch.from_numpy(_symmetrize_upper(g) if symmetric else g)
    return _gram_torch(x, features=features, shift=shift, scale=scale, chunk=chunk)


def _gram_numpy(
    a: np.ndarray,
    *,
    features: bool,
    shift: np.ndarray | None,
    scale: float,
    chunk: int | None,
) -> np.ndarray:
    """CPU Gram matrix (upper triangle of a new Fortran-ordered array), see add_gram."""
    size = a.shape[1] if features else a.shape[0]
    out = np.zeros((size, size), dtype=np.float64, order="F")
    return add_gram(out, a, features=features, shift=shift, scale=scale, chunk=chunk)


def add_gram(
    target: np.ndarray,
    a: np.ndarray,
    *,
    features: bool = True,
    shift: np.ndarray | None = None,
    scale: float = 1.0,
    chunk: int | None = None,
) -> np.ndarray:
    """Add the float64 Gram matrix of y = a * scale - shift to ``target``'s upper triangle.

    ``features=True`` adds y^T y (D x D, chunks of rows), else y y^T (N x N, chunks of
    columns), with BLAS ``dsyrk`` (half the flops of a product). ``target`` must be a
    Fortran-ordered float64 array (a C-ordered (D, D) tensor's ``.numpy().T`` is one: its
    upper triangle is the tensor's lower). Chunks are converted to float64 into one
    reused buffer of about 32 MiB; float64 C-ordered input needing no shift or scale is
    read in place. Returns ``target`` (updated in place when BLAS allows, else a copy).
    The one float64 accumulation behind ``second_moments``, the Gram routes here and the
    Monitor's streamed moments.
    """
    n, d = a.shape
    size, length = (d, n) if features else (n, d)
    step = min(_chunk_size(chunk, size), max(length, 1))
    direct = shift is None and scale == 1.0 and a.dtype == np.float64
    buf: np.ndarray | None = None
    for start in range(0, length, step):
        stop = min(start + step, length)
        view = a[start:stop] if features else a[:, start:stop]
        if direct and view.flags.c_contiguous:
            block = view
        else:
            if buf is None:
                buf = np.empty(step * size, dtype=np.float64)
            block = buf[: (stop - start) * size].reshape(view.shape)
            np.copyto(block, view, casting="same_kind")
            # NaN/Inf input is reported by _require_finite from the diagonal afterwards.
            with np.errstate(invalid="ignore", over="ignore"):
                if scale != 1.0:
                    block *= scale
                if shift is not None:
                    block -= shift if features else shift[start:stop]
        # block is C-ordered, so block.T is a Fortran-ordered view that dsyrk reads
        # without a copy: trans=0 gives block^T block (D x D), trans=1 block block^T.
        target = _blas.dsyrk(
            1.0, block.T, beta=1.0, c=target, trans=0 if features else 1, lower=0, overwrite_c=1
        )
    return target


def _symmetrize_upper(u: np.ndarray) -> np.ndarray:
    """The full symmetric matrix whose upper triangle is u's (u's lower part is 0)."""
    full = u + u.T
    np.fill_diagonal(full, np.diagonal(u))
    return full


def _gram_torch(
    x: torch.Tensor,
    *,
    features: bool,
    shift: torch.Tensor | None,
    scale: float,
    chunk: int | None,
) -> torch.Tensor:
    """Device Gram matrix (symmetrised), see add_gram_device."""
    size = x.shape[1] if features else x.shape[0]
    out = torch.zeros((size, size), dtype=torch.float64, device=x.device)
    add_gram_device(out, x, features=features, shift=shift, scale=scale, chunk=chunk)
    return (out + out.T) * 0.5


def add_gram_device(
    target: torch.Tensor,
    x: torch.Tensor,
    *,
    features: bool = True,
    shift: torch.Tensor | None = None,
    scale: float = 1.0,
    chunk: int | None = None,
) -> None:
    """``target += y^T y`` (features) or ``y y^T``, y = x * scale - shift, in place with
    float64 ``addmm_`` over chunks upcast one at a time (any device): :func:`add_gram`'s
    counterpart off the CPU, for the Gram routes and the Monitor."""
    n, d = x.shape
    size, length = (d, n) if features else (n, d)
    step = _chunk_size(chunk, size)
    for start in range(0, length, step):
        stop = min(start + step, length)
        if features:
            block = _upcast(x[start:stop], shift, scale)
            target.addmm_(block.T, block)
        else:
            sub = None if shift is None else shift[start:stop]
            block = _upcast(x[:, start:stop], sub, scale)
            target.addmm_(block, block.T)


def _centered_from_moments(m: SecondMoments) -> torch.Tensor:
    """sum_i (z_i - mean)(z_i - mean)^T = outer - total total^T / n, symmetrised."""
    c = m.outer - torch.outer(m.total, m.total / m.n)
    return (c + c.T) * 0.5


# --------------------------------------------------------------------------------------
# Internals: argument checks
# --------------------------------------------------------------------------------------


def _as_spectrum(values: Any, name: str) -> np.ndarray:
    """A descending float64 copy of a 1-D non-negative spectrum (round-off negatives -> 0)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    try:
        a = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} could not be read as a 1-D numeric array: {exc}") from exc
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf; a spectrum must be finite.")
    low = float(a.min())
    if low < 0.0:
        if -low > _NEG_RTOL * float(np.abs(a).max()) or float(a.max()) <= 0.0:
            raise ValueError(
                f"{name} has negative entries (min {low:.3g}); pass singular values or "
                "covariance eigenvalues (non-negative), clipping round-off with "
                "np.clip(values, 0, None) if needed."
            )
        a = np.maximum(a, 0.0)
    return np.sort(a)[::-1].copy()


def _check_eps(eps: float) -> None:
    if not is_real(eps):
        raise ValueError(f"eps must be a float >= 0; got {eps!r}.")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite float >= 0 (the paper uses 1e-7); got {eps!r}.")


def _check_method(method: str) -> Method:
    if method == "auto":
        return "auto"
    if method == "gram":
        return "gram"
    if method == "svd":
        return "svd"
    raise ValueError(f"method must be 'auto', 'gram' or 'svd'; got {method!r}.")


def _check_fit_range(fit_range: Any) -> tuple[int, int]:
    ok = (
        isinstance(fit_range, Sequence | np.ndarray)
        and not isinstance(fit_range, str)
        and len(fit_range) == 2
        and all(is_int(v) for v in fit_range)
    )
    if not ok:
        raise ValueError(
            f"fit_range must be two ints (first, last), 1-based and inclusive, e.g. (4, 100); "
            f"got {fit_range!r}."
        )
    first, last = int(fit_range[0]), int(fit_range[1])
    if first < 1 or last <= first:
        raise ValueError(
            f"fit_range must satisfy 1 <= first < last (a line needs two ranks); got "
            f"({first}, {last})."
        )
    return first, last
