"""Tests for sslwatch.metrics.spectrum against plain numpy/scipy references.

Every reference below is written from the definition with np.linalg.svd, np.cov and
np.linalg.eigvalsh in float64; nothing is compared with the module's own earlier output.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group
from threadpoolctl import threadpool_limits

from sslwatch.metrics import spectrum as S

EPS = float(np.finfo(np.float64).eps)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> object:
    """The matrices here are tiny: BLAS threads only spin on a shared 2-core machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ----------------------------------------------------------------------------------
# Plain numpy references (float64)
# ----------------------------------------------------------------------------------


def ref_sv(z: np.ndarray) -> np.ndarray:
    return np.linalg.svd(np.asarray(z, dtype=np.float64), compute_uv=False)


def ref_cov_eig(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    c = np.atleast_2d(np.cov(z, rowvar=False))
    return np.sort(np.linalg.eigvalsh(c))[::-1]


def ref_rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    s = ref_sv(z)
    p = s / s.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def ref_stable_rank(z: np.ndarray) -> float:
    s = ref_sv(z)
    return float(np.sum(s**2) / s.max() ** 2)


def ref_condition_number(z: np.ndarray) -> float:
    s = ref_sv(z)
    tol = s.max() * max(z.shape) * EPS  # numpy.linalg.matrix_rank's default
    pos = s[s > tol]
    return float(pos.max() / pos.min())


def ref_nesum(z: np.ndarray) -> float:
    lam = np.clip(ref_cov_eig(z), 0, None)
    return float(lam.sum() / lam[0])


def ref_participation_ratio(z: np.ndarray) -> float:
    lam = np.clip(ref_cov_eig(z), 0, None)
    return float(lam.sum() ** 2 / np.sum(lam**2))


def ref_alpha_req(z: np.ndarray, fit_range: tuple[int, int] = (4, 100)) -> float:
    lam = ref_cov_eig(z)
    pos = lam[lam > lam[0] * lam.size * EPS]
    last = min(fit_range[1], pos.size)
    ranks = np.arange(fit_range[0], last + 1)
    slope, _ = np.polyfit(-np.log(ranks), np.log(pos[ranks - 1]), 1)
    return float(slope)


SCALAR_CASES: list[tuple[str, Callable[..., float], Callable[[np.ndarray], float]]] = [
    ("rankme", S.rankme, ref_rankme),
    ("stable_rank", S.stable_rank, ref_stable_rank),
    ("condition_number", S.condition_number, ref_condition_number),
    ("nesum", S.nesum, ref_nesum),
    ("participation_ratio", S.participation_ratio, ref_participation_ratio),
    ("alpha_req", S.alpha_req, ref_alpha_req),
]


# ----------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------


def gaussian(n: int, d: int, seed: int, decay: float = 0.5, offset: float = 0.3) -> np.ndarray:
    r = np.random.default_rng(seed)
    return r.standard_normal((n, d)) * np.arange(1, d + 1) ** -decay + offset


def low_rank(n: int, d: int, rank: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    return r.standard_normal((n, rank)) @ r.standard_normal((rank, d)) + 0.5


@pytest.fixture(
    params=[
        "gauss_tall",
        "gauss_wide",
        "lowrank_tall",
        "lowrank_wide",
        "digits",
        "mnist1d",
    ]
)
def dataset(request: pytest.FixtureRequest) -> np.ndarray:
    name = request.param
    if name == "gauss_tall":
        return gaussian(300, 40, 1)
    if name == "gauss_wide":
        return gaussian(30, 80, 2)
    if name == "lowrank_tall":
        return low_rank(200, 50, 6, 3)
    if name == "lowrank_wide":
        return low_rank(25, 60, 5, 4)
    x, _ = request.getfixturevalue(name)
    return np.asarray(x, dtype=np.float64)


def assert_spectrum_close(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-8) -> None:
    assert ours.dtype == np.float64
    assert ours.shape == ref.shape
    assert np.all(np.diff(ours) <= 0), "spectrum must be descending"
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=1e-10 * float(np.abs(ref).max()))


# ----------------------------------------------------------------------------------
# One-shot functions vs references
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "svd"])
def test_spectra_match_numpy(dataset: np.ndarray, method: S.Method) -> None:
    n, d = dataset.shape
    sv = S.singular_values(dataset, method=method)
    assert sv.shape == (min(n, d),)
    assert_spectrum_close(sv, ref_sv(dataset))
    lam = S.covariance_eigenvalues(dataset, method=method)
    ref = np.clip(ref_cov_eig(dataset), 0, None)
    assert_spectrum_close(lam, ref)
    both = S.spectra(dataset, method=method)
    np.testing.assert_array_equal(both.singular_values, sv)
    np.testing.assert_array_equal(both.covariance_eigenvalues, lam)
    assert both.sample_limited == (n < d)


