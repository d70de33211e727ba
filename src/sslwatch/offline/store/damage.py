"""Telling a damaged SQLite file from a locked, missing or foreign one."""

from __future__ import annotations

import os
import shlex
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final


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


def _problem_lines(rows: Iterable[Sequence[Any]]) -> list[str]:
    """``integrity_check`` rows as one line per problem (SQLite may join several in one)."""
    out = []
    for row in rows:
        for line in str(row[0]).splitlines():
            line = line.strip()
            if line and line != "ok" and not line.startswith("***"):
                out.append(line)
    return out
