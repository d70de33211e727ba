"""Benchmark: the sweep's per-checkpoint overhead beyond model work and metric computation.

A small 1-D CNN (backbone + projector) on MNIST-1D (5000 signals), several checkpoints.
Side by side in one process, best of a few repeats after a warm-up:

* **bare**: what a user would otherwise write per checkpoint: ``load_model`` (state dict
  into the factory's model) + ``extract_embeddings`` (both representations, one pass) +
  ``evaluate`` per representation with the same settings;
* **sweep**: ``run_sweep`` over the same checkpoints into a fresh results store (globbing,
  path parsing, the skip check, run/point records, definitions, one transaction per
  checkpoint, the summary).

The overhead ratio is ``sweep / bare - 1`` (target: under 5%). The sweep's own accounting
(its wall time minus the time inside load / embed / metrics) is printed as well; it is
less noisy on a busy machine. The stored values are checked against the bare ones.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

FACTORY = f"{Path(__file__).resolve()}:small_cnn1d"
LAYERS = {"backbone": "backbone", "projector": "projector"}


class SmallCNN1d(nn.Module):
    """A small 1-D CNN for MNIST-1D signals (1, 40): backbone 128-d, projector 64-d."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv1d(1, 32, 5, padding=2),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Conv1d(32, 64, 5, stride=2, padding=2),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Conv1d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 10, 128),
            nn.ReLU(),
        )
        self.projector = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def small_cnn1d() -> nn.Module:
    """Factory used by the sweep (imported by file path)."""
    return SmallCNN1d()


def write_checkpoints(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = SmallCNN1d()
        # Perturb the BN statistics so that checkpoints differ beyond the init seed.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        path = root / "run" / f"epoch_{i}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        paths.append(path)
    return paths


def bare(
    paths: list[Path], ds: Any, *, sample_size: int, params: dict[str, Any]
) -> tuple[float, dict[tuple[str, str, str], float]]:
    from sslwatch.core.evaluate import evaluate
    from sslwatch.offline.checkpoints import import_factory, load_model
    from sslwatch.offline.embed import extract_embeddings

    factory = import_factory(FACTORY)
    values: dict[tuple[str, str, str], float] = {}
    start = time.perf_counter()
    for path in paths:
        model = load_model(factory, path)
        emb = extract_embeddings(model, ds, layers=LAYERS, progress=False)
        for rep in LAYERS:
            result = evaluate(
                emb[rep], labels=ds.y, k=10, sample_size=sample_size, seed=0, params=params
            )
            for name, value in result.items():
                values[(str(path), rep, name)] = value
    return time.perf_counter() - start, values


def swept(
    root: Path, db: Path, ds: Any, *, sample_size: int, params: dict[str, Any]
) -> tuple[float, Any]:
    from sslwatch.offline.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(
        model=FACTORY,
        checkpoints=[str(root / "run" / "epoch_*.pt")],
        data=ds,
        db=db,
        layers=LAYERS,
        sample_size=sample_size,
        params=params,
    )
    start = time.perf_counter()
    summary = run_sweep(cfg)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer checkpoints and repeats")
    args = parser.parse_args()
    n_ckpt, repeats, sample_size = (3, 3, 1000) if args.quick else (6, 5, 2000)
    params = {"linear_probe": {"l2": 1e-3}}

    from sslwatch.offline.data import load_dataset
    from sslwatch.offline.store import ResultStore

    ds = load_dataset("mnist1d")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_checkpoints(root, n_ckpt)
        # Warm-up (imports, allocator, caches), then alternate the two, best of `repeats`.
        bare(paths[:1], ds, sample_size=sample_size, params=params)
        swept(root, root / "warm.db", ds, sample_size=sample_size, params=params)
        t_bare, t_sweep, internal = math.inf, math.inf, math.inf
        work_in_sweep = math.inf
        values: dict[tuple[str, str, str], float] = {}
        for r in range(repeats):
            tb, values = bare(paths, ds, sample_size=sample_size, params=params)
            ts, summary = swept(
                root, root / f"sweep{r}.db", ds, sample_size=sample_size, params=params
            )
            assert summary.n_ok == n_ckpt, summary.failures
            work = sum(
                o.timings["load"] + o.timings["embed"] + o.timings["metrics"]
                for o in summary.outcomes
            )
            t_bare, t_sweep = min(t_bare, tb), min(t_sweep, ts)
            if ts - work < internal:
                internal, work_in_sweep = ts - work, work
        with ResultStore(root / "sweep0.db") as store:
            rows = store.tidy_rows()
    stored = {(r["path"], r["representation"], r["metric"]): r["value"] for r in rows}
    assert stored.keys() == values.keys(), "the sweep stored other metrics than bare evaluate"
    worst = max(
        0.0 if (math.isnan(a) and math.isnan(b)) or a == b else abs(a - b) / max(abs(b), 1e-12)
        for a, b in ((stored[k], values[k]) for k in values)
    )

    print(
        f"sweep overhead: small 1-D CNN on MNIST-1D (N=5000), {n_ckpt} checkpoints, "
        f"2 representations, {len(rows) // (2 * n_ckpt)} metrics each, "
        f"sample_size={sample_size}, torch threads={torch.get_num_threads()}, "
        f"best of {repeats}"
    )
    print(f"{'':34s}{'total s':>10s}{'per ckpt ms':>14s}")
    print(f"{'bare (load + embed + evaluate)':34s}{t_bare:10.3f}{1e3 * t_bare / n_ckpt:14.1f}")
    print(f"{'sslwatch sweep':34s}{t_sweep:10.3f}{1e3 * t_sweep / n_ckpt:14.1f}")
    print(
        f"{'overhead (sweep - bare)':34s}{t_sweep - t_bare:10.3f}"
        f"{1e3 * (t_sweep - t_bare) / n_ckpt:14.1f}"
    )
    print(f"{'overhead inside the sweep':34s}{internal:10.3f}{1e3 * internal / n_ckpt:14.1f}")
    print(f"overhead ratio, side by side: {100 * (t_sweep / t_bare - 1):+.2f}%  (target < 5%)")
    print(f"overhead ratio, sweep's own accounting: {100 * internal / work_in_sweep:.2f}%")
    print(f"values agree with bare evaluate: max relative difference {worst:.1e}")


if __name__ == "__main__":
    main()
