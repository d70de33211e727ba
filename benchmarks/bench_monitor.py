"""Overhead of Monitor.update per training step, and the cost of Monitor.compute.

Side by side in one process, interleaved step by step: a training step of a small CNN
on CPU (forward + backward + SGD step, batch 256 of 3x32x32 images, three conv blocks and
a final linear layer producing a D-dimensional embedding) and ``Monitor.update`` on that
step's (detached) embeddings, for D = 512 and D = 2048. Printed: mean milliseconds per
step (amortised) and the ratio mean(update) / mean(step), for several configurations:

* ``default``: exact float64 moments (BLAS ``dsyrk`` on CPU, one BLAS thread) + content
  keys + reservoir;
* ``gram_dtype=float32``: float32 products instead (rows centred on a fixed
  shift, float32 ``ssyrk`` per batch summed in float64);
* ``blas_threads=None``: the default with the BLAS library's default thread pool;
* ``moment_fraction=1/8``, ``1/16``: only a keyed Bernoulli subsample of the rows is
  folded into the moments;
* ``every 2nd/3rd/4th batch`` and ``overhead_budget=0.02``: the default monitor fed by the
  Lightning callback's ``update_every_n_batches`` or its measured stride
  (:class:`sslwatch.online.budget.UpdateBudget`; 5 warm-up batches, then a power-of-two stride);
* ``deferred fold``: rows buffered and folded 8 batches at a time (amortised per step;
  measured with the same kernel, to show that batching the Gram does not save work);
* ``keys+reservoir only`` / ``spectrum only``: the two halves of ``default``.

Then the cost of watching layers through forward hooks (:mod:`sslwatch.online.hooks`):
the same CNN's forward pass (train mode, with autograd, as in a training step) plain,
with hooks that only pool each watched layer's output (global average of the conv maps),
and with a :class:`~sslwatch.online.hooks.LayerWatch` (pooling + ``Monitor.update`` per
layer), for 1, 2 and 4 watched layers; printed as overhead over the plain forward, in
total and per watched layer. Those differences are within the forward pass's run-to-run
noise on a CPU, so the work each hook adds is also timed directly: the pooling, and the
pooling plus ``Monitor.update``, of each watched layer's captured output (means over
repetitions), as a share of one training step (forward and backward).

Then ``compute()`` with the default reservoir (4096 rows) and the default metric set,
next to the reference a user would otherwise run (``torch.linalg.svdvals`` of all stored
embeddings, for RankMe), and a check that the streamed RankMe equals the one-shot value.

Run: ``.venv/bin/python benchmarks/bench_monitor.py`` (``--quick``: seconds).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.linalg import blas
from torch import nn

from sslwatch.metrics.spectrum import rankme
from sslwatch.online.budget import UpdateBudget
from sslwatch.online.hooks import LayerHooks, poolings, watch
from sslwatch.online.keys import content_keys
from sslwatch.online.monitor import Monitor
from sslwatch.online.settings import DEFAULT_RESERVOIR_SIZE


class SmallCNN(nn.Module):
    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(3, width), block(width, 2 * width), block(2 * width, 4 * width)
        )
        self.head = nn.Linear(4 * width * 4 * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def make_step(model: nn.Module, batch: int) -> Callable[[], torch.Tensor]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        z = model(x + 0.01 * torch.randn_like(x))
        # a contrastive-style loss on two halves of the batch (SSL-ish, cheap)
        a, b = (
            nn.functional.normalize(z[: batch // 2], dim=1),
            nn.functional.normalize(z[batch // 2 :], dim=1),
        )
        loss = nn.functional.cross_entropy(a @ b.T / 0.2, torch.arange(batch // 2))
        loss.backward()
        opt.step()
        return z.detach()

    return step


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def forward_macs(model: SmallCNN, image: int = 32) -> int:
    """Multiply-adds of one image's forward pass (convolutions and the linear head)."""
    macs, size = 0, image
    for conv in (m for m in model.features.modules() if isinstance(m, nn.Conv2d)):
        macs += size * size * conv.in_channels * conv.out_channels * 9
        size //= 2
    return macs + model.head.in_features * model.head.out_features


