"""``sslwatch demo`` and ``sslwatch reproduce``: the reproduction study from the terminal."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sslwatch.cli import app, console, fail, format_value

DEMO_COLUMNS = (
    ("backbone/rankme", "RankMe"),
    ("backbone/silhouette", "silhouette"),
    ("backbone/cluster_agreement", "agreement"),
    ("backbone/entropy", "entropy"),
    ("backbone/linear_probe", "LP acc"),
)


def _epoch_printer(run: str, epoch: int, values: dict[str, float]) -> None:
    cells = "  ".join(
        f"{label} {format_value(values.get(key, math.nan)):>8}" for key, label in DEMO_COLUMNS
    )
    console.print(f"[bold]{run:<22}[/] epoch {epoch:>3}  {cells}", highlight=False)


def _correlation_table(rows: list[dict[str, Any]], window: str) -> Table:
    table = Table(
        title=f"Spearman with backbone LP accuracy ({window} trained epochs)", title_justify="left"
    )
    table.add_column("method")
    table.add_column("repr.")
    table.add_column("metric")
    table.add_column("better", justify="center")
    table.add_column("n", justify="right")
    table.add_column("spearman", justify="right")
    table.add_column("90% CI", justify="right")
    table.add_column("kendall", justify="right")
    arrows = {"higher": "↑", "lower": "↓", "none": "·"}
    for r in rows:
        if r["window"] != window:
            continue
        table.add_row(
            str(r["method"]),
            str(r["representation"]),
            str(r["metric"]),
            arrows.get(str(r["direction"]), "·"),
            str(r["n"]),
            format_value(r["spearman"]),
            f"[{format_value(r['spearman_lo'])}, {format_value(r['spearman_hi'])}]",
            format_value(r["kendall"]),
        )
    return table


def _selection_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        title="Selection without labels: selected run, its LP accuracy and regret",
        title_justify="left",
    )
    for col in ("method", "metric", "selected run", "selected LP", "oracle LP", "regret"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["method"]),
            str(r["metric"]),
            str(r["selected_run"]),
            format_value(r["selected_lp"]),
            format_value(r["oracle_lp"]),
            format_value(r["regret"]),
        )
    return table


def _run(
    preset_name: str,
    out: Path,
    data: str | None,
    methods: str | None,
    seed: int,
    epochs: int | None,
) -> None:
    from dataclasses import replace

    from sslwatch.reproduce import PRESETS, run_study

    if preset_name not in PRESETS:
        raise fail(f"unknown preset {preset_name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    if epochs is not None:
        preset = replace(preset, epochs=epochs)
    console.print(f"[bold]{preset.name}[/]: {preset.description}; results in {out}")
    try:
        result = run_study(
            preset,
            out,
            data_spec=data,
            methods=[m.strip() for m in methods.split(",")] if methods else None,
            seed=seed,
            printer=_epoch_printer,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    for window in ("all", "later half"):
        console.print(_correlation_table(result.correlations, window))
    if result.selection:
        console.print(_selection_table(result.selection))
    console.print(f"results store: {result.db}")
    for path in result.files:
        console.print(f"wrote {path}")
    console.print(f"done in {result.seconds:.0f} s")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="Seed of training and scoring.")] = 0,
) -> None:
    """Short SimCLR and SimSiam runs on MNIST-1D, scored every epoch (about 3 min on CPU)."""
    _run("demo", out, None, None, seed, None)


@app.command()
def reproduce(
    preset: Annotated[str, typer.Option(help="quick (MNIST-1D, CPU) or full (CIFAR-10, GPU).")] = (
        "quick"
    ),
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it exists).")] = Path(
        "reproduce-out"
    ),
    data: Annotated[
        str | None, typer.Option(help="Data spec overriding the preset's (npz:PATH, folder:PATH).")
    ] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated subset of methods.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of training and scoring.")] = 0,
) -> None:
    """Progress and selection studies: how well each label-free metric tracks LP accuracy."""
    _run(preset, out, data, methods, seed, epochs)
