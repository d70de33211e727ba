"""``sslwatch analyze DB`` (rich tables) and ``sslwatch report DB -o report.html``."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from sslwatch.cli import app, check_output, console, fail, store_failure
from sslwatch.report.formatting import (
    estimate_text,
    format_value,
    interval_side,
    last_line,
    metric_arrow,
)

_GROUP_BY = ("method", "architecture", "none")
_SIDE_STYLE = {1: "green", -1: "red", 0: ""}
_SEVERITY_STYLE = {"critical": "bold white on red", "warning": "black on yellow", "info": "dim"}


def _split(values: list[str] | None, option: str) -> list[str] | None:
    """Comma-separated, repeatable option values; ``None`` when not given.

    Raises a usage error (exit 2) when the option was given but names nothing (``,``).
    """
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    if not out:
        raise fail(f"{option} {','.join(values)!r} names nothing; pass comma-separated names")
    return out


def _open_store(db: Path) -> Any:
    """The results store opened read-only (never written, never upgraded), or a one-line
    error: exit 3 when it is damaged, 2 when it is missing or not a results store."""
    from sslwatch.offline.store import ResultStore

    if not db.is_file() and not db.is_dir():
        raise fail(f"no results store at {db}; pass the database written by `sslwatch sweep`")
    try:
        return ResultStore(db, read_only=True)
    except ValueError as exc:
        raise store_failure(exc) from None


def _read_rows(store: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The store's tidy rows and recorded failures; a clear error when there are no rows."""
    try:
        rows, failures = store.tidy_rows(), store.failures()
    except ValueError as exc:
        raise store_failure(exc) from None
    if not rows:
        raise fail(f"{store.path} holds no results yet; run `sslwatch sweep` first")
    return rows, failures


