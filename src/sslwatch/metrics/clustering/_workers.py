"""Block-parallel CPU kernels: a thread pool for numpy block tasks, and block sizes.

numpy releases the GIL inside BLAS calls and array loops, so blocks of samples run in
parallel on a plain thread pool, each with one single-threaded BLAS call, while torch's
own thread team is held to one thread (see :mod:`sslwatch.metrics._threads`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import numpy as np
import torch

from sslwatch.metrics._threads import blas_threads, torch_single_threaded

# Working-memory budget (bytes) for one block of pairwise quantities.
BLOCK_BYTES = 64 * 2**20
# Never less work per block of a numpy kernel than this many multiply-adds (small
# problems run as one block on the calling thread: dispatching to threads costs more
# than it saves).
_MIN_BLOCK_WORK = 2**22


class Workers:
    """Runs numpy block tasks on ``n_threads`` threads (numpy releases the GIL inside BLAS
    calls and array loops); every thread keeps its own scratch buffers."""

    def __init__(self, n_threads: int) -> None:
        self._pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        self._local = threading.local()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def run(self, fn: Callable[[int, int], None], n: int, step: int) -> None:
        """Call ``fn(start, stop)`` on consecutive blocks of ``range(n)`` (all done on
        return; a task's exception is re-raised)."""
        starts = range(0, n, step)
        if self._pool is None or len(starts) < 2:
            for s in starts:
                fn(s, min(n, s + step))
        else:
            list(self._pool.map(lambda s: fn(s, min(n, s + step)), starts))

    def scratch(self, name: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """This thread's buffer ``name`` viewed as ``shape`` (reused between calls)."""
        bufs: dict[tuple[str, np.dtype], np.ndarray] = self._local.__dict__.setdefault("bufs", {})
        size = shape[0] * shape[1]
        buf = bufs.get((name, dtype))
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            bufs[(name, dtype)] = buf
        return buf[:size].reshape(shape)


@contextmanager
def cpu_workers(x: torch.Tensor) -> Iterator[Workers | None]:
    """numpy workers for a float32/float64 CPU tensor, with BLAS held to one thread for
    the duration (as scikit-learn's KMeans does); None elsewhere (torch kernels)."""
    if not (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)):
        yield None
        return
    with ExitStack() as stack:
        stack.enter_context(blas_threads(1))
        # torch's own small ops between the blocks run single-threaded meanwhile.
        n_threads = stack.enter_context(torch_single_threaded())
        workers = Workers(n_threads)
        stack.callback(workers.close)
        yield workers


def cpu_rows(rows: int, work_per_row: int) -> int:
    """Rows per block of a numpy kernel: ``rows``, or more for light rows."""
    return max(rows, _MIN_BLOCK_WORK // max(1, work_per_row))


def block_rows(n_cols: int, itemsize: int, n: int) -> int:
    """Rows of ``n_cols`` items of ``itemsize`` bytes that fit in ``BLOCK_BYTES`` (1..n)."""
    return max(1, min(n, BLOCK_BYTES // max(1, n_cols * itemsize)))
