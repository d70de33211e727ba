"""``sslwatch sweep``, ``sslwatch merge`` and ``sslwatch export``: thin adapters over
:mod:`sslwatch.offline.sweep` and :mod:`sslwatch.offline.store`.

Exit codes of ``sweep``: 0 when every checkpoint is ok (or was already stored);
otherwise the number of failed checkpoints, capped at 100; 101 when the sweep cannot
start (bad data, model factory, option, checkpoint glob or ``--db``, a damaged store
included; nothing is evaluated); command-line usage errors give 2, as for every command.
``merge``: 0, 1 on conflicts, 2 on bad input, 3 when a store is damaged. ``export``: 0,
2 on bad input, 3 when the store is damaged (see :mod:`sslwatch.cli`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sslwatch.cli import (
    EXIT_SETUP_ERROR,
    EXIT_USAGE,
    KOpt,
    MetricsOpt,
    SampleSizeOpt,
    app,
    check_output,
    console,
    err_console,
    fail,
    store_failure,
)

__all__ = ["EXIT_SETUP_ERROR", "EXIT_USAGE", "ProgressLog", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """Human duration: ``0.42 s``, ``12.3 s``, ``4 min 05 s``."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def _parse_params(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["linear_probe.l2=0.001", "rankme.eps=1e-6"]`` -> nested dict (values as JSON)."""
    from sslwatch.offline.sweep import SweepSetupError

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        metric, dot, name = key.strip().partition(".")
        if not sep or not dot or not metric or not name:
            raise SweepSetupError(
                f"--param {item!r} must look like METRIC.NAME=VALUE, e.g. linear_probe.l2=0.001."
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string, e.g. silhouette.metric=cosine
        out.setdefault(metric, {})[name] = value
    return out


@app.command()
def sweep(
    model: Annotated[
        str,
        typer.Option(help="Model factory: 'package.module:function' or 'path/file.py:function'."),
    ],
    checkpoints: Annotated[
        list[str],
        typer.Option(help="Checkpoint glob or file (quote globs; repeat for several)."),
    ],
    data: Annotated[
        str,
        typer.Option(help="Data: digits, mnist1d, mnist5k, npz:PATH or folder:PATH."),
    ],
    db: Annotated[Path, typer.Option(help="Results store (SQLite), created when missing.")],
    labels: Annotated[
        bool | None,
        typer.Option(
            "--labels/--no-labels",
            help="Use the data set's labels for probes (default: when it has any).",
        ),
    ] = None,
    labelled_fraction: Annotated[
        float | None,
        typer.Option(help="Keep labels on this seeded, stratified fraction (probes only)."),
    ] = None,
    views: Annotated[int, typer.Option(help="Augmented views per sample (0 or >= 2).")] = 0,
    augment: Annotated[
        str | None,
        typer.Option(help="Augmentation for views: mnist1d, image, auto, none or module:fn."),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Representations: name=submodule,... e.g. backbone=backbone,projector=projector "
            "(default: the model output)."
        ),
    ] = None,
    metrics: MetricsOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Metric parameter METRIC.NAME=VALUE (repeatable)."),
    ] = None,
    k: KOpt = None,
    sample_size: SampleSizeOpt = 10000,
    seed: Annotated[int, typer.Option(help="Seed: samples, k-means, splits, views.")] = 0,
    recalibrate_bn: Annotated[
        bool,
        typer.Option(help="Re-estimate BatchNorm statistics on the data before embedding."),
    ] = False,
    bn_batches: Annotated[int, typer.Option(help="Batches for --recalibrate-bn.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 256,
    device: Annotated[str | None, typer.Option(help="Device (default: cuda > mps > cpu).")] = None,
    autocast: Annotated[bool, typer.Option(help="Forward passes under autocast.")] = False,
    state_key: Annotated[
        str | None, typer.Option(help="Dot path of the weights inside each checkpoint.")
    ] = None,
    trust_checkpoints: Annotated[
        bool,
        typer.Option(help="Allow checkpoints that need unpickling (runs code: trusted only)."),
    ] = False,
    pattern: Annotated[
        str | None,
        typer.Option(
            help="Regex with named groups run/epoch/step, searched in each absolute path "
            "(default: run = parent folder, epoch/step from the file name)."
        ),
    ] = None,
    method: Annotated[str | None, typer.Option(help="SSL method recorded on the runs.")] = None,
    architecture: Annotated[
        str | None, typer.Option(help="Architecture recorded on the runs.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel worker processes.")] = 1,
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: evaluate slice I (0-based) of N of the sorted checkpoints; auto: this "
            "SLURM array task's slice (SLURM_ARRAY_TASK_ID/COUNT)."
        ),
    ] = None,
    keep_shards: Annotated[
        bool,
        typer.Option(
            help="Under torchrun: keep each rank's shard store (<db>.rank<R>-of-<W>) after "
            "rank 0 merged it into --db (default: removed once merged without conflict)."
        ),
    ] = False,
    summary_json: Annotated[
        Path | None, typer.Option(help="Write the sweep summary (counts, outcomes) as JSON.")
    ] = None,
) -> None:
    """Embed and score every checkpoint; store values; skip what is already stored.

    Under torchrun (torchrun --nproc-per-node K -m sslwatch sweep ...) the checkpoints
    are split across the ranks, each rank writes <db>.rank<R>-of-<W> on its own device
    (cuda:LOCAL_RANK when CUDA is available) and rank 0 merges them into --db at the end;
    each rank prefixes its progress lines with [rank R/W]; rank 0 prints the summary.

    Exit code: the number of failed checkpoints (capped at 100), 0 when all are ok;
    101 when the sweep cannot start. Under torchrun rank 0 exits with the count over
    every rank (at least 1 when the shards could not be merged), the other ranks with 0.
    """
    from sslwatch.offline.sweep import (
        SweepConfig,
        SweepSetupError,
        parse_layers,
        parse_shard,
        run_sweep,
        torchrun_env,
    )

    if summary_json is not None:
        check_output(summary_json, "--summary-json", make_parents=True)
    try:
        ranks = torchrun_env()
        config = SweepConfig(
            model=model,
            checkpoints=tuple(checkpoints),
            data=data,
            db=db,
            layers=parse_layers(layers),
            labels=labels,
            labelled_fraction=labelled_fraction,
            views=views,
            augment=augment,
            metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
            params=_parse_params(param),
            k=k,
            sample_size=sample_size or None,
            seed=seed,
            recalibrate_bn=recalibrate_bn,
            bn_batches=bn_batches,
            batch_size=batch_size,
            device=device,
            autocast=autocast,
            state_key=state_key,
            trust_checkpoints=trust_checkpoints,
            pattern=pattern,
            method=method,
            architecture=architecture,
            workers=workers,
            shard=parse_shard(shard) if shard is not None else None,
            distributed=None,  # torchrun's variables decide
            keep_shards=keep_shards,
        )
        prefix = "" if ranks is None else f"[rank {ranks.rank}/{ranks.world_size}] "
        summary = _run_with_progress(config, run_sweep, prefix=prefix)
    except SweepSetupError as exc:
        raise fail(str(exc), EXIT_SETUP_ERROR) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished checkpoint is stored; re-run to go on.")
        raise typer.Exit(130) from None

    if summary.rank:  # not rank 0: one line; rank 0 reports the whole sweep
        console.print(
            f"{prefix}{summary.n_loaded} checkpoint(s) evaluated, {summary.n_failed} failed; "
            f"rank 0 merges them into {summary.db}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(0)
    _print_summary(summary)
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2))
    raise typer.Exit(summary.exit_code)


