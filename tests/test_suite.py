"""evaluate(): values against independent oracles, definitions, selection, robustness."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score, silhouette_score

import sslwatch
from sslwatch import REGISTRY, evaluate, kmeans
from sslwatch.core.evaluate import sample_indices


def numpy_rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


@pytest.fixture(scope="module")
def digits_result(digits):  # type: ignore[no-untyped-def]
    x, y = digits
    return evaluate(x, labels=y, sample_size=1000, seed=3)


def test_default_label_free_set_without_views(digits) -> None:  # type: ignore[no-untyped-def]
    x, _ = digits
    res = evaluate(x[:500], sample_size=None)
    expected = [s.name for s in REGISTRY.values() if s.default and s.needs == "embeddings"]
    assert list(res) == expected
    assert "lidar" not in res and "linear_probe" not in res
    assert {
        "rankme",
        "alpha_req",
        "stable_rank",
        "silhouette",
        "cluster_agreement",
        "entropy",
        "collapse_std",
    } <= set(res)


def test_spectrum_values_use_all_rows_and_match_numpy(digits, digits_result) -> None:  # type: ignore[no-untyped-def]
    x, _ = digits
    assert digits_result["rankme"] == pytest.approx(numpy_rankme(x), rel=1e-8)
    s = np.linalg.svd(x, compute_uv=False)
    assert digits_result["stable_rank"] == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-8)
    assert digits_result.definitions["rankme"].n == len(x)
    assert digits_result.definitions["rankme"].d == 64
    assert digits_result.definitions["rankme"].params["eps"] == 1e-7


def _svd_oracle(z: np.ndarray) -> dict[str, float]:
    """rankme, stable_rank, alpha_req and entropy_gaussian from float64 numpy SVDs."""
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    zc = z.astype(np.float64) - z.astype(np.float64).mean(axis=0)
    n, d = z.shape
    lam = np.zeros(d)
    sc = np.linalg.svd(zc, compute_uv=False)
    lam[: sc.size] = sc**2 / (n - 1)
    ranks = np.arange(4, min(100, int(np.sum(lam > lam[0] * d * 2.2e-16))) + 1)
    x = -np.log(ranks)
    slope = np.polyfit(x, np.log(lam[ranks - 1]), 1)[0]
    return {
        "rankme": numpy_rankme(z.astype(np.float64)),
        "stable_rank": float(np.sum(s**2) / s[0] ** 2),
        "alpha_req": float(slope),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [40, 119, 120, 121])
def test_spectrum_metrics_by_shape_match_svd(rng, n: int, dtype: type) -> None:  # type: ignore[no-untyped-def]
    """N < D takes the N x N Gram route, N >= D the D x D moments: both equal an SVD."""
    d = 120
    z = (rng.normal(size=(n, d)) * np.arange(1, d + 1) ** -0.7 + 0.3).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RankMe's N < D warning
        res = evaluate(z, metrics=["rankme", "stable_rank", "alpha_req", "entropy_gaussian"])
    oracle = _svd_oracle(z)
    for name, expected in oracle.items():
        assert res[name] == pytest.approx(expected, rel=1e-6), name
    # A singular covariance (always when N <= D) has no Gaussian entropy: -inf.
    zc = z.astype(np.float64) - z.astype(np.float64).mean(axis=0)
    if n <= d:
        assert res["entropy_gaussian"] == -math.inf
    else:
        logdet = np.linalg.slogdet(zc.T @ zc / (n - 1))[1]
        closed = 0.5 * (d * math.log(2 * math.pi * math.e) + logdet)
        assert res["entropy_gaussian"] == pytest.approx(closed, rel=1e-6)
    assert ("second_moments" in res.timings) == (n >= d)


def test_wide_embeddings_never_build_a_d_by_d_matrix(rng) -> None:  # type: ignore[no-untyped-def]
    """100 x 20,000: a D x D float64 Gram would be 3.2 GB; the N x N route needs 80 kB."""
    z = rng.normal(size=(100, 20_000)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(z, metrics=["rankme", "stable_rank", "alpha_req"])
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    assert res["stable_rank"] == pytest.approx(float(np.sum(s**2) / s[0] ** 2), rel=1e-9)
    assert res["rankme"] == pytest.approx(numpy_rankme(z.astype(np.float64)), rel=1e-9)


def test_gaussian_entropy_matches_closed_form(mnist1d) -> None:  # type: ignore[no-untyped-def]
    x, _ = mnist1d
    res = evaluate(x, metrics=["entropy_gaussian"])
    _, logdet = np.linalg.slogdet(np.cov(x, rowvar=False))
    expected = 0.5 * (x.shape[1] * math.log(2 * math.pi * math.e) + logdet)
    assert res["entropy_gaussian"] == pytest.approx(expected, rel=1e-9)


def test_point_metrics_use_the_seeded_sample(digits, digits_result) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    idx = sample_indices(len(x), 1000, 3)
    assert idx is not None and len(idx) == 1000 and len(np.unique(idx)) == 1000
    sample, ys = x[idx], y[idx]
    k = len(np.unique(y))
    labels = kmeans(sample, k, n_init=3, seed=3).labels
    assert digits_result["silhouette"] == pytest.approx(silhouette_score(sample, labels), abs=1e-6)
    assert digits_result["label_ami"] == pytest.approx(
        adjusted_mutual_info_score(ys, labels), abs=1e-12
    )
    defn = digits_result.definitions["silhouette"]
    assert defn.n == 1000 and defn.params["k"] == 10 and defn.params["seed"] == 3


def _kl_entropy_oracle(x: np.ndarray, k: int = 3) -> float:
    """Kozachenko-Leonenko with scipy's exact KD-tree neighbours (independent of sslwatch),
    k-th distances floored at 1e-10 times the data scale as documented."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    n, d = x.shape
    r = cKDTree(x).query(x, k=k + 1)[0][:, -1]
    scale = math.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1)) / d)
    r = np.maximum(r, 1e-10 * scale)
    log_ball = 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1))
    return float(digamma(n) - digamma(k) + log_ball + d * np.mean(np.log(r)))


