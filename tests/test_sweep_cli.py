"""`sslwatch sweep / merge / export` on the command line.

Crash safety is tested for real: a sweep in a subprocess is killed with SIGKILL as soon
as the store shows its first finished checkpoint, then re-run; the result must equal an
uninterrupted sweep's, with one value per (checkpoint, representation, definition), and
the re-run must load only the checkpoints that were not finished.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import sslwatch.cli.sweep  # noqa: F401  (registers sweep, merge and export)
import sweep_models as sm
from sslwatch.cli import app
from sslwatch.core.registry import REGISTRY
from sslwatch.offline.store import ResultStore

runner = CliRunner()
SAMPLE = str(sm.REFERENCE["sample_size"])
N_METRICS = len(REGISTRY.select(None, has_labels=True))
LAUNCH = "import sslwatch.cli.sweep; from sslwatch.cli import app; app()"


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "sweep_checkpoints"
    sm.make_checkpoints(root)
    return root


@pytest.fixture(scope="module")
def reference(ckpt_root: Path) -> dict[str, Any]:
    """An uninterrupted, unsharded, single-process sweep through the Python API."""
    db, _ = sm.reference_db(ckpt_root)
    with ResultStore(db) as store:
        return {"db": db, "rows": store.tidy_rows()}


def table(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    out = {}
    for r in rows:
        key = (r["run"], r["path"], r["epoch"], r["step"], r["representation"], r["digest"])
        assert key not in out, key
        out[key] = r["value"]
    return out


def assert_same_table(
    got: dict[tuple[Any, ...], float], want: dict[tuple[Any, ...], float], rel: float = 0.0
) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        other = got[key]
        if math.isnan(value) or math.isinf(value):
            assert (math.isnan(value) and math.isnan(other)) or value == other, key
        else:
            assert other == pytest.approx(value, rel=rel, abs=1e-12 if rel else 0), key


def without_seconds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows less their seconds (timings legitimately differ between sweeps)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------- sweep + merge


def test_shards_merged_equal_one_unsharded_sweep_and_export(
    reference: dict[str, Any], ckpt_root: Path, tmp_path: Path
) -> None:
    shards = [tmp_path / f"shard{i}.db" for i in range(2)]
    for i, db in enumerate(shards):
        summary = tmp_path / f"s{i}.json"
        res = runner.invoke(
            app, sm.cli_args(ckpt_root, db, "--shard", f"{i}/2", "--summary-json", str(summary))
        )
        assert res.exit_code == 0, res.output
        assert "checkpoints" in res.stdout and "skipped" in res.stdout  # the summary table
        assert json.loads(summary.read_text())["checkpoints"] == 2
    merged = tmp_path / "all.db"
    res = runner.invoke(app, ["merge", *map(str, shards), "-o", str(merged)])
    assert res.exit_code == 0, res.output
    assert f"{4 * 2 * N_METRICS} values added" in res.stdout
    with ResultStore(merged) as store:
        rows = store.tidy_rows()
    # Same rows, same order, same definitions, same values; each with its own seconds.
    assert without_seconds(rows) == without_seconds(reference["rows"])
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in rows)
    # Merging again adds nothing.
    res = runner.invoke(app, ["merge", *map(str, shards), "-o", str(merged)])
    assert res.exit_code == 0 and "0 values added" in res.stdout

    out_csv, out_json = tmp_path / "t.csv", tmp_path / "t.json"
    res = runner.invoke(
        app, ["export", str(merged), "--csv", str(out_csv), "--json", str(out_json)]
    )
    assert res.exit_code == 0, res.output
    with out_csv.open() as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == len(rows) == 4 * 2 * N_METRICS
    for c, r in zip(csv_rows, rows, strict=True):
        assert (c["path"], c["metric"], c["representation"]) == (
            r["path"],
            r["metric"],
            r["representation"],
        )
        assert (c["value"] == "" and math.isnan(r["value"])) or float(c["value"]) == r["value"]
        assert float(c["seconds"]) == r["seconds"]
    records = json.loads(out_json.read_text())
    assert [(x["path"], x["metric"], x["value"], x["seconds"]) for x in records] == [
        (r["path"], r["metric"], r["value"], r["seconds"]) for r in rows
    ]
    res = runner.invoke(
        app,
        [
            "export",
            str(merged),
            "--csv",
            str(out_csv),
            "--metric",
            "rankme",
            "--representation",
            "backbone",
        ],
    )
    assert res.exit_code == 0 and "wrote 4 rows" in res.stdout


@pytest.mark.slow  # starts Python processes (imports of torch dominate)
def test_two_workers_give_the_same_table_as_one(
    reference: dict[str, Any], ckpt_root: Path, tmp_path: Path
) -> None:
    db = tmp_path / "workers.db"
    summary = tmp_path / "s.json"
    res = runner.invoke(
        app, sm.cli_args(ckpt_root, db, "--workers", "2", "--summary-json", str(summary))
    )
    assert res.exit_code == 0, res.output
    info = json.loads(summary.read_text())
    assert (info["ok"], info["loaded"], info["workers"]) == (4, 4, 2)
    with ResultStore(db) as store:
        got = table(store.tidy_rows())
    # Worker processes run with fewer torch threads; sums may round differently.
    assert_same_table(got, table(reference["rows"]), rel=1e-6)


# --------------------------------------------------------------------------- progress

LINE = re.compile(
    r"^\[(?P<i>\d+)/(?P<n>\d+)\] ok (?P<path>.+): (?P<values>\d+) values in (?P<secs>[^(]+?)"
    r" \((?P<costs>[^)]*)\)(?:; about (?P<left>.+) left)?$"
)


def test_progress_lines_show_cost_and_time_left_even_in_a_log_file(
    ckpt_root: Path, tmp_path: Path
) -> None:
    from sslwatch.cli.sweep import format_seconds

    # A run folder whose name is rich markup: it must be printed as it is.
    odd = tmp_path / "[bold]odd"
    odd.mkdir()
    for i, src in enumerate(("alpha/epoch_0.pt", "alpha/epoch_1.pt", "beta/epoch_0.safetensors")):
        shutil.copy(ckpt_root / "runs" / src, odd / f"epoch_{i}{Path(src).suffix}")
    summary = tmp_path / "s.json"
    args = [
        "sweep",
        "--model",
        sm.TINY,
        "--checkpoints",
        glob.escape(str(odd)) + "/epoch_*",
        "--data",
        "digits",
        "--db",
        str(tmp_path / "p.db"),
        "--metrics",
        "rankme,silhouette",
        "--sample-size",
        SAMPLE,
        "--summary-json",
        str(summary),
    ]
    res = runner.invoke(app, args)  # CliRunner's stderr is not a terminal: a log file
    assert res.exit_code == 0, res.output
    outcomes = json.loads(summary.read_text())["outcomes"]
    lines = [line for line in res.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 3, res.stderr
    totals: list[float] = []
    for line in lines:
        m = LINE.match(line)
        assert m is not None, line
        i, n = int(m["i"]), int(m["n"])
        assert n == 3 and m["path"].startswith(str(odd)) and m["values"] == "2"
        outcome = next(o for o in outcomes if o["path"] == m["path"])
        totals.append(outcome["timings"]["total"])
        assert m["secs"] == format_seconds(outcome["timings"]["total"])
        # The most expensive parts, by name, with their seconds.
        names = [c.rsplit(" ", 2)[0] for c in m["costs"].split(", ")]
        assert 1 <= len(names) <= 3
        known = {"load", "embed", "store", "rankme", "silhouette", "kmeans", "second_moments"}
        assert set(names) <= known | {"spectra", "sample_distances"}, names
        # From the first checkpoint on, the time left: remaining checkpoints x mean seconds
        # per checkpoint so far (none after the last).
        if i == n:
            assert m["left"] is None, line
        else:
            assert m["left"] == format_seconds((n - i) * sum(totals) / len(totals)), line
    assert "[bold]odd" in lines[0]  # markup printed literally, not interpreted
    # A re-run skips all three and says so on one line.
    res = runner.invoke(app, args)
    assert res.exit_code == 0
    assert "[3/3] skipped 3 checkpoint(s)" in res.stderr


def _fake_outcome(status: str, total: float | None = None) -> Any:
    from sslwatch.offline.sweep import CheckpointOutcome

    timings = {} if total is None else {"load": 0.0, "embed": total / 2, "total": total}
    return CheckpointOutcome("ckpt.pt", "run", None, None, status, timings=timings)


def test_time_left_is_divided_by_the_workers_in_use() -> None:
    from sslwatch.cli.sweep import ProgressLog

    log = ProgressLog(workers=2)
    log.total = 5
    assert log.remaining_seconds() is None
    log.add(_fake_outcome("ok", 10.0))
    assert log.remaining_seconds() == pytest.approx(4 * 10.0 / 2)
    log.add(_fake_outcome("failed", 20.0))  # failures took time too
    assert log.remaining_seconds() == pytest.approx(3 * 15.0 / 2)
    # Skipped checkpoints cost nothing and are said once; with one checkpoint left, one
    # worker does it, however many there are.
    log = ProgressLog(workers=4)
    log.total = 4
    assert log.add(_fake_outcome("skipped")) == [] and log.add(_fake_outcome("skipped")) == []
    lines = log.add(_fake_outcome("ok", 8.0))
    assert lines[0] == "[2/4] skipped 2 checkpoint(s): every value already stored"
    assert lines[1] == "[3/4] ok ckpt.pt: 0 values in 8.00 s (embed 4.00 s); about 8.00 s left"
    assert log.add(_fake_outcome("ok", 4.0))[-1].endswith("(embed 2.00 s)")  # nothing left


# --------------------------------------------------------------------------- crash safety


def _finished_points(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(con.execute("SELECT count(*) FROM points WHERE status = 'ok'").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        con.close()


@pytest.mark.slow  # starts Python processes (imports of torch dominate)
def test_sigkill_mid_sweep_then_rerun_equals_an_uninterrupted_sweep(
    reference: dict[str, Any], ckpt_root: Path, tmp_path: Path
) -> None:
    db = tmp_path / "crash.db"
    env = dict(os.environ)
    env[sm.SLEEP_ENV] = "0.15"  # ~1.2 s of forward passes per checkpoint: killable
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # same arithmetic as in here
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *sm.cli_args(ckpt_root, db, model=sm.SLOW)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while _finished_points(db) < 1:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the sweep never finished a checkpoint"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = _finished_points(db)
    assert 1 <= finished < 4, finished  # killed part-way
    with ResultStore(db) as store:
        partial = table(store.tidy_rows())
    assert len(partial) == finished * 2 * N_METRICS  # whole checkpoints only

    summary = tmp_path / "resume.json"
    res = runner.invoke(
        app, sm.cli_args(ckpt_root, db, "--summary-json", str(summary), model=sm.SLOW)
    )
    assert res.exit_code == 0, res.output
    info = json.loads(summary.read_text())
    assert info["loaded"] == 4 - finished and info["skipped"] == finished
    assert info["values_stored"] == (4 - finished) * 2 * N_METRICS
    with ResultStore(db) as store:
        rows = store.tidy_rows()
    got = table(rows)  # asserts one value per (checkpoint, representation, definition)
    assert len(rows) == 4 * 2 * N_METRICS
    assert_same_table(got, table(reference["rows"]))


# --------------------------------------------------------------------------- failures


def _bad_checkpoints(root: Path, ckpt_root: Path) -> dict[str, Path]:
    good = torch.load(ckpt_root / "runs/alpha/epoch_1.pt", weights_only=True)
    paths = {
        "corrupt": root / "corrupt" / "epoch_1.pt",
        "missing": root / "missing" / "epoch_1.pt",
        "pickle": root / "pickle" / "epoch_1.pt",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True)
    buf = (ckpt_root / "runs/alpha/epoch_1.pt").read_bytes()
    paths["corrupt"].write_bytes(buf[: len(buf) // 3])  # truncated mid-file
    torch.save({k: v for k, v in good.items() if not k.startswith("projector.")}, paths["missing"])
    torch.save({"state_dict": good, "args": argparse.Namespace(lr=0.1)}, paths["pickle"])
    return paths


def test_bad_checkpoints_fail_one_line_each_and_nothing_is_lost(
    reference: dict[str, Any], ckpt_root: Path, tmp_path: Path
) -> None:
    db = tmp_path / "bad.db"
    shutil.copy(reference["db"], db)
    bad = _bad_checkpoints(tmp_path / "bad", ckpt_root)
    summary = tmp_path / "s.json"
    res = runner.invoke(
        app,
        sm.cli_args(
            ckpt_root,
            db,
            "--checkpoints",
            str(tmp_path / "bad/*/epoch_*.pt"),
            "--summary-json",
            str(summary),
        ),
    )
    assert res.exit_code == 3, res.output  # exit code = number of failed checkpoints
    lines = error_lines(res.stderr)
    assert len(lines) == 3, res.stderr
    for kind, path in bad.items():
        mine = [line for line in lines if str(path) in line]
        assert len(mine) == 1, (kind, lines)
    text = {kind: next(x for x in lines if str(p) in x) for kind, p in bad.items()}
    assert "corrupt" in text["corrupt"] or "truncated" in text["corrupt"]
    assert "missing" in text["missing"] and "projector" in text["missing"]
    assert "--trust-checkpoints" in text["pickle"]
    info = json.loads(summary.read_text())
    assert (info["skipped"], info["failed"], info["loaded"]) == (4, 3, 0)
    with ResultStore(db) as store:
        assert store.tidy_rows() == reference["rows"]  # nothing stored was lost or changed
        failures = {f["path"]: f["error"] for f in store.failures()}
    assert failures.keys() == {str(p) for p in bad.values()}
    assert all(str(path) in err for path, err in failures.items())

    # The documented opt-in loads the pickle-only checkpoint; the others still fail.
    res = runner.invoke(
        app,
        sm.cli_args(ckpt_root, db, "--checkpoints", str(bad["pickle"]), "--trust-checkpoints"),
    )
    assert res.exit_code == 0, res.output
    with ResultStore(db) as store:
        assert len(store.tidy_rows(run="pickle")) == 2 * N_METRICS
        assert {f["path"] for f in store.failures()} == {str(bad["corrupt"]), str(bad["missing"])}


def test_missing_data_path_is_a_one_line_error_and_the_store_is_untouched(
    reference: dict[str, Any], ckpt_root: Path, tmp_path: Path
) -> None:
    db = tmp_path / "data.db"
    shutil.copy(reference["db"], db)
    for spec in (f"npz:{tmp_path / 'nope' / 'data.npz'}", f"folder:{tmp_path / 'no_images'}"):
        args = sm.cli_args(ckpt_root, db)
        args[args.index("--data") + 1] = spec
        res = runner.invoke(app, args)
        assert res.exit_code == 101, res.output
        lines = error_lines(res.stderr)
        assert len(lines) == 1 and spec.partition(":")[2] in lines[0], res.stderr
    with ResultStore(db) as store:
        assert store.tidy_rows() == reference["rows"]


def test_merge_and_export_refuse_bad_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    res = runner.invoke(app, ["merge", str(missing), "-o", str(tmp_path / "out.db")])
    assert res.exit_code == 2 and str(missing) in res.stderr
    res = runner.invoke(app, ["export", str(missing), "--csv", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and str(missing) in res.stderr
    assert not missing.exists()  # export does not create an empty store
    res = runner.invoke(app, ["export", str(missing)])
    assert res.exit_code == 2 and "--csv" in res.stderr
