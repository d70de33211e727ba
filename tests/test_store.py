"""Tests for the SQLite results store (sslwatch.offline.store).

Oracles: the values the test itself wrote (kept in plain dicts), raw SQL on the file with
the standard ``sqlite3`` module, the ``csv``/``json`` modules and pandas reading exports,
and a single store written directly as the reference for merged shard stores.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sslwatch.core.definitions import MetricDefinition
from sslwatch.offline.store import (
    SCHEMA_VERSION,
    TIDY_COLUMNS,
    ResultStore,
    SchemaVersionError,
    StoreDamagedError,
    check_store,
    merge_stores,
    salvage_store,
)
from store_damage import damage_page

SPECIAL_VALUES = [1.5, -2.25, 0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]


def _defs(k: int, **extra: Any) -> list[MetricDefinition]:
    """k distinct definitions (distinct metric names and parameters)."""
    return [
        MetricDefinition(f"metric{j}", params={"eps": 1e-7 * (j + 1), **extra}, n=256, d=32)
        for j in range(k)
    ]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ResultStore]:
    with ResultStore(tmp_path / "results.db") as s:
        yield s


# --------------------------------------------------------------------------- basics


def test_new_file_is_wal_with_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "new.db"
    ResultStore(path).close()
    con = _raw(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "points", "definitions", "results", "schema_info"} <= tables
    con.close()


def test_foreign_keys_enforced(store: ResultStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store._db().execute(
            "INSERT INTO points (run_id, source, path, status, created, updated)"
            " VALUES (999, 'checkpoint', 'x', 'pending', '', '')"
        )


def test_round_trip_special_values(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    defs = _defs(len(SPECIAL_VALUES))
    numpy_value = np.float32(0.1)
    with ResultStore(path) as s:
        run = s.ensure_run("run", method="simclr", architecture="cnn1d")
        point = s.ensure_point(run, path="ckpt/epoch=3.pt", epoch=3)
        rows: list[tuple[str, MetricDefinition, Any]] = [
            ("backbone", d, v) for d, v in zip(defs, SPECIAL_VALUES, strict=True)
        ]
        rows.append(("projector", defs[0], numpy_value))
        assert s.record_results(point, rows) == len(rows)
    with ResultStore(path) as s:  # read back after reopening
        got = {(r["representation"], r["metric"]): r["value"] for r in s.tidy_rows()}
    assert len(got) == len(SPECIAL_VALUES) + 1
    for d, v in zip(defs, SPECIAL_VALUES, strict=True):
        assert _same(got[("backbone", d.metric)], v), d.metric
    assert got[("projector", "metric0")] == float(numpy_value)
    # Documented on-disk convention: NaN is value NULL with is_nan = 1, nothing else is NULL.
    con = _raw(path)
    nulls = con.execute("SELECT value, is_nan FROM results WHERE value IS NULL").fetchall()
    assert nulls == [(None, 1)]
    assert con.execute("SELECT count(*) FROM results WHERE is_nan = 1").fetchone() == (1,)
    con.close()


def test_definition_json_and_digest_round_trip(store: ResultStore) -> None:
    run = store.ensure_run("run")
    point = store.ensure_point(run, source="online", step=100)
    old = MetricDefinition("rankme", params={"eps": 1e-7}, n=512, d=64, version="0.0.9")
    new = MetricDefinition("rankme", params={"eps": 1e-7}, n=512, d=64, version="0.1.0")
    assert old.digest() == new.digest()  # version is provenance only
    other = MetricDefinition("rankme", params={"eps": 1e-5}, n=512, d=64)
    store.record_results(point, [("backbone", old, 1.0), ("projector", new, 2.0)])
    store.record_results(point, [("backbone", other, 3.0)])
    rows = {(r["representation"], r["value"]): r for r in store.tidy_rows()}
    assert rows[("backbone", 1.0)]["definition"] == old.to_json()
    assert rows[("projector", 2.0)]["definition"] == new.to_json()
    assert rows[("backbone", 3.0)]["definition"] == other.to_json()
    for r in rows.values():
        defn = MetricDefinition.from_dict(json.loads(r["definition"]))
        assert r["digest"] == defn.digest()
        assert (r["n"], r["d"], r["metric"]) == (512, 64, "rankme")
        assert (r["source"], r["step"], r["epoch"], r["path"]) == ("online", 100, None, None)
    assert set(store.tidy_rows()[0]) == set(TIDY_COLUMNS)


# --------------------------------------------------------------------------- runs and points


def test_ensure_run_idempotent_fills_and_rejects_conflicts(store: ResultStore) -> None:
    a = store.ensure_run("r", method="simclr", meta={"lr": 0.3})
    assert store.ensure_run("r") == a
    assert store.ensure_run("r", architecture="resnet18", meta={"seed": 1}) == a
    row = store._db().execute("SELECT method, architecture, meta FROM runs").fetchone()
    assert row[:2] == ("simclr", "resnet18")
    assert json.loads(row[2]) == {"lr": 0.3, "seed": 1}
    with pytest.raises(ValueError, match="method 'simclr', not 'simsiam'"):
        store.ensure_run("r", method="simsiam")
    assert store.ensure_run("other") != a
    with pytest.raises(ValueError, match="non-empty string"):
        store.ensure_run("")


def test_ensure_point_identity_and_validation(store: ResultStore) -> None:
    run = store.ensure_run("r")
    p = store.ensure_point(run, path="a.pt")
    assert store.ensure_point(run, path=Path("a.pt"), epoch=4) == p  # fills epoch
    assert store.ensure_point(run, path="a.pt", epoch=4, step=40) == p
    assert store._db().execute("SELECT epoch, step FROM points WHERE id=?", (p,)).fetchone() == (
        4,
        40,
    )
    with pytest.raises(ValueError, match="epoch 4, not 5"):
        store.ensure_point(run, path="a.pt", epoch=5)
    with pytest.raises(ValueError, match="source"):
        store.ensure_point(run, source="online", path="a.pt")
    online = store.ensure_point(run, source="online", epoch=4, step=40)
    assert online != p  # no path: identified by (source, epoch, step)
    assert store.ensure_point(run, source="online", epoch=4, step=40) == online
    assert store.ensure_point(run, source="online", step=40) not in (p, online)
    assert store.ensure_point(run, source="checkpoint", epoch=4, step=40) not in (p, online)
    assert store.ensure_point(run, epoch=np.int64(7)) == store.ensure_point(run, epoch=7)
    with pytest.raises(ValueError, match="path, an epoch or a step"):
        store.ensure_point(run)
    with pytest.raises(ValueError, match=">= 0"):
        store.ensure_point(run, epoch=-1)
    with pytest.raises(ValueError, match="integer"):
        store.ensure_point(run, epoch=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source must be one of"):
        store.ensure_point(run, source="offline", epoch=1)
    with pytest.raises(ValueError, match="no run with id"):
        store.ensure_point(12345, epoch=1)
    status = store._db().execute("SELECT DISTINCT status FROM points").fetchall()
    assert status == [("pending",)]


# --------------------------------------------------------------------------- recording


def test_record_results_is_idempotent_first_value_wins(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    defs = _defs(3)
    with ResultStore(path) as s:
        point = s.ensure_point(s.ensure_run("r"), epoch=1)
        rows = [("backbone", d, float(i)) for i, d in enumerate(defs)]
        assert s.record_results(point, rows) == 3
        assert s.record_results(point, rows) == 0
        assert s.record_results(point, [("backbone", defs[0], 99.0)]) == 0
        assert s.record_results(point, [*rows, ("projector", defs[0], 5.0)]) == 1
    con = _raw(path)
    assert con.execute("SELECT count(*) FROM results").fetchone() == (4,)
    assert con.execute("SELECT count(*) FROM definitions").fetchone() == (3,)
    values = dict(
        con.execute(
            "SELECT d.metric, r.value FROM results r JOIN definitions d USING (digest)"
            " WHERE r.representation = 'backbone'"
        ).fetchall()
    )
    assert values == {"metric0": 0.0, "metric1": 1.0, "metric2": 2.0}
    assert con.execute("SELECT status, error FROM points").fetchall() == [("ok", None)]
    con.close()


def test_record_results_rejects_bad_rows_and_stores_nothing(store: ResultStore) -> None:
    point = store.ensure_point(store.ensure_run("r"), epoch=1)
    d = _defs(2)
    bad_batches: list[list[Any]] = [
        [("backbone", d[0], 1.0), ("backbone", d[0], 2.0)],  # same key, two values
        [("backbone", d[0], 1.0), ("backbone", d[1], None)],
        [("backbone", d[0], 1.0), ("backbone", d[1], "0.5")],
        [("backbone", d[0], 1.0), ("backbone", "rankme", 0.5)],
        [("backbone", d[0], 1.0), ("", d[1], 0.5)],
        [("backbone", d[0])],
        [("backbone", d[0], np.ones(3))],
    ]
    for batch in bad_batches:
        with pytest.raises(ValueError):
            store.record_results(point, batch)
    with pytest.raises(ValueError, match="no point with id"):
        store.record_results(9999, [("backbone", d[0], 1.0)])
    with pytest.raises(ValueError, match="status must be one of"):
        store.record_results(point, [], status="done")
    assert store.stored_digests(point) == set()
    # The same value twice in one batch is fine (stored once).
    assert store.record_results(point, [("backbone", d[0], math.nan)] * 2) == 1


def test_record_results_is_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with ResultStore(path) as s:
        point = s.ensure_point(s.ensure_run("r"), epoch=1)
        # Make the database itself fail on the third row of the batch.
        s._db().execute(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON results WHEN NEW.representation = 'x'"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        d = _defs(3)
        with pytest.raises(sqlite3.IntegrityError, match="boom"):
            s.record_results(point, [("a", d[0], 1.0), ("b", d[1], 2.0), ("x", d[2], 3.0)])
        assert s.record_results(point, [("a", d[0], 1.0)]) == 1  # connection still usable
    con = _raw(path)
    assert con.execute("SELECT representation FROM results").fetchall() == [("a",)]
    con.close()


def test_skip_logic_stored_digests_and_missing(store: ResultStore) -> None:
    point = store.ensure_point(store.ensure_run("r"), path="e10.pt", epoch=10)
    defs = _defs(4)
    wanted = [(rep, d) for rep in ("backbone", "projector") for d in defs]
    assert store.missing(point, wanted) == wanted
    done = wanted[::3]
    store.record_results(point, [(rep, d, 0.5) for rep, d in done])
    assert store.stored_digests(point) == {(rep, d.digest()) for rep, d in done}
    assert store.stored_digests(point, "projector") == {
        (rep, d.digest()) for rep, d in done if rep == "projector"
    }
    todo = store.missing(point, wanted)
    assert todo == [w for w in wanted if w not in done]
    store.record_results(point, [(rep, d, 1.0) for rep, d in todo])
    assert store.missing(point, wanted) == []
    # A new library version is the same definition; a new parameter value is not.
    newer = MetricDefinition.from_dict({**defs[0].to_dict(), "version": "9.9"})
    changed = MetricDefinition.from_dict({**defs[0].to_dict(), "params": {"eps": 0.5}})
    assert store.missing(point, [("backbone", newer), ("backbone", changed)]) == [
        ("backbone", changed)
    ]
    other = store.ensure_point(store.ensure_run("r"), path="e20.pt")
    assert store.stored_digests(other) == set()


def test_record_failure_keeps_results(store: ResultStore) -> None:
    run = store.ensure_run("r", method="moco", architecture="cnn")
    point = store.ensure_point(run, path="e1.pt", epoch=1)
    d = _defs(2)
    store.record_results(point, [("backbone", d[0], 0.25)])
    store.record_failure(point, "RuntimeError: CUDA out of memory")
    assert [r["value"] for r in store.tidy_rows()] == [0.25]
    assert store.tidy_rows()[0]["status"] == "failed"
    (failure,) = store.failures()
    assert failure["error"] == "RuntimeError: CUDA out of memory"
    assert (failure["run"], failure["path"], failure["epoch"], failure["n_results"]) == (
        "r",
        "e1.pt",
        1,
        1,
    )
    assert store.failures(run="nope") == []
    # A later success clears the error and the failure listing.
    store.record_results(point, [("backbone", d[1], 0.5)])
    assert store.failures() == []
    assert store._db().execute("SELECT status, error FROM points").fetchone() == ("ok", None)
    with pytest.raises(ValueError, match="no point"):
        store.record_failure(4242, "x")


def test_tidy_rows_filters_and_order(store: ResultStore) -> None:
    d = _defs(2)
    for name in ("b-run", "a-run"):
        run = store.ensure_run(name, method="simclr")
        for epoch in (20, 3):
            p = store.ensure_point(run, path=f"{name}/{epoch}.pt", epoch=epoch)
            store.record_results(p, [("backbone", d[0], epoch), ("projector", d[1], -epoch)])
    rows = store.tidy_rows()
    assert [(r["run"], r["epoch"]) for r in rows][::2] == [
        ("a-run", 3),
        ("a-run", 20),
        ("b-run", 3),
        ("b-run", 20),
    ]
    assert {r["run"] for r in store.tidy_rows(run="a-run")} == {"a-run"}
    assert len(store.tidy_rows(run=["a-run", "b-run"])) == 8
    only = store.tidy_rows(metric="metric1")
    assert {r["metric"] for r in only} == {"metric1"} and len(only) == 4
    assert all(r["value"] < 0 for r in only)
    assert len(store.tidy_rows(run="a-run", representation="backbone")) == 2
    assert store.tidy_rows(source="online") == []
    assert store.tidy_rows(metric=[]) == []


# --------------------------------------------------------------------------- exports


def _write_example(store: ResultStore) -> dict[tuple[str, str, str], float]:
    """A small store with special values; returns {(run, path-or-step, metric): value}."""
    expected: dict[tuple[str, str, str], float] = {}
    defs = _defs(len(SPECIAL_VALUES))
    run = store.ensure_run("simclr, lr=0.3", method="simclr", architecture="cnn1d")
    p = store.ensure_point(run, path='ckpt/"odd", name.pt', epoch=2)
    store.record_results(p, [("backbone", d, v) for d, v in zip(defs, SPECIAL_VALUES, strict=True)])
    for d, v in zip(defs, SPECIAL_VALUES, strict=True):
        expected[("simclr, lr=0.3", 'ckpt/"odd", name.pt', d.metric)] = v
    run2 = store.ensure_run("online-run")
    q = store.ensure_point(run2, source="online", step=500)
    store.record_results(q, [("backbone", defs[0], 0.1 + 0.2)])
    expected[("online-run", "500", defs[0].metric)] = 0.1 + 0.2
    return expected


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    where = row["path"] if row["path"] not in (None, "") else str(row["step"])
    return (row["run"], where, row["metric"])


def test_export_csv_read_back_with_csv_module(store: ResultStore, tmp_path: Path) -> None:
    expected = _write_example(store)
    out = tmp_path / "exports" / "tidy.csv"
    assert store.export_csv(out) == len(expected)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == TIDY_COLUMNS
    assert len(rows) == len(expected)
    for row in rows:
        # Documented: NaN is an empty field, +-inf are 'inf'/'-inf'.
        value = math.nan if row["value"] == "" else float(row["value"])
        assert _same(value, expected[_key(row)]), row
        assert MetricDefinition.from_dict(json.loads(row["definition"])).digest() == row["digest"]
    online = next(r for r in rows if r["run"] == "online-run")
    assert (online["path"], online["epoch"], online["step"], online["architecture"]) == (
        "",
        "",
        "500",
        "",
    )
    assert sum(r["value"] == "" for r in rows) == 1
    assert {r["value"] for r in rows} >= {"inf", "-inf"}
    assert store.export_csv(tmp_path / "f.csv", run="online-run") == 1


def test_export_csv_read_back_with_pandas(store: ResultStore, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    expected = _write_example(store)
    out = tmp_path / "tidy.csv"
    store.export_csv(out)
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(TIDY_COLUMNS)
    assert frame["value"].dtype == np.float64
    want = [
        expected[(r, p if isinstance(p, str) else str(int(s)), m)]
        for r, p, s, m in zip(
            frame["run"], frame["path"], frame["step"], frame["metric"], strict=True
        )
    ]
    np.testing.assert_array_equal(frame["value"].to_numpy(), np.array(want))


def test_export_json_read_back(store: ResultStore, tmp_path: Path) -> None:
    expected = _write_example(store)
    out = tmp_path / "tidy.json"
    assert store.export_json(out) == len(expected)
    rows = json.loads(out.read_text())
    assert len(rows) == len(expected)
    for row in rows:
        assert set(row) == set(TIDY_COLUMNS)
        assert _same(row["value"], expected[_key(row)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(store.tidy_rows()))
    empty = tmp_path / "empty.json"
    assert store.export_json(empty, run="nobody") == 0
    assert json.loads(empty.read_text()) == []
    pd = pytest.importorskip("pandas")
    frame = pd.read_json(out)
    assert np.isnan(frame["value"]).sum() == 1
    assert np.isposinf(frame["value"]).sum() == 1 and np.isneginf(frame["value"]).sum() == 1


# --------------------------------------------------------------------------- merge

# (run, method, point kwargs, [(representation, definition index, value)], failure or None)
CONTENT: list[tuple[str, str, dict[str, Any], list[tuple[str, int, float]], str | None]] = [
    ("r1", "simclr", {"path": "r1/e0.pt", "epoch": 0}, [("backbone", 0, 1.0)], None),
    ("r1", "simclr", {"path": "r1/e1.pt", "epoch": 1}, [("backbone", 0, math.nan)], None),
    ("r1", "simclr", {"source": "online", "step": 10}, [("projector", 1, -math.inf)], None),
    ("r1", "simclr", {"path": "r1/e2.pt", "epoch": 2}, [("backbone", 1, 2.0)], "OOM"),
    ("r2", "simsiam", {"path": "r2/e0.pt", "epoch": 0}, [("backbone", 0, 3.0)], None),
    ("r2", "simsiam", {"source": "online", "step": 5, "epoch": 0}, [("output", 2, 4.0)], None),
    ("r2", "simsiam", {"path": "r2/e9.pt", "epoch": 9}, [], "corrupt checkpoint"),
]


def _write(path: Path, items: list[Any]) -> None:
    defs = _defs(3)
    with ResultStore(path) as s:
        for run, method, point_kw, rows, failure in items:
            p = s.ensure_point(s.ensure_run(run, method=method), **point_kw)
            s.record_results(p, [(rep, defs[i], v) for rep, i, v in rows])
            if failure is not None:
                s.record_failure(p, failure)


def _snapshot(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with ResultStore(path) as s:
        tidy = s.tidy_rows()
        failures = [{k: v for k, v in f.items() if k != "updated"} for f in s.failures()]
    for row in tidy:  # NaN != NaN: compare its repr instead
        row["value"] = repr(row["value"])
    return tidy, failures


def test_merge_two_shards_equals_single_store(tmp_path: Path) -> None:
    single, a, b, merged = (tmp_path / f"{n}.db" for n in ("single", "a", "b", "merged"))
    _write(single, CONTENT)
    _write(a, CONTENT[:4] + CONTENT[5:6])  # r1 and part of r2 ...
    _write(b, CONTENT[3:])  # ... overlapping item 3 and 5, identical values
    summary = merge_stores([a, b], merged)
    assert _snapshot(merged) == _snapshot(single)
    n_results = sum(len(item[3]) for item in CONTENT)
    assert summary.results_added == n_results
    assert summary.results_identical == 2
    assert (summary.runs_added, summary.points_added, summary.definitions_added) == (2, 7, 3)
    assert summary.n_conflicts == 0 and summary.sources == 2
    con = _raw(merged)
    assert con.execute("SELECT count(*) FROM results").fetchone() == (n_results,)
    con.close()

    again = merge_stores([a, b, merged], merged)  # merging again (and itself) adds nothing
    assert (again.runs_added, again.points_added, again.results_added) == (0, 0, 0)
    assert again.definitions_added == 0 and again.n_conflicts == 0
    assert again.results_identical == summary.results_added + 2 + n_results
    assert _snapshot(merged) == _snapshot(single)


def test_merge_conflicts_keep_first_and_are_reported(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "out.db"
    _write(a, CONTENT[:2])
    changed = [
        ("r1", "byol", {"path": "r1/e0.pt", "epoch": 0}, [("backbone", 0, 1.5)], None),
        ("r1", "byol", {"path": "r1/e1.pt", "epoch": 1}, [("backbone", 0, math.nan)], None),
    ]
    _write(b, changed)
    summary = merge_stores([a, b], out)
    kinds = sorted(c.kind for c in summary.conflicts)
    assert kinds == ["result", "run"]
    result = next(c for c in summary.conflicts if c.kind == "result")
    assert (result.kept, result.ignored) == (1.0, 1.5)
    assert "r1/e0.pt" in str(result) and "metric0" in str(result)
    assert summary.results_identical == 1  # NaN equals NaN
    tidy, _ = _snapshot(out)
    assert [(r["path"], r["value"], r["method"]) for r in tidy] == [
        ("r1/e0.pt", "1.0", "simclr"),
        ("r1/e1.pt", "nan", "simclr"),
    ]
    assert summary.to_dict()["n_conflicts"] == 2
    # Reverse order: the other file's values are kept.
    rev = merge_stores([b, a], tmp_path / "rev.db")
    assert next(c for c in rev.conflicts if c.kind == "result").kept == 1.5


def test_merge_point_status_precedence(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "out.db"
    _write(a, [("r", "simclr", {"path": "e.pt"}, [], "timeout")])
    _write(b, [("r", "simclr", {"path": "e.pt", "epoch": 5}, [("backbone", 0, 7.0)], None)])
    merge_stores([a, b], out)
    with ResultStore(out) as s:
        assert s.failures() == []
        (row,) = s.tidy_rows()
    assert (row["status"], row["epoch"], row["value"]) == ("ok", 5, 7.0)
    with pytest.raises(ValueError, match="does not exist"):
        merge_stores([tmp_path / "missing.db"], out)


# --------------------------------------------------------------------------- concurrency


def _concurrent_writer(args: tuple[str, int, int, int]) -> int:
    """Worker process: its own points plus one point that every worker writes."""
    path, worker, n_points, k = args
    defs = _defs(k)
    inserted = 0
    with ResultStore(path) as s:
        run = s.ensure_run("shared", method="simclr")
        for i in range(n_points):
            p = s.ensure_point(run, path=f"w{worker}/e{i}.pt", epoch=i)
            inserted += s.record_results(
                p, [("backbone", d, worker * 1e4 + i * 100 + j) for j, d in enumerate(defs)]
            )
        common = s.ensure_point(run, path="common.pt")
        inserted += s.record_results(
            common, [("backbone", d, float(j)) for j, d in enumerate(defs)]
        )
    return inserted


def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"  # not created beforehand: the workers race to create it
    n_workers, n_points, k = 4, 25, 8
    # fork where the platform has it (fast: no re-import); the workers only use sqlite3.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(n_workers) as pool:
        inserted = pool.map(
            _concurrent_writer, [(str(path), w, n_points, k) for w in range(n_workers)]
        )
    assert sum(inserted) == n_workers * n_points * k + k  # common point stored once
    with ResultStore(path) as s:
        rows = s.tidy_rows()
    assert len(rows) == n_workers * n_points * k + k
    values = {(r["path"], r["metric"]): r["value"] for r in rows}
    for w in range(n_workers):
        for i in range(n_points):
            for j in range(k):
                assert values[(f"w{w}/e{i}.pt", f"metric{j}")] == w * 1e4 + i * 100 + j
    con = _raw(path)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    assert con.execute("SELECT count(*) FROM points").fetchone() == (n_workers * n_points + 1,)
    assert con.execute("SELECT DISTINCT status FROM points").fetchall() == [("ok",)]
    con.close()


# --------------------------------------------------------------------------- crash safety

_WRITER = textwrap.dedent(
    """
    import sys, time
    from sslwatch.core.definitions import MetricDefinition
    from sslwatch.offline.store import ResultStore

    path, k, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    defs = [MetricDefinition(f"metric{j}", n=100, d=8) for j in range(k)]

    def stall():
        print("inflight", flush=True)
        time.sleep(60)

    with ResultStore(path) as s:
        run = s.ensure_run("crash", method="simclr")
        i = 0
        while True:
            if mode == "stall" and i == 3:
                s._db().create_function("stall", 0, stall)
                s._db().execute(
                    "CREATE TEMP TRIGGER t AFTER INSERT ON results BEGIN SELECT stall(); END"
                )
            p = s.ensure_point(run, path=f"e{i}.pt", epoch=i)
            s.record_results(p, [("backbone", d, i * 1000.0 + j) for j, d in enumerate(defs)])
            print(i, flush=True)
            i += 1
            time.sleep(0.002)
    """
)


def _kill_writer(path: Path, k: int, mode: str) -> list[int]:
    """Run the writer, SIGKILL it; return the points it reported as committed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(k), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    committed: list[int] = []
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if not line:
                break  # the writer died on its own
            if line == "inflight":
                break
            committed.append(int(line))
            if mode == "loop" and len(committed) >= 5:
                time.sleep(0.05)  # "after a moment": somewhere in the loop
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the writer died before it was killed"
    return committed


