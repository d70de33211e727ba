"""Clustering metrics against scikit-learn (the oracle) and plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_samples,
    silhouette_score,
)

from sslwatch.metrics._scaling import unit_scaled
from sslwatch.metrics.clustering import (
    KMeansResult,
    _kmeans,
    _lloyd,
    _nearest,
    _seeding,
    _workers,
    cluster_agreement,
    distance_pass,
    kmeans,
    silhouette,
)

METRICS = ["euclidean", "cosine"]


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n_samples=500, n_features=6, centers=5, cluster_std=2.0, random_state=3)
    return x, y.astype(np.int64)


def _sk_kmeans_inertia(x: np.ndarray, k: int, n_init: int, seed: int = 0) -> float:
    km = KMeans(k, init="k-means++", n_init=n_init, algorithm="lloyd", random_state=seed)
    return float(km.fit(x).inertia_)


# ------------------------------------------------------------------------ silhouette


@pytest.mark.parametrize("metric", METRICS)
def test_silhouette_matches_sklearn_on_blobs_with_singletons(blobs, metric):
    x, y = blobs
    y = y.copy()
    y[[0, 7]] = [10, 11]  # two singleton clusters: their samples score 0
    assert silhouette(x, y, metric=metric) == pytest.approx(
        silhouette_score(x, y, metric=metric), abs=1e-6
    )


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_silhouette_matches_sklearn_on_real_data(request, data, metric):
    x, y = request.getfixturevalue(data)
    x, y = x[:1500], y[:1500]
    km_labels = kmeans(x, 10, n_init=1, seed=0).labels
    for labels in (y, km_labels):
        ours = silhouette(x, labels, metric=metric)
        assert ours == pytest.approx(silhouette_score(x, labels, metric=metric), abs=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("symmetric", "tile", "reduce"),
    [
        (True, 37, "segments"),
        (True, 37, "index_add"),
        (True, 37, "onehot"),
        (False, 37, "segments"),
        (False, 37, "index_add"),
        (False, 10_000, "onehot"),
    ],
)
def test_silhouette_per_sample_values_match_sklearn_on_every_code_path(
    digits, metric, symmetric, tile, reduce
):
    x, y = digits
    x, y = x[:400], y[:400].copy()
    y[5] = 42  # singleton
    codes = np.unique(y, return_inverse=True)[1]
    ours = distance_pass(
        torch.from_numpy(x),
        torch.from_numpy(codes.astype(np.int64)),
        int(codes.max()) + 1,
        metric,
        symmetric=symmetric,
        tile=tile,
        reduce=reduce,
    ).silhouette
    assert ours is not None
    np.testing.assert_allclose(ours.numpy(), silhouette_samples(x, y, metric=metric), atol=1e-9)


@pytest.mark.parametrize("symmetric", [True, False])
def test_silhouette_many_small_clusters(digits, symmetric):
    # 134 clusters of about 3: a 100-wide tile spans more clusters than the slice
    # reduction handles, so it falls back to index_add_; must still match sklearn.
    x, _ = digits
    x = x[:400]
    y = np.random.default_rng(1).permutation(np.arange(400) // 3)
    codes = np.unique(y, return_inverse=True)[1]
    ours = distance_pass(
        torch.from_numpy(x),
        torch.from_numpy(codes.astype(np.int64)),
        int(codes.max()) + 1,
        "euclidean",
        symmetric=symmetric,
        tile=100,
    ).silhouette
    assert ours is not None
    np.testing.assert_allclose(ours.numpy(), silhouette_samples(x, y), atol=1e-9)


def test_silhouette_float32_torch_input_and_zero_rows(blobs):
    x, y = blobs
    x = x.copy()
    x[3] = 0.0  # an all-zero row: cosine distance 1 to everything else, as sklearn
    xt = torch.from_numpy(x.astype(np.float32))
    for metric in METRICS:
        expected = silhouette_score(x.astype(np.float32).astype(np.float64), y, metric=metric)
        assert silhouette(xt, torch.from_numpy(y), metric=metric) == pytest.approx(
            expected, abs=1e-6
        )


def test_silhouette_of_two_points_per_cluster_closed_form():
    # clusters {0, 1} at distance 1 apart internally, far from {10, 11}: a = 1,
    # b = mean distance to the other cluster.
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels = [0, 0, 1, 1]
    b = np.array([10.5, 9.5, 9.5, 10.5])
    expected = float(np.mean((b - 1.0) / b))
    assert silhouette(x, labels) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_clusters=st.integers(2, 6))
def test_silhouette_invariant_to_label_renaming(seed, n_clusters):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3))
    labels = rng.integers(0, n_clusters, size=60)
    labels[:n_clusters] = np.arange(n_clusters)  # every cluster used
    renamed = rng.permutation(np.arange(100, 100 + n_clusters))[labels]
    as_strings = np.array([f"c{v}" for v in renamed])
    base = silhouette(x, labels)
    assert silhouette(x, renamed) == pytest.approx(base, abs=1e-12)
    assert silhouette(x, as_strings) == pytest.approx(base, abs=1e-12)
    assert base == pytest.approx(silhouette_score(x, labels), abs=1e-9)


def test_silhouette_sample_size_is_close_and_deterministic():
    x, y = make_blobs(n_samples=6000, n_features=8, centers=6, cluster_std=3.0, random_state=1)
    full = silhouette(x, y)
    sub = silhouette(x, y, sample_size=1500, seed=4)
    assert sub == silhouette(x, y, sample_size=1500, seed=4)
    assert abs(sub - full) < 0.03
    others = {silhouette(x, y, sample_size=1500, seed=s) for s in range(4)}
    assert len(others) > 1  # a different seed draws a different subsample
    # a subsample at least as large as the data is the data
    assert silhouette(x, y, sample_size=6000) == pytest.approx(full, abs=1e-12)
    assert silhouette(x[:20], y[:20], sample_size=10**6) == pytest.approx(
        silhouette_score(x[:20], y[:20]), abs=1e-9
    )


def test_silhouette_degenerate_labels_give_nan(blobs):
    x, _ = blobs
    assert math.isnan(silhouette(x, np.zeros(len(x), dtype=int)))
    assert math.isnan(silhouette(x, np.arange(len(x))))
    # collapsed embeddings with two labels: every distance is 0, s(i) = 0 (sklearn too)
    z = np.ones((10, 3))
    lab = [0] * 5 + [1] * 5
    assert silhouette(z, lab) == pytest.approx(silhouette_score(z, lab), abs=1e-12)


def test_silhouette_bad_input_raises(blobs):
    x, y = blobs
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        silhouette(bad, y)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        silhouette(bad, y)
    with pytest.raises(ValueError, match="2-D"):
        silhouette(x[:, 0], y)
    with pytest.raises(ValueError, match="at least 2 samples"):
        silhouette(x[:1], y[:1])
    with pytest.raises(ValueError, match="length 499"):
        silhouette(x, y[:-1])
    with pytest.raises(ValueError, match="metric"):
        silhouette(x, y, metric="manhattan")
    with pytest.raises(ValueError, match="sample_size"):
        silhouette(x, y, sample_size=1)


# --------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("data", ["digits", "mnist1d", "blobs"])
def test_kmeans_inertia_within_one_percent_of_sklearn(request, data):
    x, _ = request.getfixturevalue(data)
    x, k = x[:2000], 10
    ours = kmeans(x, k, n_init=3, seed=0)
    assert isinstance(ours, KMeansResult)
    assert ours.inertia <= 1.01 * _sk_kmeans_inertia(x, k, n_init=3)
    assert 1 <= ours.n_iter <= 300


def test_kmeans_labels_centroids_inertia_consistent_with_numpy(mnist1d):
    x, _ = mnist1d
    res = kmeans(x, 8, n_init=2, seed=1)
    assert res.labels.dtype == np.int64 and res.labels.shape == (len(x),)
    assert res.centroids.dtype == np.float64 and res.centroids.shape == (8, x.shape[1])
    d2 = ((x[:, None, :] - res.centroids[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(res.labels, d2.argmin(axis=1))
    assert res.inertia == pytest.approx(d2.min(axis=1).sum(), rel=1e-9)
    # converged Lloyd: each centroid is (to the tolerance) the mean of its members
    means = np.stack([x[res.labels == j].mean(axis=0) for j in range(8)])
    assert np.abs(means - res.centroids).max() < 0.05 * x.std()


def test_kmeans_seed_determinism(mnist1d):
    x, _ = mnist1d
    x = x[:1500]
    a = kmeans(x, 10, n_init=1, seed=7)
    b = kmeans(torch.from_numpy(x), 10, n_init=1, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia
    # another seed draws other k-means++ centres: some seed gives another partition
    assert any(
        cluster_agreement(a.labels, kmeans(x, 10, n_init=1, seed=s).labels, method="ari") < 1.0
        for s in (8, 9, 10)
    )


def test_kmeans_float32_input(digits):
    x, _ = digits
    r32 = kmeans(x.astype(np.float32), 10, n_init=3, seed=0)
    assert r32.inertia <= 1.01 * _sk_kmeans_inertia(x.astype(np.float32), 10, n_init=3)
    d2 = ((x[:, None, :] - r32.centroids[None, :, :]) ** 2).sum(-1)
    assert r32.inertia == pytest.approx(d2[np.arange(len(x)), r32.labels].sum(), rel=1e-5)


def test_half_precision_input_is_upcast(blobs):
    x, y = blobs
    xh = torch.from_numpy(x).to(torch.bfloat16)
    exact = xh.float().numpy().astype(np.float64)  # the values bf16 can represent
    res = kmeans(xh, 5, n_init=2)
    assert res.inertia <= 1.01 * _sk_kmeans_inertia(exact, 5, n_init=2)
    assert silhouette(xh, y) == pytest.approx(silhouette_score(exact, y), abs=1e-6)


def test_kmeans_k1_and_k_equals_n_closed_forms(blobs):
    x, _ = blobs
    one = kmeans(x, 1)
    np.testing.assert_allclose(one.centroids[0], x.mean(axis=0), atol=1e-10)
    assert one.inertia == pytest.approx(((x - x.mean(axis=0)) ** 2).sum(), rel=1e-10)
    small = x[:12]
    every = kmeans(small, 12, n_init=1)
    assert every.inertia == pytest.approx(0.0, abs=1e-9)
    assert sorted(every.labels.tolist()) == list(range(12))


def _run_lloyd(x: np.ndarray, init: np.ndarray, tol: float, backend: str, **kw):
    """_lloyd.lloyd on centred data with the numpy ("numpy") or torch kernels."""
    mean = x.mean(axis=0)
    xc = torch.from_numpy(x - mean)
    tol_abs = float(np.var(x, axis=0).mean()) * tol
    args = (xc, (xc * xc).sum(1), torch.from_numpy(init - mean), 300, tol_abs)
    if backend == "torch":
        labels, centers, inertia, n_iter = _lloyd.lloyd(*args, **kw)
    else:
        with _workers.cpu_workers(xc) as workers:
            assert workers is not None
            labels, centers, inertia, n_iter = _lloyd.lloyd(*args, workers=workers, **kw)
    return labels.numpy(), centers.numpy() + mean, inertia, n_iter


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bounds", [True, False])
def test_kmeans_relocates_empty_cluster_like_sklearn(bounds, backend):
    # Two tight groups and a third initial centre far from every sample: its cluster is
    # empty after the first assignment and must be re-seeded with the sample farthest
    # from its centre, exactly as scikit-learn's Lloyd does.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(8, 1, (50, 2))])
    x[0] = [-6.0, 0.0]  # an outlier that ends up in a cluster of its own
    init = np.array([[0.0, 0.0], [8.0, 8.0], [100.0, 100.0]])
    labels, centers, inertia, _ = _run_lloyd(x, init, 0.0, backend, bounds=bounds)
    sk = KMeans(3, init=init, n_init=1, algorithm="lloyd", tol=0.0).fit(x)
    assert len(np.unique(labels)) == 3
    np.testing.assert_array_equal(labels, sk.labels_)
    np.testing.assert_allclose(centers, sk.cluster_centers_, atol=1e-9)
    assert inertia == pytest.approx(sk.inertia_, rel=1e-9)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_kmeans_collapsed_and_few_distinct_points_do_not_crash(k):
    flat = np.full((40, 4), 2.5)
    res = kmeans(flat, k, n_init=2)
    assert res.inertia == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(res.centroids, 2.5)
    assert res.labels.min() >= 0 and res.labels.max() < k
    three = np.repeat(np.eye(3) * 5.0, 10, axis=0)
    res = kmeans(three, max(k, 3), n_init=2)
    assert res.inertia == pytest.approx(0.0, abs=1e-9)
    assert len(np.unique(res.labels)) == 3


def test_kmeans_bad_input_raises(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match="more than the 500 samples"):
        kmeans(x, 501)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="k must be an integer"):
        kmeans(x, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_init"):
        kmeans(x, 2, n_init=0)
    with pytest.raises(ValueError, match="tol"):
        kmeans(x, 2, tol=-1.0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        kmeans(bad, 2)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(x[:, 0], 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        kmeans(x[:1], 1)


@pytest.mark.parametrize("onehot", [True, False])
def test_cluster_sum_helper_matches_numpy(onehot):
    # the one-hot GEMM path is the default on accelerators; check both on the CPU
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(300, 5))
    index = rng.integers(0, 7, size=300)
    sums = torch.ones(7, 5, dtype=torch.float64)
    _lloyd.add_rows(sums, torch.from_numpy(index), torch.from_numpy(rows), -0.5, onehot=onehot)
    expected = np.ones((7, 5))
    np.add.at(expected, index, -0.5 * rows)
    np.testing.assert_allclose(sums.numpy(), expected, atol=1e-12)


# ------------------------------------------------------------------------- agreement


def test_cluster_agreement_matches_sklearn(digits):
    x, y = digits
    pred = kmeans(x, 10, n_init=1, seed=0).labels
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 7, size=len(y))
    for a, b in ((y, pred), (y, rand), (pred, pred)):
        assert cluster_agreement(a, b) == pytest.approx(
            adjusted_mutual_info_score(a, b, average_method="arithmetic"), abs=1e-12
        )
        assert cluster_agreement(a, b, method="ari") == pytest.approx(
            adjusted_rand_score(a, b), abs=1e-12
        )
        assert cluster_agreement(torch.from_numpy(a), b, method="nmi") == pytest.approx(
            normalized_mutual_info_score(a, b), abs=1e-12
        )
    assert cluster_agreement(y, 100 - y) == pytest.approx(1.0)
    assert cluster_agreement(["a", "b", "b"], [0, 1, 1]) == pytest.approx(1.0)


def test_cluster_agreement_bad_input():
    with pytest.raises(ValueError, match="length 3 but labels_b has length 2"):
        cluster_agreement([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="method"):
        cluster_agreement([0, 1], [0, 1], method="vi")
    with pytest.raises(ValueError, match="1-D"):
        cluster_agreement(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="empty"):
        cluster_agreement([], [])


@pytest.mark.parametrize(
    ("bounds", "backend"),
    [(True, "numpy"), (False, "numpy"), (True, "numpy-blocks"), (True, "torch"), (False, "torch")],
)
@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_lloyd_from_given_centres_reproduces_sklearn_iterates(request, data, bounds, backend):
    # Same initial centres -> our Lloyd (samples skipped by Yinyang bounds or not,
    # numpy or torch kernels) must produce the same iterates as scikit-learn's plain
    # Lloyd: labels, centres, inertia, n_iter.
    x, _ = request.getfixturevalue(data)
    if backend == "numpy-blocks":
        request.getfixturevalue("small_blocks")
    init = x[np.random.default_rng(5).choice(len(x), 12, replace=False)]
    labels, centers, inertia, n_iter = _run_lloyd(x, init, 1e-4, backend, bounds=bounds)
    sk = KMeans(12, init=init, n_init=1, algorithm="lloyd", tol=1e-4, max_iter=300).fit(x)
    assert n_iter == sk.n_iter_
    np.testing.assert_array_equal(labels, sk.labels_)
    np.testing.assert_allclose(centers, sk.cluster_centers_, atol=1e-8)
    assert inertia == pytest.approx(sk.inertia_, rel=1e-9)


@pytest.fixture
def small_blocks(monkeypatch):
    """Many small blocks in the numpy kernels, so that several threads share the work."""
    monkeypatch.setattr(_nearest, "_CPU_ROWS", 256)
    monkeypatch.setattr(_seeding, "_CPU_SEED_ROWS", 512)
    monkeypatch.setattr(_workers, "_MIN_BLOCK_WORK", 0)


@pytest.fixture(scope="module")
def overlapping() -> np.ndarray:
    # heavily overlapping blobs: Lloyd runs many iterations, and in the late ones only a
    # few centres move (the regime where reusing distances matters)
    x, _ = make_blobs(n_samples=3000, n_features=16, centers=12, cluster_std=20.0, random_state=0)
    return x


@pytest.mark.parametrize("group_size", [100, 4])  # one group (Hamerly's bounds), or 3
def test_bounds_skip_samples_and_still_match_plain_lloyd(
    overlapping, monkeypatch, small_blocks, group_size
):
    # Same iterates as scikit-learn's plain Lloyd, while most passes compute the
    # distances of only a small part of the samples.
    monkeypatch.setattr(_nearest, "_GROUP_SIZE", group_size)
    x = overlapping
    init = x[np.random.default_rng(1).choice(len(x), 12, replace=False)]
    computed: list[int] = []
    original = _nearest.NearestCentres.assign

    def spy(self, centers):
        before = self.rows_computed
        out = original(self, centers)
        computed.append(self.rows_computed - before)
        return out

    monkeypatch.setattr(_nearest.NearestCentres, "assign", spy)
    ref = KMeans(12, init=init, n_init=1, algorithm="lloyd", tol=1e-4, max_iter=300).fit(x)
    for backend in ("numpy", "torch"):
        computed.clear()
        labels, centers, inertia, n_iter = _run_lloyd(x, init, 1e-4, backend, bounds=True)
        assert n_iter == ref.n_iter_ > 20
        np.testing.assert_array_equal(labels, ref.labels_)
        np.testing.assert_allclose(centers, ref.cluster_centers_, atol=1e-8)
        assert inertia == pytest.approx(ref.inertia_, rel=1e-9)
        assert computed[0] == len(x)
        assert sum(c < len(x) // 2 for c in computed) >= len(computed) // 2
        assert sum(computed) < 0.6 * len(x) * len(computed)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bounds_are_true_bounds_of_the_exact_distances(overlapping, monkeypatch, backend):
    # After every pass, for every sample: the upper bound is at least the exact distance
    # to its centre, and each group's lower bound at most the exact distance to every
    # other centre of the group (float64 distances of the float32 data: the bounds must
    # absorb the float32 GEMM's rounding). Groups of 4 centres, so several groups.
    monkeypatch.setattr(_nearest, "_GROUP_SIZE", 4)
    x = overlapping.astype(np.float32)
    init = x[np.random.default_rng(2).choice(len(x), 12, replace=False)]
    checked = []
    original = _nearest.NearestCentres.assign

    def spy(self, centers):
        out = original(self, centers)
        if self.prev is None:  # a plain pass: no bounds to check
            return out
        xd = self.xa[:, :-2].double().numpy()
        c = centers.double().numpy()
        dist = np.sqrt(((xd[:, None, :] - c[None]) ** 2).sum(-1))
        lab = out.numpy()
        rows = np.arange(len(xd))
        assert np.all(self.upper.numpy() >= dist[rows, lab])
        group = self.group.numpy()
        for g in range(self.lower.shape[0]):
            others = np.where(
                (group[None, :] == g) & (np.arange(len(c))[None, :] != lab[:, None]), dist, np.inf
            )
            assert np.all(self.lower[g].numpy() <= others.min(axis=1))
        checked.append(self.lower.shape[0])
        return out

    monkeypatch.setattr(_nearest.NearestCentres, "assign", spy)
    _run_lloyd(x, init.astype(np.float32), 1e-4, backend, bounds=True)
    assert len(checked) > 20 and checked[0] == 3


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bounds_give_up_and_retry_still_match_plain_lloyd(overlapping, monkeypatch, backend):
    # Every bounded pass "recomputes too much": Lloyd alternates plain passes and fresh
    # bounded ones, and the iterates stay scikit-learn's.
    monkeypatch.setattr(_nearest, "_BOUNDS_GIVE_UP", 0.0)
    monkeypatch.setattr(_nearest, "_GROUP_SIZE", 4)
    x = overlapping
    init = x[np.random.default_rng(1).choice(len(x), 12, replace=False)]
    plain = []
    original = _nearest.NearestCentres.assign

    def spy(self, centers):
        plain.append(self.plain_left > 0)
        return original(self, centers)

    monkeypatch.setattr(_nearest.NearestCentres, "assign", spy)
    ref = KMeans(12, init=init, n_init=1, algorithm="lloyd", tol=1e-4, max_iter=300).fit(x)
    labels, centers, inertia, n_iter = _run_lloyd(x, init, 1e-4, backend, bounds=True)
    assert n_iter == ref.n_iter_
    np.testing.assert_array_equal(labels, ref.labels_)
    np.testing.assert_allclose(centers, ref.cluster_centers_, atol=1e-8)
    assert inertia == pytest.approx(ref.inertia_, rel=1e-9)
    assert 0 < sum(plain) < len(plain)


def test_matmul_unit_roundoff_follows_torch_float32_precision():
    x32 = torch.zeros(3, 4)
    before = torch.get_float32_matmul_precision()
    try:
        assert _nearest.matmul_unit_roundoff(x32.double(), None) == 2.0**-53
        torch.set_float32_matmul_precision("highest")
        assert _nearest.matmul_unit_roundoff(x32, None) == 2.0**-24
        torch.set_float32_matmul_precision("high")  # TF32 allowed
        assert _nearest.matmul_unit_roundoff(x32, None) == 2.0**-11
        torch.set_float32_matmul_precision("medium")  # bfloat16 allowed
        assert _nearest.matmul_unit_roundoff(x32, None) == 2.0**-8
        with _workers.cpu_workers(x32) as workers:  # numpy's BLAS: always IEEE float32
            assert _nearest.matmul_unit_roundoff(x32, workers) == 2.0**-24
    finally:
        torch.set_float32_matmul_precision(before)


def _kmeans_torch_kernels(x: np.ndarray, k: int, n_init: int, seed: int) -> KMeansResult:
    """kmeans(x, k, ...) with the torch kernels the accelerators use, on the CPU."""
    x0, exponent = unit_scaled(torch.from_numpy(x))
    xa, mean, tol_abs = _kmeans.centred(x0, 1e-4)
    return _kmeans.best_run(xa, k, n_init, 300, tol_abs, seed, None).result(mean, exponent)


def test_kmeans_numpy_and_torch_kernels_agree(overlapping, small_blocks):
    x = overlapping.astype(np.float32)
    a = kmeans(x, 12, n_init=2, seed=3)
    b = _kmeans_torch_kernels(x, 12, n_init=2, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=0, atol=1e-4)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-5)
    assert a.n_iter == b.n_iter
    # and the labels are the nearest centroids (plain numpy argmin, float64)
    d2 = ((x.astype(np.float64)[:, None, :] - a.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(a.labels, d2.argmin(axis=1))


def test_kmeans_result_does_not_depend_on_thread_count(overlapping, small_blocks):
    x = overlapping.astype(np.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kmeans(x, 12, n_init=2, seed=4)
        torch.set_num_threads(2)
        two = kmeans(x, 12, n_init=2, seed=4)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(one.labels, two.labels)
    np.testing.assert_array_equal(one.centroids, two.centroids)
    assert one.inertia == two.inertia


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_kmeans_plusplus_runs_in_lockstep_equal_runs_seeded_alone(overlapping, backend):
    xt = torch.from_numpy(overlapping.astype(np.float32))
    xa = _nearest.augment(xt, (xt * xt).sum(1))

    def seed(seeds: list[int]) -> list[torch.Tensor]:
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        if backend == "torch":
            return _seeding.kmeans_plusplus(xa, xa.T, 12, gens, None)
        with _workers.cpu_workers(xt) as workers:
            return _seeding.kmeans_plusplus(xa, xa.T.contiguous(), 12, gens, workers)

    together = seed([5, 6, 7])
    for s, centres in zip([5, 6, 7], together, strict=True):
        np.testing.assert_array_equal(centres.numpy(), seed([s])[0].numpy())
    # and the runs do differ from each other (each has its own generator)
    assert not torch.equal(together[0], together[1])
    # the centres are 12 distinct samples
    rows = {tuple(r) for r in xt.tolist()}
    assert all(len(rows & {tuple(r) for r in c.tolist()}) == 12 for c in together)


def test_kmeans_result_does_not_depend_on_lockstep_grouping(overlapping, monkeypatch):
    x = overlapping.astype(np.float32)
    grouped = kmeans(x, 12, n_init=3, seed=2)
    monkeypatch.setattr(_seeding, "_SEED_BYTES", 1)  # every run seeded on its own
    alone = kmeans(x, 12, n_init=3, seed=2)
    np.testing.assert_array_equal(grouped.labels, alone.labels)
    assert grouped.inertia == alone.inertia


def test_kmeans_restores_torch_thread_count(blobs):
    before = torch.get_num_threads()
    seen: list[int] = []
    real = _kmeans.lloyd

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    try:
        torch.set_num_threads(2)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_kmeans, "lloyd", spy)
            kmeans(blobs[0].astype(np.float32), 3, n_init=1)
        assert seen == [1]  # torch's own ops run single-threaded beside the workers
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError):
            kmeans(np.full((5, 2), np.nan), 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kmeans_inertia_on_overlapping_blobs_within_one_percent_of_sklearn(overlapping, dtype):
    x = overlapping.astype(dtype)
    ours = kmeans(x, 12, n_init=3, seed=0)
    assert ours.inertia <= 1.01 * _sk_kmeans_inertia(x, 12, n_init=3)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_seed_candidate_potentials_match_numpy(backend, small_blocks):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 5))  # several blocks of the numpy kernel, the last one partial
    xt = torch.from_numpy(x)
    xa = _nearest.augment(xt, (xt * xt).sum(1))
    rows = torch.tensor([[3, 1000, 1999], [7, 3, 1500]])  # two runs, three candidates each
    closest = torch.from_numpy(rng.uniform(0.0, 30.0, size=(2, 2000)))
    if backend == "numpy":
        with _workers.cpu_workers(xt) as workers:
            d, pots = _seeding.seed_candidates(xa, xa.T.contiguous(), rows, closest, workers)
    else:
        d, pots = _seeding.seed_candidates(xa, xa.T, rows, closest, None)
    sq = ((x[None, None, :, :] - x[rows.numpy()][:, :, None, :]) ** 2).sum(-1)
    expected = np.minimum(sq, closest.numpy()[:, None, :])
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pots.numpy(), expected.sum(axis=2), rtol=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("tile", [7, 64])
def test_distance_pass_shortlist_holds_the_true_nearest(symmetric: bool, tile: int) -> None:
    """The running top-m per row equals scipy's exact m nearest others, on every tiling."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 6)) + rng.integers(0, 3, size=(150, 1)) * 4.0
    x[10] = x[11]  # an exact duplicate is a neighbour at distance 0
    labels = torch.from_numpy(rng.integers(0, 4, size=150))
    m = 9
    res = distance_pass(
        torch.from_numpy(x), labels, 4, "euclidean", candidates=m, symmetric=symmetric, tile=tile
    )
    assert res.candidates is not None and res.silhouette is not None
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :m]
    got = np.sort(np.take_along_axis(d, res.candidates.numpy(), axis=1), axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert not np.any(res.candidates.numpy() == np.arange(150)[:, None])  # never itself
    np.testing.assert_allclose(res.silhouette.numpy(), silhouette_samples(x, labels.numpy()),
                               atol=1e-9)  # fmt: skip
