"""The :class:`ResultStore`: opening a results file, writing values, reading them back."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, SupportsFloat, SupportsIndex

from sslwatch.core.definitions import MetricDefinition
from sslwatch.offline.store.damage import (
    StoreDamagedError,
    _damage_guard,
    _has_sqlite_header,
    _is_damage,
    _problem_lines,
    _read_only_uri,
)
from sslwatch.offline.store.export import write_csv, write_json
from sslwatch.offline.store.schema import (
    SCHEMA_VERSION,
    SOURCES,
    STATUSES,
    check_version,
    create_or_upgrade,
    read_version,
)
from sslwatch.offline.store.values import (
    _as_seconds,
    _as_value,
    _choice,
    _decode,
    _definition_json,
    _dump_meta,
    _encode,
    _meta_json,
    _now,
    _opt_index,
    _opt_text,
    _outcome_json,
    _same_value,
    _text,
)

Filter = str | Sequence[str] | None


def _as_filter(value: Filter, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    values = list(value)
    for v in values:
        _text(v, what)
    return values


def _where(clauses: Sequence[tuple[str, list[str] | None]]) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []
    for column, values in clauses:
        if values is None:
            continue
        parts.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "0")
        args.extend(values)
    return (" WHERE " + " AND ".join(parts)) if parts else "", args


def _find_point(
    conn: sqlite3.Connection,
    run_id: int,
    source: str,
    path: str | None,
    epoch: int | None,
    step: int | None,
) -> tuple[int, str, int | None, int | None, str, str | None] | None:
    cols = "id, source, epoch, step, status, error"
    if path is not None:
        row = conn.execute(
            f"SELECT {cols} FROM points WHERE run_id = ? AND path = ?", (run_id, path)
        ).fetchone()
    else:
        row = conn.execute(
            f"SELECT {cols} FROM points WHERE run_id = ? AND source = ? AND path IS NULL"
            " AND epoch IS ? AND step IS ?",
            (run_id, source, epoch, step),
        ).fetchone()
    return None if row is None else tuple(row)


class ResultStore:
    """A results database (SQLite file); :mod:`sslwatch.offline.store` gives its conventions.

    Args:
        path: database file; created (with parent folders) when missing.
        timeout: seconds a writer waits for another process's transaction (busy timeout).
        read_only: open with SQLite's ``mode=ro``: the file must exist and is never
            written (no schema is created, an older schema is read as it is, never
            upgraded); every write method raises ``ValueError``. As for any reader of
            a WAL database, SQLite may leave its ``-wal``/``-shm`` files beside it.

    A store holds one SQLite connection: use it from the thread and process that opened
    it; other workers open their own ``ResultStore`` on the same file. Opening runs
    SQLite's ``quick_check`` (milliseconds for a store of 20,000 values).

    Raises:
        StoreDamagedError: the file is an SQLite database with damaged pages (random bytes
            written over it, truncated); ``sslwatch doctor`` salvages what is readable.
        SchemaVersionError: the file was written by a newer sslwatch.
        ValueError: the path is a folder, the file is not an SQLite database, is one but
            not an sslwatch store, or (``read_only``) does not exist or is empty.

    Example:
        >>> with ResultStore("results.db") as store:  # doctest: +SKIP
        ...     run = store.ensure_run("simclr-lr0.3", method="simclr", architecture="cnn1d")
        ...     point = store.ensure_point(run, path="ckpt/epoch=10.pt", epoch=10)
        ...     store.record_results(point, [("backbone", definition, 57.3)])
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 60.0, read_only: bool = False
    ) -> None:
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
        self.path = Path(path)
        self.timeout = float(timeout)
        self.read_only = bool(read_only)
        self.schema_version = SCHEMA_VERSION
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        conn = self._connect()
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # -- opening ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """Check the path, then open the connection (read-only, or creating the file)."""
        p = self.path
        if p.is_dir():
            raise ValueError(
                f"{p} is a folder, not a results store file; pass a file path such as "
                f"{p / 'results.db'}"
            )
        if self.read_only:
            if not p.is_file():
                raise ValueError(
                    f"no results store at {p}; pass the database written by `sslwatch sweep`"
                )
            target, uri = _read_only_uri(p), True
        else:
            for parent in (p.parent, *p.parent.parents):
                if parent.exists():
                    if not parent.is_dir():
                        raise ValueError(
                            f"cannot create the results store {p}: {parent} is a file, not a "
                            "folder; pass a path inside a folder"
                        )
                    break
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(
                    f"cannot create the folder {p.parent} for the results store {p} "
                    f"({exc.strerror or exc}); pass a path in a writable folder"
                ) from exc
            target, uri = str(p), False
        try:
            return sqlite3.connect(target, timeout=self.timeout, isolation_level=None, uri=uri)
        except sqlite3.Error as exc:
            raise ValueError(f"cannot open the results store {p} ({exc})") from exc

    def _not_a_store(self, exc: sqlite3.DatabaseError) -> ValueError:
        """The error for a file SQLite cannot read at all: damaged, or not SQLite."""
        if not _is_damage(exc):  # locked, busy, unreadable: not a sign of damage
            return ValueError(f"cannot open the results store {self.path} ({exc}); retry")
        if _has_sqlite_header(self.path):
            return StoreDamagedError(self.path, str(exc))
        fix = "pass the path of an sslwatch results store"
        return ValueError(
            f"{self.path} is not an SQLite database ({exc}); "
            + (fix if self.read_only else fix + " or of a new file")
        )

    def _retry_locked(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``, retrying "database is locked" (e.g. racing journal-mode switches)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _setup(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            problems = _problem_lines(conn.execute("PRAGMA quick_check(3)"))
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(exc) from exc
        if problems:
            raise StoreDamagedError(self.path, "quick_check: " + "; ".join(problems))
        with _damage_guard(self.path):
            if self.read_only:
                self._setup_read_only(conn)
            else:
                self._setup_read_write(conn)

    def _setup_read_only(self, conn: sqlite3.Connection) -> None:
        version = read_version(self.path, conn)
        if version is None:
            what = "is empty (0 bytes)" if self.path.stat().st_size == 0 else "holds no tables"
            raise ValueError(
                f"{self.path} {what}: it is not an sslwatch results store; pass the database "
                "written by `sslwatch sweep`"
            )
        check_version(self.path, version)
        self.schema_version = version

    def _setup_read_write(self, conn: sqlite3.Connection) -> None:
        read_version(self.path, conn)  # refuse a foreign database before changing its journal
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = self._retry_locked(
                lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            )
            if str(mode).lower() != "wal":
                raise ValueError(
                    f"could not switch {self.path} to WAL journal mode (got {mode!r}); put the "
                    "results store on a local filesystem"
                )
        conn.execute("PRAGMA synchronous = NORMAL")
        version = read_version(self.path, conn)
        if version is None or (1 <= version < SCHEMA_VERSION):
            self._retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                create_or_upgrade(self.path, conn)  # re-reads the version under the write lock
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            version = read_version(self.path, conn)
        check_version(self.path, version)

    # -- connection management ------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"the ResultStore for {self.path} is closed; open a new one")
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"this ResultStore for {self.path} was opened in process {self._pid}; open a "
                "new ResultStore in each worker process instead of sharing one across fork"
            )
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; takes the write lock up front (no upgrade deadlocks)."""
        if self.read_only:
            raise ValueError(
                f"the ResultStore for {self.path} was opened read-only; it cannot write"
            )
        conn = self._db()
        with _damage_guard(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # the first error says more
                        conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of one query; damaged pages become :class:`StoreDamagedError`."""
        conn = self._db()
        with _damage_guard(self.path):
            return [tuple(row) for row in conn.execute(sql, args)]

    @property
    def _has_seconds(self) -> bool:
        """Whether the schema has results.seconds/outcome and point_timings (version >= 2)."""
        return self.schema_version >= 2

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None and os.getpid() == self._pid:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"ResultStore({str(self.path)!r}, {state})"

    # -- writing --------------------------------------------------------------------------

    def ensure_run(
        self,
        name: str,
        *,
        method: str | None = None,
        architecture: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Return the id of run ``name``, creating it when missing.

        A stored method or architecture that is missing is filled in; one that differs
        raises ``ValueError`` (runs are grouped by method and architecture, so they must not
        change). ``meta`` is free-form provenance (JSON-able): its keys are merged into the
        stored meta, the latest call winning per key.
        """
        name = _text(name, "run name")
        method = _opt_text(method, "method")
        architecture = _opt_text(architecture, "architecture")
        new_meta = _meta_json(meta)
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, method, architecture, meta FROM runs WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO runs (name, method, architecture, meta, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, method, architecture, _dump_meta(new_meta), _now()),
                )
                return int(cur.lastrowid)  # type: ignore[arg-type]
            run_id, old_method, old_arch, old_meta = row
            for what, old, new in (
                ("method", old_method, method),
                ("architecture", old_arch, architecture),
            ):
                if old is not None and new is not None and old != new:
                    raise ValueError(
                        f"run {name!r} is stored with {what} {old!r}, not {new!r}; use another "
                        f"run name or pass {what}={old!r}"
                    )
            merged = {**json.loads(old_meta), **new_meta}
            conn.execute(
                "UPDATE runs SET method = coalesce(method, ?),"
                " architecture = coalesce(architecture, ?), meta = ? WHERE id = ?",
                (method, architecture, _dump_meta(merged), run_id),
            )
            return int(run_id)

    def ensure_point(
        self,
        run_id: int,
        *,
        source: str = "checkpoint",
        path: str | os.PathLike[str] | None = None,
        epoch: SupportsIndex | None = None,
        step: SupportsIndex | None = None,
    ) -> int:
        """Return the id of a checkpoint or online point of run ``run_id``, creating it.

        Identity: ``path`` when given (stored verbatim), else ``(source, epoch, step)``. A
        new point has status ``pending``. For a point found by path, a missing epoch or
        step is filled in; a different one (or a different source) raises ``ValueError``.
        """
        source = _choice(source, SOURCES, "source")
        path_text = None if path is None else _text(os.fspath(path), "path")
        epoch = _opt_index(epoch, "epoch")
        step = _opt_index(step, "step")
        if path_text is None and epoch is None and step is None:
            raise ValueError("a point needs a path, an epoch or a step to identify it; pass one")
        with self._write() as conn:
            self._require_run(conn, run_id)
            found = _find_point(conn, run_id, source, path_text, epoch, step)
            if found is None:
                now = _now()
                cur = conn.execute(
                    "INSERT INTO points (run_id, source, path, epoch, step, status, created,"
                    " updated) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (run_id, source, path_text, epoch, step, now, now),
                )
                return int(cur.lastrowid)  # type: ignore[arg-type]
            point_id, old_source, old_epoch, old_step = found[:4]
            for what, old, new in (
                ("source", old_source, source),
                ("epoch", old_epoch, epoch),
                ("step", old_step, step),
            ):
                if old is not None and new is not None and old != new:
                    raise ValueError(
                        f"point {path_text!r} of run {run_id} is stored with {what} {old!r}, "
                        f"not {new!r}; checkpoint paths must be unique within a run"
                    )
            if (old_epoch is None and epoch is not None) or (old_step is None and step is not None):
                conn.execute(
                    "UPDATE points SET epoch = coalesce(epoch, ?), step = coalesce(step, ?),"
                    " updated = ? WHERE id = ?",
                    (epoch, step, _now(), point_id),
                )
            return int(point_id)

    def record_results(
        self,
        point_id: int,
        rows: Iterable[
            tuple[str, MetricDefinition, SupportsFloat]
            | tuple[str, MetricDefinition, SupportsFloat, SupportsFloat | None]
        ],
        *,
        status: str = "ok",
    ) -> int:
        """Store ``(representation, definition, value[, seconds])`` rows of one point in ONE
        transaction.

        ``seconds`` (optional, ``None`` = unknown) is the wall time of the value's own
        computation. All rows are stored, together with the point's new ``status`` (``ok``
        clears its error), or none are. Rows already stored for the same (point,
        representation, definition digest) keep their first value and seconds
        (``INSERT OR IGNORE``).

        Returns:
            The number of rows newly stored.

        Raises:
            ValueError: unknown point, malformed row, non-numeric value, or two rows of the
                call with the same key but different values.
        """
        status = _choice(status, STATUSES, "status")
        batch: dict[tuple[str, str], tuple[MetricDefinition, float, float | None]] = {}
        for row in rows:
            try:
                representation, definition, raw, *rest = row
                if len(rest) > 1:
                    raise ValueError("too many items")
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    "each row must be (representation, MetricDefinition, value[, seconds]), "
                    f"got {row!r}"
                ) from exc
            representation = _text(representation, "representation")
            if not isinstance(definition, MetricDefinition):
                raise ValueError(
                    "the second item of each row must be a sslwatch.core.definitions."
                    f"MetricDefinition, got {type(definition).__name__}"
                )
            value = _as_value(raw, f"{definition.metric!r} on {representation!r}")
            seconds = _as_seconds(rest[0] if rest else None, f"{definition.metric!r}")
            key = (representation, definition.digest())
            if key in batch and not _same_value(batch[key][1], value):
                raise ValueError(
                    f"two values ({batch[key][1]!r} and {value!r}) for {definition.metric!r} on "
                    f"{representation!r} with the same definition in one call; pass one"
                )
            batch.setdefault(key, (definition, value, seconds))
        now = _now()
        inserted = 0
        with self._write() as conn:
            self._require_point(conn, point_id)
            for (representation, digest), (definition, value, seconds) in batch.items():
                conn.execute(
                    "INSERT OR IGNORE INTO definitions"
                    " (digest, metric, n, d, dtype, revision, definition)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        digest,
                        definition.metric,
                        int(definition.n),
                        int(definition.d),
                        definition.dtype,
                        int(definition.revision),
                        replace(definition, outcome={}).to_json(),
                    ),
                )
                stored, is_nan = _encode(value)
                cur = conn.execute(
                    "INSERT OR IGNORE INTO results (point_id, representation, digest, value,"
                    " is_nan, version, created, seconds, outcome)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        point_id,
                        representation,
                        digest,
                        stored,
                        is_nan,
                        definition.version,
                        now,
                        seconds,
                        _outcome_json(definition),
                    ),
                )
                inserted += cur.rowcount
            conn.execute(
                "UPDATE points SET status = ?,"
                " error = CASE WHEN ? = 'ok' THEN NULL ELSE error END, updated = ? WHERE id = ?",
                (status, status, now, point_id),
            )
        return inserted

    def record_timings(
        self, point_id: int, timings: Mapping[str, Mapping[str, SupportsFloat]]
    ) -> int:
        """Replace the cost of a point: ``{representation: {name: seconds}}`` in ONE transaction.

        Representation ``""`` holds what concerns the whole point (a sweep's stages:
        ``load``, ``recalibrate``, ``embed``, ``metrics``, ``store``, ``total``); a
        representation's entries are its shared steps (``kmeans[sample,seed=0]``,
        ``second_moments``, ...). The point's earlier timing rows are removed, so the rows
        always describe its latest evaluation. Returns the number of rows written.

        Raises:
            ValueError: unknown point, empty name, or seconds not finite and >= 0.
        """
        clean: list[tuple[str, str, float]] = []
        for representation, entries in timings.items():
            if not isinstance(representation, str):
                raise ValueError(f"representation must be a string, got {representation!r}")
            for name, raw in entries.items():
                name = _text(name, "timing name")
                seconds = _as_seconds(raw, f"{representation or 'point'}/{name}")
                if seconds is None:
                    raise ValueError(f"seconds for {name!r} must be a number, got None")
                clean.append((representation, name, seconds))
        now = _now()
        with self._write() as conn:
            self._require_point(conn, point_id)
            conn.execute("DELETE FROM point_timings WHERE point_id = ?", (point_id,))
            conn.executemany(
                "INSERT INTO point_timings (point_id, representation, name, seconds, created)"
                " VALUES (?, ?, ?, ?, ?)",
                [(point_id, rep, name, sec, now) for rep, name, sec in clean],
            )
        return len(clean)

    def record_failure(self, point_id: int, error: str) -> None:
        """Mark a point ``failed`` with ``error`` (e.g. a traceback); stored results stay."""
        error = _text(error, "error")
        with self._write() as conn:
            self._require_point(conn, point_id)
            conn.execute(
                "UPDATE points SET status = 'failed', error = ?, updated = ? WHERE id = ?",
                (error, _now(), point_id),
            )

    @staticmethod
    def _require_run(conn: sqlite3.Connection, run_id: int) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise ValueError(f"no run with id {run_id!r}; create it with ensure_run()")

    @staticmethod
    def _require_point(conn: sqlite3.Connection, point_id: int) -> None:
        if conn.execute("SELECT 1 FROM points WHERE id = ?", (point_id,)).fetchone() is None:
            raise ValueError(f"no point with id {point_id!r}; create it with ensure_point()")

    # -- reading --------------------------------------------------------------------------

    def stored_digests(
        self, point_id: int, representation: str | None = None
    ) -> set[tuple[str, str]]:
        """The ``(representation, definition digest)`` pairs already stored for a point."""
        sql = "SELECT representation, digest FROM results WHERE point_id = ?"
        args: list[Any] = [point_id]
        if representation is not None:
            sql += " AND representation = ?"
            args.append(representation)
        return {(str(r), str(d)) for r, d in self._rows(sql, args)}

    def missing(
        self, point_id: int, wanted: Iterable[tuple[str, MetricDefinition]]
    ) -> list[tuple[str, MetricDefinition]]:
        """The ``(representation, definition)`` pairs of ``wanted`` not yet stored, in order.

        A sweep computes only these and skips everything already in the store.
        """
        stored = self.stored_digests(point_id)
        return [(r, d) for r, d in wanted if (r, d.digest()) not in stored]

    def tidy_rows(
        self,
        *,
        run: Filter = None,
        metric: Filter = None,
        representation: Filter = None,
        source: Filter = None,
    ) -> list[dict[str, Any]]:
        """One dict per stored value, keys :data:`TIDY_COLUMNS`, optionally filtered.

        ``value`` is a float (NaN and +-inf included); ``seconds`` the time its computation
        took (``None`` when unknown); ``definition`` is the exact
        ``MetricDefinition.to_json()`` the value was computed with. Rows are ordered by
        run, source, epoch, step, path, representation, metric, digest.
        """
        where, args = _where(
            [
                ("r.name", _as_filter(run, "run")),
                ("d.metric", _as_filter(metric, "metric")),
                ("res.representation", _as_filter(representation, "representation")),
                ("p.source", _as_filter(source, "source")),
            ]
        )
        extra = "res.seconds, res.outcome" if self._has_seconds else "NULL, NULL"
        sql = (
            "SELECT r.name, r.method, r.architecture, p.source, p.path, p.epoch, p.step,"
            " res.representation, d.metric, res.value, res.is_nan, d.definition, res.version,"
            f" res.digest, d.n, d.d, p.status, {extra}"
            " FROM results res JOIN points p ON p.id = res.point_id"
            " JOIN runs r ON r.id = p.run_id JOIN definitions d ON d.digest = res.digest"
            f"{where} ORDER BY r.name, p.source, p.epoch IS NULL, p.epoch, p.step IS NULL,"
            " p.step, p.path, res.representation, d.metric, res.digest"
        )
        out = []
        for row in self._rows(sql, args):
            (name, method, arch, src, path, epoch, step, rep, met) = row[:9]
            value, is_nan, definition, version, digest, n, d, status, seconds, outcome = row[9:]
            out.append(
                {
                    "run": name,
                    "method": method,
                    "architecture": arch,
                    "source": src,
                    "path": path,
                    "epoch": epoch,
                    "step": step,
                    "representation": rep,
                    "metric": met,
                    "value": _decode(value, is_nan),
                    "definition": _definition_json(definition, version, outcome),
                    "digest": digest,
                    "n": n,
                    "d": d,
                    "status": status,
                    "seconds": seconds,
                }
            )
        return out

    def timings(self, *, run: Filter = None, source: Filter = None) -> list[dict[str, Any]]:
        """One dict per stored timing (see :meth:`record_timings`), optionally filtered.

        Keys: run, source, path, epoch, step, representation (``""`` = the whole point),
        name, seconds, created; ordered like :meth:`tidy_rows`.
        """
        where, args = _where(
            [("r.name", _as_filter(run, "run")), ("p.source", _as_filter(source, "source"))]
        )
        if not self._has_seconds:
            return []  # a version-1 store read as it is: no timings were kept
        sql = (
            "SELECT r.name, p.source, p.path, p.epoch, p.step, t.representation, t.name,"
            " t.seconds, t.created"
            " FROM point_timings t JOIN points p ON p.id = t.point_id"
            " JOIN runs r ON r.id = p.run_id"
            f"{where} ORDER BY r.name, p.source, p.epoch IS NULL, p.epoch, p.step IS NULL,"
            " p.step, p.path, t.representation, t.name"
        )
        keys = (
            "run",
            "source",
            "path",
            "epoch",
            "step",
            "representation",
            "name",
            "seconds",
            "created",
        )
        return [dict(zip(keys, row, strict=True)) for row in self._rows(sql, args)]

    def export_csv(
        self,
        path: str | os.PathLike[str],
        *,
        run: Filter = None,
        metric: Filter = None,
        representation: Filter = None,
        source: Filter = None,
    ) -> int:
        """Write :meth:`tidy_rows` as CSV (header :data:`TIDY_COLUMNS`); return the row count.

        Same text as ``pandas.DataFrame.to_csv(index=False)``: NaN and missing values are
        empty fields, +-inf are ``inf``/``-inf``. The file is replaced atomically.
        """
        rows = self.tidy_rows(run=run, metric=metric, representation=representation, source=source)

        write_csv(path, rows)
        return len(rows)

    def export_json(
        self,
        path: str | os.PathLike[str],
        *,
        run: Filter = None,
        metric: Filter = None,
        representation: Filter = None,
        source: Filter = None,
    ) -> int:
        """Write :meth:`tidy_rows` as a JSON list of records; return the row count.

        NaN and +-inf are written as ``NaN``/``Infinity``/``-Infinity`` (Python ``json``
        tokens, read by ``json.load`` and ``pandas.read_json``); missing values as ``null``.
        The file is replaced atomically.
        """
        rows = self.tidy_rows(run=run, metric=metric, representation=representation, source=source)

        write_json(path, rows)
        return len(rows)

    def failures(self, *, run: Filter = None) -> list[dict[str, Any]]:
        """Failed points: run, method, architecture, source, path, epoch, step, error,
        updated, and n_results (values stored before or despite the failure)."""
        where, args = _where([("r.name", _as_filter(run, "run"))])
        where = (where + " AND" if where else " WHERE") + " p.status = 'failed'"
        sql = (
            "SELECT r.name, r.method, r.architecture, p.source, p.path, p.epoch, p.step,"
            " p.error, p.updated,"
            " (SELECT count(*) FROM results res WHERE res.point_id = p.id)"
            " FROM points p JOIN runs r ON r.id = p.run_id"
            f"{where} ORDER BY r.name, p.source, p.epoch IS NULL, p.epoch, p.step IS NULL,"
            " p.step, p.path"
        )
        keys = (
            "run",
            "method",
            "architecture",
            "source",
            "path",
            "epoch",
            "step",
            "error",
            "updated",
            "n_results",
        )
        return [dict(zip(keys, row, strict=True)) for row in self._rows(sql, args)]


@contextmanager
def _output_store(target: Path) -> Iterator[ResultStore]:
    """An existing ``target`` opened for writing, or a new one built in a temporary file
    next to it and renamed to ``target`` when the block succeeds (removed when it fails)."""
    if target.exists():
        with ResultStore(target) as store:
            yield store
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with ResultStore(tmp) as store:
            yield store
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
