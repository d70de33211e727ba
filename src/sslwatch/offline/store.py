"""SQLite results store: one schema for offline sweeps and online (training-time) values.

Every value is stored with the :class:`~sslwatch.core.definitions.MetricDefinition` it was
computed with, at a *point* (a checkpoint file, or an online logging step) of a *run*.

Schema (version :data:`SCHEMA_VERSION`)::

    schema_info  (id = 1, version, created, sslwatch_version)
    runs         (id, name UNIQUE, method, architecture, meta JSON, created)
    points       (id, run_id -> runs, source 'checkpoint'|'online', path, epoch, step,
                  status 'ok'|'failed'|'pending', error, created, updated)
                 UNIQUE (run_id, path)                       when path IS NOT NULL
                 UNIQUE (run_id, source, epoch, step)        when path IS NULL
    definitions  (digest PRIMARY KEY, metric, n, d, dtype, revision, definition JSON)
    results      (point_id -> points, representation, digest -> definitions,
                  value REAL, is_nan 0|1, version, created, seconds REAL NULL,
                  outcome JSON NULL)
                 PRIMARY KEY (point_id, representation, digest)
    point_timings (point_id -> points, representation ('' = the whole point), name,
                  seconds REAL, created)
                 PRIMARY KEY (point_id, representation, name)

Conventions:

* **Point identity.** A point is identified by its ``path`` when it has one (stored
  verbatim, ``os.fspath``; pass one canonical form, e.g. absolute, consistently), otherwise
  by ``(source, epoch, step)``; at least one of path, epoch and step must be given.
* **NaN.** SQLite stores a bound NaN as NULL, so a NaN value is stored as ``value IS NULL``
  with ``is_nan = 1`` (a CHECK constraint ties the two; a NULL never means anything else).
  +-inf are stored as SQLite REALs. Reading back always gives the float that was stored,
  except that ``-0.0`` comes back as ``0.0`` (SQLite drops the sign of zero).
* **Idempotence, first value wins.** ``record_results`` uses ``INSERT OR IGNORE``: an
  already stored (point, representation, definition digest) keeps its first value; the
  repeat is ignored and not counted. A formula change bumps the metric's ``revision``,
  which changes the digest, so corrected values are new rows, never silent overwrites.
* **Definitions.** The digest excludes the sslwatch version (provenance only), so the
  ``definitions`` row keeps the first writer's JSON (without its outcome); each result
  row keeps the version that computed it and its outcome (``MetricDefinition.outcome``,
  e.g. the L2 a probe selected; provenance, never compared), and
  :meth:`ResultStore.tidy_rows` rebuilds the exact definition JSON.
* **Seconds.** ``results.seconds`` is the wall time the value's own computation took
  (:attr:`sslwatch.core.evaluate.MetricValue.seconds`; shared steps excluded), ``NULL`` when
  unknown (online values, stores written before schema version 2). ``point_timings``
  holds the cost of the latest evaluation of a point: stages (``load``, ``embed``,
  ...) under representation ``''`` and shared steps (``kmeans[sample,seed=0]``,
  ``second_moments``, ...) per representation; :meth:`ResultStore.record_timings`
  replaces a point's rows. Seconds are provenance: they never make two values differ
  (merging keeps the first value and fills in missing seconds, never a conflict).
* **Schema versions.** A store of an older schema version is upgraded in place when
  opened (one transaction; see :data:`_MIGRATIONS`): version 2 added ``results.seconds``,
  ``results.outcome`` and ``point_timings``. A store of a newer version is refused
  (:class:`SchemaVersionError`).
* **Status.** New points are ``pending``; ``record_results`` sets the status it is given
  (``ok`` clears the error); ``record_failure`` sets ``failed`` and the error and never
  deletes results.
* **Concurrency.** WAL journal, foreign keys on, a busy timeout, and every write in one
  ``BEGIN IMMEDIATE`` transaction: several processes on one machine (``--workers N``) may
  write the same file. One transaction per checkpoint result: a writer killed (even by
  SIGKILL) loses only the transaction in flight. WAL needs shared memory, i.e. one host:
  on a network filesystem (NFS, Lustre) give each SLURM array task its own file and join
  them with :func:`merge_stores`. Open one :class:`ResultStore` per process (a store
  refuses to be used from a forked child).
* **Exports.** :meth:`~ResultStore.export_csv` writes what ``pandas.DataFrame.to_csv
  (index=False)`` would: NaN and missing as an empty field, +-inf as ``inf``/``-inf``,
  floats in shortest round-trip form. :meth:`~ResultStore.export_json` writes a list of
  records using Python's ``json`` tokens ``NaN``, ``Infinity``, ``-Infinity`` (read back
  exactly by ``json.load`` and ``pandas.read_json``; strict RFC 8259 parsers reject them).
"""