def test_silhouette_and_entropy_share_one_distance_pass(digits, digits_result) -> None:  # type: ignore[no-untyped-def]
    """The shared pass is invisible in the values: the standalone functions agree."""
    x, _ = digits
    index = sample_indices(len(x), 1000, 3)
    sample = torch.from_numpy(x[index])
    labels = kmeans(sample, 10, n_init=3, seed=3).labels
    assert digits_result["silhouette"] == pytest.approx(
        silhouette_score(sample.numpy(), labels), abs=1e-12
    )
    assert digits_result["entropy"] == pytest.approx(_kl_entropy_oracle(sample.numpy()), rel=1e-9)
    assert "sample_distances[euclidean]" in digits_result.timings
    # A cosine silhouette cannot serve the Euclidean kNN entropy: both stay right.
    res = evaluate(x, labels=None, metrics=["silhouette", "entropy"], sample_size=1000, seed=3,
                   params={"silhouette": {"metric": "cosine"}})  # fmt: skip
    assert res["silhouette"] == pytest.approx(
        silhouette_score(sample.numpy(), labels, metric="cosine"), abs=1e-12
    )
    assert res["entropy"] == pytest.approx(sslwatch.entropy(sample), rel=1e-12)


def test_labels_add_probes(digits_result) -> None:  # type: ignore[no-untyped-def]
    assert digits_result["linear_probe"] > 0.9
    assert digits_result["knn_accuracy"] > 0.9
    assert 0.3 < digits_result["label_ami"] <= 1.0


def test_probe_outcome_is_recorded_but_not_compared(digits, digits_result) -> None:  # type: ignore[no-untyped-def]
    """The selected L2 and the passes ride in the definition; comparability ignores them."""
    from sslwatch.core.context import PROBE_TEST_FRACTION
    from sslwatch.metrics.probes import fit_linear_probe, stratified_split

    defn = digits_result.definitions["linear_probe"]
    x, y = digits
    index = sample_indices(len(y), 1000, 3)
    assert index is not None
    xs, ys = x[index], y[index]
    train, _ = stratified_split(ys, PROBE_TEST_FRACTION, seed=3)
    fit = fit_linear_probe(xs[train], ys[train], seed=3)
    assert defn.outcome == {"l2": fit.l2, "passes": fit.n_passes, "converged": fit.converged}
    assert defn.params["l2"] is None  # the *setting* stays the comparable part
    other = type(defn).from_dict({**defn.to_dict(), "outcome": {"l2": 1.0, "passes": 1}})
    assert other.outcome["passes"] == 1 and other.comparable_with(defn)
    assert "outcome" not in digits_result.definitions["rankme"].to_dict()


