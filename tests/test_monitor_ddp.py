"""Monitor under torch.distributed: 2 CPU processes (gloo) equal one process fed everything.

The test starts two worker processes itself (this file, run as a script), rendezvous
through a file store (no port to race for), bounded by a timeout. Rank 0 and rank 1 get
unequal numbers of batches of unequal sizes; one monitor gets no data at all on rank 1.
Each rank writes its results; the test compares them with a single in-process monitor fed
all the batches in another order. A labelled monitor checks the label references: rank 1
sees fewer classes than rank 0 (the class count is agreed), one batch comes unlabelled.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslwatch.online.monitor import Monitor

SPECTRUM = ["rankme", "stable_rank", "alpha_req", "entropy_gaussian"]
POINTS = ["silhouette", "cluster_agreement", "entropy", "collapse_std"]
LABELS = ["rankme", "ridge_probe", "knn_accuracy"]
VIEWS = ["rankme", "lidar", "alignment", "uniformity"]
RESERVOIR = 96
TIMEOUT_S = 240


def make_data() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Batches of (n_i, 12) float64 embeddings with a decaying spectrum, and (n_i, 2, 6) views."""
    rng = np.random.default_rng(123)
    sizes = [37, 50, 11, 64, 29, 48, 5, 71, 40, 33]
    d = 12
    scales = np.arange(1, d + 1, dtype=np.float64) ** -0.7
    emb, views = [], []
    for n in sizes:
        emb.append(torch.from_numpy(rng.standard_normal((n, d)) * scales + 0.2))
        base = rng.standard_normal((n, 6))
        views.append(
            torch.from_numpy(
                np.stack([base + 0.3 * rng.standard_normal((n, 6)) for _ in range(2)], axis=1)
            )
        )
    return emb, views


def make_labels(emb: list[torch.Tensor]) -> list[torch.Tensor]:
    """Class indices from the sign pattern of two coordinates: 4 classes in the first 7
    batches (rank 0's), 2 in the last 3 (rank 1's)."""
    out = []
    for i, z in enumerate(emb):
        code = (z[:, 0] > 0.2).long() + 2 * (z[:, 1] > 0.2).long()
        out.append(code % (4 if i < 7 else 2))
    return out


def make_monitors() -> dict[str, Monitor]:
    return {
        "spectrum": Monitor(SPECTRUM, name="spectrum", alarms=None),
        "points": Monitor(POINTS, name="points", reservoir_size=RESERVOIR, seed=3, alarms=None),
        "views": Monitor(VIEWS, name="views", reservoir_size=RESERVOIR, alarms=None),
        "rank0_only": Monitor(
            ["rankme", "collapse_std"], name="rank0_only", reservoir_size=RESERVOIR, alarms=None
        ),
        # float32 rows through the mixed-precision route: each rank centres on its own
        # first batch, so the pending sums must be folded into the raw moments before the
        # all_reduce (and kept after it)
        "spectrum32": Monitor(SPECTRUM, name="spectrum32", alarms=None, gram_dtype="float32"),
        # label references: statistics summed, labelled reservoirs gathered
        "labels": Monitor(
            LABELS, name="labels", reservoir_size=RESERVOIR, alarms=None, heldout_fraction=0.3
        ),
    }


def feed(
    monitors: dict[str, Monitor],
    emb: list[torch.Tensor],
    views: list[torch.Tensor],
    indices: list[int],
    with_rank0_only: bool,
) -> None:
    labels = make_labels(emb)
    for i in indices:
        monitors["labels"].update(emb[i], labels=None if i == 2 else labels[i], step=i)
        monitors["spectrum"].update(emb[i], step=i)
        monitors["spectrum32"].update(emb[i].float(), step=i)
        monitors["points"].update(emb[i], step=i)
        monitors["views"].update(views[i][:, 0], views=views[i], step=i)
        if with_rank0_only:
            monitors["rank0_only"].update(emb[i], step=i)