class EveryNth:
    """Feed a monitor only every n-th batch (the Lightning callback's
    ``update_every_n_batches``); its cost is averaged over all steps."""

    def __init__(self, monitor: Monitor, n: int) -> None:
        self.monitor, self.n, self.calls = monitor, n, 0

    def update(self, z: torch.Tensor) -> None:
        if self.calls % self.n == 0:
            self.monitor.update(z)
        self.calls += 1


class Budgeted:
    """Feed a monitor under an :class:`UpdateBudget` (the callback's ``overhead_budget``)."""

    def __init__(self, monitor: Monitor, fraction: float) -> None:
        self.monitor, self.budget = monitor, UpdateBudget(fraction)

    def record_step(self, seconds: float) -> None:
        self.budget.record_step(seconds)

    def update(self, z: torch.Tensor) -> None:
        if self.budget.should_update():
            start = time.perf_counter()
            self.monitor.update(z)
            self.budget.record_update(time.perf_counter() - start)


class DeferredFold:
    """Buffer rows and fold them into float64 moments ``every`` batches at a time."""

    def __init__(self, dim: int, every: int) -> None:
        self.outer = np.zeros((dim, dim), dtype=np.float64, order="F")
        self.buffer: list[np.ndarray] = []
        self.every = every

    def update(self, z: torch.Tensor) -> None:
        self.buffer.append(z.numpy().astype(np.float64))
        if len(self.buffer) == self.every:
            rows = np.concatenate(self.buffer)
            self.outer = blas.dsyrk(
                1.0, rows.T, beta=1.0, c=self.outer, trans=0, lower=0, overwrite_c=1
            )
            self.buffer = []


def bench_dim(dim: int, batch: int, steps: int, warmup: int) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    model = SmallCNN(dim)
    step = make_step(model, batch)
    configs: dict[str, Callable[[], Any]] = {
        "default": lambda: Monitor(),
        "gram_dtype=float32": lambda: Monitor(gram_dtype="float32"),
        "blas_threads=None": lambda: Monitor(blas_threads=None),
        "moment_fraction=1/8": lambda: Monitor(moment_fraction=0.125),
        "moment_fraction=1/16": lambda: Monitor(moment_fraction=0.0625),
        "keys+reservoir only": lambda: Monitor(["silhouette", "entropy", "collapse_std"]),
        "spectrum only": lambda: Monitor(["rankme", "alpha_req", "stable_rank"]),
        "spectrum only, float32": lambda: Monitor(
            ["rankme", "alpha_req", "stable_rank"], gram_dtype="float32"
        ),
        "deferred fold (x8)": lambda: DeferredFold(dim, 8),
        "every 2nd batch": lambda: EveryNth(Monitor(), 2),
        "every 3rd batch": lambda: EveryNth(Monitor(), 3),
        "every 4th batch": lambda: EveryNth(Monitor(), 4),
        "overhead_budget=0.02": lambda: Budgeted(Monitor(), 0.02),
    }
    monitors = {name: make() for name, make in configs.items()}
    step_times: list[float] = []
    update_times: dict[str, list[float]] = {name: [] for name in configs}
    fed: list[torch.Tensor] = []
    for i in range(warmup + steps):
        t_step, z = timed(step)
        for name, monitor in monitors.items():
            if isinstance(monitor, Budgeted):
                monitor.record_step(t_step)
            t_up, _ = timed(functools.partial(monitor.update, z))
            if i >= warmup:
                update_times[name].append(t_up)
        if i >= warmup:
            step_times.append(t_step)
        fed.append(z)
    # amortised: means over the timed steps (reservoir compactions and deferred folds
    # happen every few steps); the ratio is mean(update) / mean(step), interleaved
    step_mean = statistics.fmean(step_times)
    # the floor of exact moments: z^T z costs B D^2 / 2 multiply-adds (syrk), a training
    # step about 3x the forward pass (forward, two backward products) for B images
    step_macs = 3 * forward_macs(model) * batch
    gram_macs = batch * dim * dim // 2
    rows = [
        (
            f"FLOPs: z^T z {gram_macs / 1e9:.2f} G MAC vs step ~{step_macs / 1e9:.1f} G MAC "
            f"= {gram_macs / step_macs:.2%}",
            0.0,
            0.0,
        ),
        ("training step", 1e3 * step_mean, 1.0),
    ]
    for name, times in update_times.items():
        rows.append((name, 1e3 * statistics.fmean(times), statistics.fmean(times) / step_mean))
    # the streamed value is the one-shot value on everything fed: exactly with float64
    # moments (the default); with float32 products to what float32 resolves (this CNN's
    # head is low-rank: most singular values sit below float32's floor, see MonitorSettings)
    exact = rankme(torch.cat(fed))  # the one-shot route: float64 products
    for name, tol in (("spectrum only", 1e-9), ("spectrum only, float32", 1e-4)):
        streamed = monitors[name].compute()["rankme"]
        rel = abs(streamed - exact) / abs(exact)
        assert rel <= tol, (name, streamed, exact)
        rows.append((f"check: {name} RankMe vs one-shot float64: rel. diff {rel:.1e}", 0.0, 0.0))
    return rows