class ProgressLog:
    """One line per finished checkpoint, the same on a terminal and in a log file.

    ``[3/8] ok PATH: 34 values in 5.21 s (linear_probe 3.10 s, kmeans 1.20 s, embed
    0.90 s); about 12.4 s left``: the checkpoint's total seconds, its most expensive
    stages/metrics/steps, and after the first evaluated checkpoint the time left:
    remaining checkpoints x mean seconds per evaluated checkpoint so far, divided by the
    workers (at most the remaining checkpoints). Skipped checkpoints (all reported first)
    get one line together.
    """

    def __init__(self, workers: int = 1, top: int = 3) -> None:
        self.workers = max(1, int(workers))
        self.top = top
        self.total: int | None = None
        self.done = 0
        self.skipped = 0
        self._skip_reported = False
        self._seconds: list[float] = []

    def remaining_seconds(self) -> float | None:
        """Estimated seconds left, or ``None`` before the first evaluated checkpoint."""
        if not self._seconds or self.total is None:
            return None
        remaining = max(0, self.total - self.done)
        workers = max(1, min(self.workers, remaining))  # never more than there is work for
        return remaining * (sum(self._seconds) / len(self._seconds)) / workers

    def skipped_line(self) -> str | None:
        """The line for the skipped checkpoints, once (``None`` when none or already said)."""
        if self._skip_reported or not self.skipped:
            return None
        self._skip_reported = True
        return (
            f"[{self.done}/{self.total}] skipped {self.skipped} checkpoint(s): every value "
            "already stored"
        )

    def add(self, outcome: Any) -> list[str]:
        """Count ``outcome``; the lines to print now (plain text, no markup)."""
        if outcome.status == "skipped":
            self.done += 1
            self.skipped += 1
            return []
        lines = [line for line in (self.skipped_line(),) if line]
        self.done += 1
        seconds = outcome.timings.get("total")
        if seconds is not None:
            self._seconds.append(float(seconds))
        text = f"[{self.done}/{self.total}] {outcome.status} {outcome.path}"
        if outcome.status == "ok":
            text += f": {outcome.values_stored} values"
        if seconds is not None:
            text += f" in {format_seconds(seconds)}"
            costs = outcome.top_costs(self.top)
            if costs:
                text += " (" + ", ".join(f"{k} {format_seconds(v)}" for k, v in costs) + ")"
        left = self.remaining_seconds()
        if left is not None and self.total is not None and self.done < self.total:
            text += f"; about {format_seconds(left)} left"
        lines.append(text)
        return lines


