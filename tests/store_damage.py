"""Damaging a results store on purpose, for the tests of damage reports and salvage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np


def damage_page(path: Path, table: str = "results", seed: int = 0) -> int:
    """Overwrite one whole leaf page of ``table`` (the middle one) with random bytes;
    returns the page number."""
    con = sqlite3.connect(path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    try:
        pages = [
            r[0]
            for r in con.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            )
        ]
    except sqlite3.OperationalError:  # SQLite built without dbstat: the file's middle page
        pages = [path.stat().st_size // page_size // 2 + 1]
    con.close()
    page = pages[len(pages) // 2]
    with path.open("r+b") as fh:
        fh.seek((page - 1) * page_size)
        fh.write(np.random.default_rng(seed).bytes(page_size))
    return page
