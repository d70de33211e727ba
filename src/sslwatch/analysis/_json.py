"""JSON-able copies of analysis records (strict JSON: no NaN, no infinities)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sslwatch.core.definitions import MetricDefinition


def plain(value: Any) -> Any:
    """JSON-able copy: NaN/inf -> None, tuples -> lists, definitions -> dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, MetricDefinition):
        return value.to_dict()
    if isinstance(value, np.generic):
        return plain(value.item())
    return value