def _run_with_progress(config: Any, run_sweep: Any, prefix: str = "") -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # User-provided names (runs, paths, metrics) are printed without markup.
    progress = Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}", markup=False),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}", markup=False),
        console=err_console,
        transient=True,
        disable=bool(prefix) or not err_console.is_terminal,  # ranks share one terminal
    )
    task_id = progress.add_task("checkpoints", total=None, last="", left="")
    log = ProgressLog(workers=int(getattr(config, "workers", 1)))

    def say(line: str) -> None:
        progress.console.print(prefix + line, markup=False, highlight=False, soft_wrap=True)

    def on_start(total: int) -> None:
        log.total = total
        progress.update(task_id, total=total)

    def on_outcome(outcome: Any) -> None:
        if outcome.status == "failed":
            progress.console.print(
                f"[bold red]error:[/] {escape(prefix + (outcome.error or 'failed'))}",
                highlight=False,
                soft_wrap=True,
            )
        for line in log.add(outcome):
            say(line)
        left = log.remaining_seconds()
        progress.update(
            task_id,
            advance=1,
            last=f"{outcome.run} {outcome.status}",
            left="" if left is None else f"~{format_seconds(left)} left",
        )

    with progress:
        summary = run_sweep(config, on_start=on_start, on_outcome=on_outcome)
        line = log.skipped_line()  # every checkpoint was skipped
        if line:
            say(line)
        return summary


def _print_summary(summary: Any) -> None:
    table = Table(title=f"sweep into {escape(str(summary.db))}", title_justify="left")
    for col in ("checkpoints", "ok", "skipped", "failed", "loaded", "values", "time"):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary.n_checkpoints),
        str(summary.n_ok),
        str(summary.n_skipped),
        f"[red]{summary.n_failed}[/]" if summary.n_failed else "0",
        str(summary.n_loaded),
        str(summary.n_values),
        format_seconds(summary.seconds),
    )
    console.print(table)
    extras = ["skipped: already stored", "loaded: models loaded", "values: newly stored"]
    if summary.shard:
        extras.append(f"shard {summary.shard[0]}/{summary.shard[1]}")
    if summary.world_size:
        extras.append(f"{summary.world_size} torchrun ranks")
        if summary.shards:
            what = "kept" if summary.shards_kept else "merged and removed"
            extras.append(f"{len(summary.shards)} shard store(s) {what}")
    if summary.workers > 1:
        extras.append(f"{summary.workers} workers")
    extras.append("representations: " + ", ".join(summary.representations))
    console.print(escape("; ".join(extras)), style="dim", highlight=False, soft_wrap=True)
    if summary.merge_problem:
        err_console.print(
            f"[bold red]error:[/] {escape(summary.merge_problem)}", highlight=False, soft_wrap=True
        )
    notes: list[str] = []
    for outcome in summary.outcomes:
        for w in outcome.warnings:
            if w not in notes:
                notes.append(w)
    for note in notes[:10]:
        err_console.print(
            f"warning: {escape(note)}", style="yellow", highlight=False, soft_wrap=True
        )
    if len(notes) > 10:
        err_console.print(f"... and {len(notes) - 10} more warnings", style="yellow")


