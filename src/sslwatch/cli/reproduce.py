"""``sslwatch demo`` and ``sslwatch reproduce``: the reproduction study from the terminal."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sslwatch.cli import app, console, fail
from sslwatch.report.formatting import direction_arrow

EPOCH_COLUMNS = (
    ("backbone/rankme", "RankMe", "{:9.2f}"),
    ("backbone/silhouette", "silhouette", "{:11.3f}"),
    ("backbone/cluster_agreement", "agreement", "{:10.3f}"),
    ("backbone/entropy", "entropy", "{:9.1f}"),
    ("backbone/linear_probe", "LP acc", "{:8.3f}"),
)
"""Per-epoch columns printed while a study runs (backbone representation)."""


class _EpochPrinter:
    """Prints one growing table per run: a header when a run starts, then a row per epoch."""

    def __init__(self) -> None:
        self._run: str | None = None

    def __call__(self, run: str, epoch: int, values: dict[str, float]) -> None:
        if run != self._run:
            self._run = run
            head = "".join(f"{label:>{len(fmt.format(0.0))}}" for _, label, fmt in EPOCH_COLUMNS)
            console.print(f"\n[bold]{escape(run)}[/] (backbone)", highlight=False)
            console.print(f"[dim]{'epoch':>5}{head}[/]", highlight=False)
        cells = "".join(
            fmt.format(values[key])
            if math.isfinite(values.get(key, math.nan))
            else f"{'nan':>{len(fmt.format(0.0))}}"
            for key, _, fmt in EPOCH_COLUMNS
        )
        console.print(f"{epoch:>5}{cells}", highlight=False)


def _compact_table(title: str) -> Table:
    """A rich table that fits an 80-column terminal: light rules, one space of padding."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )


def _rho(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "nan"


def _correlation_table(rows: list[dict[str, Any]]) -> Table:
    """Spearman (with its bootstrap 90% CI) per metric, both windows side by side."""
    table = _compact_table("Rank correlation with backbone LP accuracy (epoch 0 excluded)")
    for col, justify in (
        ("method", "left"),
        ("repr.", "left"),
        ("metric", "left"),
        ("", "center"),
        ("n", "right"),
        ("Spearman ρ [90% CI]", "right"),
        ("ρ late", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    later = {
        (r["method"], r["representation"], r["metric"]): r
        for r in rows
        if r["window"] == "later half"
    }
    for r in rows:
        if r["window"] != "all":
            continue
        half = later.get((r["method"], r["representation"], r["metric"]))
        table.add_row(
            # plain text, never markup: a user-typed method name, and "[nan, nan]"
            Text(str(r["method"])),
            str(r["representation"]),
            str(r["metric"]),
            direction_arrow(str(r["direction"])),
            str(r["n"]),
            Text(f"{_rho(r['spearman'])} [{_rho(r['spearman_lo'])}, {_rho(r['spearman_hi'])}]"),
            "" if half is None else _rho(half["spearman"]),
        )
    table.caption = (
        "↑ higher is better, · no direction; ρ late: Spearman over the later half; "
        "Kendall's τ in correlations.csv"
    )
    table.caption_justify = "left"
    return table


def _selection_table(rows: list[dict[str, Any]]) -> Table:
    table = _compact_table("Selection without labels: selected run, its LP accuracy and regret")
    for col in ("method", "metric", "selected run", "LP", "oracle LP", "regret", "random"):
        table.add_column(
            col, justify="left" if col in ("method", "metric", "selected run") else "right"
        )
    for r in rows:
        table.add_row(
            Text(str(r["method"])),
            str(r["metric"]),
            Text(_short_run(str(r["selected_run"]))),
            f"{r['selected_lp']:.3f}",
            f"{r['oracle_lp']:.3f}",
            f"{r['regret']:.3f}",
            f"{r['random_regret']:.3f}",
        )
    table.caption = (
        "selected run: the swept value, or the progress run (the recipe's own value); "
        "random: expected regret of a uniformly random pick among the candidates"
    )
    table.caption_justify = "left"
    return table


def _short_run(run: str) -> str:
    """``select/simclr/temperature=0.1`` -> ``temperature=0.1``; a progress run -> ``progress``
    (the method is in its own column)."""
    parts = run.split("/")
    return parts[-1] if parts[0] == "select" else parts[0]


def _summary_table(rows: list[dict[str, Any]]) -> Table:
    table = _compact_table(
        "Selection summary over methods (regret in LP accuracy, lower is better)"
    )
    for col in ("metric", "methods", "mean regret", "worst", "picked oracle", "≤ random"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in rows:
        baseline = r["metric"].startswith("(")
        table.add_row(
            str(r["metric"]),
            str(r["methods"]),
            f"{r['mean_regret']:.4f}",
            f"{r['max_regret']:.4f}",
            "" if baseline else str(r["picked_oracle"]),
            "" if baseline else str(r["beat_random"]),
        )
    return table


_VERDICT_STYLE = {"tracks": "green", "moves against": "red", "inconclusive": "dim"}


def _variants_table(rows: list[dict[str, Any]]) -> Table:
    """Per method, each declared variant's Spearman with LP [90% CI] and its verdict."""
    from sslwatch.study.claims import CONFIDENCE

    table = _compact_table("Metric variants: rank correlation with backbone LP accuracy")
    for col, justify in (
        ("method", "left"),
        ("variant", "left"),
        ("n", "right"),
        (f"Spearman ρ [{CONFIDENCE:.0%} CI]", "right"),
        ("verdict", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    method = None
    for r in rows:
        if method is not None and r["method"] != method:
            table.add_section()
        low, high = r["ci"]
        table.add_row(
            # plain text, never markup: user-typed method names, and "[nan, nan]"
            Text(str(r["method"])) if r["method"] != method else "",
            Text(str(r["variant"]) + (" *" if r["default"] else "")),
            str(r["n"]),
            Text(f"{_rho(r['spearman'])} [{_rho(low)}, {_rho(high)}]"),
            Text(str(r["verdict"]), style=_VERDICT_STYLE.get(str(r["verdict"]), "")),
        )
        method = r["method"]
    table.caption = (
        "* sslwatch's default; k=C: k-means k = number of classes; tracks / moves against: "
        "the whole interval above / below 0; variants.md says how each is computed"
    )
    table.caption_justify = "left"
    return table


def _run(
    preset_name: str,
    out: Path,
    data: str | None,
    methods: str | None,
    seed: int,
    epochs: int | None,
    variants: bool = False,
) -> None:
    from dataclasses import replace

    from sslwatch.study.claims import claims_text
    from sslwatch.study.reproduce import PRESETS, run_study

    if preset_name not in PRESETS:
        raise fail(f"unknown preset {preset_name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    if epochs is not None:
        preset = replace(preset, epochs=epochs)
    console.print(
        f"[bold]{escape(preset.name)}[/]: {escape(preset.description)}; results in "
        f"{escape(str(out))}",
        soft_wrap=True,
    )
    chosen = [m.strip() for m in methods.split(",")] if methods else None
    try:
        result = run_study(
            preset, out, data_spec=data, methods=chosen, seed=seed, printer=_EpochPrinter()
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    files, seconds = list(result.files), result.seconds
    variant_rows = None
    if variants:
        from sslwatch.study.variants import run_variants

        console.print("\nscoring the metric variants on the progress runs' checkpoints")
        try:
            found = run_variants(out, preset=preset, data_spec=data, seed=seed, methods=chosen)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from None
        variant_rows, seconds = found.rows, seconds + found.seconds
        files += found.files
    console.print(_correlation_table(result.correlations))
    if result.selection:
        from sslwatch.study.reproduce import selection_summary

        console.print(_selection_table(result.selection))
        console.print(_summary_table(selection_summary(result.selection)))
    if variant_rows is not None:
        console.print(_variants_table(variant_rows))
    console.print(f"results store: {result.db}", markup=False, highlight=False, soft_wrap=True)
    for path in files:
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"done in {seconds:.0f} s")
    console.print(
        "\n" + claims_text(result.claims, width=max(60, console.width)),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="Seed of training and scoring.")] = 0,
) -> None:
    """Short SimCLR and SimSiam runs on MNIST-1D, scored every epoch (about 3 min on CPU)."""
    _run("demo", out, None, None, seed, None)


@app.command()
def reproduce(
    preset: Annotated[
        str,
        typer.Option(
            help="quick (MNIST-1D, CPU), quick-mnist (5000 real MNIST digits, CPU) or full "
            "(CIFAR-10, GPU)."
        ),
    ] = "quick",
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it exists).")] = Path(
        "reproduce-out"
    ),
    data: Annotated[
        str | None, typer.Option(help="Data spec overriding the preset's (npz:PATH, folder:PATH).")
    ] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated subset of methods.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of training and scoring.")] = 0,
    variants: Annotated[
        bool,
        typer.Option(
            "--variants",
            help="Also score the declared metric variants (silhouette distance, k, "
            "representation, entropy estimator) on the progress runs' checkpoints and "
            "judge which track LP; writes variants.json and variants.md.",
        ),
    ] = False,
) -> None:
    """Progress and selection studies: how well each label-free metric tracks LP accuracy."""
    _run(preset, out, data, methods, seed, epochs, variants)
