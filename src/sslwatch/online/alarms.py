"""Collapse alarms: thresholds on RankMe, collapse_std and the kNN entropy between computes.

:class:`CollapseAlarms` says when to fire; :class:`AlarmTracker` keeps the running
references (RankMe's maximum, the last entropy) and turns one compute's values into
:class:`AlarmEvent` objects. The :class:`~sslwatch.online.monitor.Monitor` raises each
as a :class:`CollapseWarning`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sslwatch.metrics._validation import as_int

__all__ = [
    "DEFAULT_ALARMS",
    "AlarmEvent",
    "AlarmTracker",
    "CollapseAlarms",
    "CollapseWarning",
]


class CollapseWarning(UserWarning):
    """A collapse alarm fired (see :class:`CollapseAlarms`)."""


@dataclass(frozen=True)
class CollapseAlarms:
    """When to raise a :class:`CollapseWarning` (set a threshold to ``None`` to disable it).

    Attributes:
        rankme_min: fire when RankMe < this absolute value (a fully collapsed
            representation has RankMe ~ 1).
        rankme_fraction: fire when RankMe < this fraction of its running maximum over
            earlier computes (after ``warmup``).
        collapse_std_fraction: fire when collapse_std < this fraction of 1/sqrt(D), the
            value of healthy, spread-out L2-normalised embeddings (Chen & He 2021).
        entropy_drop: fire when the kNN entropy (metric ``"entropy"``, nats) falls by more
            than this many nats *per dimension* between two consecutive computes (a
            factor e^-1 of scale in every direction), or becomes -inf (duplicate points).
        warmup: computes at the start that do not count for the relative alarms
            (``rankme_fraction``, ``entropy_drop``): features at random initialisation
            have a high RankMe and a large entropy that training legitimately lowers.
        stop_on_collapse: also set :attr:`Monitor.should_stop` when an alarm fires (the
            Lightning callback then sets ``trainer.should_stop``).
    """

    rankme_min: float | None = 2.0
    rankme_fraction: float | None = 0.25
    collapse_std_fraction: float | None = 0.1
    entropy_drop: float | None = 1.0
    warmup: int = 1
    stop_on_collapse: bool = False

    def __post_init__(self) -> None:
        for name in ("rankme_min", "entropy_drop"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 or None; got {value!r}")
        for name in ("rankme_fraction", "collapse_std_fraction"):
            value = getattr(self, name)
            if value is not None and not (0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1] or None; got {value!r}")
        as_int(self.warmup, "warmup", low=0, hint=" (computes)")


@dataclass(frozen=True)
class AlarmEvent:
    """One fired alarm: which rule, on which metric, the value and the threshold."""

    alarm: str
    metric: str
    value: float
    threshold: float
    step: int | None
    name: str

    @property
    def message(self) -> str:
        """Human-readable one-liner (the warning text)."""
        return (
            f"sslwatch collapse alarm on {self.name!r} at step {self.step}: {self.alarm} "
            f"({self.metric} = {self.value:.6g}, threshold {self.threshold:.6g})"
        )


DEFAULT_ALARMS = CollapseAlarms()
"""The alarms a :class:`Monitor` uses unless told otherwise (warn only, never stop)."""


_Fired = tuple[str, str, float, float]  # (alarm, metric, value, threshold)


class AlarmTracker:
    """Running references (RankMe maximum, last entropy) for :class:`CollapseAlarms`."""

    def __init__(self, config: CollapseAlarms) -> None:
        self.config = config
        self.checks = 0
        self.rankme_max = math.nan
        self.last_entropy = math.nan

    def check(
        self, values: Mapping[str, float], d: int, step: int | None, name: str
    ) -> list[AlarmEvent]:
        """The alarms one compute's ``values`` fire (D = ``d``); updates the references."""
        relative = self.checks >= self.config.warmup
        fired = [
            *self._rankme(values.get("rankme", math.nan), relative),
            *self._collapse_std(values.get("collapse_std", math.nan), d),
            *self._entropy(values.get("entropy", math.nan), d, relative),
        ]
        self.checks += 1
        return [AlarmEvent(*f, step=step, name=name) for f in fired]

    def _rankme(self, rankme: float, relative: bool) -> list[_Fired]:
        """Below the absolute floor; below a fraction of the running maximum."""
        cfg = self.config
        fired: list[_Fired] = []
        if not math.isfinite(rankme):
            return fired
        if cfg.rankme_min is not None and rankme < cfg.rankme_min:
            fired.append(("rankme below minimum", "rankme", rankme, cfg.rankme_min))
        if not relative:
            return fired
        if (
            cfg.rankme_fraction is not None
            and math.isfinite(self.rankme_max)
            and rankme < cfg.rankme_fraction * self.rankme_max
        ):
            fired.append(
                (
                    f"rankme below {cfg.rankme_fraction:g} x its running maximum "
                    f"{self.rankme_max:.6g}",
                    "rankme",
                    rankme,
                    cfg.rankme_fraction * self.rankme_max,
                )
            )
        self.rankme_max = rankme if math.isnan(self.rankme_max) else max(self.rankme_max, rankme)
        return fired

    def _collapse_std(self, std: float, d: int) -> list[_Fired]:
        """Below a fraction of 1/sqrt(D), the value of spread-out normalised embeddings."""
        fraction = self.config.collapse_std_fraction
        if fraction is None or not math.isfinite(std) or d <= 0:
            return []
        threshold = fraction / math.sqrt(d)
        return [("collapse_std near 0", "collapse_std", std, threshold)] if std < threshold else []

    def _entropy(self, entropy: float, d: int, relative: bool) -> list[_Fired]:
        """A drop of more than ``entropy_drop`` nats per dimension since the last compute."""
        drop = self.config.entropy_drop
        if math.isnan(entropy) or d <= 0:
            return []
        last, self.last_entropy = self.last_entropy, entropy
        if relative and drop is not None and math.isfinite(last) and (last - entropy) / d > drop:
            return [(f"entropy dropped from {last:.6g} nats", "entropy", entropy, last - drop * d)]
        return []

    def state_dict(self) -> dict[str, float]:
        return {
            "checks": float(self.checks),
            "rankme_max": self.rankme_max,
            "last_entropy": self.last_entropy,
        }

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.checks = int(state.get("checks", 0))
        self.rankme_max = float(state.get("rankme_max", math.nan))
        self.last_entropy = float(state.get("last_entropy", math.nan))