def _open_rows(db: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read-only: the store's tidy rows and recorded failures."""
    with _open_store(db) as store:
        return _read_rows(store)


def _analyze_kwargs(
    reference: str | None,
    reference_representation: str | None,
    representation: list[str] | None,
    metric: list[str] | None,
    group_by: str,
    epoch: int | None,
    source: str | None,
    min_epoch: int,
    n_boot: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    if group_by not in _GROUP_BY:
        raise fail(f"--group-by must be one of {', '.join(_GROUP_BY)}, got {group_by!r}")
    return {
        "reference": reference,
        "reference_representation": reference_representation,
        "representations": _split(representation, "--representation"),
        "metrics": _split(metric, "--metric"),
        "group_by": None if group_by == "none" else group_by,
        "epoch": epoch,
        "source": source,
        "min_epoch": min_epoch,
        "n_boot": n_boot,
        "confidence": confidence,
        "seed": seed,
    }


# Options shared by both commands.
ReferenceOpt = Annotated[
    str | None,
    typer.Option(
        help="Label-based reference (default: linear_probe, else ridge_probe, knn_accuracy, ...)."
    ),
]
ReferenceRepOpt = Annotated[
    str | None,
    typer.Option(help="Read the reference on this representation (default: the metric's own)."),
]
RepresentationOpt = Annotated[
    list[str] | None,
    typer.Option("--representation", help="Representation(s) to analyse (default: all)."),
]
MetricOpt = Annotated[
    list[str] | None,
    typer.Option("--metric", help="Label-free metric(s) to analyse (default: all stored)."),
]
GroupByOpt = Annotated[
    str, typer.Option(help="Group runs by 'method', 'architecture' or 'none' for selection.")
]
EpochOpt = Annotated[
    int | None,
    typer.Option(help="Compare runs at this epoch (default: the runs' last common epoch)."),
]
SourceOpt = Annotated[
    str | None, typer.Option(help="Only points of this source: 'checkpoint' or 'online'.")
]
MinEpochOpt = Annotated[
    int, typer.Option(help="Leave out checkpoints before this epoch (0 keeps the initial one).")
]
NBootOpt = Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")]
ConfidenceOpt = Annotated[float, typer.Option(help="Confidence level of the intervals.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the bootstrap.")]


@app.command()
def analyze(
    db: Annotated[Path, typer.Argument(help="Results store (SQLite) written by a sweep.")],
    reference: ReferenceOpt = None,
    reference_representation: ReferenceRepOpt = None,
    representation: RepresentationOpt = None,
    metric: MetricOpt = None,
    group_by: GroupByOpt = "method",
    epoch: EpochOpt = None,
    source: SourceOpt = None,
    min_epoch: MinEpochOpt = 1,
    n_boot: NBootOpt = 1000,
    confidence: ConfidenceOpt = 0.9,
    seed: SeedOpt = 0,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="text (tables), md (Markdown), csv (one long table) or json; the same "
            "content in each.",
        ),
    ] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """The verdict first (which metric to trust, which run and checkpoint to keep), then
    the correlations, selections and diagnoses behind it."""
    from sslwatch.analysis import analyze as run_analysis

    fmt = "json" if as_json else output_format
    if fmt not in _FORMATS:
        raise fail(f"--format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    kwargs = _analyze_kwargs(
        reference, reference_representation, representation, metric, group_by, epoch,
        source, min_epoch, n_boot, confidence, seed,
    )  # fmt: skip
    rows, failures = _open_rows(db)
    try:
        result = run_analysis(rows, **kwargs)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if fmt != "text":
        _write_plain(result, fmt, failures)
        return
    shown = result.n_values + (result.online.n_values if result.online is not None else 0)
    console.print(
        f"[bold]{escape(str(db))}[/]: {len(result.runs)} runs; {shown} of {len(rows)} stored "
        f"values analysed; reference [bold]{escape(result.reference or 'none')}[/]; "
        f"{100 * confidence:g}% bootstrap intervals ({n_boot} resamples, seed {seed}); "
        f"checkpoints before epoch {min_epoch} left out",
        highlight=False,
        soft_wrap=True,
    )
    _print_verdict(result, "Verdict")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(str(note))}", highlight=False, soft_wrap=True)
    _print_trust(result)
    _print_selection(result)
    _print_warnings_and_findings(result, failures)
    if result.online is not None:
        console.rule("During training: online values (Monitor), analysed apart")
        _print_verdict(result.online, "Verdict on the online values")
        _print_trust(result.online)
        _print_warnings_and_findings(result.online, [])


_FORMATS = ("text", "md", "csv", "json")


def _print_verdict(result: Any, title: str) -> None:
    verdict = result.verdict
    if verdict is None:
        return
    console.print(f"[bold]{title}[/]", highlight=False)
    for line in verdict.lines:
        console.print(f"  - {line}", markup=False, highlight=False, soft_wrap=True)
    for caveat in verdict.caveats:
        console.print(f"  caveat: {caveat}", markup=False, highlight=False, soft_wrap=True)


def _emit(table: Table) -> None:
    """Print a table whole: on a terminal, long cells wrap (overflow "fold"); piped to a
    file or a script, at its natural width, so no name is cut to fit 80 columns."""
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update(width=10_000), table).maximum
    previous = console.width
    console.width = max(previous, natural)  # print() alone cannot go past the console's
    try:
        console.print(table)
    finally:
        console.width = previous


def _write_plain(result: Any, fmt: str, failures: list[dict[str, Any]]) -> None:
    """``--format json|md|csv`` to standard output (no markup, no wrapping)."""
    import json

    from sslwatch.analysis import analysis_to_dict

    data = analysis_to_dict(result)
    data["failures"] = [
        {k: failure.get(k) for k in ("run", "path", "epoch", "step", "error")}
        for failure in failures
    ]
    if fmt == "json":
        text = json.dumps(data, indent=2, allow_nan=False)
    elif fmt == "md":
        text = _markdown(data)
    else:
        text = _csv(data)
    typer.echo(text)