from __future__ import annotations

import csv
import json
import math
import operator
import os
import secrets
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, SupportsFloat, SupportsIndex

from sslwatch._files import atomic_path
from sslwatch._version import __version__
from sslwatch.core.definitions import MetricDefinition

__all__ = [
    "MERGE_RTOL",
    "SCHEMA_VERSION",
    "SOURCES",
    "STATUSES",
    "TIDY_COLUMNS",
    "MergeConflict",
    "MergeSummary",
    "ResultStore",
    "SalvageSummary",
    "SchemaVersionError",
    "StoreCheck",
    "StoreDamagedError",
    "check_store",
    "merge_stores",
    "salvage_store",
]

SCHEMA_VERSION: Final = 2
APPLICATION_ID: Final = 0x53534C57  # "SSLW" in the SQLite header
SOURCES: Final = ("checkpoint", "online")
STATUSES: Final = ("ok", "failed", "pending")
TIDY_COLUMNS: Final = (
    "run",
    "method",
    "architecture",
    "source",
    "path",
    "epoch",
    "step",
    "representation",
    "metric",
    "value",
    "definition",
    "digest",
    "n",
    "d",
    "status",
    "seconds",
)
# Merge precedence of a point's status: the most informative outcome wins.
_STATUS_RANK: Final = {"pending": 0, "failed": 1, "ok": 2}

_SCHEMA: Final = (
    """CREATE TABLE schema_info (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL,
        created TEXT NOT NULL,
        sslwatch_version TEXT NOT NULL
    )""",
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        method TEXT,
        architecture TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        created TEXT NOT NULL
    )""",
    """CREATE TABLE points (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        source TEXT NOT NULL CHECK (source IN ('checkpoint', 'online')),
        path TEXT,
        epoch INTEGER CHECK (epoch IS NULL OR epoch >= 0),
        step INTEGER CHECK (step IS NULL OR step >= 0),
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('ok', 'failed', 'pending')),
        error TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        CHECK (path IS NOT NULL OR epoch IS NOT NULL OR step IS NOT NULL)
    )""",
    "CREATE UNIQUE INDEX points_by_path ON points (run_id, path) WHERE path IS NOT NULL",
    """CREATE UNIQUE INDEX points_by_position
        ON points (run_id, source, ifnull(epoch, -1), ifnull(step, -1)) WHERE path IS NULL""",
    """CREATE TABLE definitions (
        digest TEXT PRIMARY KEY,
        metric TEXT NOT NULL,
        n INTEGER NOT NULL,
        d INTEGER NOT NULL,
        dtype TEXT NOT NULL,
        revision INTEGER NOT NULL,
        definition TEXT NOT NULL
    )""",
    "CREATE INDEX definitions_by_metric ON definitions (metric)",
    """CREATE TABLE results (
        point_id INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
        representation TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES definitions(digest),
        value REAL,
        is_nan INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1)),
        version TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY (point_id, representation, digest),
        CHECK ((value IS NULL) = (is_nan = 1))
    )""",
    "CREATE INDEX results_by_digest ON results (digest)",
)

_RESULT_SECONDS: Final = "seconds REAL CHECK (seconds IS NULL OR seconds >= 0)"
_POINT_TIMINGS: Final = """CREATE TABLE point_timings (
        point_id INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
        representation TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        seconds REAL NOT NULL CHECK (seconds >= 0),
        created TEXT NOT NULL,
        PRIMARY KEY (point_id, representation, name)
    )"""

#: Statements that upgrade a store from version ``v - 1`` to ``v``. A new store gets
#: version 1's :data:`_SCHEMA` and then every migration, so both paths give one schema.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    2: (
        f"ALTER TABLE results ADD COLUMN {_RESULT_SECONDS}",
        "ALTER TABLE results ADD COLUMN outcome TEXT",
        _POINT_TIMINGS,
    ),
}

Filter = str | Sequence[str] | None


class SchemaVersionError(ValueError):
    """The database was written by a newer sslwatch whose schema this one cannot read."""


class StoreDamagedError(ValueError):
    """The file is an SQLite database whose pages are damaged (malformed or truncated).

    The message names the file and the fix (``sslwatch doctor``).

    Attributes:
        path: the damaged file.
        reason: SQLite's description of the damage.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(
            f"{self.path} is damaged ({self.reason}); run 'sslwatch doctor "
            f"{shlex.quote(str(self.path))} -o repaired.db' to salvage what is readable"
        )


