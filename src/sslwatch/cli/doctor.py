"""``sslwatch doctor DB [-o NEW.db]``: check a results store and salvage what is readable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sslwatch.cli import EXIT_DAMAGED, EXIT_OK, app, check_output, console, fail

#: Problems listed one per line; the rest are counted.
MAX_LISTED = 20


@app.command()
def doctor(
    db: Annotated[Path, typer.Argument(help="Results store (SQLite) to check.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Copy every readable row (runs, points, definitions, results, timings) "
            "into this NEW store.",
        ),
    ] = None,
) -> None:
    """Run SQLite's integrity check on a results store; with -o, salvage every readable row.

    The store is opened read-only and never changed. Exit code 0 when it is sound; 3 when
    it is damaged (also after a salvage with -o); 2 when DB is missing, empty or not a
    results store, or -o exists or cannot be written.
    """
    from sslwatch.offline.store import check_store, salvage_store

    if output is not None:
        if output.exists() and not output.is_dir():
            raise fail(f"-o {output} already exists; pass a new file for the salvaged store")
        if output.resolve() == db.resolve():
            raise fail(f"-o {output} is the store being checked; pass a new file")
        check_output(output, "-o", make_parents=True)
    try:
        result = check_store(db)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if result.sound:
        console.print(
            f"{db}: sound (integrity_check ok, schema version {result.schema_version})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        n = len(result.problems)
        console.print(
            f"{db}: damaged ({n} problem{'s' if n != 1 else ''} found)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        for line in result.problems[:MAX_LISTED]:
            console.print(f"problem: {line}", markup=False, highlight=False, soft_wrap=True)
        if n > MAX_LISTED:
            console.print(f"... and {n - MAX_LISTED} more problems", highlight=False)
    if output is not None:
        try:
            summary = salvage_store(db, output)
        except ValueError as exc:
            raise fail(str(exc)) from None
        console.print(
            f"salvaged into {output}: " + "; ".join(str(t) for t in summary.tables),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    elif not result.sound:
        console.print(
            f"to salvage every readable row: sslwatch doctor {db} -o repaired.db",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_OK if result.sound else EXIT_DAMAGED)
