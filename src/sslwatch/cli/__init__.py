"""The ``sslwatch`` command line (typer). Thin adapters only: no maths here.

Each command group lives in its own module and registers its commands on :data:`app`:
``score`` (score, metrics), ``sweep`` (sweep, merge, export), ``report`` (analyze,
report), ``doctor`` and ``reproduce`` (demo, reproduce). Values are formatted by
:mod:`sslwatch.report.formatting`, as on the HTML report.

Exit codes, the same for every command:

====  ==================================================================================
0     success (``doctor``: the store is sound)
1     ``merge``: two stores disagree on a value; ``sweep``: 1..100 = checkpoints that
      failed (capped at 100)
2     usage or input error: a bad option, a missing or unreadable input file, an
      output path that cannot be written, a file that is not a results store
3     a results store is damaged (``analyze``, ``report``, ``export``, ``merge``,
      ``doctor``); ``sslwatch doctor DB -o NEW.db`` salvages what is readable
101   ``sweep`` cannot start (bad data, model factory, option, checkpoint or ``--db``)
130   ``sweep`` interrupted (Ctrl-C); every finished checkpoint is stored
====  ==================================================================================

Every error is one line on stderr (``error: ...``) naming the file or value and the fix;
everything user-supplied that is printed (file, run and metric names) is escaped, never
read as rich markup.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from sslwatch._version import __version__

#: Exit code: success.
EXIT_OK = 0
#: Exit code: a usage or input error (bad option, unreadable input, unwritable output).
EXIT_USAGE = 2
#: Exit code: a results store is damaged (``sslwatch doctor`` salvages it).
EXIT_DAMAGED = 3
#: Exit code of ``sweep`` when it cannot start.
EXIT_SETUP_ERROR = 101

app = typer.Typer(
    name="sslwatch",
    help="Label-free quality metrics for self-supervised encoders.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
# Errors carry paths a user copies: never wrap them (soft_wrap), whatever the width.
err_console = Console(stderr=True, soft_wrap=True)


# Options of the commands that compute metrics (``score`` and ``sweep``).
MetricsOpt = Annotated[
    str | None, typer.Option(help="Comma-separated metric names (default: the default set).")
]
KOpt = Annotated[int | None, typer.Option(help="k-means clusters (default: classes, else 10).")]
SampleSizeOpt = Annotated[int, typer.Option(help="Points for point-based metrics (0 = all).")]


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"sslwatch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_version_callback),
    ] = False,
) -> None:
    """sslwatch: how good is a self-supervised encoder, without labels?"""


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined by spaces, blank ones dropped."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``error: message`` as ONE stderr line (escaped: never read as markup) and
    return the Exit to raise."""
    err_console.print(
        f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def store_failure(exc: ValueError) -> typer.Exit:
    """The one-line error and exit code for a store that cannot be read: damaged stores
    give :data:`EXIT_DAMAGED`, every other problem :data:`EXIT_USAGE`."""
    from sslwatch.offline.store import StoreDamagedError

    return fail(str(exc), EXIT_DAMAGED if isinstance(exc, StoreDamagedError) else EXIT_USAGE)


def check_output(path: Path, option: str, *, make_parents: bool = False) -> None:
    """Refuse (exit 2) an output path that cannot be written, before any work is done.

    The path must not be a folder; its folder must exist (or, with ``make_parents``, its
    nearest existing ancestor must be a folder) and be writable.
    """
    if path.is_dir():
        raise fail(f"{option} {path} is a folder; pass a file path (e.g. {path / 'out'})")
    parent = path.parent
    if make_parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.exists():
        raise fail(f"{option} {path}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise fail(f"{option} {path}: {parent} is a file, not a folder; pass another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise fail(f"{option} {path} is not writable; pass a path you may write to")


def json_value(value: float) -> Any:
    """JSON has no NaN/Infinity: write them as strings, numbers otherwise."""
    return value if math.isfinite(value) else str(value)


# Sub-commands register themselves on ``app`` when imported.
from sslwatch.cli import doctor as _doctor  # noqa: E402,F401
from sslwatch.cli import report as _report  # noqa: E402,F401
from sslwatch.cli import reproduce as _reproduce  # noqa: E402,F401
from sslwatch.cli import score as _score  # noqa: E402,F401
from sslwatch.cli import sweep as _sweep  # noqa: E402,F401
