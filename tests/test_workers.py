"""Sweep worker processes: values independent of --workers, no worker outlives its sweep.

Oracles: the single-process sweep's stored values (bit for bit), and the process table
(/proc) after the sweep's process is killed with SIGKILL.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import sweep_models as sm
from sslwatch.offline.store import ResultStore, merge_stores
from sslwatch.offline.sweep import run_sweep

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")

LAUNCH = "import sslwatch.cli.sweep; from sslwatch.cli import app; app()"


def _values(db: Path) -> dict[tuple[str, str, str], float]:
    with ResultStore(db) as store:
        rows = store.tidy_rows()
    return {(r["path"], r["representation"], r["digest"]): r["value"] for r in rows}


@pytest.mark.slow  # starts worker processes (imports of torch dominate)
def test_values_and_merge_do_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    """--workers 2 runs each forward pass with the sweep process's torch thread count:
    the float32 rounding of the embeddings, and so every value, is the same bit for bit,
    and the two stores merge cleanly."""
    root = tmp_path / "ckpts"
    sm.make_checkpoints(root)
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    assert run_sweep(replace(sm.reference_config(root, one), workers=1)).n_ok == 4
    assert run_sweep(replace(sm.reference_config(root, two), workers=2)).n_ok == 4
    a, b = _values(one), _values(two)
    assert a.keys() == b.keys() and len(a) > 40
    for key, value in a.items():
        assert (math.isnan(value) and math.isnan(b[key])) or value == b[key], key
    summary = merge_stores([one, two], tmp_path / "merged.db")
    assert summary.n_conflicts == 0


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    """Running or sleeping (a zombie holds no memory and runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.slow  # starts Python processes
def test_workers_die_with_a_killed_sweep(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    sm.make_checkpoints(root)
    env = dict(os.environ)
    env[sm.SLEEP_ENV] = "0.5"  # slow forward passes: the workers are busy when killed
    args = [
        "sweep",
        "--model",
        sm.SLOW,
        "--checkpoints",
        str(root / "runs" / "**" / "*.pt"),
        "--data",
        "digits",
        "--layers",
        "backbone=backbone",
        "--db",
        str(tmp_path / "r.db"),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2:
            assert proc.poll() is None, "the sweep ended before its workers started"
            assert time.monotonic() < deadline, "no worker processes appeared"
            workers = [
                p
                for p in _children(proc.pid)
                if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
            time.sleep(0.1)
        time.sleep(1.0)  # let them get to work
        family = _children(proc.pid)  # the workers and the resource tracker
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [p for p in family if _alive(p)]
    for p in survivors:  # leave no stray process behind the test either
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} of {len(family)} child processes outlived the sweep"
