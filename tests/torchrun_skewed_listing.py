"""``python -m sslwatch`` as a torchrun rank whose checkpoint listing differs from rank
0's: rank 1 lists the checkpoints in reverse order, as a rank that listed a folder while
training wrote to it, or through a lagging network file system, could. The sweep must use
rank 0's list on every rank (each checkpoint embedded once, the right one)."""

from __future__ import annotations

import os

import sslwatch.offline.sweep.distributed as distributed
from sslwatch.cli import app
from sslwatch.offline.sweep.config import CheckpointTask, SweepConfig

if os.environ.get("RANK") == "1":
    listed = distributed.plan_checkpoints

    def reversed_listing(config: SweepConfig) -> list[CheckpointTask]:
        return listed(config)[::-1]

    distributed.plan_checkpoints = reversed_listing  # type: ignore[assignment]

if __name__ == "__main__":
    app(prog_name="sslwatch")