def test_views_add_view_metrics_and_agreement_across_views(rng) -> None:  # type: ignore[no-untyped-def]
    base = rng.normal(size=(300, 16))
    views = np.stack([base + 0.1 * rng.normal(size=base.shape) for _ in range(3)], axis=1)
    res = evaluate(base, views=views, sample_size=None)
    for name in ("lidar", "alignment", "uniformity"):
        assert name in res and math.isfinite(res[name])
    assert res.definitions["cluster_agreement"].params["source"] == "views"
    assert res.definitions["lidar"].n == 300
    plain = evaluate(base, metrics=["cluster_agreement"], sample_size=None)
    assert plain.definitions["cluster_agreement"].params["source"] == "seeds"
    assert not plain.definitions["cluster_agreement"].comparable_with(
        res.definitions["cluster_agreement"]
    )


def test_deterministic_and_permutation_invariant_spectrum(rng) -> None:  # type: ignore[no-untyped-def]
    z = rng.normal(size=(400, 12)) @ np.diag(np.linspace(3, 0.1, 12))
    a = evaluate(z, sample_size=200, seed=1)
    b = evaluate(z, sample_size=200, seed=1)
    assert dict(a) == dict(b)
    perm = evaluate(z[rng.permutation(len(z))], metrics=["rankme", "stable_rank", "alpha_req"])
    for name in perm:
        assert perm[name] == pytest.approx(a[name], rel=1e-9)


def test_torch_and_half_precision_inputs(rng) -> None:  # type: ignore[no-untyped-def]
    z = rng.normal(size=(256, 8)).astype(np.float32)
    res32 = evaluate(torch.from_numpy(z), metrics=["rankme"])
    res16 = evaluate(torch.from_numpy(z).to(torch.bfloat16), metrics=["rankme"])
    assert res16.definitions["rankme"].dtype == "float32"  # bf16 upcast before recording
    assert res16["rankme"] == pytest.approx(res32["rankme"], rel=1e-2)