@app.command()
def merge(
    sources: Annotated[list[Path], typer.Argument(help="Result stores to merge, in order.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output store (created when missing).")
    ],
) -> None:
    """Merge result stores (e.g. one per --shard job) into one, without duplicates.

    Sources are read-only (never written or upgraded); a new output file appears only
    when the merge succeeds. Exit code 0; 1 when two stores disagree on a value (the
    first one is kept and the conflict is printed); 2 on bad input; 3 when a store is
    damaged (``sslwatch doctor`` salvages it).
    """
    from sslwatch.offline.store import merge_stores

    out_resolved = output.resolve()
    for src in sources:
        if src.resolve() == out_resolved:
            raise fail(f"{src} is both a source and the output; pick another -o.", EXIT_USAGE)
        if not src.is_file():
            what = "is a folder, not a results store" if src.is_dir() else "does not exist"
            raise fail(f"merge source {src} {what}.", EXIT_USAGE)
    check_output(output, "-o", make_parents=True)
    try:
        result = merge_stores(sources, output)
    except ValueError as exc:
        raise store_failure(exc) from None
    console.print(
        f"merged {result.sources} store(s) into {output}: {result.results_added} values added, "
        f"{result.results_identical} already there, {result.points_added} checkpoints and "
        f"{result.runs_added} runs added, {result.n_conflicts} conflicts",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for conflict in result.conflicts[:20]:
        err_console.print(f"conflict: {escape(str(conflict))}", highlight=False, soft_wrap=True)
    if result.n_conflicts > 20:
        err_console.print(f"... and {result.n_conflicts - 20} more conflicts")
    if result.n_conflicts:
        raise typer.Exit(1)


@app.command()
def export(
    db: Annotated[Path, typer.Argument(help="Results store to read.")],
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the tidy table as CSV.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the tidy table as JSON records.")
    ] = None,
    run: Annotated[list[str] | None, typer.Option(help="Only this run (repeatable).")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Only this metric (repeatable).")] = None,
    representation: Annotated[
        list[str] | None, typer.Option(help="Only this representation (repeatable).")
    ] = None,
) -> None:
    """Write the tidy table (one row per checkpoint, representation and metric).

    The store is opened read-only. Exit code 0; 2 on bad input; 3 when the store is
    damaged (``sslwatch doctor`` salvages it).
    """
    from sslwatch.offline.store import ResultStore

    if csv_out is None and json_out is None:
        raise fail("pass --csv PATH and/or --json PATH.", EXIT_USAGE)
    if not db.exists():
        raise fail(f"results store {db} does not exist.", EXIT_USAGE)
    for out, option in ((csv_out, "--csv"), (json_out, "--json")):
        if out is not None:
            if out.resolve() == db.resolve():
                raise fail(
                    f"{option} {out} is the results store itself; pass another path.", EXIT_USAGE
                )
            check_output(out, option, make_parents=True)
    try:
        with ResultStore(db, read_only=True) as store:
            filters = {"run": run or None, "metric": metric or None}
            filters["representation"] = representation or None
            if csv_out is not None:
                n = store.export_csv(csv_out, **filters)
                console.print(
                    f"wrote {n} rows to {csv_out}", markup=False, highlight=False, soft_wrap=True
                )
            if json_out is not None:
                n = store.export_json(json_out, **filters)
                console.print(
                    f"wrote {n} rows to {json_out}", markup=False, highlight=False, soft_wrap=True
                )
    except ValueError as exc:
        raise store_failure(exc) from None