HOOKED_LAYERS = {
    1: ["head"],
    2: ["features.2", "head"],
    4: ["features.0", "features.1", "features.2", "head"],
}


def bench_hooks(dim: int, batch: int, steps: int, warmup: int) -> list[tuple[str, float, float]]:
    """Forward pass with 1/2/4 watched layers vs plain: (name, ms/forward, overhead ratio)."""
    torch.manual_seed(0)
    model = SmallCNN(dim).train()
    x = torch.randn(batch, 3, 32, 32)
    widths = {name: module for name, module in model.named_modules()}
    configs: dict[str, Callable[[], Any]] = {"plain forward": lambda: None}
    for n, layers in HOOKED_LAYERS.items():
        configs[f"{n} layer(s), pooling only"] = functools.partial(
            LayerHooks, model, layers, poolings(layers), lambda name, rows: None
        )
        configs[f"{n} layer(s), + Monitor.update"] = functools.partial(
            watch, model, layers, alarms=None
        )
    times: dict[str, list[float]] = {name: [] for name in configs}
    for i in range(warmup + steps):
        for name, attach in configs.items():  # interleaved: each config once per round
            hooks = attach()
            t, out = timed(lambda: model(x + 0.01 * torch.randn_like(x)))
            out.sum().backward()  # free the graph as a step would
            model.zero_grad(set_to_none=True)
            if hooks is not None:
                hooks.remove()
            if i >= warmup:
                times[name].append(t)
    plain = statistics.fmean(times["plain forward"])
    rows = [("plain forward", 1e3 * plain, 0.0)]
    for name, ts in times.items():
        if name == "plain forward":
            continue
        n = int(name.split()[0])
        over = (statistics.fmean(ts) - plain) / plain
        rows.append((f"{name} (per layer {over / n:+.2%})", 1e3 * statistics.fmean(ts), over))
    sizes = {  # a block's pooled width is its convolution's channel count
        name: dim if name == "head" else widths[name][0].out_channels for name in HOOKED_LAYERS[4]
    }
    described = ", ".join(f"{k} (D={v})" for k, v in sizes.items())
    rows.append((f"watched: {described}", 0.0, 0.0))
    return rows


def bench_hook_work(dim: int, batch: int, reps: int) -> list[tuple[str, int, float, float, float]]:
    """Per watched layer: (layer, D, ms pooling, ms pooling + Monitor.update, share of a
    training step), timed directly on the layer's captured output."""
    torch.manual_seed(0)
    model = SmallCNN(dim).train()
    step = make_step(model, batch)
    layers = HOOKED_LAYERS[4]
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(path).register_forward_hook(
            lambda module, args, out, path=path: captured.__setitem__(path, out.detach())
        )
        for path in layers
    ]
    step_times = [timed(step)[0] for _ in range(reps)]
    for handle in handles:
        handle.remove()
    step_mean = statistics.fmean(step_times[1:])
    pools = poolings(layers)
    rows = []
    for path in layers:
        out, pool = captured[path], pools[path]
        pooled = functools.partial(pool, out, path)
        pooled()  # warm-up
        t_pool = statistics.fmean(timed(pooled)[0] for _ in range(reps))
        monitor = Monitor(alarms=None)
        fed = functools.partial(_pool_and_update, monitor, pooled)
        fed()  # warm-up: allocates the D x D state
        t_both = statistics.fmean(timed(fed)[0] for _ in range(reps))
        d = int(pooled().shape[1])
        rows.append((path, d, 1e3 * t_pool, 1e3 * t_both, t_both / step_mean))
    return rows


