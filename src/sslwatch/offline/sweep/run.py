"""The sweep (:func:`run_sweep`): plan, skip what is stored, evaluate the rest in this
process, in worker processes, or across torchrun ranks."""

from __future__ import annotations

import time
from collections.abc import Callable

from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep.checkpoint import _process
from sslwatch.offline.sweep.config import SweepConfig, SweepSetupError, plan_checkpoints
from sslwatch.offline.sweep.distributed import _run_distributed, torchrun_env
from sslwatch.offline.sweep.outcomes import CheckpointOutcome, SweepSummary, _one_line
from sslwatch.offline.sweep.prepare import _is_complete, _prepare, _stored_state
from sslwatch.offline.sweep.workers import _run_parallel


def run_sweep(
    config: SweepConfig,
    *,
    on_start: Callable[[int], None] | None = None,
    on_outcome: Callable[[CheckpointOutcome], None] | None = None,
) -> SweepSummary:
    """Embed and score every checkpoint of ``config``, storing what is missing.

    Args:
        config: the sweep (see :class:`SweepConfig` and :mod:`sslwatch.offline.sweep`).
        on_start: called once with the number of checkpoints, after planning.
        on_outcome: called with each :class:`CheckpointOutcome` as it becomes known
            (skipped checkpoints first, then evaluated ones as they finish).

    Returns:
        A :class:`SweepSummary`; its ``exit_code`` is ``min(failed, 100)``.

    Raises:
        SweepSetupError: the sweep cannot start (data, factory, metrics, checkpoints,
            database); nothing has been evaluated.
    """
    start = time.perf_counter()
    ranks = None if config.distributed is False else torchrun_env()
    if config.distributed is True and ranks is None:
        raise SweepSetupError(
            "distributed=True needs the torchrun variables RANK, WORLD_SIZE and LOCAL_RANK "
            "(launch with torchrun --nproc-per-node K); none are set."
        )
    if ranks is not None:
        return _run_distributed(config, ranks, start, on_start, on_outcome)
    tasks = plan_checkpoints(config)
    prep = _prepare(config)
    try:
        store = ResultStore(config.db)
    except (ValueError, OSError) as exc:
        raise SweepSetupError(_one_line(f"database {config.db}: {exc}")) from exc
    outcomes: dict[str, CheckpointOutcome] = {}

    def report(o: CheckpointOutcome) -> None:
        outcomes[o.path] = o
        if on_outcome is not None:
            on_outcome(o)

    with store:
        state = _stored_state(store)
        todo = []
        if on_start is not None:
            on_start(len(tasks))
        for task in tasks:
            if _is_complete(prep, state.get((task.run, task.path))):
                report(CheckpointOutcome(task.path, task.run, task.epoch, task.step, "skipped"))
            else:
                todo.append(task)
        workers = min(int(config.workers), len(todo))
        if workers <= 1:
            for task in todo:
                report(_process(task, prep, store))
        else:
            _run_parallel(config, prep, todo, workers, store, report)
    return SweepSummary(
        db=str(config.db),
        outcomes=tuple(outcomes[t.path] for t in tasks),
        seconds=time.perf_counter() - start,
        workers=int(config.workers),
        shard=config.shard,
        representations=prep.representations,
        metrics=prep.metric_names,
    )
