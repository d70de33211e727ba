"""Writers of :class:`~sslwatch.online.monitor.MonitorResult` values for plain training loops.

Three sinks with one method, ``write(result, *, step=None, epoch=None)``:

* :class:`TensorBoardSink`: scalars ``<prefix>/<representation>/<metric>`` into a
  ``torch.utils.tensorboard.SummaryWriter`` (yours, or one it opens on a log dir).
* :class:`CSVSink`: one tidy row per metric appended to a CSV file (header written once;
  every write is flushed and fsync'ed, and a line torn by a crash is closed before the
  next write, so the file stays readable after a kill).
* :class:`StoreSink`: rows in the SQLite results store (:class:`sslwatch.offline.store.ResultStore`)
  as an *online* point (source ``"online"``, with step and epoch) of a run, in the same
  schema as the offline checkpoint sweeps, so online and offline values of one run can
  be compared definition by definition.

Under ``torch.distributed`` every rank computes the same values; by default the sinks
write only on global rank 0 (``all_ranks=True`` writes everywhere). Example::

    monitor = Monitor(name="backbone")
    sinks = [TensorBoardSink("runs/x"), CSVSink("runs/x/sslwatch.csv")]
    for step, batch in enumerate(loader):
        ...
        monitor.update(features, step=step)
        if step % 500 == 0:
            result = monitor.compute()
            write_all(sinks, result)
            monitor.reset()
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from sslwatch.online.monitor import MonitorResult

if TYPE_CHECKING:
    from sslwatch.offline.store import ResultStore

__all__ = ["CSV_COLUMNS", "CSVSink", "Sink", "StoreSink", "TensorBoardSink", "write_all"]

CSV_COLUMNS = (
    "time",
    "step",
    "epoch",
    "representation",
    "metric",
    "value",
    "n",
    "d",
    "dtype",
    "digest",
    "error",
)
"""Columns of :class:`CSVSink` files (one row per metric and compute)."""


class Sink(Protocol):
    """Anything with ``write(result, *, step=None, epoch=None)`` and ``close()``."""

    def write(
        self, result: MonitorResult, *, step: int | None = None, epoch: int | None = None
    ) -> None: ...

    def close(self) -> None: ...


def _is_rank_zero() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _check_result(result: Any) -> MonitorResult:
    if not isinstance(result, MonitorResult):
        raise ValueError(
            f"expected a MonitorResult (from Monitor.compute()); got {type(result).__name__}"
        )
    return result


def _format(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


class _SinkBase:
    all_ranks: bool = False

    def _skip(self) -> bool:
        return not self.all_ranks and not _is_rank_zero()

    def close(self) -> None:
        """Release the underlying resource (no-op by default)."""

    def __enter__(self) -> _SinkBase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TensorBoardSink(_SinkBase):
    """Write results as TensorBoard scalars.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``, or a log directory for which
            one is opened (on rank 0 only, on first write) and closed by :meth:`close`.
        prefix: tag prefix; tags are ``<prefix>/<representation>/<metric>`` (see
            :meth:`MonitorResult.log_dict`), the same names the Lightning callback logs.
        flush: flush the event file after every write.
        all_ranks: write on every rank (default: global rank 0 only).
    """

    def __init__(
        self,
        writer: Any,
        *,
        prefix: str = "sslwatch",
        flush: bool = True,
        all_ranks: bool = False,
    ) -> None:
        if isinstance(writer, str | os.PathLike):
            self._logdir: str | None = os.fspath(writer)
            self._writer: Any = None
            self._owned = True
        else:
            if not hasattr(writer, "add_scalar"):
                raise ValueError(
                    "writer must be a torch.utils.tensorboard.SummaryWriter or a log directory; "
                    f"got {type(writer).__name__}"
                )
            self._logdir, self._writer, self._owned = None, writer, False
        self.prefix = prefix
        self.flush = flush
        self.all_ranks = all_ranks

    @property
    def writer(self) -> Any:
        """The SummaryWriter (opened on first use when a log directory was given)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self._logdir)
        return self._writer

    def write(
        self, result: MonitorResult, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        """Add one scalar per metric (and ``nonfinite_rows``) at ``step`` (default:
        ``result.step``)."""
        result = _check_result(result)
        if self._skip():
            return
        global_step = step if step is not None else result.step
        for tag, value in result.log_dict(self.prefix).items():
            self.writer.add_scalar(tag, value, global_step=global_step)
        if self.flush:
            self.writer.flush()

    def close(self) -> None:
        """Close the writer if this sink opened it (else just flush it)."""
        if self._writer is None:
            return
        if self._owned:
            self._writer.close()
            self._writer = None
        else:
            self._writer.flush()


class CSVSink(_SinkBase):
    """Append results to a CSV file, one row per metric (columns :data:`CSV_COLUMNS`).

    The header is written once, when the file is new or empty; an existing file with
    another header is refused (``ValueError``) rather than mixed. Values are written in
    shortest round-trip form, non-finite ones as ``nan``, ``inf``, ``-inf`` (what pandas
    reads back). Each write opens the file in append mode, writes all rows of the result
    at once, flushes and (``fsync=True``) fsyncs, then closes it: a crash loses at most the
    write in flight, and a torn last line is terminated before the next write.

    Args:
        path: the CSV file (parent folders are created).
        fsync: ``os.fsync`` after every write (default ``True``; costs ~ms per compute).
        all_ranks: write on every rank (default: global rank 0 only).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = True, all_ranks: bool = False
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.all_ranks = all_ranks
        if self.path.exists() and self.path.stat().st_size > 0:
            self._check_header()

    def _check_header(self) -> None:
        with open(self.path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        if tuple(header) != CSV_COLUMNS:
            raise ValueError(
                f"{self.path} exists with columns {header}, not the sslwatch monitor columns "
                f"{list(CSV_COLUMNS)}; write to a new file"
            )

    def rows(
        self, result: MonitorResult, *, step: int | None = None, epoch: int | None = None
    ) -> list[list[str]]:
        """The CSV rows (as strings) :meth:`write` appends for ``result``."""
        result = _check_result(result)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        step = step if step is not None else result.step
        epoch = epoch if epoch is not None else result.epoch
        out = []
        for record in result.records.values():
            definition = record.definition
            out.append(
                [
                    now,
                    "" if step is None else str(step),
                    "" if epoch is None else str(epoch),
                    result.name,
                    record.name,
                    _format(record.value),
                    str(definition.n),
                    str(definition.d),
                    definition.dtype,
                    definition.digest(),
                    record.error or "",
                ]
            )
        return out

    def write(
        self, result: MonitorResult, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        """Append one row per metric of ``result``."""
        rows = self.rows(result, step=step, epoch=epoch)
        if self._skip():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        with open(self.path, "a+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                writer.writerow(CSV_COLUMNS)
            else:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":  # a line torn by a crash: close it first
                    buffer.write("\n")
            writer.writerows(rows)
            fh.write(buffer.getvalue().encode("utf-8"))
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())


class StoreSink(_SinkBase):
    """Record results in the SQLite results store as online points of one run.

    Each :meth:`write` creates (or finds) the point ``(run, source="online", epoch, step)``
    and stores ``(representation, definition, value)`` for every metric in one
    transaction (``ResultStore.record_results``; a repeat keeps the first value).

    Args:
        store: a :class:`~sslwatch.offline.store.ResultStore` or the path of its database file
            (opened on first write, on rank 0 only, and closed by :meth:`close`).
        run: the run name (created when missing).
        method, architecture, meta: stored with the run (see ``ResultStore.ensure_run``).
        all_ranks: write on every rank (default: global rank 0 only).
    """

    def __init__(
        self,
        store: ResultStore | str | os.PathLike[str],
        run: str,
        *,
        method: str | None = None,
        architecture: str | None = None,
        meta: Mapping[str, Any] | None = None,
        all_ranks: bool = False,
    ) -> None:
        if not isinstance(run, str) or not run.strip():
            raise ValueError(f"run must be a non-empty string; got {run!r}")
        if isinstance(store, str | os.PathLike):
            self._path: Path | None = Path(store)
            self._store: ResultStore | None = None
        else:
            self._path, self._store = None, store
        self.run = run
        self.method = method
        self.architecture = architecture
        self.meta = dict(meta or {})
        self.all_ranks = all_ranks
        self._run_id: int | None = None

    @property
    def store(self) -> ResultStore:
        """The :class:`ResultStore` (opened on first use when a path was given)."""
        if self._store is None:
            from sslwatch.offline.store import ResultStore

            assert self._path is not None
            self._store = ResultStore(self._path)
        return self._store

    def write(
        self, result: MonitorResult, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        """Store every metric of ``result`` at its (epoch, step) online point."""
        result = _check_result(result)
        if self._skip():
            return
        step = step if step is not None else result.step
        epoch = epoch if epoch is not None else result.epoch
        if step is None and epoch is None:
            raise ValueError("an online point needs a step or an epoch; pass step= or epoch=")
        if self._run_id is None:
            self._run_id = self.store.ensure_run(
                self.run, method=self.method, architecture=self.architecture, meta=self.meta
            )
        point = self.store.ensure_point(self._run_id, source="online", epoch=epoch, step=step)
        self.store.record_results(
            point, [(result.name, r.definition, r.value) for r in result.records.values()]
        )

    def close(self) -> None:
        """Close the store if this sink opened it."""
        if self._path is not None and self._store is not None:
            self._store.close()
            self._store = None


def write_all(
    sinks: Iterable[Sink],
    result: MonitorResult,
    *,
    step: int | None = None,
    epoch: int | None = None,
) -> None:
    """``sink.write(result, step=step, epoch=epoch)`` for every sink."""
    for sink in sinks:
        sink.write(result, step=step, epoch=epoch)