def _check_complete(path: Path, k: int, committed: list[int]) -> set[int]:
    """Every point holds all k rows or none; return the points that are complete."""
    with ResultStore(path) as s:  # reopening recovers the WAL
        rows = s.tidy_rows()
    con = _raw(path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    by_point: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_point.setdefault(row["epoch"], []).append(row)
    for epoch, point_rows in by_point.items():
        assert len(point_rows) == k, f"point {epoch} has {len(point_rows)} of {k} rows"
        assert {r["status"] for r in point_rows} == {"ok"}
        assert sorted(r["value"] for r in point_rows) == [epoch * 1000.0 + j for j in range(k)]
    statuses = dict(con.execute("SELECT epoch, status FROM points").fetchall())
    con.close()
    assert {e for e, st in statuses.items() if st == "ok"} == set(by_point)
    assert set(committed) <= set(by_point)  # nothing acknowledged was lost
    return set(by_point)


@pytest.mark.parametrize("mode", ["loop", "stall"])
def test_sigkilled_writer_leaves_complete_points(tmp_path: Path, mode: str) -> None:
    path, k = tmp_path / "crash.db", 25
    committed = _kill_writer(path, k, mode)
    assert len(committed) >= (3 if mode == "stall" else 5)
    complete = _check_complete(path, k, committed)
    if mode == "stall":
        # Killed inside the transaction of point 3, after its first row was inserted.
        assert complete == {0, 1, 2}
    # Resume as a sweep would: compute only what is missing; nothing gets duplicated.
    defs = [MetricDefinition(f"metric{j}", n=100, d=8) for j in range(k)]
    with ResultStore(path) as s:
        run = s.ensure_run("crash")
        for epoch in range(max(complete) + 2):
            p = s.ensure_point(run, path=f"e{epoch}.pt", epoch=epoch)
            todo = s.missing(p, [("backbone", d) for d in defs])
            assert len(todo) in (0, k)
            s.record_results(
                p, [("backbone", d, epoch * 1000.0 + int(d.metric[6:])) for _, d in todo]
            )
    _check_complete(path, k, list(range(max(complete) + 2)))


# --------------------------------------------------------------------------- seconds

# Schema version 1 exactly as sslwatch 0.1 wrote it (frozen here; the code no longer has it).
V1_SCHEMA = """
CREATE TABLE schema_info (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
    created TEXT NOT NULL, sslwatch_version TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, method TEXT,
    architecture TEXT, meta TEXT NOT NULL DEFAULT '{}', created TEXT NOT NULL);
CREATE TABLE points (id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    source TEXT NOT NULL CHECK (source IN ('checkpoint', 'online')), path TEXT,
    epoch INTEGER CHECK (epoch IS NULL OR epoch >= 0),
    step INTEGER CHECK (step IS NULL OR step >= 0),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('ok', 'failed', 'pending')),
    error TEXT, created TEXT NOT NULL, updated TEXT NOT NULL,
    CHECK (path IS NOT NULL OR epoch IS NOT NULL OR step IS NOT NULL));
CREATE UNIQUE INDEX points_by_path ON points (run_id, path) WHERE path IS NOT NULL;
CREATE UNIQUE INDEX points_by_position
    ON points (run_id, source, ifnull(epoch, -1), ifnull(step, -1)) WHERE path IS NULL;
CREATE TABLE definitions (digest TEXT PRIMARY KEY, metric TEXT NOT NULL, n INTEGER NOT NULL,
    d INTEGER NOT NULL, dtype TEXT NOT NULL, revision INTEGER NOT NULL,
    definition TEXT NOT NULL);
CREATE INDEX definitions_by_metric ON definitions (metric);
CREATE TABLE results (point_id INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
    representation TEXT NOT NULL, digest TEXT NOT NULL REFERENCES definitions(digest),
    value REAL, is_nan INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1)),
    version TEXT NOT NULL, created TEXT NOT NULL,
    PRIMARY KEY (point_id, representation, digest), CHECK ((value IS NULL) = (is_nan = 1)));
CREATE INDEX results_by_digest ON results (digest);
"""


def _write_v1(path: Path, values: dict[str, float]) -> list[MetricDefinition]:
    """A version-1 store written with raw SQL: run 'old', one checkpoint, these values."""
    defs = _defs(len(values))
    con = _raw(path)
    con.executescript(V1_SCHEMA)
    con.execute("INSERT INTO schema_info VALUES (1, 1, '2024-01-01', '0.1.0')")
    con.execute("INSERT INTO runs (id, name, method, created) VALUES (1, 'old', 'simclr', 't')")
    con.execute(
        "INSERT INTO points (id, run_id, source, path, epoch, status, created, updated)"
        " VALUES (1, 1, 'checkpoint', 'old/e3.pt', 3, 'ok', 't', 't')"
    )
    for d, (rep, v) in zip(defs, values.items(), strict=True):
        con.execute(
            "INSERT INTO definitions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (d.digest(), d.metric, d.n, d.d, d.dtype, d.revision, d.to_json()),
        )
        nan = math.isnan(v)
        con.execute(
            "INSERT INTO results VALUES (1, ?, ?, ?, ?, ?, 't')",
            (rep, d.digest(), None if nan else v, int(nan), d.version),
        )
    con.commit()
    con.close()
    return defs


def test_seconds_round_trip_and_are_validated(store: ResultStore, tmp_path: Path) -> None:
    point = store.ensure_point(store.ensure_run("r"), epoch=1)
    d = _defs(3)
    rows: list[Any] = [("b", d[0], 1.0, 0.25), ("b", d[1], 2.0, np.float32(3.0)), ("b", d[2], 3.0)]
    assert store.record_results(point, rows) == 3
    got = {r["metric"]: r["seconds"] for r in store.tidy_rows()}
    assert got == {"metric0": 0.25, "metric1": 3.0, "metric2": None}
    assert all(isinstance(v, float) for v in (got["metric0"], got["metric1"]))
    # A repeat keeps the first value AND its seconds.
    assert store.record_results(point, [("b", d[0], 1.0, 9.0)]) == 0
    assert store.tidy_rows(metric="metric0")[0]["seconds"] == 0.25
    other = store.ensure_point(store.ensure_run("r"), epoch=2)
    for bad in (-1.0, math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="seconds"):
            store.record_results(other, [("b", d[0], 1.0, bad)])
    with pytest.raises(ValueError, match="value\\[, seconds\\]"):
        store.record_results(other, [("b", d[0], 1.0, 1.0, 1.0)])
    assert store.stored_digests(other) == set()
    # Exports carry the column: empty / null when unknown.
    out_csv, out_json = tmp_path / "t.csv", tmp_path / "t.json"
    store.export_csv(out_csv)
    store.export_json(out_json)
    with out_csv.open(newline="") as fh:
        csv_rows = {r["metric"]: r["seconds"] for r in csv.DictReader(fh)}
    assert csv_rows == {"metric0": "0.25", "metric1": "3.0", "metric2": ""}
    json_rows = {r["metric"]: r["seconds"] for r in json.loads(out_json.read_text())}
    assert json_rows == {"metric0": 0.25, "metric1": 3.0, "metric2": None}


def test_record_timings_replaces_a_points_rows(store: ResultStore) -> None:
    run = store.ensure_run("r")
    p, q = store.ensure_point(run, epoch=1), store.ensure_point(run, epoch=2)
    first = {"": {"load": 0.5, "embed": 1.0}, "backbone": {"kmeans[sample,seed=0]": 2.0}}
    assert store.record_timings(p, first) == 3
    assert store.record_timings(q, {"": {"load": 0.1}}) == 1
    assert store.record_timings(p, {"": {"load": 0.75}}) == 1  # a re-evaluation replaces
    rows = store.timings()
    assert [(r["epoch"], r["representation"], r["name"], r["seconds"]) for r in rows] == [
        (1, "", "load", 0.75),
        (2, "", "load", 0.1),
    ]
    for bad in ({"": {"load": -1.0}}, {"": {"load": math.nan}}, {"": {"": 1.0}}):
        with pytest.raises(ValueError):
            store.record_timings(p, bad)
    assert store.timings(run="r")[0]["seconds"] == 0.75  # the failed calls changed nothing
    with pytest.raises(ValueError, match="no point with id"):
        store.record_timings(9999, {"": {"load": 1.0}})


def test_version_1_store_opens_upgrades_reads_and_merges(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    values = {"backbone": 1.5, "projector": math.nan}
    defs = _write_v1(old, values)
    with ResultStore(old) as s:  # opening upgrades it in place
        rows = s.tidy_rows()
        assert [(r["representation"], r["seconds"]) for r in rows] == [
            ("backbone", None),
            ("projector", None),
        ]
        assert _same(rows[1]["value"], math.nan) and rows[0]["value"] == 1.5
        assert s.timings() == []
        # New writes into the upgraded file carry seconds.
        point = s.ensure_point(s.ensure_run("old"), path="old/e4.pt", epoch=4)
        s.record_results(point, [("backbone", defs[0], 2.5, 0.5)])
        s.record_timings(point, {"": {"load": 0.1}})
    con = _raw(old)
    assert con.execute("SELECT version FROM schema_info").fetchone() == (SCHEMA_VERSION,)
    columns = {row[1] for row in con.execute("PRAGMA table_info(results)")}
    assert "seconds" in columns
    con.close()
    ResultStore(old).close()  # a second open is a no-op upgrade

    # Merging an old-schema source (read as it is, never upgraded) into a new store, and back.
    old2 = tmp_path / "old2.db"
    _write_v1(old2, values)
    before = _digest(old2)
    new = tmp_path / "new.db"
    with ResultStore(new) as s:
        point = s.ensure_point(s.ensure_run("old", method="simclr"), path="old/e3.pt", epoch=3)
        s.record_results(point, [("backbone", defs[0], 1.5, 0.3)])
    summary = merge_stores([old2], new)
    assert summary.n_conflicts == 0
    assert (summary.results_added, summary.results_identical) == (1, 1)
    assert _digest(old2) == before  # the source was not upgraded in place
    con = _raw(old2)
    assert con.execute("SELECT version FROM schema_info").fetchone() == (1,)
    con.close()
    with ResultStore(new) as s:
        got = {r["representation"]: r["seconds"] for r in s.tidy_rows()}
    assert got == {"backbone": 0.3, "projector": None}
    old3 = tmp_path / "old3.db"
    _write_v1(old3, values)
    back = merge_stores([new], old3)  # an old store as the output
    assert back.n_conflicts == 0 and back.results_identical == 2
    with ResultStore(old3) as s:
        got = {r["representation"]: r["seconds"] for r in s.tidy_rows()}
    assert got == {"backbone": 0.3, "projector": None}  # missing seconds filled in


def test_merge_identical_values_with_different_seconds_is_no_conflict(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "out.db"
    d = _defs(2)
    for path, secs, load in ((a, (0.5, None), 1.0), (b, (7.0, 2.0), 9.0)):
        with ResultStore(path) as s:
            p = s.ensure_point(s.ensure_run("r", method="simclr"), path="r/e1.pt", epoch=1)
            s.record_results(p, [("b", d[0], 1.0, secs[0]), ("b", d[1], math.nan, secs[1])])
            s.record_timings(p, {"": {"load": load}, "b": {"spectra": load / 10}})
    summary = merge_stores([a, b], out)
    assert summary.n_conflicts == 0 and summary.conflicts == ()
    assert (summary.results_added, summary.results_identical) == (2, 2)
    with ResultStore(out) as s:
        seconds = {r["metric"]: r["seconds"] for r in s.tidy_rows()}
        timings = {(t["representation"], t["name"]): t["seconds"] for t in s.timings()}
    assert seconds == {"metric0": 0.5, "metric1": 2.0}  # first kept; missing filled in
    assert timings == {("", "load"): 1.0, ("b", "spectra"): 0.1}  # the first store's
    # The command line agrees: exit code 0, "0 conflicts".
    from typer.testing import CliRunner

    import sslwatch.cli.sweep  # noqa: F401
    from sslwatch.cli import app

    res = CliRunner().invoke(app, ["merge", str(b), str(a), "-o", str(tmp_path / "cli.db")])
    assert res.exit_code == 0, res.output
    assert "0 conflicts" in res.stdout


# --------------------------------------------------------------------------- opening errors


def test_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    ResultStore(path).close()
    con = _raw(path)
    con.execute("UPDATE schema_info SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        ResultStore(path)
    assert issubclass(SchemaVersionError, ValueError)


def _foreign_files(folder: Path) -> tuple[Path, Path]:
    """A text file named like a store, and an SQLite database of another program."""
    text = folder / "notes.db"
    text.write_text("this is not a database, just some text " * 50)
    other = folder / "other.db"
    con = _raw(other)
    con.execute("CREATE TABLE experiments (id INTEGER)")
    con.commit()
    con.close()
    return text, other


@pytest.mark.parametrize("opener", [ResultStore, check_store])
def test_foreign_files_are_rejected(tmp_path: Path, opener: Any) -> None:
    text, other = _foreign_files(tmp_path)
    with pytest.raises(ValueError, match="not an SQLite database"):
        opener(text)
    with pytest.raises(ValueError, match="not an sslwatch results store"):
        opener(other)


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = ResultStore(tmp_path / "c.db")
    s.close()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s.ensure_run("r")


def test_each_value_keeps_its_own_outcome_and_stays_comparable(tmp_path: Path) -> None:
    """Two checkpoints whose probes selected different L2 share one definition digest,
    yet each row reads back with its own outcome, also after a merge."""
    base = MetricDefinition("linear_probe", params={"l2": None}, n=100, d=8)
    first = dataclasses.replace(base, outcome={"l2": 0.01, "passes": 91})
    second = dataclasses.replace(base, outcome={"l2": 0.001, "passes": 120})
    assert first.digest() == second.digest() == base.digest()
    path, out = tmp_path / "a.db", tmp_path / "m.db"
    with ResultStore(path) as s:
        run = s.ensure_run("r")
        s.record_results(s.ensure_point(run, epoch=1), [("b", first, 0.9)])
        s.record_results(s.ensure_point(run, epoch=2), [("b", second, 0.8)])
        s.record_results(s.ensure_point(run, epoch=3), [("b", base, 0.7)])
        stored = [MetricDefinition.from_dict(json.loads(r["definition"])) for r in s.tidy_rows()]
    assert [d.outcome for d in stored] == [first.outcome, second.outcome, {}]
    assert all(d.comparable_with(base) for d in stored)
    merge_stores([path], out)
    with ResultStore(out) as s:
        merged = [json.loads(r["definition"]).get("outcome") for r in s.tidy_rows()]
    assert merged == [first.outcome, second.outcome, None]


# --------------------------------------------------------------------------- read-only use


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_only_never_writes_and_reads_a_version_1_store_as_it_is(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ValueError, match=r"empty \(0 bytes\).*not an sslwatch results store"):
        ResultStore(empty, read_only=True)
    assert empty.stat().st_size == 0  # no schema written into it
    missing = tmp_path / "missing.db"
    with pytest.raises(ValueError, match="no results store"):
        ResultStore(missing, read_only=True)
    assert not missing.exists()

    old = tmp_path / "old.db"
    _write_v1(old, {"backbone": 1.5, "projector": math.nan})
    before = _digest(old)
    with ResultStore(old, read_only=True) as s:
        assert s.schema_version == 1
        rows = s.tidy_rows()
        assert [(r["representation"], r["seconds"]) for r in rows] == [
            ("backbone", None),
            ("projector", None),
        ]
        assert rows[0]["value"] == 1.5 and math.isnan(rows[1]["value"])
        assert s.timings() == [] and s.failures() == []
        with pytest.raises(ValueError, match="read-only"):
            s.ensure_run("new")
    assert _digest(old) == before
    con = _raw(old)
    assert con.execute("SELECT version FROM schema_info").fetchone() == (1,)
    con.close()


def test_folders_and_impossible_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder, not a results store file"):
        ResultStore(tmp_path)
    with pytest.raises(ValueError, match="is a folder"):
        ResultStore(tmp_path, read_only=True)
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        ResultStore(a_file / "sub" / "r.db")
    assert a_file.read_text() == "x"


# --------------------------------------------------------------------------- damaged stores


def filled_store(path: Path, points: int = 45) -> dict[tuple[str, str, str, str], float]:
    """A store spanning many pages, its WAL folded into the file; returns its values by
    (run, path, representation, metric)."""
    defs = _defs(8)
    rng = np.random.default_rng(0)
    values: dict[tuple[str, str, str, str], float] = {}
    with ResultStore(path) as s:
        for i in range(points):
            run = f"run{i % 3}"
            point = s.ensure_point(
                s.ensure_run(run, method="simclr"), path=f"{run}/e{i}.pt", epoch=i
            )
            rows = [
                (rep, d, float(rng.normal()), 0.01 * i)
                for rep in ("backbone", "projector")
                for d in defs
            ]
            s.record_results(point, rows)
            s.record_timings(point, {"": {"load": 0.1, "embed": 0.2}})
            values.update({(run, f"{run}/e{i}.pt", r, d.metric): v for r, d, v, _ in rows})
    con = _raw(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return values


def _tidy_values(path: Path) -> dict[tuple[str, str, str, str], float]:
    with ResultStore(path, read_only=True) as s:
        return {
            (r["run"], r["path"], r["representation"], r["metric"]): r["value"]
            for r in s.tidy_rows()
        }


@pytest.mark.parametrize("how", ["page", "truncated"])
def test_damaged_store_is_refused_naming_the_file_and_the_fix(tmp_path: Path, how: str) -> None:
    path = tmp_path / "results.db"
    filled_store(path)
    if how == "page":
        damage_page(path)
    else:
        os.truncate(path, path.stat().st_size * 6 // 10)
    before = _digest(path)
    for read_only in (True, False):
        with pytest.raises(StoreDamagedError) as info:
            ResultStore(path, read_only=read_only)
        text = str(info.value)
        assert str(path) in text and "is damaged" in text and "\n" not in text
        assert f"sslwatch doctor {path} -o repaired.db" in text
        assert "new file" not in text  # a damaged store, not a foreign file
    assert _digest(path) == before
    text_file = tmp_path / "notes.db"
    text_file.write_text("not a database " * 100)
    with pytest.raises(ValueError, match="not an SQLite database") as other:
        ResultStore(text_file, read_only=True)
    assert not isinstance(other.value, StoreDamagedError)


def test_merge_with_a_damaged_source_leaves_no_output_and_no_change(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.db", tmp_path / "bad.db"
    filled_store(good, points=6)
    filled_store(bad)
    damage_page(bad)
    hashes = {p: _digest(p) for p in (good, bad)}
    out = tmp_path / "out" / "merged.db"
    with pytest.raises(StoreDamagedError, match=r"bad\.db is damaged"):
        merge_stores([good, bad], out)
    assert not out.parent.exists()  # the bad source was found before anything was made
    existing = tmp_path / "existing.db"
    filled_store(existing, points=3)
    before = _digest(existing)
    with pytest.raises(StoreDamagedError):
        merge_stores([good, bad], existing)
    assert _digest(existing) == before  # the damaged source was refused before any write
    assert {p: _digest(p) for p in (good, bad)} == hashes
    # Success renames the finished file into place, leaving nothing else behind.
    merge_stores([good], out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged.db"]
    assert _tidy_values(out) == _tidy_values(good)


def test_doctor_check_and_salvage_of_a_sound_store_copy_everything(tmp_path: Path) -> None:
    path = tmp_path / "sound.db"
    filled_store(path, points=6)
    with ResultStore(path) as s:
        s.record_failure(s.ensure_point(s.ensure_run("run0"), path="run0/bad.pt"), "OOM")
    check = check_store(path)
    assert check.sound and check.problems == () and check.schema_version == SCHEMA_VERSION
    out = tmp_path / "copy.db"
    summary = salvage_store(path, out)
    assert all(t.lost == 0 and t.exact for t in summary.tables)
    with ResultStore(path, read_only=True) as a, ResultStore(out, read_only=True) as b:
        assert a.tidy_rows() == b.tidy_rows()
        assert a.timings() == b.timings()
        assert a.failures() == b.failures()
    counts = {t.table: t.saved for t in summary.tables}
    assert counts == {
        "runs": 3,
        "points": 7,
        "definitions": 8,
        "results": 6 * 16,
        "point_timings": 12,
    }
    with pytest.raises(ValueError, match="already exists"):
        salvage_store(path, out)


def test_salvage_of_a_damaged_page_keeps_every_readable_row_exactly(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    truth = filled_store(path)
    damage_page(path, "results")
    before = _digest(path)
    check = check_store(path)
    assert not check.sound and check.problems
    out = tmp_path / "repaired.db"
    summary = salvage_store(path, out)
    assert _digest(path) == before
    tables = {t.table: t for t in summary.tables}
    got = _tidy_values(out)
    # Every salvaged value is the one written (oracle: the values kept before the damage).
    assert got and all(truth[k] == v for k, v in got.items())
    results = tables["results"]
    assert results.exact and 0 < results.lost < len(truth) // 4
    assert results.saved == len(got) and results.saved + results.lost == len(truth)
    for name in ("runs", "points", "definitions", "point_timings"):
        assert tables[name].lost == 0, tables[name]
    assert check_store(out).sound


def test_salvage_of_a_truncated_store_keeps_what_precedes_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    truth = filled_store(path)
    # Cut after the last page of runs, points and definitions (a result whose checkpoint
    # is lost cannot be kept), so that only results pages are lost.
    con = _raw(path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    try:
        keep = con.execute(
            "SELECT max(pageno) FROM dbstat WHERE name IN ('runs', 'points', 'definitions')"
        ).fetchone()[0]
    except sqlite3.OperationalError:  # no dbstat: cut at 80%
        keep = path.stat().st_size * 8 // 10 // page_size
    con.close()
    assert keep * page_size < path.stat().st_size
    os.truncate(path, keep * page_size)
    check = check_store(path)
    assert any("truncated" in p for p in check.problems)
    summary = salvage_store(path, tmp_path / "repaired.db")
    got = _tidy_values(tmp_path / "repaired.db")
    assert got and all(truth[k] == v for k, v in got.items())
    assert len(got) < len(truth)
    assert sum(t.saved for t in summary.tables if t.table == "results") == len(got)


def test_doctor_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ValueError, match="empty"):
        check_store(empty)  # (foreign files: test_foreign_files_are_rejected)


def test_merge_tolerates_round_off_and_catches_real_differences(tmp_path: Path) -> None:
    """Values 1e-10 apart (another machine's last digits) merge as one; 1e-8 apart, or
    inf vs a number, are conflicts."""
    from sslwatch.offline.store import MERGE_RTOL

    d = _defs(4)
    base = [123.456, 0.25, math.inf, -7.0]
    cases = {
        "a.db": base,
        "b.db": [v * (1 + 1e-10) if math.isfinite(v) else v for v in base],
        "c.db": [123.456 * (1 + 1e-8), 0.25, 1e308, -7.0],
    }
    for name, values in cases.items():
        with ResultStore(tmp_path / name) as s:
            p = s.ensure_point(s.ensure_run("r"), path="r/e1.pt", epoch=1)
            s.record_results(p, [("b", d[i], v) for i, v in enumerate(values)])
    close = merge_stores([tmp_path / "a.db", tmp_path / "b.db"], tmp_path / "ab.db")
    assert close.n_conflicts == 0 and close.results_identical == 4
    far = merge_stores([tmp_path / "a.db", tmp_path / "c.db"], tmp_path / "ac.db")
    assert sorted(c.kept for c in far.conflicts) == [123.456, math.inf]
    assert 1e-10 < MERGE_RTOL < 1e-8


def test_a_locked_store_is_not_called_damaged(tmp_path: Path) -> None:
    """'database is locked' after the busy timeout is no damage: no doctor advice."""
    from sslwatch.offline.store import StoreDamagedError

    path = tmp_path / "busy.db"
    with ResultStore(path) as s:
        s.ensure_run("r")
    holder = sqlite3.connect(path)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for read_only in (True, False):
            with pytest.raises(ValueError, match="retry") as err:
                ResultStore(path, timeout=0.2, read_only=read_only).tidy_rows()
            assert not isinstance(err.value, StoreDamagedError)
    finally:
        holder.rollback()
        holder.close()
    with ResultStore(path, read_only=True) as s:  # sound once the lock is gone
        assert s.tidy_rows() == []
