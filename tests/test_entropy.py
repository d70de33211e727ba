"""Tests for sslwatch.metrics.entropy against closed forms and plain numpy/scipy oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import digamma, gammaln

from sslwatch.metrics.entropy import entropy

# --------------------------------------------------------------------------- oracles


def kl_oracle(x: np.ndarray, k: int, floor_rel: float = 1e-10) -> float:
    """Kozachenko-Leonenko entropy written plainly with scipy (dense distances)."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    dist = cdist(x, x)
    np.fill_diagonal(dist, np.inf)  # exclude the point itself, by index
    r = np.sort(dist, axis=1)[:, k - 1]
    scale = math.sqrt(np.var(x, axis=0).mean())
    if scale == 0.0:
        scale = float(np.abs(x).max()) or 1.0
    r = np.maximum(r, floor_rel * scale)
    log_vd = (d / 2) * np.log(np.pi) - gammaln(d / 2 + 1)
    return float(digamma(n) - digamma(k) + log_vd + d * np.mean(np.log(r)))


def gaussian_oracle(x: np.ndarray) -> float:
    cov = np.atleast_2d(np.cov(x, rowvar=False))  # denominator N-1
    sign, logdet = np.linalg.slogdet(2 * np.pi * np.e * cov)
    assert sign > 0
    return 0.5 * logdet


def random_cov(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


# --------------------------------------------------------------------------- knn


@pytest.mark.parametrize("d", [1, 2, 4, 8])
def test_knn_close_to_gaussian_closed_form(d: int) -> None:
    rng = np.random.default_rng(100 + d)
    cov = random_cov(d, rng)
    x = rng.multivariate_normal(np.zeros(d), cov, size=20_000)
    truth = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1]
    h = entropy(x, estimator="knn", k=3)
    assert abs(h - truth) / d < 0.05, (h, truth)


@pytest.mark.parametrize(
    ("n", "d", "k"),
    [
        (300, 3, 3),  # KD-tree path
        (250, 1, 1),
        (400, 8, 5),  # KD-tree path, largest D
        (300, 9, 3),  # brute-force path, smallest D
        (300, 40, 3),
        (200, 40, 1),
        (60, 20, 59),  # k = N - 1: farthest point
        (2, 3, 1),  # smallest legal sample, both paths
        (2, 12, 1),
    ],
)
def test_knn_matches_plain_oracle(n: int, d: int, k: int) -> None:
    rng = np.random.default_rng(n * d + k)
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, size=d) + 7.0
    assert entropy(x, k=k) == pytest.approx(kl_oracle(x, k), rel=0, abs=1e-9)


@pytest.mark.parametrize("d", [3, 40])
def test_knn_torch_float32_equals_oracle_on_same_values(d: int) -> None:
    rng = np.random.default_rng(d)
    x32 = rng.standard_normal((300, d)).astype(np.float32)
    got = entropy(torch.from_numpy(x32), k=3)
    assert got == pytest.approx(kl_oracle(x32.astype(np.float64), 3), abs=1e-9)


def test_knn_half_precision_is_upcast() -> None:
    rng = np.random.default_rng(1)
    x16 = torch.from_numpy(rng.standard_normal((200, 4))).half()
    assert entropy(x16) == pytest.approx(kl_oracle(x16.double().numpy(), 3), abs=1e-9)


@pytest.mark.parametrize("d", [3, 40])
def test_knn_duplicates_are_finite_and_follow_documented_floor(d: int) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, d))
    x[10:15] = x[3]  # 6 identical rows: for k=3 their 3rd neighbour is at distance 0
    h = entropy(x, k=3)
    assert math.isfinite(h)
    assert h == pytest.approx(kl_oracle(x, 3), abs=1e-9)
    assert h < entropy(rng.standard_normal((200, d)), k=3)


@pytest.mark.parametrize("d", [2, 40])
@pytest.mark.parametrize("offset", [0.0, 3.5])
def test_knn_fully_collapsed_is_very_negative_but_finite(d: int, offset: float) -> None:
    n, k = 100, 3
    x = np.full((n, d), offset)
    scale = offset if offset > 0 else 1.0
    log_vd = (d / 2) * np.log(np.pi) - gammaln(d / 2 + 1)
    expected = digamma(n) - digamma(k) + log_vd + d * np.log(1e-10 * scale)
    h = entropy(x, k=k)
    assert math.isfinite(h)
    assert h == pytest.approx(expected, abs=1e-9)
    assert h < -15 * d


