"""Thread-pool hygiene for CPU code that mixes numpy BLAS calls with torch ops."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from threadpoolctl import ThreadpoolController

__all__ = ["blas_threads", "torch_single_threaded", "torch_threads"]


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run the block with torch on ``n`` threads; yields torch's previous thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


@contextmanager
def torch_single_threaded() -> Iterator[int]:
    """Hold torch to one thread for the block; yields torch's previous thread count.

    Between numpy BLAS calls, torch's small element-wise ops wake its OpenMP team, which
    (with the default OMP_WAIT_POLICY) keeps spinning after the op and steals the cores
    from BLAS's own threads; held to one thread, torch leaves them to BLAS.
    """
    with torch_threads(1) as previous:
        yield previous


@functools.lru_cache(maxsize=1)
def _blas_pools() -> Any:
    """threadpoolctl's selection of the loaded BLAS libraries (built once: it scans them)."""
    return ThreadpoolController().select(user_api="blas")


def blas_threads(n: int | None) -> AbstractContextManager[Any]:
    """Run the block with numpy/scipy's BLAS on ``n`` threads (``None``: unchanged).

    Small products on a busy machine spend more time waking BLAS threads than
    computing, so callers that issue many of them hold BLAS to one thread. The limit is
    process-wide while the block runs and the previous setting is restored after it.
    """
    if n is None:
        return nullcontext()
    limit: AbstractContextManager[Any] = _blas_pools().limit(limits=int(n))
    return limit
