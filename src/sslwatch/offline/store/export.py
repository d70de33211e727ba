"""Writing tidy rows to CSV and JSON files, replaced atomically."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from sslwatch._files import atomic_path
from sslwatch.offline.store.schema import TIDY_COLUMNS


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


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as CSV with header :data:`TIDY_COLUMNS`, as ``pandas.DataFrame.to_csv`` writes."""

    def write(fh: IO[str]) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(TIDY_COLUMNS)
        for row in rows:
            writer.writerow([_csv_cell(row[c]) for c in TIDY_COLUMNS])

    _atomic_write(path, write)


def write_json(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as a JSON list of records (Python's ``NaN``/``Infinity`` tokens)."""

    def write(fh: IO[str]) -> None:
        fh.write("[\n")
        fh.write(",\n".join(json.dumps(row) for row in rows))
        fh.write("\n]\n" if rows else "]\n")

    _atomic_write(path, write)
