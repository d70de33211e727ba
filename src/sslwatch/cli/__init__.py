"""The ``sslwatch`` command line (typer). Thin adapters only: no maths here.

Each sub-command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer
from rich.console import Console

from sslwatch._version import __version__

app = typer.Typer(
    name="sslwatch",
    help="Label-free quality metrics for self-supervised encoders.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
# Errors carry paths a user copies: never wrap them (soft_wrap), whatever the width.
err_console = Console(stderr=True, soft_wrap=True)


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


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def format_value(value: float) -> str:
    """Compact human formatting of a metric value (NaN and infinities spelled out)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def json_value(value: float) -> Any:
    """JSON has no NaN/Infinity: write them as strings, numbers otherwise."""
    return value if math.isfinite(value) else str(value)


# Sub-commands register themselves on ``app`` when imported.
from sslwatch.cli import report as _report  # noqa: E402,F401
from sslwatch.cli import reproduce as _reproduce  # noqa: E402,F401
from sslwatch.cli import score as _score  # noqa: E402,F401
from sslwatch.cli import sweep as _sweep  # noqa: E402,F401
