"""How values read on a page and in a terminal: one home for every front end.

The HTML report, ``sslwatch analyze`` and the other commands format numbers, metric
directions and bootstrap intervals through these functions, so a metric reads the
same wherever it is shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from sslwatch.analysis import Estimate
from sslwatch.analysis.observations import metric_direction

ARROWS: Final = {"higher": "↑", "lower": "↓", "none": "·"}
"""The glyph of each direction: higher is better, lower is better, no direction."""


def direction_arrow(direction: str) -> str:
    """``↑`` (higher is better), ``↓`` (lower is better) or ``·`` (no direction)."""
    return ARROWS.get(direction, ARROWS["none"])


def metric_arrow(metric: str) -> str:
    """The direction glyph of a registered metric (``·`` for an unknown one)."""
    return direction_arrow(metric_direction(metric))


def format_number(value: float | None) -> str:
    """Display form of a number on the page: 4 significant digits, thousands unabbreviated."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value != 0 and abs(value) >= 1e4:
        return f"{value:.0f}"
    return f"{value:.4g}"


def format_value(value: float) -> str:
    """Compact terminal form of a metric value: 4 decimals (NaN and infinities spelled out)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def estimate_text(est: Estimate, number: Callable[[float], str] = format_number) -> str:
    """``value [low, high]``; the value alone when the interval is undefined."""
    text = number(est.value)
    if math.isfinite(est.low):
        text += f" [{number(est.low)}, {number(est.high)}]"
    return text


def interval_side(est: Estimate, oriented: bool) -> int:
    """+1 when the whole interval lies above 0, -1 when below 0, else (and for a metric
    without a direction, whose sign says nothing about trust) 0."""
    if not oriented or not math.isfinite(est.low):
        return 0
    return 1 if est.low > 0 else -1 if est.high < 0 else 0


def last_line(text: str | None) -> str:
    """The last line of an error message (a traceback's is the exception)."""
    lines = str(text or "").strip().splitlines()
    return lines[-1] if lines else ""
