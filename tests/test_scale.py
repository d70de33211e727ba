"""Scale: metrics whose definition ignores the scale of z give the same value at any scale.

Oracle: the metric at scale 1. Powers of two scale exactly, so values must agree to
round-off across float32's whole range (2^-100 ~ 8e-31 .. 2^63 ~ 9e18) and float64's;
the issue's literal scales (1e-30, 1e19) also change the float32 rounding of z, so
there the agreement is to float32 precision. Scale-dependent metrics obey their exact
identities instead: entropy(c z) = entropy(z) + D log c, LiDAR(c e; delta) =
LiDAR(e; delta / c^2).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import sslwatch
from sslwatch import REGISTRY, Monitor, evaluate
from sslwatch.metrics.views import lidar

SCALE_DEPENDENT = {"entropy", "entropy_gaussian", "lidar"}


@pytest.fixture(scope="module")
def data(digits: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    x, y = digits
    rng = np.random.default_rng(0)
    z = x[:500] + rng.normal(size=(500, 64)) * 0.1
    views = np.stack([z, z + rng.normal(size=z.shape) * 0.5], axis=1)
    return {"z": z, "y": y[:500], "views": views}


def _evaluate(data: dict[str, Any], scale: float, dtype: type) -> sslwatch.Evaluation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LiDAR's ridge warning at tiny scales
        return evaluate(
            (data["z"] * scale).astype(dtype),
            labels=data["y"],
            views=(data["views"] * scale).astype(dtype),
        )


def _close(a: float, b: float, rel: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rel * max(1.0, abs(b))


@pytest.mark.parametrize(
    ("dtype", "exponents"),
    [(np.float32, (-100, -46, -20, 33, 63)), (np.float64, (-900, -100, 100, 900))],
)
def test_scale_free_metrics_are_equal_at_every_power_of_two(
    data: dict[str, Any], dtype: type, exponents: tuple[int, ...]
) -> None:
    base = _evaluate(data, 1.0, dtype)
    d = data["z"].shape[1]
    for e in exponents:
        scale = math.ldexp(1.0, e)
        res = _evaluate(data, scale, dtype)
        for name, value in res.items():
            if name in SCALE_DEPENDENT:
                continue
            assert _close(value, base[name], 1e-9), (e, name, value, base[name])
        # entropy(c z) = entropy(z) + D log c
        assert res["entropy"] == pytest.approx(base["entropy"] + d * e * math.log(2), rel=1e-9)
        shifted = base["entropy_gaussian"] + d * e * math.log(2)
        assert res["entropy_gaussian"] == pytest.approx(shifted, rel=1e-9)


@pytest.mark.parametrize("scale", [1e-30, 1e-14, 1e19])
def test_issue_scales_in_float32(data: dict[str, Any], scale: float) -> None:
    """The reported cases: silhouette -0.112 for 0.047, agreement 0.175 for 0.338, entropy
    inf, collapse_std falling below 1e-12 norms. Rounding of z * scale in float32 moves
    values by float32 precision only."""
    base = _evaluate(data, 1.0, np.float64)
    res = _evaluate(data, scale, np.float32)
    for name in REGISTRY:
        if name in SCALE_DEPENDENT or name not in res:
            continue
        assert _close(res[name], base[name], 1e-4), (name, res[name], base[name])
    d = data["z"].shape[1]
    assert math.isfinite(res["entropy"])
    assert res["entropy"] == pytest.approx(base["entropy"] + d * math.log(scale), rel=1e-4)


def test_lidar_scale_identity_and_ridge_warning(data: dict[str, Any]) -> None:
    v = data["views"]
    for c in (2.0**-40, 1e-7, 1e9):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert lidar(v * c) == pytest.approx(lidar(v, delta=1e-4 / c**2), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lidar(v)  # unit scale: the ridge is negligible, no warning
    with pytest.warns(UserWarning, match="ridge delta is .* within-sample variance"):
        lidar(v * 1e-5)


def test_tiny_healthy_embeddings_raise_no_collapse_alarm(data: dict[str, Any]) -> None:
    """collapse_std used to fall for row norms below 1e-12 (a false collapse alarm)."""
    z = torch.from_numpy(data["z"] * 1e-14)
    healthy = sslwatch.collapse_std(data["z"])
    assert sslwatch.collapse_std(z) == pytest.approx(healthy, rel=1e-12)
    monitor = Monitor(metrics=["collapse_std", "rankme"])
    for start in range(0, len(z), 100):
        monitor.update(z[start : start + 100])
    result = monitor.compute()
    assert result["collapse_std"] == pytest.approx(healthy, rel=1e-12)
    assert not monitor.should_stop and not monitor.alarm_events


def test_collapsed_embeddings_never_score_a_good_agreement() -> None:
    z = np.tile(np.array([[0.3, -1.2, 2.0, 0.5]]), (200, 1))
    res = evaluate(z, metrics=["cluster_agreement", "silhouette"])
    assert math.isnan(res["cluster_agreement"])
    assert not res["silhouette"] > 0.0
    views = np.repeat(z[:, None, :], 2, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(
            evaluate(z, views=views, metrics=["cluster_agreement"])["cluster_agreement"]
        )


def test_subnormal_float32_embeddings_keep_their_values() -> None:
    """max|z| ~ 1e-40 (subnormal float32): the rescaling factor 2^133 would overflow
    float32 in one step; the values must equal those of the same numbers at unit scale."""
    rng = np.random.default_rng(4)
    z = (1e-40 * rng.normal(size=(60, 5))).astype(np.float32)
    labels = np.arange(60) % 3
    unit = (z.astype(np.float64) * 2.0**133).astype(np.float32)  # exact: same mantissas
    assert sslwatch.silhouette(z, labels) == sslwatch.silhouette(unit, labels)
    small, big = sslwatch.kmeans(z, 3, seed=1), sslwatch.kmeans(unit, 3, seed=1)
    assert np.array_equal(small.labels, big.labels)
    assert small.inertia == pytest.approx(big.inertia * 2.0**-266, rel=1e-12)
    res = evaluate(z, metrics=["rankme", "silhouette"])
    assert math.isfinite(res["rankme"]) and math.isfinite(res["silhouette"])


def test_a_bad_entropy_parameter_fails_only_the_entropy(data: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(
            data["z"],
            metrics=["silhouette", "entropy"],
            params={"entropy": {"k_neighbors": "three"}},
            on_error="warn",
        )
    assert math.isnan(res["entropy"]) and "entropy" in res.errors
    assert "silhouette" not in res.errors and math.isfinite(res["silhouette"])
