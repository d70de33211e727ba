"""Joining result stores (one per SLURM array task, say) without duplicates."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from sslwatch.offline.store.damage import _damage_guard
from sslwatch.offline.store.result_store import ResultStore, _find_point, _output_store
from sslwatch.offline.store.values import _close_value, _decode, _describe_point, _dump_meta

# Merge precedence of a point's status: the most informative outcome wins.
_STATUS_RANK: Final = {"pending": 0, "failed": 1, "ok": 2}


@dataclass(frozen=True)
class MergeConflict:
    """Two sources disagree on one key; the value already in the output was kept.

    Attributes:
        kind: ``"run"`` (method/architecture), ``"point"`` (source/epoch/step of a path),
            or ``"result"`` (a value).
        source: the file whose item was not taken.
        key: what the conflict is about, human-readable.
        kept: the value kept (already in the output).
        ignored: the value from ``source`` that was dropped.
    """

    kind: str
    source: str
    key: str
    kept: Any
    ignored: Any

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.key}: kept {self.kept!r}, ignored {self.ignored!r}"
            f" from {self.source}"
        )


@dataclass(frozen=True)
class MergeSummary:
    """What :func:`merge_stores` did. Counts are of items newly added to the output."""

    sources: int
    runs_added: int
    points_added: int
    definitions_added: int
    results_added: int
    results_identical: int
    conflicts: tuple[MergeConflict, ...]

    @property
    def n_conflicts(self) -> int:
        """Number of conflicts (first value kept each time)."""
        return len(self.conflicts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        out = asdict(self)
        out["conflicts"] = [str(c) for c in self.conflicts]
        out["n_conflicts"] = self.n_conflicts
        return out


def merge_stores(
    sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> MergeSummary:
    """Merge result stores (e.g. one per SLURM array task) into ``out`` without duplicates.

    Keys: runs by name; points by (run, path), or (run, source, epoch, step) when they have
    no path; definitions by digest; results by (point, representation, digest). When a key
    is already in ``out`` the first value is kept and a differing one (relative difference
    above :data:`MERGE_RTOL` = 1e-9; NaN equal to NaN, infinities exactly) is reported as
    a :class:`MergeConflict`; seconds never conflict (a
    value's missing seconds are filled in; a point's timings are taken from the first
    store that has them). Missing run method,
    architecture, meta keys and point epoch/step are filled in. A point's status takes
    the most informative of the two (``ok`` > ``failed`` > ``pending``). Each source is
    merged in one transaction; merging a source again adds nothing.

    Sources are opened read-only (:class:`ResultStore` ``read_only=True``): they are never
    written, and an older schema is read as it is. Every source is checked (SQLite's
    ``quick_check``) before anything is written. A new ``out`` is built in a temporary
    file next to it and renamed into place only when every source is merged, so a failed
    merge leaves no output file behind.

    Args:
        sources: existing result-store files, merged in order (earlier ones win).
        out: the output store, created when missing (it may already hold results).

    Returns:
        A :class:`MergeSummary` with counts and the conflicts.

    Raises:
        StoreDamagedError: a source (or an existing ``out``) is damaged.
        ValueError: a source is missing or not a results store, or ``out`` is a folder.
    """
    source_paths = [Path(s) for s in sources]
    for src in source_paths:
        if not src.is_file():
            raise ValueError(f"merge source {src} does not exist; pass existing result stores")
    for src in source_paths:  # fail on a bad source before anything is written
        ResultStore(src, read_only=True).close()
    target = Path(out)
    if target.is_dir():
        raise ValueError(f"merge output {target} is a folder; pass a file path for -o")
    counts = dict.fromkeys(
        ("runs_added", "points_added", "definitions_added", "results_added", "results_identical"),
        0,
    )
    conflicts: list[MergeConflict] = []
    with _output_store(target) as dst:
        for src in source_paths:
            with ResultStore(src, timeout=dst.timeout, read_only=True) as reader:
                _merge_one(dst, reader, counts, conflicts)
    return MergeSummary(sources=len(source_paths), conflicts=tuple(conflicts), **counts)


class _SourceRows(NamedTuple):
    """Every row of one source store, read in one snapshot."""

    runs: list[Any]
    points: list[Any]
    definitions: list[Any]
    results: list[Any]
    timings: list[Any]


def _read_source(reader: ResultStore) -> _SourceRows:
    """All rows of ``reader`` in one read transaction (a version-1 store has no seconds,
    outcomes or timings)."""
    rconn = reader._db()
    extra = "seconds, outcome" if reader._has_seconds else "NULL, NULL"
    with _damage_guard(reader.path):
        rconn.execute("BEGIN")  # one read snapshot of the source
        try:
            return _SourceRows(
                runs=rconn.execute(
                    "SELECT id, name, method, architecture, meta, created FROM runs"
                ).fetchall(),
                points=rconn.execute(
                    "SELECT id, run_id, source, path, epoch, step, status, error, created,"
                    " updated FROM points ORDER BY id"
                ).fetchall(),
                definitions=rconn.execute(
                    "SELECT digest, metric, n, d, dtype, revision, definition FROM definitions"
                ).fetchall(),
                results=rconn.execute(
                    "SELECT point_id, representation, digest, value, is_nan, version, created,"
                    f" {extra} FROM results"
                ).fetchall(),
                timings=(
                    rconn.execute(
                        "SELECT point_id, representation, name, seconds, created FROM point_timings"
                    ).fetchall()
                    if reader._has_seconds
                    else []
                ),
            )
        finally:
            if rconn.in_transaction:
                rconn.execute("ROLLBACK")


def _merge_one(
    dst: ResultStore,
    reader: ResultStore,
    counts: dict[str, int],
    conflicts: list[MergeConflict],
) -> None:
    """Merge one source into ``dst`` in one write transaction: runs, then points, then
    definitions, results and timings (each step maps the source's ids to the output's)."""
    rows = _read_source(reader)
    with dst._write() as conn:
        merge = _SourceMerge(conn, str(reader.path), counts, conflicts)
        merge.runs(rows.runs)
        merge.points(rows.points, rows.results)
        merge.definitions(rows.definitions)
        merge.results(rows.results, rows.definitions)
        merge.timings(rows.timings)


class _SourceMerge:
    """The steps of merging one source's rows into the output, inside its transaction.

    Source row ids are mapped to output ids as runs and points are merged; each step
    counts what it added and reports what conflicts.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        label: str,
        counts: dict[str, int],
        conflicts: list[MergeConflict],
    ) -> None:
        self.conn = conn
        self.label = label
        self.counts = counts
        self.conflicts = conflicts
        self.run_ids: dict[int, int] = {}
        self.run_names: dict[int, str] = {}
        self.point_ids: dict[int, int] = {}
        self.point_names: dict[int, str] = {}

    def runs(self, runs: Sequence[Any]) -> None:
        """Runs by name: new ones added; missing method, architecture and meta keys filled."""
        conn = self.conn
        for sid, name, method, arch, meta, created in runs:
            self.run_names[sid] = name
            row = conn.execute(
                "SELECT id, method, architecture, meta FROM runs WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO runs (name, method, architecture, meta, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, method, arch, meta, created),
                )
                self.run_ids[sid] = int(cur.lastrowid)  # type: ignore[arg-type]
                self.counts["runs_added"] += 1
                continue
            did, old_method, old_arch, old_meta = row
            self.run_ids[sid] = int(did)
            for what, old, new in (
                ("method", old_method, method),
                ("architecture", old_arch, arch),
            ):
                if old is not None and new is not None and old != new:
                    self.conflicts.append(
                        MergeConflict("run", self.label, f"{name!r} {what}", old, new)
                    )
            merged_meta = {**json.loads(meta), **json.loads(old_meta)}  # output keys win
            conn.execute(
                "UPDATE runs SET method = coalesce(method, ?),"
                " architecture = coalesce(architecture, ?), meta = ? WHERE id = ?",
                (method, arch, _dump_meta(merged_meta), did),
            )

    def points(self, points: Sequence[Any], results: Sequence[Any]) -> None:
        """Points by (run, path) or position: new ones added; missing epoch/step filled; the
        most informative status kept. A path stored with another source is a conflict and
        its results are left out."""
        conn = self.conn
        for sid, srun, source, path, epoch, step, status, error, created, updated in points:
            run_id = self.run_ids[srun]
            name = f"run {self.run_names[srun]!r} {_describe_point(source, path, epoch, step)}"
            self.point_names[sid] = name
            found = _find_point(conn, run_id, source, path, epoch, step)
            if found is None:
                cur = conn.execute(
                    "INSERT INTO points (run_id, source, path, epoch, step, status, error,"
                    " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, source, path, epoch, step, status, error, created, updated),
                )
                self.point_ids[sid] = int(cur.lastrowid)  # type: ignore[arg-type]
                self.counts["points_added"] += 1
                continue
            did, old_source, old_epoch, old_step, old_status, _old_error = found
            if old_source != source:
                # Same path, other source: not the same thing; keep the output's, skip ours.
                n_skipped = sum(1 for r in results if r[0] == sid)
                self.conflicts.append(
                    MergeConflict(
                        "point",
                        self.label,
                        f"{name} source ({n_skipped} results not merged)",
                        old_source,
                        source,
                    )
                )
                continue
            self.point_ids[sid] = int(did)
            for what, old, new in (("epoch", old_epoch, epoch), ("step", old_step, step)):
                if old is not None and new is not None and old != new:
                    self.conflicts.append(
                        MergeConflict("point", self.label, f"{name} {what}", old, new)
                    )
            conn.execute(
                "UPDATE points SET epoch = coalesce(epoch, ?), step = coalesce(step, ?)"
                " WHERE id = ?",
                (epoch, step, did),
            )
            if _STATUS_RANK[status] > _STATUS_RANK[old_status]:
                conn.execute(
                    "UPDATE points SET status = ?, error = ?, updated = ? WHERE id = ?",
                    (status, None if status == "ok" else error, updated, did),
                )

    def definitions(self, definitions: Sequence[Any]) -> None:
        """Definitions by digest: the first stored JSON stays."""
        for row in definitions:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO definitions"
                " (digest, metric, n, d, dtype, revision, definition) VALUES (?, ?, ?, ?, ?, ?, ?)",
                tuple(row),
            )
            self.counts["definitions_added"] += cur.rowcount

    def results(self, results: Sequence[Any], definitions: Sequence[Any]) -> None:
        """Results by (point, representation, digest): the first value stays; a value within
        :data:`MERGE_RTOL` fills in missing seconds and outcome, a farther one conflicts."""
        conn = self.conn
        metric_of = {row[0]: row[1] for row in definitions}
        for spoint, representation, digest, value, is_nan, version, created, secs, outc in results:
            if spoint not in self.point_ids:
                continue  # its point was a conflict, already reported
            did = self.point_ids[spoint]
            old = conn.execute(
                "SELECT value, is_nan FROM results"
                " WHERE point_id = ? AND representation = ? AND digest = ?",
                (did, representation, digest),
            ).fetchone()
            if old is None:
                conn.execute(
                    "INSERT INTO results (point_id, representation, digest, value, is_nan,"
                    " version, created, seconds, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (did, representation, digest, value, is_nan, version, created, secs, outc),
                )
                self.counts["results_added"] += 1
            elif _close_value(_decode(*old), _decode(value, is_nan)):
                # Seconds and outcomes are provenance (they differ between runs): never a
                # conflict.
                conn.execute(
                    "UPDATE results SET seconds = coalesce(seconds, ?),"
                    " outcome = coalesce(outcome, ?)"
                    " WHERE point_id = ? AND representation = ? AND digest = ?",
                    (secs, outc, did, representation, digest),
                )
                self.counts["results_identical"] += 1
            else:
                self.conflicts.append(
                    MergeConflict(
                        "result",
                        self.label,
                        f"{self.point_names[spoint]} {representation!r} {metric_of[digest]!r} "
                        f"[{digest}]",
                        _decode(*old),
                        _decode(value, is_nan),
                    )
                )

    def timings(self, timings: Sequence[Any]) -> None:
        """A point's timings describe one evaluation: the source's are taken only when the
        output has none for that point (earlier sources win, like values)."""
        by_point: dict[int, list[tuple[str, str, float, str]]] = {}
        for spoint, representation, name, secs, created in timings:
            if spoint in self.point_ids:
                by_point.setdefault(self.point_ids[spoint], []).append(
                    (representation, name, secs, created)
                )
        for did, entries in by_point.items():
            if self.conn.execute(
                "SELECT 1 FROM point_timings WHERE point_id = ?", (did,)
            ).fetchone():
                continue
            self.conn.executemany(
                "INSERT INTO point_timings (point_id, representation, name, seconds, created)"
                " VALUES (?, ?, ?, ?, ?)",
                [(did, *entry) for entry in entries],
            )
