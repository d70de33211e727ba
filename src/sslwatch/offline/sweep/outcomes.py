"""What a sweep reports: one :class:`CheckpointOutcome` per checkpoint, the
:class:`SweepSummary`, the exit code, and the one-line error texts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Exit codes count failed checkpoints up to this value.
MAX_EXIT_FAILURES = 100

_MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class CheckpointOutcome:
    """What happened to one checkpoint.

    Attributes:
        path, run, epoch, step: the checkpoint.
        status: ``"ok"`` (what was missing is now stored), ``"skipped"`` (everything was
            already stored; no model work) or ``"failed"``.
        error: the one-line error of a failed checkpoint.
        loaded: whether the model was loaded (model work was attempted).
        values_stored: values newly written to the store.
        warnings: distinct warnings raised while it was processed.
        timings: seconds: ``load``, ``recalibrate``, ``embed``, ``metrics``, ``store``
            (store reads and writes) and ``total``.
        costs: seconds inside ``metrics``, per metric (its own time) and per shared step
            (``kmeans[sample,seed=0]``, ``second_moments``, ``spectra``, ...), summed over
            representations and passes.
        rank: the torchrun rank that evaluated it (``None`` in a one-process sweep and for
            checkpoints skipped before any rank started).
    """

    path: str
    run: str
    epoch: int | None
    step: int | None
    status: str
    error: str | None = None
    loaded: bool = False
    values_stored: int = 0
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    costs: Mapping[str, float] = field(default_factory=dict)
    rank: int | None = None

    def top_costs(self, n: int = 3, *, group_steps: bool = True) -> list[tuple[str, float]]:
        """The ``n`` most expensive stages (load, recalibrate, embed, store), metrics and
        shared steps, most expensive first; zero-second items are left out.

        With ``group_steps`` a step's bracketed settings are dropped and its seconds summed
        (``kmeans[sample,seed=0]`` and ``kmeans[view0,seed=0]`` count as ``kmeans``).
        """
        items: dict[str, float] = {}
        stages = {k: v for k, v in self.timings.items() if k not in ("metrics", "total")}
        for key, seconds in [*stages.items(), *self.costs.items()]:
            name = key.partition("[")[0] if group_steps else key
            items[name] = items.get(name, 0.0) + seconds
        ranked = sorted(items.items(), key=lambda kv: -kv[1])
        return [(k, v) for k, v in ranked if v > 0][: max(0, n)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        out["timings"] = dict(self.timings)
        out["costs"] = dict(self.costs)
        return out


@dataclass(frozen=True)
class SweepSummary:
    """The result of :func:`~sslwatch.offline.sweep.run_sweep`: one outcome per checkpoint, in
    checkpoint order.

    Under torchrun (``rank``/``world_size`` set), rank 0's summary covers every rank's
    checkpoints, with ``shards`` (the shard stores it merged into ``db``),
    ``shards_kept`` and ``merge_problem`` (why the merge did not finish cleanly); another
    rank's covers only the checkpoints it evaluated.
    """

    db: str
    outcomes: tuple[CheckpointOutcome, ...]
    seconds: float
    workers: int = 1
    shard: tuple[int, int] | None = None
    representations: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    rank: int | None = None
    world_size: int | None = None
    shards: tuple[str, ...] = ()
    shards_kept: bool = False
    merge_problem: str | None = None

    def _count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def n_checkpoints(self) -> int:
        """Checkpoints in this sweep (this shard)."""
        return len(self.outcomes)

    @property
    def n_ok(self) -> int:
        """Checkpoints evaluated successfully by this sweep."""
        return self._count("ok")

    @property
    def n_skipped(self) -> int:
        """Checkpoints whose values were all stored already (no model work)."""
        return self._count("skipped")

    @property
    def n_failed(self) -> int:
        """Checkpoints that failed to load, to embed, or had a metric error."""
        return self._count("failed")

    @property
    def n_loaded(self) -> int:
        """Checkpoints whose model was loaded (model work done)."""
        return sum(1 for o in self.outcomes if o.loaded)

    @property
    def n_values(self) -> int:
        """Values newly stored."""
        return sum(o.values_stored for o in self.outcomes)

    @property
    def failures(self) -> list[CheckpointOutcome]:
        """The failed outcomes."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """``min(failed, 100)``: 0 when no checkpoint failed (see :func:`exit_code`); at
        least 1 when rank 0 could not merge the shard stores (:attr:`merge_problem`)."""
        return max(exit_code(self.n_failed), 1 if self.merge_problem else 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary with counts and every outcome."""
        return {
            "db": self.db,
            "checkpoints": self.n_checkpoints,
            "ok": self.n_ok,
            "skipped": self.n_skipped,
            "failed": self.n_failed,
            "loaded": self.n_loaded,
            "values_stored": self.n_values,
            "seconds": self.seconds,
            "workers": self.workers,
            "shard": list(self.shard) if self.shard else None,
            "rank": self.rank,
            "world_size": self.world_size,
            "shards": list(self.shards),
            "shards_kept": self.shards_kept,
            "merge_problem": self.merge_problem,
            "representations": list(self.representations),
            "metrics": list(self.metrics),
            "exit_code": self.exit_code,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


def exit_code(n_failed: int) -> int:
    """The sweep's exit code: the number of failed checkpoints, capped at 100."""
    return int(min(max(0, n_failed), MAX_EXIT_FAILURES))


def _one_line(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    line = " ".join(str(text).split()) or "(no message)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error_text(exc: BaseException, path: str, doing: str) -> str:
    msg = str(exc)
    if path not in msg:
        msg = f"checkpoint {path}: {doing} failed: {type(exc).__name__}: {msg}"
    return _one_line(msg)
