"""What a stored or logged number means: the metric definition it was computed with.

Two values are comparable only when their definitions match: same metric, same formula
revision, same parameters, same sample count N, dimension D and dtype. The library
version is recorded for provenance but does not break comparability (a formula change
bumps the metric's ``revision`` instead).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sslwatch._version import __version__


def _canonical(value: Any) -> Any:
    """Make ``value`` JSON-stable: tuples become lists, floats keep repr precision."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return _canonical(value.item())
    return str(value)


@dataclass(frozen=True)
class MetricDefinition:
    """The exact definition a metric value was computed with.

    Attributes:
        metric: registry name of the metric (e.g. ``"rankme"``).
        params: the metric's parameters (eps, k, seed, estimator, ...), JSON-able.
        n: number of samples the value was computed on (after any subsampling).
        d: embedding dimension.
        dtype: dtype of the embeddings as given (before internal upcasting).
        revision: the formula revision from the registry.
        version: sslwatch version that computed it (provenance only).
        outcome: how this value came out, e.g. the L2 strength a linear probe selected
            and its passes over the data (provenance only, like ``version``).
    """

    metric: str
    params: Mapping[str, Any] = field(default_factory=dict)
    n: int = 0
    d: int = 0
    dtype: str = "float32"
    revision: int = 1
    version: str = __version__
    outcome: Mapping[str, Any] = field(default_factory=dict)

    def comparison_key(self) -> str:
        """Canonical JSON of everything that must match for two values to be compared."""
        return json.dumps(
            {
                "metric": self.metric,
                "revision": self.revision,
                "params": _canonical(dict(self.params)),
                "n": int(self.n),
                "d": int(self.d),
                "dtype": self.dtype,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def digest(self) -> str:
        """A short stable hash of :meth:`comparison_key` (16 hex digits)."""
        return hashlib.sha256(self.comparison_key().encode()).hexdigest()[:16]

    def comparable_with(self, other: MetricDefinition) -> bool:
        """True when values under ``self`` and ``other`` may be compared."""
        return self.comparison_key() == other.comparison_key()

    def differences(self, other: MetricDefinition) -> list[str]:
        """Human-readable list of the fields that differ (empty when comparable)."""
        out = []
        for attr in ("metric", "revision", "n", "d", "dtype"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a != b:
                out.append(f"{attr}: {a!r} vs {b!r}")
        pa, pb = _canonical(dict(self.params)), _canonical(dict(other.params))
        for key in sorted(set(pa) | set(pb)):
            if pa.get(key) != pb.get(key):
                out.append(f"{key}: {pa.get(key)!r} vs {pb.get(key)!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (params canonicalised; outcome when not empty)."""
        out = {
            "metric": self.metric,
            "params": _canonical(dict(self.params)),
            "n": int(self.n),
            "d": int(self.d),
            "dtype": self.dtype,
            "revision": int(self.revision),
            "version": self.version,
        }
        if self.outcome:
            out["outcome"] = _canonical(dict(self.outcome))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricDefinition:
        """Inverse of :meth:`to_dict`."""
        return cls(
            metric=str(data["metric"]),
            params=dict(data.get("params", {})),
            n=int(data.get("n", 0)),
            d=int(data.get("d", 0)),
            dtype=str(data.get("dtype", "float32")),
            revision=int(data.get("revision", 1)),
            version=str(data.get("version", __version__)),
            outcome=dict(data.get("outcome", {})),
        )

    def to_json(self) -> str:
        """Compact canonical JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
