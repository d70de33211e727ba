"""Tiny models, an augmentation and checkpoint builders for the sweep tests.

Importable by file path (``"tests/sweep_models.py:tiny_cnn"``, the form
:func:`sslwatch.offline.checkpoints.import_factory` accepts), so the sweep's worker processes and
subprocesses find the factories without any ``sys.path`` set-up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
MODULE = str(HERE / "sweep_models.py")
TINY = f"{MODULE}:tiny_cnn"
SLOW = f"{MODULE}:slow_cnn"
JITTER = f"{MODULE}:jitter"
LAYERS = {"backbone": "backbone", "projector": "projector"}
SLEEP_ENV = "SSLWATCH_TEST_SLEEP"


class TinyCNN(nn.Module):
    """A small 2-D CNN for 8x8 digits: backbone (32-d) and projector (16-d)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 32),
            nn.ReLU(),
        )
        self.projector = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


class SlowCNN(TinyCNN):
    """:class:`TinyCNN` whose forward sleeps ``$SSLWATCH_TEST_SLEEP`` seconds per batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(float(os.environ.get(SLEEP_ENV, "0")))
        return super().forward(x)


def tiny_cnn() -> nn.Module:
    """Factory of :class:`TinyCNN`."""
    return TinyCNN()


def slow_cnn() -> nn.Module:
    """Factory of :class:`SlowCNN` (same weights layout as :func:`tiny_cnn`)."""
    return SlowCNN()


def jitter(x: torch.Tensor) -> torch.Tensor:
    """A batched augmentation drawing from torch's global RNG: noise and a 1-pixel shift."""
    shift = int(torch.randint(-1, 2, (1,)).item())
    return torch.roll(x, shifts=shift, dims=-1) + 0.05 * torch.randn_like(x)


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as the sweep sees them: (1797, 1, 8, 8) in [0, 1], and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(np.asarray(d.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.int64)


def train_with_labels(model: TinyCNN, steps: int = 300, seed: int = 0) -> TinyCNN:
    """Train the backbone briefly on digits with labels (linear head, Adam); eval mode."""
    x, y = digits_tensors()
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(32, 10)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = nn.functional.cross_entropy(head(model.backbone(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def make_checkpoints(root: Path) -> dict[str, Path]:
    """Write four checkpoints of two runs under ``root/runs`` (built once per ``root``).

    ``alpha/epoch_0.pt`` (random init, seed 0; BatchNorm statistics still the defaults),
    ``alpha/epoch_1.pt`` (the same init trained 300 steps with labels), ``beta/epoch_0.
    safetensors`` (random init, seed 1) and ``beta/checkpoints/epoch=2-step=40.ckpt`` (a
    Lightning-style dict with ``model.`` prefixes; trained 60 steps from seed 1).
    """
    runs = root / "runs"
    paths = {
        "alpha0": runs / "alpha" / "epoch_0.pt",
        "alpha1": runs / "alpha" / "epoch_1.pt",
        "beta0": runs / "beta" / "epoch_0.safetensors",
        "beta2": runs / "beta" / "checkpoints" / "epoch=2-step=40.ckpt",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    m0 = TinyCNN().eval()
    torch.save(m0.state_dict(), paths["alpha0"])
    torch.save(train_with_labels(m0, steps=300, seed=0).state_dict(), paths["alpha1"])
    torch.manual_seed(1)
    m1 = TinyCNN().eval()
    save_file({k: v.contiguous() for k, v in m1.state_dict().items()}, str(paths["beta0"]))
    trained = train_with_labels(m1, steps=60, seed=1)
    wrapped = {"epoch": 2, "state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}
    torch.save(wrapped, paths["beta2"])
    return paths


#: Settings of the reference sweep shared by the sweep tests.
REFERENCE: dict[str, Any] = {
    "model": TINY,
    "data": "digits",
    "layers": LAYERS,
    "sample_size": 400,
    "params": {"linear_probe": {"l2": 1e-3}},
}


def reference_config(root: Path, db: Path, **overrides: Any) -> Any:
    """A :class:`sslwatch.offline.sweep.SweepConfig` over the four checkpoints of ``root``."""
    from sslwatch.offline.sweep import SweepConfig

    kw: dict[str, Any] = {
        **REFERENCE,
        "checkpoints": [str(root / "runs/*/epoch_*"), str(root / "runs/*/checkpoints/*.ckpt")],
        "db": db,
    }
    kw.update(overrides)
    return SweepConfig(**kw)


def reference_db(root: Path) -> tuple[Path, Any]:
    """An uninterrupted single-process sweep of the reference settings (once per root).

    Returns the database and the summary of the sweep that built it (``None`` when it
    was built earlier in this process tree and reused).
    """
    from sslwatch.offline.sweep import run_sweep

    make_checkpoints(root)
    db = root / "reference.db"
    if db.exists():
        return db, None
    tmp = root / f"reference-{os.getpid()}.db"
    summary = run_sweep(reference_config(root, tmp))
    if summary.n_ok != 4:
        raise RuntimeError(f"reference sweep failed: {summary.failures}")
    os.replace(tmp, db)
    return db, summary


def cli_args(root: Path, db: Path, *extra: str, model: str = TINY, probe: bool = True) -> list[str]:
    """``sslwatch sweep`` arguments of the reference sweep (:data:`REFERENCE`) over the
    four checkpoints of ``root`` into ``db``, then ``extra``; ``probe=False`` leaves the
    fixed linear-probe L2 out."""
    return [
        "sweep",
        "--model",
        model,
        "--checkpoints",
        str(root / "runs/*/epoch_*"),
        "--checkpoints",
        str(root / "runs/*/checkpoints/*.ckpt"),
        "--data",
        "digits",
        "--db",
        str(db),
        "--layers",
        "backbone=backbone,projector=projector",
        "--sample-size",
        str(REFERENCE["sample_size"]),
        *(("--param", "linear_probe.l2=0.001") if probe else ()),
        *extra,
    ]
