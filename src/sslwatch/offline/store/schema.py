"""The results store's tables, their version and the upgrades from older versions.

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
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from sslwatch._version import __version__
from sslwatch.offline.store.values import _now

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


class SchemaVersionError(ValueError):
    """The database was written by a newer sslwatch whose schema this one cannot read."""


def read_version(path: Path, conn: sqlite3.Connection) -> int | None:
    """The schema version in ``schema_info`` (``-1`` when its row is missing), ``None`` for a
    database without tables; ``ValueError`` for an SQLite database of another program."""
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not str(row[0]).startswith("sqlite_")
    }
    if "schema_info" not in tables:
        if tables:
            raise ValueError(
                f"{path} is an SQLite database but not an sslwatch results store "
                f"(tables: {', '.join(sorted(tables))}); pass another path"
            )
        return None
    row = conn.execute("SELECT version FROM schema_info WHERE id = 1").fetchone()
    return -1 if row is None else int(row[0])


def check_version(path: Path, version: int | None) -> None:
    """Refuse a damaged version row or a schema newer than this sslwatch reads."""
    if version is None or version < 1:
        raise ValueError(f"{path} has a damaged schema_info table (version {version!r})")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has results-store schema version {version}, but this sslwatch "
            f"({__version__}) reads schema version {SCHEMA_VERSION} at most; upgrade sslwatch "
            "to open it (or write to a new file)"
        )


def create_or_upgrade(path: Path, conn: sqlite3.Connection) -> None:
    """Create the schema, or upgrade an older one; inside the caller's transaction."""
    version = read_version(path, conn)
    if version is None:  # nobody created it meanwhile
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_info (id, version, created, sslwatch_version) VALUES (1, 1, ?, ?)",
            (_now(), __version__),
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        version = 1
    if version < 1 or version >= SCHEMA_VERSION:
        return  # damaged, current or newer: check_version reports it
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in _MIGRATIONS[target]:
            conn.execute(statement)
    conn.execute("UPDATE schema_info SET version = ? WHERE id = 1", (SCHEMA_VERSION,))