@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize(("name", "ours", "ref"), SCALAR_CASES, ids=[c[0] for c in SCALAR_CASES])
def test_scalar_metrics_match_numpy(
    dataset: np.ndarray,
    method: S.Method,
    name: str,
    ours: Callable[..., float],
    ref: Callable[[np.ndarray], float],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # N < D cases of rankme
        value = ours(dataset, method=method)
    expected = ref(dataset)
    assert isinstance(value, float)
    assert math.isfinite(expected)
    assert value == pytest.approx(expected, rel=1e-8), name


def test_float64_gram_route_on_float32_input_is_exact() -> None:
    z = torch.from_numpy(gaussian(500, 64, 5).astype(np.float32))
    exact = z.double().numpy()  # the values the metric sees
    assert S.rankme(z, method="gram") == pytest.approx(ref_rankme(exact), rel=1e-12)
    assert S.rankme(z, method="gram") == pytest.approx(S.rankme(z, method="svd"), rel=1e-12)
    assert S.nesum(z, method="gram") == pytest.approx(ref_nesum(exact), rel=1e-10)
    assert_spectrum_close(S.singular_values(z, method="gram"), ref_sv(exact))


def float32_cases() -> dict[str, np.ndarray]:
    base = gaussian(3000, 48, 40, decay=0.5, offset=0.0)
    scale = np.arange(1, 49) ** -0.5
    return {
        "gaussian": base,
        "relu": np.maximum(base + 0.3 * scale, 0.0),  # non-negative, sparse, mean ~ std
        "offset": base + 1000.0,  # mean >> spread: centering keeps float32 products exact-ish
    }


@pytest.mark.parametrize("case", ["gaussian", "relu", "offset"])
def test_float32_input_gets_float64_accuracy(case: str) -> None:
    """Float32 rows are multiplied in float64: the values are those of the float64 copy."""
    z32 = float32_cases()[case].astype(np.float32)
    exact = z32.astype(np.float64)
    z = torch.from_numpy(z32)
    for name, ours, ref in SCALAR_CASES:
        assert ours(z) == pytest.approx(ref(exact), rel=1e-9), name
    sv = S.singular_values(z)
    assert_spectrum_close(sv, ref_sv(exact))
    lam = S.covariance_eigenvalues(z)
    ref_lam = np.clip(ref_cov_eig(exact), 0, None)
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-9, atol=1e-12 * ref_lam[0])
    both = S.spectra(z)
    np.testing.assert_allclose(both.singular_values, sv, rtol=1e-12)
    np.testing.assert_allclose(both.covariance_eigenvalues, lam, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("rank", [2, 10, 50])
def test_low_rank_float32_is_not_inflated_by_a_noise_floor(rank: int) -> None:
    """A collapsing encoder's embeddings: rank r in D = 512, a large mean. Float32 Gram
    products leave eigenvalues of ~1e-9 of the trace where the true ones are 0, and their
    square roots inflated RankMe by percents (+7.6% at r = 2, D = 2048). Oracle: numpy's
    float64 SVD of the same float32 values."""
    rng = np.random.default_rng(rank)
    # small integers: exact in float32, so the rank is exactly r + 1 (the mean)
    a, b = rng.integers(-3, 4, size=(2048, rank)), rng.integers(-3, 4, size=(rank, 512))
    z32 = (a @ b + 3).astype(np.float32)
    exact = z32.astype(np.float64)
    sigma = np.linalg.svd(exact, compute_uv=False)
    assert S.rankme(torch.from_numpy(z32)) == pytest.approx(ref_rankme(exact), rel=1e-9)
    assert S.rankme(z32) == pytest.approx(S.rankme_from_singular_values(sigma), rel=1e-9)
    assert S.stable_rank(z32) == pytest.approx(ref_stable_rank(exact), rel=1e-9)
    lam = S.covariance_eigenvalues(z32)
    assert np.count_nonzero(lam) <= rank  # zeros, not noise
    assert S.alpha_req(z32, fit_range=(1, rank)) == pytest.approx(
        ref_alpha_req(exact, (1, rank)), rel=1e-9
    )


@pytest.mark.parametrize("factor", [1e20, 1e-12])
def test_extreme_float32_scales(factor: float) -> None:
    z32 = (gaussian(200, 10, 42) * factor).astype(np.float32)
    exact = z32.astype(np.float64)
    for _, ours, ref in SCALAR_CASES:
        assert ours(torch.from_numpy(z32)) == pytest.approx(ref(exact), rel=1e-9)


def test_float32_nan_is_rejected() -> None:
    z = gaussian(50, 5, 43).astype(np.float32)
    z[7, 2] = np.nan
    for fn in (S.rankme, S.nesum, S.spectra, S.second_moments):
        with pytest.raises(ValueError, match="NaN or Inf in 1 of 50 rows"):
            fn(z)


def test_input_is_not_modified() -> None:
    z = gaussian(100, 10, 6)
    before = z.copy()
    S.covariance_eigenvalues(z)
    S.second_moments(z, chunk_rows=7)
    np.testing.assert_array_equal(z, before)


@pytest.mark.parametrize("factor", [1e150, 1e-150, 1e200, 1e-200])
def test_extreme_float64_scales_are_handled(factor: float) -> None:
    z = gaussian(60, 8, 7)
    big = z * factor
    np.testing.assert_allclose(S.singular_values(big), ref_sv(z) * factor, rtol=1e-12)
    if 1e-154 < factor < 1e154:  # otherwise the eigenvalues (~factor^2) leave float64's range
        np.testing.assert_allclose(
            S.covariance_eigenvalues(big) / factor**2,
            np.clip(ref_cov_eig(z), 0, None),
            rtol=1e-10,
        )
    # Scale-free metrics never see the overflow.
    for _, ours, ref in SCALAR_CASES:
        assert ours(big) == pytest.approx(ref(z), rel=1e-10)


# ----------------------------------------------------------------------------------
# Pure spectrum functions: closed forms
# ----------------------------------------------------------------------------------


def test_pure_functions_closed_forms() -> None:
    k = 7
    flat = np.ones(k)
    assert S.rankme_from_singular_values(flat, eps=0.0) == pytest.approx(k, rel=1e-14)
    assert S.stable_rank_from_singular_values(flat) == pytest.approx(k)
    assert S.nesum_from_eigenvalues(flat) == pytest.approx(k)
    assert S.participation_ratio_from_eigenvalues(flat) == pytest.approx(k)
    assert S.condition_number_from_singular_values([4.0, 2.0, 1.0]) == pytest.approx(4.0)
    # Unsorted input, torch input and explicit tolerance.
    assert S.condition_number_from_singular_values(torch.tensor([1.0, 4.0, 1e-20])) == 4.0
    assert S.condition_number_from_singular_values([4.0, 2.0, 1.0], tol=1.5) == 2.0
    # Two equal values and zeros: p = (1/2 + eps, 1/2 + eps, eps, eps).
    eps = 1e-3
    p = np.array([0.5 + eps, 0.5 + eps, eps, eps])
    assert S.rankme_from_singular_values([3.0, 0.0, 3.0, 0.0], eps=eps) == pytest.approx(
        float(np.exp(-np.sum(p * np.log(p)))), rel=1e-14
    )
    lam = np.array([9.0, 3.0, 1.0])
    assert S.participation_ratio_from_eigenvalues(lam) == pytest.approx(13.0**2 / 91.0)
    assert S.nesum_from_eigenvalues(lam) == pytest.approx(13.0 / 9.0)


def test_pure_functions_on_zero_spectra_return_nan() -> None:
    zeros = np.zeros(5)
    assert math.isnan(S.rankme_from_singular_values(zeros))
    assert math.isnan(S.stable_rank_from_singular_values(zeros))
    assert math.isnan(S.condition_number_from_singular_values(zeros))
    assert math.isnan(S.nesum_from_eigenvalues(zeros))
    assert math.isnan(S.participation_ratio_from_eigenvalues(zeros))
    assert math.isnan(S.alpha_req_from_eigenvalues(zeros, fit_range=(1, 5)))


def test_alpha_req_on_an_exact_power_law_spectrum_and_clipping() -> None:
    lam = np.arange(1, 201, dtype=np.float64) ** -1.3
    assert S.alpha_req_from_eigenvalues(lam) == pytest.approx(1.3, abs=1e-12)
    # Only 3 positive values in (4, 100): ranks 4..6 fit; 2 positive values in range -> fit.
    short = np.concatenate([lam[:6], np.zeros(10)])
    assert S.alpha_req_from_eigenvalues(short) == pytest.approx(1.3, abs=1e-12)
    assert S.alpha_req_from_eigenvalues(lam[:5]) == pytest.approx(1.3, abs=1e-12)
    # Fewer than 2 ranks left after clipping -> NaN.
    assert math.isnan(S.alpha_req_from_eigenvalues(lam[:4]))
    assert math.isnan(S.alpha_req_from_eigenvalues(np.concatenate([lam[:4], np.zeros(50)])))


# ----------------------------------------------------------------------------------
# alpha-ReQ recovers a planted power law
# ----------------------------------------------------------------------------------


def planted_power_law(n: int, d: int, alpha: float, seed: int) -> np.ndarray:
    """Data whose sample covariance is exactly O diag(i^-alpha) O^T."""
    r = np.random.default_rng(seed)
    g = r.standard_normal((n, d))
    g -= g.mean(axis=0)
    q, _ = np.linalg.qr(g)  # orthonormal, zero-mean columns
    white = q * math.sqrt(n - 1)  # sample covariance exactly I
    lam = np.arange(1, d + 1, dtype=np.float64) ** -alpha
    rot = ortho_group.rvs(d, random_state=seed)
    return (white * np.sqrt(lam)) @ rot.T + r.standard_normal(d)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("d", [150, 50])
def test_alpha_req_recovers_planted_exponent(alpha: float, d: int) -> None:
    z = planted_power_law(800, d, alpha, seed=11)
    expected = np.arange(1, d + 1, dtype=np.float64) ** -alpha
    np.testing.assert_allclose(S.covariance_eigenvalues(z), expected, rtol=1e-8)
    est = S.alpha_req(z)  # fit_range (4, 100), clipped to D = 50 in the second case
    assert abs(est - alpha) < 0.02
    assert est == pytest.approx(alpha, abs=1e-6)  # the construction is exact


def test_alpha_req_recovers_exponent_from_gaussian_samples() -> None:
    r = np.random.default_rng(12)
    alpha, d = 1.0, 128
    z = r.standard_normal((20_000, d)) * np.arange(1, d + 1) ** (-alpha / 2)
    assert abs(S.alpha_req(z) - alpha) < 0.02


# ----------------------------------------------------------------------------------
# Streaming: SecondMoments
# ----------------------------------------------------------------------------------


def split_rows(z: np.ndarray, seed: int) -> list[np.ndarray]:
    r = np.random.default_rng(seed)
    cuts = np.sort(r.choice(np.arange(1, len(z)), size=min(12, len(z) - 1), replace=False))
    parts = np.split(z, cuts)
    assert sum(len(p) for p in parts) == len(z)
    return parts


@pytest.mark.parametrize("name", ["gauss_tall", "lowrank_wide", "digits"])
def test_streaming_equals_one_shot(name: str, request: pytest.FixtureRequest) -> None:
    if name == "gauss_tall":
        z = gaussian(300, 40, 21)
    elif name == "lowrank_wide":
        z = low_rank(25, 60, 5, 22)
    else:
        z = request.getfixturevalue("digits")[0]
    parts = split_rows(z, seed=23)
    merged = functools.reduce(S.SecondMoments.merge, [S.second_moments(p) for p in parts])
    summed = sum(S.second_moments(torch.from_numpy(p)) for p in parts)
    plus = S.SecondMoments.zeros(z.shape[1])
    for p in parts:
        plus = plus + S.second_moments(p, chunk_rows=3)
    for m in (merged, summed, plus):
        assert isinstance(m, S.SecondMoments)
        assert m.n == len(z)
        np.testing.assert_allclose(m.total.numpy(), z.sum(axis=0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(m.outer.numpy(), z.T @ z, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(
            m.covariance().numpy(), np.cov(z, rowvar=False), rtol=1e-9, atol=1e-11
        )

    sp = S.spectra_from_moments(merged)
    n, d = z.shape
    assert sp.singular_values.shape == (min(n, d),)
    assert sp.covariance_eigenvalues.shape == (d,)
    assert sp.sample_limited == (n < d)
    one_shot = S.spectra(z)
    assert_spectrum_close(sp.singular_values, one_shot.singular_values, rtol=1e-9)
    assert_spectrum_close(sp.covariance_eigenvalues, one_shot.covariance_eigenvalues, rtol=1e-9)
    # Scalars from the streamed spectra equal the one-shot metrics and the references.
    pairs = [
        (S.rankme_from_singular_values(sp.singular_values), ref_rankme(z)),
        (S.stable_rank_from_singular_values(sp.singular_values), ref_stable_rank(z)),
        (S.nesum_from_eigenvalues(sp.covariance_eigenvalues), ref_nesum(z)),
        (
            S.participation_ratio_from_eigenvalues(sp.covariance_eigenvalues),
            ref_participation_ratio(z),
        ),
        (S.alpha_req_from_eigenvalues(sp.covariance_eigenvalues), ref_alpha_req(z)),
    ]
    for streamed, expected in pairs:
        assert streamed == pytest.approx(expected, rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert S.rankme_from_singular_values(sp.singular_values) == pytest.approx(
            S.rankme(z), rel=1e-9
        )
    assert S.nesum_from_eigenvalues(sp.covariance_eigenvalues) == pytest.approx(
        S.nesum(z), rel=1e-9
    )


def test_streaming_condition_number_on_well_conditioned_data() -> None:
    z = gaussian(400, 20, 24, decay=0.3)
    sp = S.spectra_from_moments(sum(S.second_moments(p) for p in split_rows(z, 25)))
    tol = sp.singular_values[0] * max(z.shape) * EPS
    assert S.condition_number_from_singular_values(sp.singular_values, tol=tol) == pytest.approx(
        ref_condition_number(z), rel=1e-9
    )


def test_ddp_style_sum_of_fields_equals_merge() -> None:
    z = gaussian(90, 12, 26)
    ranks = [S.second_moments(z[i::3]) for i in range(3)]  # three "processes"
    # What all_reduce(SUM) does to each field:
    reduced = S.SecondMoments(
        n=sum(m.n for m in ranks),
        total=torch.stack([m.total for m in ranks]).sum(0),
        outer=torch.stack([m.outer for m in ranks]).sum(0),
    )
    ref = S.spectra(z)
    got = S.spectra_from_moments(reduced)
    assert_spectrum_close(got.singular_values, ref.singular_values, rtol=1e-9)
    assert_spectrum_close(got.covariance_eigenvalues, ref.covariance_eigenvalues, rtol=1e-9)


@pytest.mark.parametrize("chunk_rows", [1, 5, 64, None])
def test_second_moments_chunking_float32(chunk_rows: int | None) -> None:
    z32 = gaussian(70, 9, 27).astype(np.float32)
    m = S.second_moments(torch.from_numpy(z32), chunk_rows=chunk_rows)
    z = z32.astype(np.float64)  # float32 products are exact in float64
    assert m.total.dtype == torch.float64 and m.outer.dtype == torch.float64
    np.testing.assert_allclose(m.outer.numpy(), z.T @ z, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(m.total.numpy(), z.sum(0), rtol=1e-13, atol=1e-12)
    assert torch.equal(m.outer, m.outer.T)


@pytest.mark.parametrize("features", [True, False])
def test_device_gram_path_matches_numpy(features: bool) -> None:
    # The non-CPU (torch addmm) route, exercised on the CPU.
    z = torch.from_numpy(gaussian(40, 30, 28).astype(np.float32))
    shift = torch.sum(z, 0, dtype=torch.float64) / z.shape[0]
    g = S._gram_torch(z, features=features, shift=shift, scale=0.25, chunk=7)
    y = z.double().numpy() * 0.25 - shift.numpy()
    np.testing.assert_allclose(g.numpy(), y.T @ y if features else y @ y.T, rtol=1e-12)
    h = S._gram(z, features=features, shift=shift, scale=0.25, chunk=7)
    np.testing.assert_allclose(h.numpy(), g.numpy(), rtol=1e-12, atol=1e-12)


def test_second_moments_validation() -> None:
    a = S.second_moments(gaussian(5, 3, 29))
    with pytest.raises(ValueError, match="dimension"):
        a.merge(S.second_moments(gaussian(5, 4, 29)))
    with pytest.raises(ValueError, match="float64"):
        S.SecondMoments(n=1, total=torch.zeros(3), outer=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="shape"):
        S.SecondMoments(
            n=1, total=torch.zeros(3, dtype=torch.float64), outer=torch.zeros(3, 2).double()
        )
    with pytest.raises(ValueError, match=">= 0"):
        S.SecondMoments(n=-1, total=a.total, outer=a.outer)
    with pytest.raises(ValueError, match="at least 2"):
        S.spectra_from_moments(S.second_moments(gaussian(1, 3, 29)))
    with pytest.raises(ValueError, match="chunk_rows"):
        S.second_moments(gaussian(5, 3, 29), chunk_rows=0)
    with pytest.raises(ValueError, match="overflow"):
        S.second_moments(gaussian(5, 3, 29) * 1e200)
    with pytest.raises(ValueError, match="empty"):
        S.SecondMoments.zeros(3).mean()


# ----------------------------------------------------------------------------------
# Invariances (hypothesis)
# ----------------------------------------------------------------------------------


INVARIANT: list[tuple[str, Callable[..., float]]] = [
    ("rankme", S.rankme),
    ("stable_rank", S.stable_rank),
    ("condition_number", S.condition_number),
    ("nesum", S.nesum),
    ("participation_ratio", S.participation_ratio),
    ("alpha_req", functools.partial(S.alpha_req, fit_range=(1, 50))),
]


def all_metrics(z: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {name: f(z) for name, f in INVARIANT}


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 40),
    d=st.integers(2, 12),
    seed=st.integers(0, 2**31 - 1),
    decay=st.floats(0.0, 1.5),
)
def test_invariant_to_row_permutation_and_rotation(n: int, d: int, seed: int, decay: float) -> None:
    z = gaussian(n, d, seed, decay=decay, offset=0.0)
    r = np.random.default_rng(seed + 1)
    q = ortho_group.rvs(d, random_state=seed) if d > 1 else np.ones((1, 1))
    base = all_metrics(z)
    permuted = all_metrics(z[r.permutation(n)])
    rotated = all_metrics(z @ q)
    scaled = all_metrics(z * 3.7)
    for name, value in base.items():
        assert math.isfinite(value), name
        assert permuted[name] == pytest.approx(value, rel=1e-8), name
        assert rotated[name] == pytest.approx(value, rel=1e-8), name
        assert scaled[name] == pytest.approx(value, rel=1e-8), name


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 30), d=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_rankme_bounds(n: int, d: int, seed: int) -> None:
    z = gaussian(n, d, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = S.rankme(z)
    m = min(n, d)
    # exp(entropy) of m probabilities that sum to 1 + m * eps.
    assert 1.0 - 1e-6 <= value <= m * (1 + 1e-5)
    assert value == pytest.approx(ref_rankme(z), rel=1e-8)


# ----------------------------------------------------------------------------------
# Degenerate and special inputs
# ----------------------------------------------------------------------------------


def test_rankme_warns_when_n_below_d() -> None:
    with pytest.warns(UserWarning, match="N < D"):
        S.rankme(gaussian(10, 20, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S.rankme(gaussian(20, 20, 30))  # N == D: no warning


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [5, 64])
def test_fully_collapsed_embeddings(d: int, dtype: type) -> None:
    row = np.random.default_rng(31).standard_normal(d).astype(dtype)
    z = np.tile(row, (100, 1))
    eps = 1e-7
    # One positive singular value: p = (1 + eps, eps, ..., eps) over m = d values.
    expected = math.exp(-(1 + eps) * math.log(1 + eps) - (d - 1) * eps * math.log(eps))
    assert S.rankme(z) == pytest.approx(expected, rel=1e-9)
    assert S.rankme(z) == pytest.approx(1.0, abs=1e-3)
    assert S.stable_rank(z) == pytest.approx(1.0, rel=1e-12)
    assert S.condition_number(z) == pytest.approx(1.0, rel=1e-12)
    sv = S.singular_values(z)
    assert sv[0] == pytest.approx(np.linalg.norm(row.astype(np.float64)) * 10.0, rel=1e-12)
    assert np.all(sv[1:] == 0.0)
    # Zero covariance: the covariance metrics are 0/0 -> NaN, never an exception.
    assert np.all(S.covariance_eigenvalues(z) == 0.0)
    assert math.isnan(S.nesum(z))
    assert math.isnan(S.participation_ratio(z))
    assert math.isnan(S.alpha_req(z))
    sp = S.spectra_from_moments(S.second_moments(z))
    assert np.all(sp.covariance_eigenvalues == 0.0)
    assert S.rankme_from_singular_values(sp.singular_values) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("z", [np.zeros((10, 4)), torch.zeros(3, 8)])
def test_all_zero_matrix_gives_nan(z: np.ndarray | torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert math.isnan(S.rankme(z))
    assert math.isnan(S.stable_rank(z))
    assert math.isnan(S.condition_number(z))
    assert math.isnan(S.nesum(z))
    assert math.isnan(S.participation_ratio(z))
    assert math.isnan(S.alpha_req(z))
    assert np.all(S.singular_values(z) == 0.0)
    sp = S.spectra_from_moments(S.second_moments(z))
    assert np.all(sp.singular_values == 0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_upcast(dtype: torch.dtype) -> None:
    z = torch.from_numpy(gaussian(200, 16, 32)).to(dtype)
    exact = z.float().double().numpy()  # the values the metric actually sees
    assert S.rankme(z) == pytest.approx(ref_rankme(exact), rel=1e-12)
    assert S.nesum(z) == pytest.approx(ref_nesum(exact), rel=1e-10)
    assert S.rankme(z, method="gram") == pytest.approx(ref_rankme(exact), rel=1e-12)
    assert S.nesum(z, method="gram") == pytest.approx(ref_nesum(exact), rel=1e-10)
    assert_spectrum_close(S.singular_values(z, method="gram"), ref_sv(exact))
    m = S.second_moments(z)
    np.testing.assert_allclose(m.outer.numpy(), exact.T @ exact, rtol=1e-12)


def test_torch_and_numpy_inputs_agree() -> None:
    z = gaussian(120, 10, 33)
    t = torch.from_numpy(z).requires_grad_(True)
    assert S.rankme(t) == pytest.approx(ref_rankme(z), rel=1e-10)
    assert S.alpha_req(t, fit_range=(2, 10)) == pytest.approx(ref_alpha_req(z, (2, 10)), rel=1e-8)
    non_contiguous = torch.from_numpy(np.asfortranarray(z))
    assert S.stable_rank(non_contiguous) == pytest.approx(ref_stable_rank(z), rel=1e-10)


def test_spectra_dataclass() -> None:
    sp = S.spectra(gaussian(10, 20, 34))
    assert sp.dim == 20 and sp.sample_limited
    assert sp.singular_values.shape == (10,)
    with pytest.raises(ValueError):
        sp.singular_values[0] = 1.0  # read-only
    with pytest.raises(ValueError, match="min"):
        S.Spectra(singular_values=np.ones(3), covariance_eigenvalues=np.ones(2))


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[1.0, np.nan], [0.0, 1.0]]),
        np.array([[1.0, np.inf], [0.0, 1.0]]),
        np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 3.0]], dtype=np.float32),
        np.ones(5),
        np.ones((1, 5)),
        np.ones((2, 3, 4)),
        np.ones((4, 3), dtype=np.int64),
        "not an array",
    ],
    ids=["nan", "inf", "nan32", "1d", "one_row", "3d", "int", "str"],
)
@pytest.mark.parametrize("fn", [f for _, f in INVARIANT] + [S.singular_values, S.spectra])
def test_bad_input_raises_value_error(bad: object, fn: Callable[..., object]) -> None:
    with pytest.raises(ValueError):
        fn(bad)


def test_bad_arguments_raise_value_error() -> None:
    z = gaussian(20, 5, 35)
    with pytest.raises(ValueError, match="eps"):
        S.rankme(z, eps=-1.0)
    with pytest.raises(ValueError, match="eps"):
        S.rankme(z, eps=float("nan"))
    with pytest.raises(ValueError, match="method"):
        S.rankme(z, method="qr")  # type: ignore[arg-type]
    for fit_range in [(0, 5), (5, 5), (6, 3), (1.5, 3), "ab", (True, 3), (1, 2, 3)]:
        with pytest.raises(ValueError, match="fit_range"):
            S.alpha_req(z, fit_range=fit_range)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        S.rankme_from_singular_values([1.0, -0.5])
    with pytest.raises(ValueError, match="1-D"):
        S.nesum_from_eigenvalues(np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        S.participation_ratio_from_eigenvalues([1.0, np.nan])
    with pytest.raises(ValueError, match="tol"):
        S.condition_number_from_singular_values([1.0], tol=-1.0)
    # Round-off negatives are clamped, not rejected.
    assert S.nesum_from_eigenvalues([2.0, 1.0, -1e-17]) == pytest.approx(1.5)


# ----------------------------------------------------------------------------------
# Fallbacks when a decomposition fails
# ----------------------------------------------------------------------------------


def _fail(*args: object, **kwargs: object) -> torch.Tensor:
    raise torch.linalg.LinAlgError("forced failure for the test")


def test_fallback_when_torch_eigvalsh_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    z = gaussian(150, 12, 36)
    expected_pr = ref_participation_ratio(z)  # before np.linalg.eigvalsh is patched below
    monkeypatch.setattr(torch.linalg, "eigvalsh", _fail)
    assert S.rankme(z) == pytest.approx(ref_rankme(z), rel=1e-10)
    assert S.nesum(z) == pytest.approx(ref_nesum(z), rel=1e-10)
    sp = S.spectra_from_moments(S.second_moments(z))
    assert_spectrum_close(sp.singular_values, ref_sv(z))

    def np_fail(*args: object, **kwargs: object) -> np.ndarray:
        raise np.linalg.LinAlgError("forced failure for the test")

    monkeypatch.setattr(np.linalg, "eigvalsh", np_fail)
    assert S.participation_ratio(z) == pytest.approx(expected_pr, rel=1e-10)
    assert_spectrum_close(S.singular_values(z), ref_sv(z))


def test_fallback_when_torch_svd_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    z = low_rank(80, 10, 4, 37)
    monkeypatch.setattr(torch.linalg, "svdvals", _fail)
    assert S.condition_number(z) == pytest.approx(ref_condition_number(z), rel=1e-8)
    assert S.rankme(z, method="svd") == pytest.approx(ref_rankme(z), rel=1e-10)
    assert_spectrum_close(S.covariance_eigenvalues(z, method="svd"), ref_cov_eig(z).clip(0))


# ----------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference() -> None:
    z = gaussian(3000, 128, 38).astype(np.float32)
    exact = z.astype(np.float64)
    zc = torch.from_numpy(z).cuda()
    assert S.rankme(zc) == pytest.approx(ref_rankme(exact), rel=1e-9)  # float64 on GPU
    assert S.rankme(zc.half()) == pytest.approx(
        ref_rankme(torch.from_numpy(z).half().double().numpy()), rel=1e-9
    )
    assert S.nesum(zc) == pytest.approx(ref_nesum(exact), rel=1e-9)
    assert S.condition_number(zc) == pytest.approx(ref_condition_number(exact), rel=1e-8)
    m = S.second_moments(zc, chunk_rows=500)
    assert m.outer.is_cuda and m.total.is_cuda
    sp = S.spectra_from_moments(m)
    assert_spectrum_close(sp.singular_values, ref_sv(exact), rtol=1e-9)
