"""`sslwatch sweep` under torchrun and in SLURM job arrays.

The torchrun test is real: two processes on gloo (CPU), launched with
``python -m torch.distributed.run`` running ``sslwatch sweep`` (through
``torchrun_skewed_listing.py``, where rank 1 lists the checkpoints in another order).
It starts from the state a crashed run leaves behind (a shard store of an earlier
3-rank run beside ``--db``, one checkpoint half stored in ``--db``) and must end with
the same table as one uninterrupted one-process sweep (to 1e-9 relative), each
checkpoint embedded by exactly one rank, and nothing recomputed that was stored.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sslwatch.cli.sweep  # noqa: F401  (registers sweep)
import sweep_models as sm
from sslwatch.cli import EXIT_SETUP_ERROR, app
from sslwatch.core.registry import REGISTRY
from sslwatch.metrics._threads import torch_threads
from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep import (
    SweepSetupError,
    parse_shard,
    run_sweep,
    shard_store_path,
    shard_stores,
    slurm_array_shard,
    torchrun_env,
)

N_METRICS = len(REGISTRY.select(None, has_labels=True))
OK_LINE = re.compile(r"^\[rank (?P<rank>\d)/2\] \[\d+/\d+\] ok (?P<path>.+?): (?P<n>\d+) values")


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "sweep_checkpoints"
    sm.make_checkpoints(root)
    return root


def table(db: Path) -> dict[tuple[Any, ...], float]:
    out = {}
    with ResultStore(db) as store:
        for r in store.tidy_rows():
            key = (r["run"], r["path"], r["epoch"], r["step"], r["representation"], r["digest"])
            assert key not in out, key  # one value per checkpoint, representation, definition
            out[key] = r["value"]
    return out


@pytest.mark.slow  # two Python processes importing torch
def test_torchrun_two_ranks_resume_split_and_merge_equal_one_process(
    ckpt_root: Path, tmp_path: Path
) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    db = tmp_path / "results.db"
    with torch_threads(1):  # the ranks run one thread each (torchrun's OMP_NUM_THREADS=1)
        run_sweep(sm.reference_config(ckpt_root, tmp_path / "one.db"))
        # What a crash leaves: a shard of an earlier 3-rank run holding alpha/epoch_0, and
        # --db holding only RankMe of alpha/epoch_1.
        leftover = shard_store_path(db, 1, 3)
        run_sweep(sm.reference_config(ckpt_root, leftover, checkpoints=[str(paths["alpha0"])]))
        run_sweep(
            sm.reference_config(
                ckpt_root, db, checkpoints=[str(paths["alpha1"])], metrics=["rankme"], params={}
            )
        )
    summary = tmp_path / "summary.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a free local port: no clash with other jobs
            "--nproc-per-node",
            "2",
            str(Path(__file__).with_name("torchrun_skewed_listing.py")),  # python -m sslwatch
            *sm.cli_args(ckpt_root, db, "--summary-json", str(summary)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    info = json.loads(summary.read_text())
    assert (info["checkpoints"], info["skipped"], info["loaded"], info["failed"]) == (4, 1, 3, 0)
    assert info["world_size"] == 2 and info["rank"] == 0 and info["merge_problem"] is None
    by_path = {o["path"]: o for o in info["outcomes"]}
    assert by_path[str(paths["alpha0"])]["status"] == "skipped"  # from the leftover shard
    loaded = {p: o["rank"] for p, o in by_path.items() if o["loaded"]}
    assert set(loaded.values()) == {0, 1}
    # Each checkpoint embedded by exactly one rank, as its progress line says.
    lines = [m for line in proc.stderr.splitlines() if (m := OK_LINE.match(line))]
    assert sorted(m["path"] for m in lines) == sorted(loaded)
    assert {m["path"]: int(m["rank"]) for m in lines} == loaded
    # The half-stored checkpoint: only what --db lacked was computed.
    assert by_path[str(paths["alpha1"])]["values_stored"] == 2 * (N_METRICS - 1)
    assert by_path[str(paths["alpha0"])]["values_stored"] == 0
    # Every shard (this run's and the leftover) merged into --db and removed.
    assert shard_stores(db) == [] and not leftover.exists()

    got, want = table(db), table(tmp_path / "one.db")
    assert got.keys() == want.keys() and len(got) == 4 * 2 * N_METRICS
    for key, value in want.items():
        if math.isfinite(value):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert (math.isnan(value) and math.isnan(got[key])) or got[key] == value, key


def test_shard_auto_reads_the_slurm_array(ckpt_root: Path, tmp_path: Path) -> None:
    def env(task: int, count: int, **more: int) -> dict[str, str]:
        out = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count)}
        out.update({f"SLURM_ARRAY_TASK_{k.upper()}": str(v) for k, v in more.items()})
        return out

    assert parse_shard("auto", env(3, 4)) == (3, 4)
    assert slurm_array_shard(env(4, 4, min=1, max=4)) == (3, 4)  # --array=1-4
    assert slurm_array_shard(env(6, 4, min=0, max=6, step=2)) == (3, 4)  # --array=0-6:2
    # Every task of an array gets its own slice: the slices partition 0..N-1.
    assert sorted(slurm_array_shard(env(t, 5, min=10)) for t in range(10, 15)) == [
        (i, 5) for i in range(5)
    ]
    for bad, words in [
        ({}, "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set"),
        ({"SLURM_ARRAY_TASK_ID": "2"}, "SLURM_ARRAY_TASK_COUNT is not set"),
        (env(4, 4), "array task 4 is not one of 4"),  # --array=1,2,3,4 without MIN
        (env(5, 3, min=1), "array task 5 is not one of 3"),  # --array=1,2,5: uneven
        ({**env(1, 2), "SLURM_ARRAY_TASK_ID": "x"}, "SLURM_ARRAY_TASK_ID='x' is not an int"),
    ]:
        with pytest.raises(SweepSetupError, match=re.escape(words)) as info:
            slurm_array_shard(bad)
        assert "--shard I/N" in str(info.value) and "\n" not in str(info.value)

    # On the command line: task 1 of 2 takes the 2nd and 4th checkpoints (as --shard 1/2).
    db, out = tmp_path / "task1.db", tmp_path / "s.json"
    runner = CliRunner()
    res = runner.invoke(
        app,
        sm.cli_args(
            ckpt_root,
            db,
            *("--shard", "auto", "--summary-json", str(out), "--metrics", "rankme"),
            probe=False,
        ),
        env={**env(1, 2), "SLURM_ARRAY_TASK_MIN": "0"},
    )
    assert res.exit_code == 0, res.output
    info = json.loads(out.read_text())
    assert info["shard"] == [1, 2] and info["checkpoints"] == 2
    paths = sm.make_checkpoints(ckpt_root)
    ordered = sorted(map(str, paths.values()))  # natural order = plain order here
    assert [o["path"] for o in info["outcomes"]] == ordered[1::2]
    # Outside an array: exit 101 with one line naming the variables and the way out.
    res = runner.invoke(
        app,
        sm.cli_args(ckpt_root, tmp_path / "x.db", "--shard", "auto"),
        env={"SLURM_ARRAY_TASK_ID": "", "SLURM_ARRAY_TASK_COUNT": ""},
    )
    assert res.exit_code == EXIT_SETUP_ERROR
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SLURM_ARRAY_TASK_ID" in errors[0], res.stderr
    assert not (tmp_path / "x.db").exists()


def test_torchrun_variables_are_read_and_checked(
    ckpt_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert torchrun_env({}) is None
    assert torchrun_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None
    got = torchrun_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert got is not None and (got.rank, got.world_size, got.local_rank) == (3, 4, 1)
    with pytest.raises(SweepSetupError, match="LOCAL_RANK=''"):
        torchrun_env({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(SweepSetupError, match="0 <= RANK < WORLD_SIZE"):
        torchrun_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})

    assert shard_store_path(tmp_path / "r.db", 1, 8) == tmp_path / "r.db.rank1-of-8"
    for name in ("r.db.rank1-of-2", "r.db.rank0-of-2", "r.db.rank0-of-10", "r.db.rank0-of-2-wal"):
        (tmp_path / name).write_text("")
    assert [p.name for p in shard_stores(tmp_path / "r.db")] == [
        "r.db.rank0-of-2",
        "r.db.rank1-of-2",
        "r.db.rank0-of-10",
    ]

    cfg = sm.reference_config(ckpt_root, tmp_path / "d.db", distributed=True)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SweepSetupError, match="distributed=True needs the torchrun variables"):
        run_sweep(cfg)
    # WORLD_SIZE without torchrun's rendezvous address: a clear error, nothing written.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SweepSetupError, match="MASTER_ADDR and MASTER_PORT not; launch with"):
        run_sweep(cfg)
    # distributed=False (the Python API's default) ignores the variables.
    summary = run_sweep(
        sm.reference_config(
            ckpt_root,
            tmp_path / "plain.db",
            checkpoints=[str(ckpt_root / "runs/alpha/epoch_0.pt")],
            metrics=["rankme"],
            params={},
        )
    )
    assert summary.n_ok == 1 and summary.world_size is None
    assert not (tmp_path / "d.db").exists()


def test_rank0_removes_merged_shards_and_keeps_conflicting_ones(
    ckpt_root: Path, tmp_path: Path
) -> None:
    from sslwatch.offline.sweep.distributed import _merge_shards

    db = tmp_path / "m.db"
    one = [str(ckpt_root / "runs/alpha/epoch_0.pt")]
    run_sweep(sm.reference_config(ckpt_root, db, checkpoints=one, metrics=["rankme"], params={}))
    clean, clash = shard_store_path(db, 0, 2), shard_store_path(db, 1, 2)
    for shard in (clean, clash):
        shutil.copy(db, shard)
    con = sqlite3.connect(clash)
    con.execute("UPDATE results SET value = value * 2")
    con.commit()
    con.close()
    before = table(db)

    assert _merge_shards([clean], db, keep=True, when="of this run") is None  # --keep-shards
    assert clean.exists()
    assert _merge_shards([clean], db, keep=False, when="of this run") is None
    assert not clean.exists() and not Path(f"{clean}-wal").exists()
    problem = _merge_shards([clash], db, keep=False, when="of this run")
    assert problem is not None and "disagree with" in problem and "kept" in problem
    assert clash.exists()  # kept for the user to inspect and merge by hand
    assert table(db) == before  # the first value stays
