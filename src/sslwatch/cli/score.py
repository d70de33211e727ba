"""``sslwatch score`` and ``sslwatch metrics``: one embedding file, every metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sslwatch._version import __version__
from sslwatch.cli import (
    KOpt,
    MetricsOpt,
    SampleSizeOpt,
    app,
    check_output,
    console,
    fail,
    json_value,
)
from sslwatch.report.formatting import direction_arrow, format_value


def _metric_list(metrics: str | None) -> list[str] | None:
    """``--metrics a,b`` as names; a usage error (exit 2) when it names nothing."""
    if metrics is None:
        return None
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise fail(
            f"--metrics {metrics!r} names no metric; pass comma-separated names such as "
            "rankme,silhouette (`sslwatch metrics` lists them)"
        )
    return names


@app.command()
def score(
    file: Annotated[Path, typer.Argument(help="Embeddings: .npy, .npz, .pt or .safetensors.")],
    labels: Annotated[
        Path | None, typer.Option(help="Labels file (.npy/.npz/.pt/.txt); else a 'labels' key.")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Name of the embedding array in FILE.")] = None,
    views_key: Annotated[
        str | None, typer.Option(help="Name of an (n, q, d) views array in FILE.")
    ] = None,
    metrics: MetricsOpt = None,
    k: KOpt = None,
    sample_size: SampleSizeOpt = 10000,
    seed: Annotated[int, typer.Option(help="Seed for sampling, k-means and splits.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV.")] = None,
    trust_checkpoints: Annotated[
        bool,
        typer.Option(
            help="Load a .pt that needs pickle code (executes code from the file: trusted "
            "files only)."
        ),
    ] = False,
) -> None:
    """Score one embedding file with every label-free metric (and probes with labels).

    Exit code 0; 2 on a usage or input error (one line naming the file or value).
    """
    from sslwatch.core.evaluate import evaluate
    from sslwatch.core.registry import REGISTRY
    from sslwatch.offline.io import load_embedding_file

    names = _metric_list(metrics)
    for out, option in ((json_out, "--json"), (csv_out, "--csv")):
        if out is not None:  # before any work: never compute and then fail to write
            check_output(out, option)
    if json_out is not None and csv_out is not None and json_out.resolve() == csv_out.resolve():
        raise fail(f"--json and --csv both name {json_out}; pass two different files")
    try:
        data = load_embedding_file(
            file, key=key, labels=labels, views_key=views_key, trust=trust_checkpoints
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    try:
        result = evaluate(
            data.z,
            views=data.views,
            labels=data.labels,
            k=k,
            metrics=names,
            sample_size=sample_size or None,
            seed=seed,
        )
    except ValueError as exc:
        raise fail(f"{file}: {exc}") from None

    n, d = data.z.shape
    extra = f", labels from {data.keys['labels']}" if "labels" in data.keys else ""
    table = Table(title=escape(f"{file.name}: N={n}, D={d}{extra}"), title_justify="left")
    for col, justify in (
        ("metric", "left"),
        ("value", "right"),
        ("better", "center"),
        ("N used", "right"),
        ("seconds", "right"),
        ("what it is", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, rec in result.records.items():
        spec = REGISTRY[name]
        table.add_row(
            name,
            format_value(rec.value),
            direction_arrow(spec.direction),
            str(rec.definition.n),
            f"{rec.seconds:.2f}",
            spec.description,
        )
    console.print(table)
    shared = {k: v for k, v in result.timings.items() if k not in result.records}
    if shared:
        console.print(
            "shared steps: " + escape(", ".join(f"{k} {v:.2f}s" for k, v in shared.items())),
            style="dim",
        )

    try:
        _write_outputs(result, file, n, d, json_out, csv_out)
    except OSError as exc:
        raise fail(f"cannot write {exc.filename or 'the output'}: {exc.strerror or exc}") from None


def _write_outputs(
    result: Any, file: Path, n: int, d: int, json_out: Path | None, csv_out: Path | None
) -> None:
    """Write the --json and --csv files that were asked for."""
    if json_out is not None:
        records = result.to_records()
        for record in records:
            record["value"] = json_value(record["value"])
        payload = {"file": str(file), "n": n, "d": d, "version": __version__, "results": records}
        json_out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {json_out}", markup=False, highlight=False, soft_wrap=True)
    if csv_out is not None:
        with csv_out.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["metric", "value", "n", "d", "dtype", "seconds", "definition"])
            for name, rec in result.records.items():
                defn = rec.definition
                writer.writerow(
                    [
                        name,
                        repr(rec.value),
                        defn.n,
                        defn.d,
                        defn.dtype,
                        f"{rec.seconds:.4f}",
                        defn.to_json(),
                    ]
                )
        console.print(f"wrote {csv_out}", markup=False, highlight=False, soft_wrap=True)


@app.command("metrics")
def list_metrics() -> None:
    """List every registered metric: what it needs, which way is better, its paper."""
    from sslwatch.core.registry import REGISTRY

    table = Table(title="registered metrics", title_justify="left")
    for col in ("name", "kind", "needs", "better", "cross-arch", "default", "params", "paper"):
        table.add_column(col)
    for spec in REGISTRY.values():
        table.add_row(
            spec.name,
            spec.kind,
            spec.needs,
            spec.direction,
            "yes" if spec.cross_architecture else "no",
            "yes" if spec.default else "",
            ", ".join(f"{k}={v}" for k, v in spec.params.items()),
            spec.citation,
        )
    console.print(table)