@pytest.mark.parametrize("d", [3, 40])
@pytest.mark.parametrize("c", [1e-3, 0.5, 7.0, 1e4])
def test_knn_scaling_property(d: int, c: float) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, d))
    x[:5] = x[7]  # duplicates too: the floor scales with the data
    assert entropy(c * x) == pytest.approx(entropy(x) + d * math.log(c), abs=1e-8)


def test_knn_translation_and_row_order_invariant() -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((300, 5))
    perm = rng.permutation(300)
    h = entropy(x)
    assert entropy(x[perm] + 100.0) == pytest.approx(h, abs=1e-8)


def test_knn_larger_k_still_consistent() -> None:
    rng = np.random.default_rng(13)
    x = rng.standard_normal((5000, 2))
    truth = 0.5 * 2 * math.log(2 * math.pi * math.e)
    assert abs(entropy(x, k=10) - truth) / 2 < 0.05


# --------------------------------------------------------------------------- gaussian


@pytest.mark.parametrize(("n", "d"), [(50, 1), (500, 3), (300, 20)])
def test_gaussian_matches_numpy(n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 3.0
    assert entropy(x, estimator="gaussian") == pytest.approx(gaussian_oracle(x), abs=1e-9)
    got32 = entropy(torch.from_numpy(x.astype(np.float32)), estimator="gaussian")
    assert got32 == pytest.approx(gaussian_oracle(x.astype(np.float32).astype(np.float64)))


def test_gaussian_closed_form_for_large_sample() -> None:
    rng = np.random.default_rng(3)
    cov = random_cov(6, rng)
    x = rng.multivariate_normal(np.zeros(6), cov, size=20_000)
    truth = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1]
    assert entropy(x, estimator="gaussian") == pytest.approx(truth, abs=0.05)


def test_gaussian_k_is_ignored() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 3))
    assert entropy(x, estimator="gaussian", k=50) == entropy(x, estimator="gaussian")


def _singular_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(9)
    few = rng.standard_normal((5, 8))  # N <= D
    const = rng.standard_normal((100, 4))
    const[:, 2] = 1.5  # a constant dimension
    dep = rng.standard_normal((100, 4))
    dep[:, 3] = dep[:, 0] - 2 * dep[:, 1]  # linearly dependent dimensions
    collapsed = np.ones((50, 3))
    return [few, const, dep, collapsed]


@pytest.mark.parametrize("x", _singular_cases())
def test_gaussian_singular_covariance_returns_minus_inf(x: np.ndarray) -> None:
    assert entropy(x, estimator="gaussian") == -math.inf


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("z", "kwargs", "match"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), {}, "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), {"estimator": "gaussian"}, "NaN"),
        (np.arange(5.0), {}, "2-D"),
        (np.zeros((1, 3)), {}, "at least 2"),
        (np.zeros((1, 3)), {"estimator": "gaussian"}, "at least 2"),
        (np.random.default_rng(0).standard_normal((3, 2)), {"k": 3}, "k=3"),
        (np.random.default_rng(0).standard_normal((10, 2)), {"k": 0}, "positive integer"),
        (np.random.default_rng(0).standard_normal((10, 2)), {"k": 1.5}, "positive integer"),
        (np.random.default_rng(0).standard_normal((10, 2)), {"k": True}, "positive integer"),
        (np.random.default_rng(0).standard_normal((10, 2)), {"estimator": "kde"}, "estimator"),
        (np.ones((10, 2), dtype=np.int64), {}, "floating point"),
    ],
)
def test_bad_input_raises_value_error(z: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        entropy(z, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("d", [3, 40])
def test_cuda_matches_cpu(d: int) -> None:
    rng = np.random.default_rng(21)
    x = rng.standard_normal((500, d))
    x[:4] = x[9]
    cpu = entropy(x)
    gpu = entropy(torch.from_numpy(x).cuda())
    assert gpu == pytest.approx(cpu, abs=1e-9)
    assert entropy(torch.from_numpy(x).cuda(), estimator="gaussian") == pytest.approx(
        entropy(x, estimator="gaussian"), abs=1e-8
    )


@pytest.mark.parametrize("offset", [0.0, 1e6, 1e7])
def test_gaussian_ignores_a_large_mean_offset(offset: float) -> None:
    """The covariance does not depend on the mean: a 1e7 offset must not read as singular."""
    x = np.random.default_rng(2).normal(size=(2000, 64))
    shifted = x + offset
    cov = np.cov(shifted, rowvar=False)
    closed = 0.5 * (64 * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1])
    assert entropy(shifted, estimator="gaussian") == pytest.approx(closed, rel=1e-9)