# --------------------------------------------------------------------------- helpers


_SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def _is_damage(exc: BaseException) -> bool:
    """Whether an sqlite3 error says the file's pages are damaged (not locked, not missing)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB":
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _has_sqlite_header(path: Path) -> bool:
    """Whether ``path`` starts with SQLite's 16-byte magic string."""
    try:
        with path.open("rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _read_only_uri(path: Path) -> str:
    """An SQLite URI that opens ``path`` read-only (never creates or writes it)."""
    return path.resolve().as_uri() + "?mode=ro"


@contextmanager
def _damage_guard(path: Path) -> Iterator[None]:
    """Turn SQLite's "malformed" / "not a database" errors into :class:`StoreDamagedError`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if _is_damage(exc):
            raise StoreDamagedError(path, str(exc)) from exc
        raise


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


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        write(fh)


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


# --------------------------------------------------------------------------- the store


class ResultStore:
    """A results database (SQLite file); see the module docstring for schema and conventions.

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
        version = self._schema_version(conn)
        if version is None:
            what = "is empty (0 bytes)" if self.path.stat().st_size == 0 else "holds no tables"
            raise ValueError(
                f"{self.path} {what}: it is not an sslwatch results store; pass the database "
                "written by `sslwatch sweep`"
            )
        self._check_version(version)
        self.schema_version = version

    def _setup_read_write(self, conn: sqlite3.Connection) -> None:
        self._schema_version(conn)  # refuse a foreign database before changing its journal
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
        version = self._schema_version(conn)
        if version is None or (1 <= version < SCHEMA_VERSION):
            self._retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                self._create_or_upgrade(conn)  # re-reads the version under the write lock
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            version = self._schema_version(conn)
        self._check_version(version)

    def _check_version(self, version: int | None) -> None:
        if version is None or version < 1:
            raise ValueError(f"{self.path} has a damaged schema_info table (version {version!r})")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has results-store schema version {version}, but this sslwatch "
                f"({__version__}) reads schema version {SCHEMA_VERSION} at most; upgrade sslwatch "
                "to open it (or write to a new file)"
            )

    def _create_or_upgrade(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or upgrade an older one; inside the caller's transaction."""
        version = self._schema_version(conn)
        if version is None:  # nobody created it meanwhile
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_info (id, version, created, sslwatch_version)"
                " VALUES (1, 1, ?, ?)",
                (_now(), __version__),
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            version = 1
        if version < 1 or version >= SCHEMA_VERSION:
            return  # damaged, current or newer: _setup reports it
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
        conn.execute("UPDATE schema_info SET version = ? WHERE id = 1", (SCHEMA_VERSION,))

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        tables = {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(row[0]).startswith("sqlite_")
        }
        if "schema_info" not in tables:
            if tables:
                raise ValueError(
                    f"{self.path} is an SQLite database but not an sslwatch results store "
                    f"(tables: {', '.join(sorted(tables))}); pass another path"
                )
            return None
        row = conn.execute("SELECT version FROM schema_info WHERE id = 1").fetchone()
        return -1 if row is None else int(row[0])

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

        def write(fh: IO[str]) -> None:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(TIDY_COLUMNS)
            for row in rows:
                writer.writerow([_csv_cell(row[c]) for c in TIDY_COLUMNS])

        _atomic_write(path, write)
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

        def write(fh: IO[str]) -> None:
            fh.write("[\n")
            fh.write(",\n".join(json.dumps(row) for row in rows))
            fh.write("\n]\n" if rows else "]\n")

        _atomic_write(path, write)
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


# --------------------------------------------------------------------------- merging


@dataclass(frozen=True)
class MergeConflict:
    """Two sources disagree on one key; the value already in the output was kept.

    Attributes:
        kind: ``"run"`` (method/architecture), ``"point"`` (source/epoch/step of a path),
            or ``"result"`` (a value).
        source: the file whose item was not taken.
        key: what the conflict is about, human-readable.
        kept: the value kept (already in the output).
        ignored: the value from ``source`` that was dropped.
    """

    kind: str
    source: str
    key: str
    kept: Any
    ignored: Any

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.key}: kept {self.kept!r}, ignored {self.ignored!r}"
            f" from {self.source}"
        )