def summarise(monitors: dict[str, Monitor]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, monitor in monitors.items():
        result = monitor.compute()
        sample = monitor.sample()
        out[key] = {
            "values": {k: (repr(v)) for k, v in result.items()},
            "n_rows": result.n_rows,
            "n_sample": result.n_sample,
            "n": {k: d.n for k, d in result.definitions.items()},
            "outcome": {k: repr(d.outcome) for k, d in result.definitions.items()},
            "sample": None if sample is None else sample.tolist(),
        }
    return out


RANK_BATCHES = {0: [0, 1, 2, 3, 4, 5, 6], 1: [7, 8, 9]}  # 7 vs 3 batches, unequal sizes


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        emb, views = make_data()
        monitors = make_monitors()
        feed(monitors, emb, views, RANK_BATCHES[rank], with_rank0_only=rank == 0)
        summary = summarise(monitors)
        # keep accumulating after a compute: rank 0 feeds one more batch
        if rank == 0:
            monitors["spectrum32"].update(emb[9].float())
        more = monitors["spectrum32"].compute()
        summary["more32"] = {"rankme": repr(more["rankme"]), "n_rows": more.n_rows}
        # a second window after reset: only rank 1 sees data this time
        for m in monitors.values():
            m.reset()
        if rank == 1:
            monitors["spectrum"].update(emb[0])
        again = monitors["spectrum"].compute()
        summary["after_reset"] = {"rankme": repr(again["rankme"]), "n_rows": again.n_rows}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(summary))
    finally:
        torch.distributed.destroy_process_group()


def run_workers(tmp_path: Path) -> list[dict[str, Any]]:
    init_file = tmp_path / "rendezvous"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), "2", str(init_file), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT_S)
            logs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_two_rank_gloo_equals_single_process(tmp_path: Path) -> None:
    ranks = run_workers(tmp_path)
    emb, views = make_data()
    single = make_monitors()
    # one process fed all batches, in another order than the ranks' concatenation
    feed(single, emb, views, list(reversed(range(10))), with_rank0_only=False)
    for i in reversed(RANK_BATCHES[0]):  # the monitor only rank 0 fed
        single["rank0_only"].update(emb[i])
    expected = summarise(single)

    for rank, got in enumerate(ranks):
        for key in ("spectrum", "points", "views", "rank0_only", "spectrum32", "labels"):
            g, e = got[key], expected[key]
            assert g["n_rows"] == e["n_rows"], (rank, key)
            assert g["n"] == e["n"], (rank, key)
            assert g["sample"] == e["sample"], (rank, key)  # rank-split-invariant reservoir
            assert g["outcome"] == e["outcome"], (rank, key)  # e.g. the ridge probe's l2
            for name, value in e["values"].items():
                gv, ev = float(g["values"][name]), float(value)
                assert math.isfinite(ev), (key, name)
                if key == "spectrum32":  # float32 products around per-rank shifts
                    assert gv == pytest.approx(ev, rel=1e-6), (rank, key, name)
                elif key == "spectrum" or name in ("rankme", "stable_rank", "alpha_req"):
                    assert gv == pytest.approx(ev, rel=1e-9), (rank, key, name)
                else:
                    # point and view metrics: the sample is identical (asserted above), so
                    # the values agree up to BLAS/thread reduction order across processes
                    assert gv == pytest.approx(ev, rel=1e-12, abs=1e-15), (rank, key, name)
    single["spectrum32"].update(emb[9].float())
    more = single["spectrum32"].compute()
    for got in ranks:
        assert got["more32"]["n_rows"] == more.n_rows == sum(len(e) for e in emb) + len(emb[9])
        assert float(got["more32"]["rankme"]) == pytest.approx(more["rankme"], rel=1e-6)
    # every rank returns the same values (bit for bit: same sample, same thread setup)
    assert ranks[0] == ranks[1]
    # the reservoir really subsampled: fewer kept than seen
    assert expected["points"]["n_sample"] == RESERVOIR < expected["points"]["n_rows"]
    # after reset only rank 1 had data: both ranks see exactly that batch
    alone = Monitor(["rankme"], alarms=None)
    alone.update(emb[0])
    assert ranks[0]["after_reset"]["n_rows"] == emb[0].shape[0]
    assert float(ranks[0]["after_reset"]["rankme"]) == pytest.approx(
        alone.compute()["rankme"], rel=1e-12
    )


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
