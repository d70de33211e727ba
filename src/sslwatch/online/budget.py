"""An opt-in stride governor: feed a monitor only as often as a cost budget allows."""

from __future__ import annotations

from sslwatch.metrics._validation import as_int

__all__ = ["UpdateBudget"]


class UpdateBudget:
    """Feed a monitor only as often as a cost budget allows: an opt-in stride governor.

    The cost of :meth:`Monitor.update` is fixed by the embeddings (B D^2 / 2 multiply-adds
    for exact moments), the cost of a training step by the model; at D = 2048 on a CPU
    the update can cost several percent of a small network's step (see
    ``benchmarks/bench_monitor.py``). This keeps exponential moving averages of both
    (record them with :meth:`record_step` and :meth:`record_update`) and feeds the
    monitor every ``stride``-th batch, with ``stride`` the smallest power of two such
    that ``update / stride <= fraction * step``, capped at ``max_stride``. The first
    ``warmup`` batches are all fed (to measure); the stride is then re-chosen every
    ``every`` batches, so the sampling pattern is regular between re-choices.

    The values stay exact statistics of the batches that were fed (their row count is
    the N of every definition); which batches those are depends on measured times, so
    two runs are identical only if their strides are (log :attr:`stride`).

    Args:
        fraction: the budget, update time as a fraction of the step time (e.g. 0.02).
        warmup: batches fed unconditionally at the start, to measure.
        every: batches between two choices of the stride.
        max_stride: the largest stride (a floor on how much data is seen).
        smoothing: weight of a new measurement in the moving averages.
    """

    def __init__(
        self,
        fraction: float = 0.02,
        *,
        warmup: int = 5,
        every: int = 50,
        max_stride: int = 64,
        smoothing: float = 0.1,
    ) -> None:
        if not (isinstance(fraction, int | float) and 0.0 < float(fraction) <= 1.0):
            raise ValueError(f"fraction must be in (0, 1], e.g. 0.02 for 2%; got {fraction!r}")
        for what, n in (("warmup", warmup), ("every", every), ("max_stride", max_stride)):
            as_int(n, what)
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1]; got {smoothing!r}")
        self.fraction = float(fraction)
        self.warmup, self.every, self.max_stride = warmup, every, max_stride
        self.smoothing = float(smoothing)
        self.step_seconds: float | None = None
        self.update_seconds: float | None = None
        self.stride = 1
        self._batches = 0

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.smoothing * (new - old)

    def record_step(self, seconds: float) -> None:
        """Add the wall time of one training step (without the monitor's update)."""
        self.step_seconds = self._ema(self.step_seconds, max(0.0, float(seconds)))

    def record_update(self, seconds: float) -> None:
        """Add the wall time of one :meth:`Monitor.update` (all monitors of the batch)."""
        self.update_seconds = self._ema(self.update_seconds, max(0.0, float(seconds)))

    def should_update(self) -> bool:
        """Whether to feed the current batch; call once per training batch."""
        i = self._batches
        self._batches += 1
        if i < self.warmup:
            return True
        if (i - self.warmup) % self.every == 0:
            self.stride = self._choose_stride()
        return (i - self.warmup) % self.stride == 0

    def _choose_stride(self) -> int:
        if not self.step_seconds or self.update_seconds is None:
            return self.stride
        need = self.update_seconds / (self.fraction * self.step_seconds)
        stride = 1
        while stride < need and stride < self.max_stride:
            stride *= 2
        return stride