def test_param_overrides_are_recorded_and_validated(rng) -> None:  # type: ignore[no-untyped-def]
    z = rng.normal(size=(100, 5))
    res = evaluate(z, metrics=["rankme"], params={"rankme": {"eps": 1e-3}})
    assert res["rankme"] == pytest.approx(numpy_rankme(z, eps=1e-3), rel=1e-8)
    assert res.definitions["rankme"].params["eps"] == 1e-3
    with pytest.raises(ValueError, match="unknown parameter"):
        evaluate(z, metrics=["rankme"], params={"rankme": {"epsilon": 1}})
    with pytest.raises(ValueError, match="not among the selected"):
        evaluate(z, metrics=["rankme"], params={"silhouette": {"metric": "cosine"}})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": ["no_such_metric"]}, "unknown metric"),
        ({"metrics": ["linear_probe"]}, "needs labels"),
        ({"metrics": ["lidar"]}, "needs augmented views"),
        ({"labels": np.zeros(3)}, "length 3"),
        ({"k": 1}, "k must be"),
        ({"k": 60, "sample_size": 50}, "k=60"),
    ],
)
def test_bad_arguments(rng, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        evaluate(rng.normal(size=(100, 4)), **kwargs)


@pytest.mark.parametrize(
    ("n", "kwargs", "fix"),
    [
        (2, {}, "pass at least 3 embeddings."),  # k is already 2: lowering it is no fix
        (50, {"k": 60}, "pass at least 61 embeddings or lower k"),
        (50, {"k": 8, "sample_size": 5}, "raise sample_size to at least 9 or lower k"),
    ],
)
def test_too_few_points_for_k_names_the_fix_that_works(n: int, kwargs: dict, fix: str) -> None:  # type: ignore[type-arg]
    z = np.random.default_rng(0).normal(size=(n, 5))
    with pytest.raises(ValueError, match="needs at least") as err:
        evaluate(z, **kwargs)
    assert str(err.value).endswith(fix) or fix in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_embeddings() -> None:
    z = np.ones((10, 3))
    z[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(z)
    with pytest.raises(ValueError, match="2-D"):
        evaluate(np.ones(10))


def test_collapsed_embeddings_do_not_crash() -> None:
    z = np.tile(np.arange(6, dtype=np.float64), (200, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(z, sample_size=None)
    assert res["rankme"] == pytest.approx(1.0, abs=1e-3)
    assert math.isnan(res["silhouette"])
    assert res["collapse_std"] == pytest.approx(0.0, abs=1e-6)


def test_on_error_warn_records_nan(monkeypatch, rng) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    def boom(ctx, p):  # type: ignore[no-untyped-def]
        raise RuntimeError("planted failure")

    broken = replace(REGISTRY["stable_rank"], compute=boom)
    monkeypatch.setitem(REGISTRY._specs, "stable_rank", broken)
    z = rng.normal(size=(50, 4))
    with pytest.raises(RuntimeError, match="planted"):
        evaluate(z, metrics=["rankme", "stable_rank"])
    with pytest.warns(RuntimeWarning, match="stable_rank"):
        res = evaluate(z, metrics=["rankme", "stable_rank"], on_error="warn")
    assert math.isnan(res["stable_rank"]) and math.isfinite(res["rankme"])
    assert "planted failure" in res.errors["stable_rank"]


def test_public_api_names() -> None:
    for name in (
        "rankme",
        "singular_values",
        "stable_rank",
        "nesum",
        "participation_ratio",
        "condition_number",
        "alpha_req",
        "kmeans",
        "KMeansResult",
        "silhouette",
        "cluster_agreement",
        "entropy",
        "lidar",
        "alignment",
        "uniformity",
        "collapse_std",
        "linear_probe",
        "knn_accuracy",
        "evaluate",
        "REGISTRY",
    ):
        assert hasattr(sslwatch, name), name


def test_every_spec_refers_to_its_public_function(rng) -> None:  # type: ignore[no-untyped-def]
    """``MetricSpec.function`` is the exported pure function; its text is derived."""
    import functools

    for spec in REGISTRY.values():
        fn = spec.function
        base = fn.func if isinstance(fn, functools.partial) else fn
        assert getattr(sslwatch, base.__name__) is base, spec.name
        assert spec.function_name.startswith(f"sslwatch.{base.__name__}")
    assert REGISTRY["rankme"].function_name == "sslwatch.rankme"
    gaussian = REGISTRY["entropy_gaussian"]
    assert gaussian.function_name == "sslwatch.entropy(estimator='gaussian')"
    # the spectrum metrics' functions give the values evaluate records
    z = rng.normal(size=(300, 8)) * np.linspace(0.2, 3.0, 8)
    names = ["rankme", "stable_rank", "nesum", "participation_ratio", "condition_number"]
    res = evaluate(z, metrics=[*names, "entropy_gaussian"])
    for name in names:
        assert REGISTRY[name].function(z) == pytest.approx(res[name], rel=1e-9), name
    assert gaussian.function(z) == pytest.approx(res["entropy_gaussian"], rel=1e-9)


def test_uses_views_is_declared_not_named() -> None:
    """The metrics that read the augmented views say so on their spec."""
    from dataclasses import replace

    readers = {s.name for s in REGISTRY.values() if s.uses_views}
    assert readers == {"cluster_agreement", "lidar", "alignment", "uniformity"}
    assert all(s.uses_views for s in REGISTRY.values() if s.kind == "views")
    # a views-kind declaration gets the flag whatever it says
    assert replace(REGISTRY["lidar"], uses_views=False).uses_views
    assert REGISTRY["cluster_agreement"].definition_params is not None


def test_user_k_is_validated_by_the_one_rule() -> None:
    from sslwatch.core.context import resolve_k

    assert resolve_k(None, 500, None) == 10
    assert resolve_k(None, 5, None) == 4
    assert resolve_k(None, 500, np.array([0, 1, 1, 2])) == 3
    assert resolve_k(np.int64(7), 500, np.array([0, 1])) == 7
    for bad in (1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="k must be an integer >= 2"):
            resolve_k(bad, 500, None)


def test_sample_size_is_validated_as_an_integer(rng) -> None:  # type: ignore[no-untyped-def]
    z = rng.normal(size=(40, 3))
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="sample_size must be an integer >= 2 or None"):
            evaluate(z, metrics=["collapse_std"], sample_size=bad)
    assert (
        evaluate(z, metrics=["collapse_std"], sample_size=np.int64(20))
        .definitions["collapse_std"]
        .n
        == 20
    )
