"""``workers=N``: checkpoints evaluated in a pool of ``spawn`` processes on one machine,
each with its own store connection, ending with the sweep's process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import torch

from sslwatch.offline.data import Dataset
from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep.checkpoint import _process
from sslwatch.offline.sweep.config import CheckpointTask, SweepConfig
from sslwatch.offline.sweep.outcomes import CheckpointOutcome, _error_text
from sslwatch.offline.sweep.prepare import _prepare, _Prepared

_WORKER: dict[str, Any] = {}
_PARENT_POLL = 0.5  # seconds between a worker's checks that the sweep process lives


def _worker_threads(workers: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def _init_worker(
    config: SweepConfig, dataset: Dataset, threads: int, model_threads: int, parent: int
) -> None:
    _exit_with_parent(parent)
    torch.set_num_threads(threads)
    prep = _prepare(config, dataset)
    prep.model_threads = model_threads
    _WORKER["prep"] = prep


def _exit_with_parent(parent: int) -> None:
    """End this worker within _PARENT_POLL seconds once the sweep's process is gone.

    A worker whose parent was killed (kill -9, out of memory) is re-parented, so its
    parent pid changes: a daemon thread polls for that and exits the process, which
    also lets the multiprocessing resource tracker see its last client go.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="sslwatch-parent-watch", daemon=True).start()


def _worker_job(task: CheckpointTask) -> CheckpointOutcome:
    prep: _Prepared = _WORKER["prep"]
    with ResultStore(prep.config.db) as store:
        return _process(task, prep, store)


def _run_parallel(
    config: SweepConfig,
    prep: _Prepared,
    todo: list[CheckpointTask],
    workers: int,
    store: ResultStore,
    report: Callable[[CheckpointOutcome], None],
) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        # The data travel once, as the initializer's argument (not inside the config).
        initargs=(
            replace(config, data=prep.dataset.name),
            prep.dataset,
            _worker_threads(workers),
            prep.model_threads,
            os.getpid(),
        ),
    ) as pool:
        futures: dict[Future[CheckpointOutcome], CheckpointTask] = {
            pool.submit(_worker_job, task): task for task in todo
        }
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            task = futures[fut]
            try:
                report(fut.result())
            except Exception as exc:  # the worker process died (e.g. out of memory)
                error = _error_text(exc, task.path, "the worker process")
                _record_failure_safely(store, task, error)
                report(
                    CheckpointOutcome(task.path, task.run, task.epoch, task.step, "failed", error)
                )


def _record_failure_safely(store: ResultStore, task: CheckpointTask, error: str) -> None:
    try:
        run_id = store.ensure_run(task.run)
        point = store.ensure_point(run_id, path=task.path, epoch=task.epoch, step=task.step)
        store.record_failure(point, error)
    except Exception:  # pragma: no cover - the failure is still reported to the caller
        return
