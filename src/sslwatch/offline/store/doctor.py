"""``sslwatch doctor``: checking a results store and salvaging a damaged one."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sslwatch.offline.store.damage import _has_sqlite_header, _problem_lines, _read_only_uri
from sslwatch.offline.store.result_store import ResultStore, _output_store

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