def _pool_and_update(monitor: Monitor, pooled: Callable[[], torch.Tensor]) -> None:
    monitor.update(pooled())


def bench_compute(dim: int, reservoir: int, n_rows: int) -> list[tuple[str, float]]:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(n_rows, dim, generator=gen) @ torch.randn(dim, dim, generator=gen) / dim**0.5
    mon = Monitor(reservoir_size=reservoir, alarms=None)
    for chunk in z.split(256):
        mon.update(chunk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_compute, result = timed(mon.compute)
        t_svd, s = timed(lambda: torch.linalg.svdvals(z.double()))
    p = s / s.sum() + 1e-7
    reference = float(torch.exp(-(p * p.log()).sum()))
    rel = abs(result["rankme"] - reference) / reference
    assert rel <= 1e-9, (result["rankme"], reference)
    rows = [
        (f"compute() all default metrics (R={reservoir}; RankMe rel. diff {rel:.0e})", t_compute)
    ]
    rows += [
        (f"  of which {k}", v) for k, v in sorted(result.timings.items(), key=lambda kv: -kv[1])[:5]
    ]
    rows.append((f"reference: svdvals of all {n_rows} stored rows (RankMe only)", t_svd))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, runs in seconds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = 32 if args.quick else 256
    steps, warmup = (2, 1) if args.quick else (16, 3)
    warnings.filterwarnings("ignore", message=".*N < D")
    keys_check = torch.randn(8, 16)
    assert torch.equal(content_keys(keys_check), content_keys(keys_check))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, "
        f"{steps} timed steps after {warmup} warm-up (means, interleaved)"
    )
    for dim in (512, 2048):
        print(f"\nD = {dim}: update() per step vs one CNN training step")
        print(f"  {'configuration':<24} {'ms/step':>9} {'ratio':>9}")
        for name, ms, ratio in bench_dim(dim, batch, steps, warmup):
            if name.startswith(("check", "FLOPs")):
                print(f"  {name}")
            else:
                print(f"  {name:<24} {ms:9.2f} {ratio:9.2%}")
    print(f"\nforward hooks on watched layers (D = 512 head), batch {batch}")
    print(f"  {'configuration':<52} {'ms/fwd':>8} {'overhead':>9}")
    for name, ms, over in bench_hooks(512, batch, steps, warmup):
        if name.startswith("watched"):
            print(f"  {name}")
        else:
            print(f"  {name:<52} {ms:8.2f} {over:9.2%}")
    print(f"\nwork per watched layer, timed directly (batch {batch}; share of a training step)")
    print(f"  {'layer':<12} {'D':>5} {'pool ms':>9} {'+update ms':>11} {'of a step':>10}")
    total = 0.0
    for path, d, ms_pool, ms_both, share in bench_hook_work(512, batch, 5 if args.quick else 20):
        total += share
        print(f"  {path:<12} {d:>5} {ms_pool:9.3f} {ms_both:11.3f} {share:10.2%}")
    print(f"  all four layers: {total:.2%} of a training step")
    reservoir = 256 if args.quick else DEFAULT_RESERVOIR_SIZE
    for dim in (512, 2048) if not args.quick else (512,):
        n_rows = 2 * reservoir if args.quick else 4 * reservoir
        print(f"\nD = {dim}: compute() on {n_rows} streamed rows")
        for name, seconds in bench_compute(dim, reservoir, n_rows):
            print(f"  {name:<58} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