@dataclass(frozen=True)
class MergeSummary:
    """What :func:`merge_stores` did. Counts are of items newly added to the output."""

    sources: int
    runs_added: int
    points_added: int
    definitions_added: int
    results_added: int
    results_identical: int
    conflicts: tuple[MergeConflict, ...]

    @property
    def n_conflicts(self) -> int:
        """Number of conflicts (first value kept each time)."""
        return len(self.conflicts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        out = asdict(self)
        out["conflicts"] = [str(c) for c in self.conflicts]
        out["n_conflicts"] = self.n_conflicts
        return out


def merge_stores(
    sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> MergeSummary:
    """Merge result stores (e.g. one per SLURM array task) into ``out`` without duplicates.

    Keys: runs by name; points by (run, path), or (run, source, epoch, step) when they have
    no path; definitions by digest; results by (point, representation, digest). When a key
    is already in ``out`` the first value is kept and a differing one (relative difference
    above :data:`MERGE_RTOL` = 1e-9; NaN equal to NaN, infinities exactly) is reported as
    a :class:`MergeConflict`; seconds never conflict (a
    value's missing seconds are filled in; a point's timings are taken from the first
    store that has them). Missing run method,
    architecture, meta keys and point epoch/step are filled in. A point's status takes
    the most informative of the two (``ok`` > ``failed`` > ``pending``). Each source is
    merged in one transaction; merging a source again adds nothing.

    Sources are opened read-only (:class:`ResultStore` ``read_only=True``): they are never
    written, and an older schema is read as it is. Every source is checked (SQLite's
    ``quick_check``) before anything is written. A new ``out`` is built in a temporary
    file next to it and renamed into place only when every source is merged, so a failed
    merge leaves no output file behind.

    Args:
        sources: existing result-store files, merged in order (earlier ones win).
        out: the output store, created when missing (it may already hold results).

    Returns:
        A :class:`MergeSummary` with counts and the conflicts.

    Raises:
        StoreDamagedError: a source (or an existing ``out``) is damaged.
        ValueError: a source is missing or not a results store, or ``out`` is a folder.
    """
    source_paths = [Path(s) for s in sources]
    for src in source_paths:
        if not src.is_file():
            raise ValueError(f"merge source {src} does not exist; pass existing result stores")
    for src in source_paths:  # fail on a bad source before anything is written
        ResultStore(src, read_only=True).close()
    target = Path(out)
    if target.is_dir():
        raise ValueError(f"merge output {target} is a folder; pass a file path for -o")
    counts = dict.fromkeys(
        ("runs_added", "points_added", "definitions_added", "results_added", "results_identical"),
        0,
    )
    conflicts: list[MergeConflict] = []
    with _output_store(target) as dst:
        for src in source_paths:
            with ResultStore(src, timeout=dst.timeout, read_only=True) as reader:
                _merge_one(dst, reader, counts, conflicts)
    return MergeSummary(sources=len(source_paths), conflicts=tuple(conflicts), **counts)


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


def _merge_one(
    dst: ResultStore,
    reader: ResultStore,
    counts: dict[str, int],
    conflicts: list[MergeConflict],
) -> None:
    label = str(reader.path)
    rconn = reader._db()
    extra = "seconds, outcome" if reader._has_seconds else "NULL, NULL"
    with _damage_guard(reader.path):
        rconn.execute("BEGIN")  # one read snapshot of the source
        try:
            runs = rconn.execute(
                "SELECT id, name, method, architecture, meta, created FROM runs"
            ).fetchall()
            points = rconn.execute(
                "SELECT id, run_id, source, path, epoch, step, status, error, created, updated"
                " FROM points ORDER BY id"
            ).fetchall()
            definitions = rconn.execute(
                "SELECT digest, metric, n, d, dtype, revision, definition FROM definitions"
            ).fetchall()
            results = rconn.execute(
                "SELECT point_id, representation, digest, value, is_nan, version, created,"
                f" {extra} FROM results"
            ).fetchall()
            timings = (
                rconn.execute(
                    "SELECT point_id, representation, name, seconds, created FROM point_timings"
                ).fetchall()
                if reader._has_seconds
                else []
            )
        finally:
            if rconn.in_transaction:
                rconn.execute("ROLLBACK")

    with dst._write() as conn:
        run_map: dict[int, int] = {}
        run_names: dict[int, str] = {}
        for sid, name, method, arch, meta, created in runs:
            run_names[sid] = name
            row = conn.execute(
                "SELECT id, method, architecture, meta FROM runs WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO runs (name, method, architecture, meta, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, method, arch, meta, created),
                )
                run_map[sid] = int(cur.lastrowid)  # type: ignore[arg-type]
                counts["runs_added"] += 1
                continue
            did, old_method, old_arch, old_meta = row
            run_map[sid] = int(did)
            for what, old, new in (
                ("method", old_method, method),
                ("architecture", old_arch, arch),
            ):
                if old is not None and new is not None and old != new:
                    conflicts.append(MergeConflict("run", label, f"{name!r} {what}", old, new))
            merged_meta = {**json.loads(meta), **json.loads(old_meta)}  # output keys win
            conn.execute(
                "UPDATE runs SET method = coalesce(method, ?),"
                " architecture = coalesce(architecture, ?), meta = ? WHERE id = ?",
                (method, arch, _dump_meta(merged_meta), did),
            )

        point_map: dict[int, int] = {}
        point_names: dict[int, str] = {}
        for sid, srun, source, path, epoch, step, status, error, created, updated in points:
            run_id = run_map[srun]
            point_names[sid] = (
                f"run {run_names[srun]!r} {_describe_point(source, path, epoch, step)}"
            )
            found = _find_point(conn, run_id, source, path, epoch, step)
            if found is None:
                cur = conn.execute(
                    "INSERT INTO points (run_id, source, path, epoch, step, status, error,"
                    " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, source, path, epoch, step, status, error, created, updated),
                )
                point_map[sid] = int(cur.lastrowid)  # type: ignore[arg-type]
                counts["points_added"] += 1
                continue
            did, old_source, old_epoch, old_step, old_status, _old_error = found
            if old_source != source:
                # Same path, other source: not the same thing; keep the output's, skip ours.
                n_skipped = sum(1 for r in results if r[0] == sid)
                conflicts.append(
                    MergeConflict(
                        "point",
                        label,
                        f"{point_names[sid]} source ({n_skipped} results not merged)",
                        old_source,
                        source,
                    )
                )
                continue
            point_map[sid] = int(did)
            for what, old, new in (("epoch", old_epoch, epoch), ("step", old_step, step)):
                if old is not None and new is not None and old != new:
                    conflicts.append(
                        MergeConflict("point", label, f"{point_names[sid]} {what}", old, new)
                    )
            conn.execute(
                "UPDATE points SET epoch = coalesce(epoch, ?), step = coalesce(step, ?)"
                " WHERE id = ?",
                (epoch, step, did),
            )
            if _STATUS_RANK[status] > _STATUS_RANK[old_status]:
                conn.execute(
                    "UPDATE points SET status = ?, error = ?, updated = ? WHERE id = ?",
                    (status, None if status == "ok" else error, updated, did),
                )

        for row in definitions:
            cur = conn.execute(
                "INSERT OR IGNORE INTO definitions"
                " (digest, metric, n, d, dtype, revision, definition) VALUES (?, ?, ?, ?, ?, ?, ?)",
                tuple(row),
            )
            counts["definitions_added"] += cur.rowcount

        metric_of = {row[0]: row[1] for row in definitions}
        for spoint, representation, digest, value, is_nan, version, created, secs, outc in results:
            if spoint not in point_map:
                continue  # its point was a conflict, already reported
            did = point_map[spoint]
            old = conn.execute(
                "SELECT value, is_nan FROM results"
                " WHERE point_id = ? AND representation = ? AND digest = ?",
                (did, representation, digest),
            ).fetchone()
            if old is None:
                conn.execute(
                    "INSERT INTO results (point_id, representation, digest, value, is_nan,"
                    " version, created, seconds, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (did, representation, digest, value, is_nan, version, created, secs, outc),
                )
                counts["results_added"] += 1
            elif _close_value(_decode(*old), _decode(value, is_nan)):
                # Seconds and outcomes are provenance (they differ between runs): never a
                # conflict.
                conn.execute(
                    "UPDATE results SET seconds = coalesce(seconds, ?),"
                    " outcome = coalesce(outcome, ?)"
                    " WHERE point_id = ? AND representation = ? AND digest = ?",
                    (secs, outc, did, representation, digest),
                )
                counts["results_identical"] += 1
            else:
                conflicts.append(
                    MergeConflict(
                        "result",
                        label,
                        f"{point_names[spoint]} {representation!r} {metric_of[digest]!r} "
                        f"[{digest}]",
                        _decode(*old),
                        _decode(value, is_nan),
                    )
                )

        # A point's timings describe one evaluation: take the source's only when the
        # output has none for that point (earlier sources win, like values).
        by_point: dict[int, list[tuple[str, str, float, str]]] = {}
        for spoint, representation, name, secs, created in timings:
            if spoint in point_map:
                by_point.setdefault(point_map[spoint], []).append(
                    (representation, name, secs, created)
                )
        for did, entries in by_point.items():
            if conn.execute("SELECT 1 FROM point_timings WHERE point_id = ?", (did,)).fetchone():
                continue
            conn.executemany(
                "INSERT INTO point_timings (point_id, representation, name, seconds, created)"
                " VALUES (?, ?, ?, ?, ?)",
                [(did, *entry) for entry in entries],
            )


# --------------------------------------------------------------------------- doctor

#: Tables of a results store in the order a salvage copies them (parents first).
_SALVAGE_TABLES: Final = ("runs", "points", "definitions", "results", "point_timings")
#: Columns whose text must be valid JSON (NULL allowed) for a salvaged row to be kept.
_JSON_COLUMNS: Final = {"runs": ("meta",), "definitions": ("definition",), "results": ("outcome",)}
#: Failed range queries a salvage may spend per table before it gives up on the rest.
_SALVAGE_BUDGET: Final = 200_000


@dataclass(frozen=True)
class StoreCheck:
    """What :func:`check_store` found.

    Attributes:
        path: the store checked.
        problems: one line per problem SQLite (or the file's size) reports; empty when the
            store is sound.
        schema_version: the results-store schema version, ``None`` when unreadable.
    """

    path: str
    problems: tuple[str, ...]
    schema_version: int | None

    @property
    def sound(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


@dataclass(frozen=True)
class TableSalvage:
    """Rows of one table copied by :func:`salvage_store`.

    Attributes:
        table: the table's name.
        saved: rows copied into the new store.
        lost: rows that could not be read or kept (their page is damaged, or a row they
            belong to was lost).
        exact: whether ``lost`` is an exact count (an intact index listed every row) or an
            estimate from the unreadable range of row ids.
        readable: ``False`` when not even the table's columns could be read (its number
            of rows is then unknown).
    """

    table: str
    saved: int
    lost: int
    exact: bool
    readable: bool = True

    def __str__(self) -> str:
        if not self.readable:
            return f"{self.table} unreadable (nothing saved)"
        lost = f"{self.lost}" if self.exact else f"about {self.lost}"
        return f"{self.table} {self.saved} saved, {lost} lost"


@dataclass(frozen=True)
class SalvageSummary:
    """What :func:`salvage_store` copied, table by table."""

    source: str
    output: str
    tables: tuple[TableSalvage, ...]

    @property
    def saved(self) -> int:
        """Rows copied, all tables together."""
        return sum(t.saved for t in self.tables)

    @property
    def lost(self) -> int:
        """Rows lost (exact or estimated), all tables together."""
        return sum(t.lost for t in self.tables)


def _require_sqlite_file(path: Path) -> None:
    """ValueError unless ``path`` is a non-empty file that starts like an SQLite database."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a results store file; pass the store's file")
    if not path.is_file():
        raise ValueError(
            f"no results store at {path}; pass the database written by `sslwatch sweep`"
        )
    if path.stat().st_size == 0:
        raise ValueError(
            f"{path} is empty (0 bytes): it is not a results store and holds nothing to salvage"
        )
    if not _has_sqlite_header(path):
        raise ValueError(
            f"{path} is not an SQLite database (no SQLite header); pass an sslwatch results store"
        )


def _open_damaged(path: Path) -> sqlite3.Connection:
    """A read-only connection that reads as much of a damaged file as SQLite allows.

    ``writable_schema`` makes SQLite read a truncated file up to its real size instead of
    refusing it (the connection stays read-only: nothing is written).
    """
    conn = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
    conn.execute("PRAGMA writable_schema = ON")
    return conn


def _size_problem(path: Path) -> str | None:
    """A line when the file is shorter than its SQLite header says (a truncated file)."""
    with path.open("rb") as fh:
        header = fh.read(100)
    if len(header) < 100:
        return f"the file is truncated: {len(header)} bytes, shorter than SQLite's 100-byte header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the in-header size is only valid then
    size = path.stat().st_size
    if valid and pages and size < pages * page_size:
        return (
            f"the file is truncated: {size} bytes, its header says {pages} pages of "
            f"{page_size} bytes ({pages * page_size} bytes)"
        )
    return None


def _problem_lines(rows: Iterable[Sequence[Any]]) -> list[str]:
    """``integrity_check`` rows as one line per problem (SQLite may join several in one)."""
    out = []
    for row in rows:
        for line in str(row[0]).splitlines():
            line = line.strip()
            if line and line != "ok" and not line.startswith("***"):
                out.append(line)
    return out


def check_store(path: str | os.PathLike[str], *, max_problems: int = 100) -> StoreCheck:
    """Run SQLite's ``integrity_check`` (and ``quick_check``) on a results store, read-only.

    Args:
        path: the store's file.
        max_problems: at most this many problems are listed by each check.

    Returns:
        A :class:`StoreCheck`; ``sound`` when SQLite found nothing and the file has the
        size its header says.

    Raises:
        ValueError: the file is missing, a folder, empty, not an SQLite database, or an
            SQLite database that is not an sslwatch results store.
    """
    p = Path(path)
    _require_sqlite_file(p)
    problems: list[str] = []
    size = _size_problem(p)
    if size is not None:
        problems.append(size)
    version: int | None = None
    conn = _open_damaged(p)  # a truncated file is checked up to its real size
    try:
        for check in ("integrity_check", "quick_check"):
            try:
                found = _problem_lines(conn.execute(f"PRAGMA {check}({int(max_problems)})"))
            except sqlite3.DatabaseError as exc:
                found = [f"{check} stopped: {exc}"]
            problems.extend(line for line in found if line not in problems)
            if not found:
                break  # integrity_check covers what quick_check does
        tables = {
            str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "schema_info" not in tables:
            names = ", ".join(sorted(t for t in tables if not t.startswith("sqlite_")))
            if names:
                raise ValueError(
                    f"{p} is an SQLite database but not an sslwatch results store (tables: "
                    f"{names}); pass a results store"
                )
            problems.append("the schema is missing: no sslwatch tables found")
        else:
            row = conn.execute("SELECT version FROM schema_info WHERE id = 1").fetchone()
            version = None if row is None else int(row[0])
            if version is None:
                problems.append("the schema_info table holds no version row")
    except sqlite3.DatabaseError as exc:
        line = f"the schema cannot be read: {exc}"
        if line not in problems:
            problems.append(line)
    finally:
        conn.close()
    return StoreCheck(path=str(p), problems=tuple(problems), schema_version=version)


def _index_rowids(conn: sqlite3.Connection, table: str) -> tuple[set[int], set[int] | None]:
    """Row ids of ``table`` listed by its indexes.

    Returns (every id any index listed, even partly; the ids every fully readable full
    index lists, ``None`` when no full index could be read to its end). Taking the ids
    all complete indexes agree on drops a bogus id from one damaged index page.
    """
    seen: set[int] = set()
    listed: set[int] | None = None
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)
    ).fetchall()
    for name, sql in indexes:
        where = ""
        if sql and " WHERE " in str(sql).upper():
            where = str(sql)[str(sql).upper().rindex(" WHERE ") :]
        ids: set[int] = set()
        try:
            for (rowid,) in conn.execute(f'SELECT rowid FROM "{table}" INDEXED BY "{name}"{where}'):
                ids.add(int(rowid))
        except sqlite3.DatabaseError:
            seen |= ids
            continue
        seen |= ids
        if not where:  # a full index lists every row
            listed = ids if listed is None else listed & ids
    return seen, listed


def _readable_rows(
    conn: sqlite3.Connection, table: str, columns: Sequence[str]
) -> tuple[dict[int, tuple[Any, ...]], set[int], set[int], bool]:
    """Every row of ``table`` SQLite can read, row-id range by row-id range.

    A range whose query fails is halved until single row ids, so one damaged page loses
    only the rows stored on it. Returns (rows by row id, row ids that could not be read,
    row ids the indexes list, whether an index listed every row).
    """
    select = ", ".join(columns) if columns else "NULL"
    sql = f'SELECT rowid, {select} FROM "{table}" WHERE rowid BETWEEN ? AND ? ORDER BY rowid'
    seen, listed = _index_rowids(conn, table)
    known = seen if listed is None else listed
    complete = listed is not None
    bounds = set(seen)
    for probe in ("min", "max"):
        try:
            value = conn.execute(f'SELECT {probe}(rowid) FROM "{table}"').fetchone()[0]
        except sqlite3.DatabaseError:
            continue
        if value is not None:
            bounds.add(int(value))
    rows: dict[int, tuple[Any, ...]] = {}
    unreadable: set[int] = set()
    budget = _SALVAGE_BUDGET
    failures = 0
    read_any = False

    def grab(lo: int, hi: int) -> None:
        nonlocal budget, failures, read_any
        stack = [(lo, hi)]
        while stack:
            a, b = stack.pop()
            try:
                for row in conn.execute(sql, (a, b)).fetchall():
                    rows[int(row[0])] = tuple(row[1:])
                read_any = True
                continue
            except sqlite3.DatabaseError:
                budget -= 1
                failures += 1
            if a == b:
                unreadable.add(a)
            elif budget <= 0:
                unreadable.update(r for r in known if a <= r <= b and r not in rows)
            else:
                mid = (a + b) // 2
                stack.extend(((mid + 1, b), (a, mid)))

    tail_args: tuple[int, ...] = ()
    tail = f'SELECT rowid, {select} FROM "{table}" ORDER BY rowid'
    if bounds:
        grab(min(bounds), max(bounds))
        tail = f'SELECT rowid, {select} FROM "{table}" WHERE rowid > ? ORDER BY rowid'
        tail_args = (max(bounds),)
    try:  # rows beyond the largest known id (the indexes and max() may be damaged)
        for row in conn.execute(tail, tail_args):
            rows[int(row[0])] = tuple(row[1:])
        read_any = True
    except sqlite3.DatabaseError:
        complete = False  # an unknown number of rows after the last readable one
        failures += 1
    if not read_any:
        raise sqlite3.DatabaseError(f"no row of {table} could be read")
    return rows, unreadable, known, complete or failures == 0


def _valid_json(row: Mapping[str, Any], columns: Sequence[str]) -> bool:
    for column in columns:
        value = row.get(column)
        if value is None:
            continue
        try:
            json.loads(value)
        except (TypeError, ValueError):
            return False
    return True


_TableRead = tuple[list[str], dict[int, tuple[Any, ...]], set[int], set[int], bool]


def _read_salvageable(src: Path, dst: ResultStore) -> dict[str, _TableRead | None]:
    """Every readable row of each table of ``src`` that ``dst``'s schema has columns for.

    A table missing from ``src`` (``point_timings`` in a version-1 store) is left out; one
    whose schema or rows cannot be read at all maps to ``None``.
    """
    out: dict[str, _TableRead | None] = {}
    conn = _open_damaged(src)
    try:
        try:
            present_tables = {
                str(r[0])
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        except sqlite3.DatabaseError:
            return dict.fromkeys(_SALVAGE_TABLES)  # the schema itself is unreadable
        for table in _SALVAGE_TABLES:
            if table not in present_tables:
                continue
            wanted = [str(r[1]) for r in dst._rows(f'PRAGMA table_info("{table}")')]
            try:
                present = {str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")')}
                columns = [c for c in wanted if c in present]
                if columns:
                    out[table] = (columns, *_readable_rows(conn, table, columns))
            except sqlite3.DatabaseError:
                out[table] = None
    finally:
        conn.close()
    return out


def salvage_store(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> SalvageSummary:
    """Copy every readable row of a (damaged) results store into a new store ``out``.

    Runs, points, definitions, results (with their seconds and outcome) and point timings
    are read table by table and row-id range by row-id range: a range whose query fails
    is halved until single rows, so one damaged page loses only the rows stored on it.
    The source is opened read-only (never written); a truncated file is read up to its
    real size. A row is kept only when SQLite's constraints accept it in the new store: a
    result whose point was lost, or a row whose JSON text is garbled, is counted lost. A
    version-1 source gives a current-version store (seconds unknown). ``out`` is built in
    a temporary file next to it and renamed when done.

    Args:
        source: the damaged (or sound) store.
        out: a new file for the salvaged store; it must not exist.

    Returns:
        A :class:`SalvageSummary`: rows saved and lost per table.

    Raises:
        ValueError: ``source`` is not an SQLite file, ``out`` exists or is ``source``.
    """
    src = Path(source)
    _require_sqlite_file(src)
    target = Path(out)
    if target.exists():
        raise ValueError(
            f"{target} already exists; pass a new file for the salvaged store (-o NEW.db)"
        )
    tables: list[TableSalvage] = []
    with _output_store(target) as dst:
        read = _read_salvageable(src, dst)
        with dst._write() as wconn:
            for table in _SALVAGE_TABLES:
                if table not in read:  # point_timings of a version-1 store
                    tables.append(TableSalvage(table, 0, 0, exact=True))
                    continue
                found = read[table]
                if found is None:
                    tables.append(TableSalvage(table, 0, 0, exact=False, readable=False))
                    continue
                columns, rows, unreadable, known, complete = found
                placeholders = ", ".join("?" * len(columns))
                insert = f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({placeholders})'
                json_columns = _JSON_COLUMNS.get(table, ())
                saved = dropped = 0
                for rowid in sorted(rows):
                    values = rows[rowid]
                    if not _valid_json(dict(zip(columns, values, strict=True)), json_columns):
                        dropped += 1
                        continue
                    try:
                        wconn.execute(insert, values)
                    except sqlite3.DatabaseError:
                        dropped += 1  # a constraint (its point or run lost) or garbled row
                        continue
                    saved += 1
                missing = known - rows.keys()
                if complete:
                    lost, exact = len(missing) + dropped, True
                else:
                    lost, exact = len(missing | unreadable) + dropped, False
                tables.append(TableSalvage(table, saved, lost, exact))
    return SalvageSummary(source=str(src), output=str(target), tables=tuple(tables))
