"""Tests for sslwatch.metrics.views against plain numpy/scipy formulas and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist
from scipy.stats import special_ortho_group

from sslwatch.metrics import views as views_module
from sslwatch.metrics.views import alignment, collapse_std, lidar, uniformity

# --------------------------------------------------------------------------- oracles


def lidar_oracle(v: np.ndarray, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """LiDAR written plainly with numpy loops (Thilak et al. 2024)."""
    v = np.asarray(v, dtype=np.float64)
    n, q, d = v.shape
    mu_i = v.mean(axis=1)
    mu = mu_i.mean(axis=0)
    sb = np.zeros((d, d))
    for i in range(n):
        sb += np.outer(mu_i[i] - mu, mu_i[i] - mu)
    sb /= n - 1
    sw = np.zeros((d, d))
    for i in range(n):
        for j in range(q):
            sw += np.outer(v[i, j] - mu_i[i], v[i, j] - mu_i[i])
    sw = sw / (n * (q - 1)) + delta * np.eye(d)
    w, u = np.linalg.eigh(sw)
    w_inv_sqrt = u @ np.diag(w**-0.5) @ u.T
    lam = np.linalg.eigvalsh(w_inv_sqrt @ sb @ w_inv_sqrt)
    lam = np.clip(lam, 0.0, None)
    p = lam / lam.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def make_views(n: int, q: int, d: int, seed: int, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clean = rng.standard_normal((n, 1, d)) * rng.uniform(0.2, 2.0, size=d)
    return clean + noise * rng.standard_normal((n, q, d))


# --------------------------------------------------------------------------- lidar


@pytest.mark.parametrize(
    ("n", "q", "d"),
    [(40, 2, 8), (60, 5, 16), (10, 3, 32), (200, 4, 5), (2, 2, 3)],
)
def test_lidar_matches_numpy_oracle(n: int, q: int, d: int) -> None:
    v = make_views(n, q, d, seed=n + q + d)
    assert lidar(v) == pytest.approx(lidar_oracle(v), rel=1e-8)


@pytest.mark.filterwarnings("ignore:LiDAR. the ridge delta:UserWarning")
def test_lidar_parameters_and_dtypes_match_oracle() -> None:
    v = make_views(30, 4, 12, seed=1)
    assert lidar(v, delta=1e-2, eps=0.0) == pytest.approx(
        lidar_oracle(v, delta=1e-2, eps=0.0), rel=1e-8
    )
    v32 = v.astype(np.float32)
    expected = lidar_oracle(v32.astype(np.float64))
    assert lidar(torch.from_numpy(v32)) == pytest.approx(expected, rel=1e-8)


def test_lidar_is_between_one_and_dimension() -> None:
    v = make_views(100, 4, 10, seed=2)
    assert 1.0 <= lidar(v) <= 10.0 + 1e-6


@pytest.mark.filterwarnings("ignore:LiDAR. the ridge delta:UserWarning")
def test_lidar_counts_discriminative_directions() -> None:
    rng = np.random.default_rng(3)
    n, q, d = 200, 4, 16
    # Informative: the sample identity lives in 8 of 16 dimensions.
    clean = np.zeros((n, 1, d))
    clean[:, :, :8] = rng.standard_normal((n, 1, 8))
    informative = clean + 0.1 * rng.standard_normal((n, q, d))
    # Signal in 2 dims only gives an effective rank close to 2.
    clean2 = np.zeros((n, 1, d))
    clean2[:, :, :2] = rng.standard_normal((n, 1, 2))
    two = clean2 + 0.01 * rng.standard_normal((n, q, d))
    assert lidar(two) == pytest.approx(2.0, abs=0.2)
    assert lidar(informative) == pytest.approx(8.0, abs=0.5)


def test_lidar_collapsed_returns_one() -> None:
    v = np.ones((20, 3, 5))
    assert lidar(v) == 1.0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 30),
    q=st.integers(2, 5),
    d=st.integers(1, 10),
)
def test_lidar_invariant_to_view_and_sample_order(seed: int, n: int, q: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    v = make_views(n, q, d, seed=seed)
    base = lidar(v)
    shuffled_views = np.stack([v[i, rng.permutation(q)] for i in range(n)])
    shuffled_samples = v[rng.permutation(n)]
    assert lidar(shuffled_views) == pytest.approx(base, rel=1e-7, abs=1e-9)
    assert lidar(shuffled_samples) == pytest.approx(base, rel=1e-7, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(2, 10))
def test_lidar_invariant_to_rotation_and_translation(seed: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    v = make_views(25, 3, d, seed=seed)
    rot = special_ortho_group.rvs(d, random_state=rng)
    moved = v @ rot.T + rng.standard_normal(d) * 5.0
    assert lidar(moved) == pytest.approx(lidar(v), rel=1e-6)


@pytest.mark.parametrize(
    ("views", "kwargs", "match"),
    [
        (np.zeros((10, 1, 4)), {}, "at least 2 views"),
        (np.zeros((0, 3, 4)), {}, "empty"),
        (np.zeros((10, 3, 0)), {}, "empty"),
        (np.random.default_rng(0).standard_normal((1, 3, 4)), {}, "at least 2 samples"),
        (np.zeros((10, 4)), {}, "3-D"),
        (np.full((4, 3, 2), np.nan), {}, "NaN"),
        (np.ones((4, 3, 2)), {"delta": 0.0}, "delta"),
        (np.ones((4, 3, 2)), {"delta": -1.0}, "delta"),
        (np.ones((4, 3, 2)), {"eps": -1e-3}, "eps"),
    ],
)
def test_lidar_bad_input(views: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lidar(views, **kwargs)


# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("alpha", [2, 1, 0.5, 3.0])
def test_alignment_matches_numpy(alpha: float) -> None:
    rng = np.random.default_rng(7)
    z1 = rng.standard_normal((300, 16))
    z2 = z1 + 0.4 * rng.standard_normal((300, 16))
    expected = np.mean(np.linalg.norm(unit_rows(z1) - unit_rows(z2), axis=1) ** alpha)
    assert alignment(z1, z2, alpha=alpha) == pytest.approx(expected, rel=1e-12)
    got = alignment(torch.from_numpy(z1).float(), torch.from_numpy(z2).float(), alpha)
    assert got == pytest.approx(expected, rel=1e-5)


def test_alignment_extremes_and_zero_rows() -> None:
    rng = np.random.default_rng(8)
    z = rng.standard_normal((50, 8))
    assert alignment(z, 3.0 * z) == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert alignment(z, -z) == pytest.approx(4.0)  # antipodal: ||u - (-u)||^2 = 4
    z0 = z.copy()
    z0[0] = 0.0  # the zero row stays zero: its distance to a unit vector is 1
    expected = (1.0 + 49 * 0.0) / 50
    manual = np.mean(np.linalg.norm(unit_rows(z0) - unit_rows(z), axis=1) ** 2)
    assert alignment(z0, z) == pytest.approx(manual, abs=1e-12)
    assert manual == pytest.approx(expected)


def test_alignment_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        alignment(np.ones((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="same shape"):
        alignment(np.ones((5, 3)), np.ones((6, 3)))
    with pytest.raises(ValueError, match="alpha"):
        alignment(np.ones((5, 3)), np.ones((5, 3)), alpha=0)
    with pytest.raises(ValueError, match="NaN"):
        alignment(np.full((5, 3), np.nan), np.ones((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        alignment(np.ones(5), np.ones(5))


# --------------------------------------------------------------------------- uniformity


def uniformity_oracle(z: np.ndarray, t: float = 2.0) -> float:
    d2 = pdist(unit_rows(np.asarray(z, dtype=np.float64)), "sqeuclidean")
    return float(np.log(np.mean(np.exp(-t * d2))))


@pytest.mark.parametrize(
    ("n", "d", "t"), [(2, 3, 2.0), (300, 8, 2.0), (500, 32, 0.5), (97, 4, 10.0)]
)
def test_uniformity_matches_pdist(n: int, d: int, t: float) -> None:
    rng = np.random.default_rng(n + d)
    z = rng.standard_normal((n, d)) + 0.5
    assert uniformity(z, t=t) == pytest.approx(uniformity_oracle(z, t), abs=1e-10)
    z32 = torch.from_numpy(z.astype(np.float32))
    assert uniformity(z32, t=t) == pytest.approx(uniformity_oracle(z, t), abs=1e-5)


def test_uniformity_chunked_path_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(17)
    z = rng.standard_normal((403, 6))
    z[5] = 0.0  # a zero row is kept as the zero vector
    expected = uniformity_oracle(z)
    monkeypatch.setattr(views_module, "_MAX_BLOCK_ENTRIES", 403 * 60)  # chunks of 60 rows
    assert uniformity(z) == pytest.approx(expected, abs=1e-10)


def test_uniformity_collapsed_and_large_t() -> None:
    assert uniformity(np.ones((30, 4))) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(18)
    z = rng.standard_normal((200, 3))
    # t = 200: exp(-t d^2) underflows in float64 for most pairs; logsumexp must not.
    got = uniformity(z, t=200.0)
    assert math.isfinite(got)
    d2 = pdist(unit_rows(z), "sqeuclidean")
    m = (-200.0 * d2).max()
    expected = m + np.log(np.sum(np.exp(-200.0 * d2 - m))) - np.log(d2.size)
    assert got == pytest.approx(expected, abs=1e-9)


def test_uniformity_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(np.ones((1, 4)))
    with pytest.raises(ValueError, match="t must"):
        uniformity(np.ones((5, 4)), t=0)
    with pytest.raises(ValueError, match="NaN"):
        uniformity(np.full((5, 4), np.inf))


# --------------------------------------------------------------------------- collapse_std


def test_collapse_std_matches_numpy() -> None:
    rng = np.random.default_rng(19)
    z = rng.standard_normal((250, 12)) * rng.uniform(0.1, 3.0, size=12) + 1.0
    expected = np.std(unit_rows(z), axis=0, ddof=1).mean()
    assert collapse_std(z) == pytest.approx(expected, rel=1e-12)
    assert collapse_std(torch.from_numpy(z).half()) == pytest.approx(expected, rel=1e-2)


def test_collapse_std_chunked_path_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(20)
    z = rng.standard_normal((101, 5))
    expected = np.std(unit_rows(z), axis=0, ddof=1).mean()
    monkeypatch.setattr(views_module, "_MAX_BLOCK_ENTRIES", 5 * 9)  # chunks of 9 rows
    assert collapse_std(z) == pytest.approx(expected, rel=1e-12)


def test_collapse_std_collapsed_and_isotropic() -> None:
    rng = np.random.default_rng(21)
    direction = rng.standard_normal(64)
    collapsed = np.outer(rng.uniform(0.5, 2.0, size=1000), direction)  # one ray
    assert collapse_std(collapsed) == pytest.approx(0.0, abs=1e-12)
    for d in (16, 128):
        iso = rng.standard_normal((20_000, d))
        assert collapse_std(iso) == pytest.approx(1 / math.sqrt(d), rel=0.02)


def test_collapse_std_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        collapse_std(np.ones((1, 4)))
    with pytest.raises(ValueError, match="2-D"):
        collapse_std(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        collapse_std(np.array([[1.0, np.nan], [0.0, 1.0]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(22)
    v = make_views(40, 3, 8, seed=5)
    z1, z2 = rng.standard_normal((2, 300, 16))
    dev = torch.device("cuda")
    assert lidar(torch.from_numpy(v).to(dev)) == pytest.approx(lidar(v), rel=1e-9)
    t1, t2 = torch.from_numpy(z1).to(dev), torch.from_numpy(z2).to(dev)
    assert alignment(t1, t2) == pytest.approx(alignment(z1, z2), rel=1e-9)
    assert uniformity(t1) == pytest.approx(uniformity(z1), abs=1e-9)
    assert collapse_std(t1) == pytest.approx(collapse_std(z1), rel=1e-9)
