"""The metric registry: the one list of metrics.

:data:`REGISTRY` is built here, once, from the declarations in
:mod:`sslwatch.core.catalog`; :func:`sslwatch.evaluate`, the CLI, the monitor, the store
and the report all read it, and none of them lists metrics by hand. The declaration
types live in :mod:`sslwatch.core.spec` and are re-exported here.
"""

from __future__ import annotations

from sslwatch.core.catalog import METRICS
from sslwatch.core.spec import (
    Kind,
    Measurement,
    MetricRegistry,
    MetricSpec,
    Needs,
    check_params,
)

__all__ = [
    "REGISTRY",
    "Kind",
    "Measurement",
    "MetricRegistry",
    "MetricSpec",
    "Needs",
    "check_params",
]

REGISTRY = MetricRegistry(METRICS)
"""Every metric of :data:`sslwatch.core.catalog.METRICS`, by name, in declaration order."""
