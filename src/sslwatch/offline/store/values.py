"""What goes into the store's columns: argument checks, NaN encoding, JSON forms."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sslwatch.core.definitions import MetricDefinition


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _opt_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _opt_index(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a non-negative integer or None, got {value!r}")
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError(
            f"{what} must be a non-negative integer or None, got {type(value).__name__}"
        ) from exc
    if out < 0:
        raise ValueError(f"{what} must be >= 0, got {out}")
    return out


def _choice(value: object, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return str(value)


def _as_value(value: object, where: str) -> float:
    if value is None or isinstance(value, bool | str | bytes):
        raise ValueError(
            f"value for {where} must be a real number (use float('nan') for an undefined "
            f"value), got {value!r}"
        )
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"value for {where} must be a real number (float, numpy scalar or one-element "
            f"tensor), got {type(value).__name__}"
        ) from exc


def _as_seconds(value: object, where: str) -> float | None:
    """A duration in seconds: ``None`` (unknown) or a finite float >= 0."""
    if value is None:
        return None
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"seconds for {where} must be a number >= 0 or None, got {value!r}")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"seconds for {where} must be a number >= 0 or None, got {type(value).__name__}"
        ) from exc
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"seconds for {where} must be finite and >= 0, got {out!r}")
    return out


def _encode(value: float) -> tuple[float | None, int]:
    """(value column, is_nan column): SQLite would turn NaN into NULL anyway."""
    return (None, 1) if math.isnan(value) else (value, 0)


def _decode(value: float | None, is_nan: int) -> float:
    return math.nan if is_nan else float(value)  # type: ignore[arg-type]


MERGE_RTOL: Final = 1e-9
"""Relative difference below which :func:`merge_stores` counts two values as the same.

The same checkpoint and definition scored on another machine (another BLAS, thread
count or accelerator) can differ in the last digits; 1e-9 relative is far below any
difference a metric's definition or a changed checkpoint makes."""


def _same_value(a: float, b: float) -> bool:
    """Exactly equal (NaN equal to NaN) - the rule within one store."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def _close_value(a: float, b: float) -> bool:
    """Equal up to :data:`MERGE_RTOL` relative (infinities and NaN exactly)."""
    if _same_value(a, b):
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= MERGE_RTOL * max(abs(a), abs(b))


def _meta_json(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a mapping (dict) or None, got {type(meta).__name__}")
    # Round-trip through JSON so what we compare with is what we store.
    loaded: dict[str, Any] = json.loads(json.dumps(dict(meta), sort_keys=True, default=str))
    return loaded


def _dump_meta(meta: Mapping[str, Any]) -> str:
    return json.dumps(dict(meta), sort_keys=True, separators=(",", ":"), default=str)


def _definition_json(stored: str, version: str, outcome: str | None) -> str:
    """The exact ``MetricDefinition.to_json()`` a value was computed with."""
    data = json.loads(stored)
    if data.get("version") == version and outcome is None:
        return stored
    data["version"] = version
    if outcome is not None:
        data["outcome"] = json.loads(outcome)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _outcome_json(definition: MetricDefinition) -> str | None:
    """The definition's outcome as canonical JSON, ``None`` when it has none."""
    outcome = definition.to_dict().get("outcome")
    return None if outcome is None else json.dumps(outcome, sort_keys=True, separators=(",", ":"))


def _describe_point(source: str, path: str | None, epoch: int | None, step: int | None) -> str:
    if path is not None:
        return f"{source} {path!r}"
    return f"{source} epoch={epoch} step={step}"