def _markdown(data: dict[str, Any], level: str = "#") -> str:
    out = [f"{level} Verdict", ""]
    out += [f"- {line}" for line in data["verdict"]["lines"]]
    out += [f"- caveat: {c}" for c in data["verdict"]["caveats"]] + [""]
    if data["notes"]:
        out += [f"{level}# Notes", ""] + [f"- {n}" for n in data["notes"]] + [""]
    for title, rows, cols in _sections(data):
        if not rows:
            continue
        out += [f"{level}# {title}", "", "| " + " | ".join(cols) + " |"]
        out.append("|" + "---|" * len(cols))
        out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
        out.append("")
    if data["online"] is not None:
        out += [f"{level}# During training: online values, analysed apart", ""]
        out.append(_markdown(data["online"], level + "#"))
    return "\n".join(out)


def _csv(data: dict[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    cols = ["source", "section", *_CSV_COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()

    def put(part: dict[str, Any], source: str) -> None:
        for line in part["verdict"]["lines"]:
            writer.writerow({"source": source, "section": "verdict", "text": line})
        for caveat in part["verdict"]["caveats"]:
            writer.writerow({"source": source, "section": "caveat", "text": caveat})
        for title, rows, _ in _sections(part):
            for r in rows:
                writer.writerow({"source": source, "section": title, **r})
        if part["online"] is not None:
            put(part["online"], "online")

    put(data, "checkpoint" if data["online"] is not None else "all")
    return buf.getvalue().rstrip("\n")


_CSV_COLUMNS = (
    "group", "run", "representation", "metric", "scope", "epoch", "n", "spearman", "low",
    "high", "status", "selected", "value", "reference_value", "oracle", "regret", "text",
)  # fmt: skip


def _sections(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
    """(title, rows, columns) of every table, as flat records."""
    trust = [
        {**{k: t[k] for k in ("group", "representation", "metric", "n", "spearman", "low",
                                 "high", "status")}, "text": t["reason"]}
        for t in data["verdict"]["trust"]
    ]  # fmt: skip
    corr = [
        {
            "group": c["group"], "representation": c["representation"], "metric": c["metric"],
            "scope": c["scope"], "epoch": c["epoch"], "n": c["stats"]["n"],
            "spearman": c["stats"]["spearman"]["value"], "low": c["stats"]["spearman"]["low"],
            "high": c["stats"]["spearman"]["high"],
        }
        for c in data["correlations"]
    ]  # fmt: skip
    runs = [
        {
            "group": r["group"], "representation": r["representation"], "metric": r["metric"],
            "epoch": r["epoch"], "selected": r["selected_run"], "value": r["value"],
            "reference_value": r["reference_value"], "oracle": r["oracle_run"],
            "regret": r["regret"], "n": len(r["ranking"]),
        }
        for r in data["run_selections"]
    ]  # fmt: skip
    cks = [
        {
            "run": c["run"], "representation": c["representation"], "metric": c["metric"],
            "epoch": c["epoch"], "value": c["value"], "reference_value": c["reference_value"],
            "oracle": c["oracle_epoch"], "regret": c["regret"], "n": c["n_candidates"],
        }
        for c in data["checkpoint_selections"]
    ]  # fmt: skip
    finds = [
        {"run": f["run"], "representation": f["representation"], "metric": f["metric"],
         "epoch": f["epoch"], "status": f["severity"], "text": f["message"]}
        for f in data["findings"]
    ]  # fmt: skip
    fails = [
        {"run": f["run"], "epoch": f["epoch"], "status": "failed",
         "text": f"{f['path']}: {f['error']}"}
        for f in data.get("failures", [])
    ]  # fmt: skip
    return [
        ("trust", trust, ["group", "representation", "metric", "n", "spearman", "low", "high",
                          "status", "text"]),
        ("correlations", corr, ["group", "representation", "metric", "scope", "epoch", "n",
                                "spearman", "low", "high"]),
        ("best run", runs, ["group", "representation", "metric", "epoch", "selected", "value",
                            "reference_value", "oracle", "regret", "n"]),
        ("best checkpoint", cks, ["run", "representation", "metric", "epoch", "value",
                                  "reference_value", "oracle", "regret", "n"]),
        ("diagnoses", finds + fails, ["run", "representation", "metric", "epoch", "status",
                                      "text"]),
    ]  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format_value(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _ci(est: Any) -> str:
    return estimate_text(est, format_value)


def _print_trust(result: Any) -> None:
    from sslwatch.analysis import TRUST_MIN_POINTS, several_definitions, trust_rows

    several = several_definitions(result)
    rows = trust_rows(result)
    for group in sorted({row.pooled.group for row in rows}):
        table = Table(
            title=f"{escape(str(group))}: correlation with {escape(str(result.reference))} "
            "(pooled over checkpoints; ↓ metrics negated, · raw)",
            title_justify="left",
        )
        for col in ("repr.", "metric", "n", "Spearman [CI]", "Kendall [CI]", "Pearson [CI]",
                    "final ρs", "runs ρs median (min..max)"):  # fmt: skip
            table.add_column(col, justify="left" if col in ("repr.", "metric") else "right")
        for row in (row for row in rows if row.pooled.group == group):
            c, fin, rs = row.pooled, row.final, row.run_spearman
            name = f"{c.metric} {metric_arrow(c.metric)}"
            if c.architecture_bound:
                name += f" ({c.architecture})"
            if c.metric in several:
                name += f" N={c.definition.n}"
            table.add_row(
                escape(c.representation),
                escape(name),
                str(c.n) if c.n >= TRUST_MIN_POINTS else f"{c.n} (too few)",
                _ci(c.stats.spearman),
                _ci(c.stats.kendall),
                _ci(c.stats.pearson),
                (
                    f"{format_value(fin.stats.spearman.value)} ({fin.n} runs"
                    + (", too few)" if fin.n < TRUST_MIN_POINTS else ")")
                )
                if fin
                else "-",
                (
                    f"{format_value(statistics.median(rs))} ({format_value(min(rs))}.."
                    f"{format_value(max(rs))})"
                    if rs
                    else "-"
                ),
                style=_SIDE_STYLE[interval_side(c.stats.spearman, c.oriented)],
            )
        _emit(table)


def _print_selection(result: Any) -> None:
    from sslwatch.analysis import several_definitions

    ref = result.reference or "reference"
    if result.run_selections:
        table = Table(
            title=f"Best run per {result.settings.get('group_by') or 'sweep'} "
            f"(regret = oracle − selected {escape(ref)})",
            title_justify="left",
        )
        for col in ("group", "repr.", "metric", "epoch", "selected", "value", ref, "oracle",
                    "regret", "runs"):  # fmt: skip
            table.add_column(escape(col))
        several = several_definitions(result)
        for s in result.run_selections:
            table.add_row(
                escape(s.group + (f" ({s.architecture})" if s.architecture else "")),
                escape(s.representation),
                escape(f"{s.metric} {metric_arrow(s.metric)}")
                + (f" N={s.definition.n}" if s.metric in several else ""),
                str(s.epoch),
                escape(s.selected_run),
                format_value(s.value),
                format_value(s.reference_value),
                escape(s.oracle_run or "-"),
                format_value(s.regret),
                str(len(s.ranking)),
            )
        _emit(table)
    if result.checkpoint_selections:
        table = Table(title="Best checkpoint per run", title_justify="left")
        for col in ("run", "repr.", "metric", "epoch", "value", ref, "oracle epoch", "regret"):
            table.add_column(escape(col))
        for ck in result.checkpoint_selections:
            table.add_row(
                escape(ck.run),
                escape(ck.representation),
                escape(f"{ck.metric} {metric_arrow(ck.metric)}"),
                str(ck.epoch),
                format_value(ck.value),
                format_value(ck.reference_value),
                str(ck.oracle_epoch) if ck.oracle_epoch is not None else "-",
                format_value(ck.regret),
            )
        _emit(table)


def _print_warnings_and_findings(result: Any, failures: list[dict[str, Any]]) -> None:
    if result.warnings:
        console.print("[bold yellow]Comparability warnings[/] (these values were not compared):")
        for w in result.warnings:
            console.print(f"  - {w.context}: {w.message}", markup=False, highlight=False)
    else:
        console.print("No comparability warnings: every comparison had matching definitions.")
    if not (result.findings or failures):
        console.print("No collapse and no falling RankMe detected.")
        return
    table = Table(title="Diagnoses", title_justify="left")
    for col in ("severity", "run", "repr.", "metric", "finding"):
        table.add_column(col)
    for f in result.findings:
        table.add_row(
            f"[{_SEVERITY_STYLE[f.severity]}]{escape(f.severity)}[/]",
            escape(f.run),
            escape(f.representation),
            escape(f.metric),
            escape(f.message),
        )
    for failure in failures:
        table.add_row(
            f"[{_SEVERITY_STYLE['warning']}]failed[/]",
            escape(str(failure["run"])),
            "-",
            "-",
            escape(
                f"{failure.get('path') or failure.get('epoch')}: {last_line(failure.get('error'))}"
            ),
        )
    _emit(table)


def _load_spectra(items: list[str], runs: set[str]) -> dict[Any, Any]:
    """``RUN=FILE`` or ``RUN:REPRESENTATION=FILE`` -> singular values of the embeddings."""
    from sslwatch.metrics.spectrum import singular_values
    from sslwatch.offline.io import load_embedding_file

    out: dict[Any, Any] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise fail(f"--embeddings takes RUN=FILE or RUN:REPRESENTATION=FILE, got {item!r}")
        run, _, rep = name.partition(":") if name not in runs else (name, "", "")
        if run not in runs:
            raise fail(f"--embeddings names run {run!r}, not in the store: {', '.join(runs)}")
        try:
            data = load_embedding_file(Path(file))
            out[(run, rep) if rep else run] = singular_values(data.z)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from None
    return out


@app.command()
def report(
    db: Annotated[Path, typer.Argument(help="Results store (SQLite) written by a sweep.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="HTML file to write (self-contained).")
    ] = Path("report.html"),
    embeddings: Annotated[
        list[str] | None,
        typer.Option(
            "--embeddings",
            help="RUN=FILE (or RUN:REPRESENTATION=FILE): embeddings of a run's latest "
            "checkpoint, to plot its singular-value spectrum. Repeatable; optional.",
        ),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
    reference: ReferenceOpt = None,
    reference_representation: ReferenceRepOpt = None,
    representation: RepresentationOpt = None,
    metric: MetricOpt = None,
    group_by: GroupByOpt = "method",
    epoch: EpochOpt = None,
    source: SourceOpt = None,
    min_epoch: MinEpochOpt = 1,
    n_boot: NBootOpt = 1000,
    confidence: ConfidenceOpt = 0.9,
    seed: SeedOpt = 0,
) -> None:
    """Write one self-contained HTML report (plots inlined; opens offline)."""
    from sslwatch.offline.store import StoreDamagedError
    from sslwatch.report import write_report

    kwargs = _analyze_kwargs(
        reference,
        reference_representation,
        representation,
        metric,
        group_by,
        epoch,
        source,
        min_epoch,
        n_boot,
        confidence,
        seed,
    )
    check_output(output, "--output", make_parents=True)
    with _open_store(db) as store:
        rows, _ = _read_rows(store)
        spectra = _load_spectra(embeddings or [], {str(r["run"]) for r in rows})
        try:
            path = write_report(store, output, spectra=spectra, title=title, **kwargs)
        except StoreDamagedError as exc:
            raise store_failure(exc) from None
        except (ValueError, ImportError) as exc:
            raise fail(str(exc)) from None
    size = path.stat().st_size
    console.print(
        f"wrote {path} ({size / 1024:.0f} KiB)", markup=False, highlight=False, soft_wrap=True
    )
