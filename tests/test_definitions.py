"""MetricDefinition: what makes two values comparable."""

from __future__ import annotations

import json
import math

from sslwatch.core.definitions import MetricDefinition


def test_param_order_does_not_matter() -> None:
    a = MetricDefinition("rankme", {"eps": 1e-7, "b": (1, 2)}, n=100, d=8)
    b = MetricDefinition("rankme", {"b": [1, 2], "eps": 1e-7}, n=100, d=8)
    assert a.comparison_key() == b.comparison_key()
    assert a.digest() == b.digest()
    assert a.comparable_with(b)


def test_sample_count_breaks_comparability() -> None:
    a = MetricDefinition("rankme", {"eps": 1e-7}, n=2000, d=512)
    b = MetricDefinition("rankme", {"eps": 1e-7}, n=25600, d=512)
    assert not a.comparable_with(b)
    assert a.digest() != b.digest()
    assert a.differences(b) == ["n: 2000 vs 25600"]


def test_params_and_revision_break_comparability_but_version_does_not() -> None:
    a = MetricDefinition("rankme", {"eps": 1e-7}, n=10, d=4, version="0.1.0")
    assert not a.comparable_with(MetricDefinition("rankme", {"eps": 1e-6}, n=10, d=4))
    assert not a.comparable_with(MetricDefinition("rankme", {"eps": 1e-7}, n=10, d=4, revision=2))
    assert a.comparable_with(MetricDefinition("rankme", {"eps": 1e-7}, n=10, d=4, version="9.9"))
    assert a.differences(MetricDefinition("rankme", {"eps": 1e-6}, n=10, d=4)) == [
        "eps: 1e-07 vs 1e-06"
    ]


def test_round_trip_and_json() -> None:
    a = MetricDefinition("silhouette", {"metric": "cosine", "k": 10}, n=5, d=3, dtype="bfloat16")
    back = MetricDefinition.from_dict(json.loads(a.to_json()))
    assert back.comparable_with(a)
    assert back.to_dict() == a.to_dict()


def test_non_finite_params_are_json_safe() -> None:
    a = MetricDefinition("x", {"bound": math.inf, "none": None}, n=1, d=1)
    assert json.loads(a.comparison_key())["params"]["bound"] == "inf"
