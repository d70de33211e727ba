"""A sweep under torchrun: every rank evaluates its share of what ``db`` lacks into its own
shard store, and rank 0 merges the shards into ``db`` (see *Distributed* in
:mod:`sslwatch.offline.sweep`)."""

from __future__ import annotations

import glob
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep.checkpoint import _process
from sslwatch.offline.sweep.config import (
    CheckpointTask,
    SweepConfig,
    SweepSetupError,
    plan_checkpoints,
)
from sslwatch.offline.sweep.outcomes import CheckpointOutcome, SweepSummary, _one_line
from sslwatch.offline.sweep.prepare import _is_complete, _prepare, _Prepared, _stored_state

#: How long a rank waits for the others (the plan from rank 0; the slowest rank at the
#: end). Ranks get equal shares of the checkpoints, so the wait at the end is about one
#: checkpoint's time; a rank that dies closes its connections, which ends the wait at
#: once (and torchrun stops the other ranks when one fails).
DIST_TIMEOUT = timedelta(hours=24)

_SHARD_NAME = re.compile(r"\.rank(\d+)-of-(\d+)$")


@dataclass(frozen=True)
class TorchrunEnv:
    """This process's place in a torchrun job: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_env(env: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The torchrun variables, or ``None`` outside torchrun (or with one process).

    Raises:
        SweepSetupError: ``WORLD_SIZE`` is set but a variable is missing or malformed.
    """
    env = os.environ if env is None else env
    if not env.get("WORLD_SIZE", "").strip():
        return None
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        raw = env.get(name, "").strip()
        if not raw.isdigit():
            raise SweepSetupError(
                f"WORLD_SIZE is set (a torchrun job) but {name}={raw!r} is not a "
                "non-negative integer; launch with torchrun, which sets RANK, WORLD_SIZE "
                "and LOCAL_RANK."
            )
        values[name] = int(raw)
    world = values["WORLD_SIZE"]
    if world < 1 or values["RANK"] >= world:
        raise SweepSetupError(
            f"torchrun variables RANK={values['RANK']}, WORLD_SIZE={world}: need "
            "0 <= RANK < WORLD_SIZE."
        )
    if world == 1:
        return None
    return TorchrunEnv(values["RANK"], world, values["LOCAL_RANK"])


def shard_store_path(db: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The store rank ``rank`` of ``world_size`` writes: ``<db>.rank<R>-of-<W>``."""
    return Path(f"{os.fspath(db)}.rank{int(rank)}-of-{int(world_size)}")


def shard_stores(db: str | os.PathLike[str]) -> list[Path]:
    """Every ``<db>.rank<R>-of-<W>`` file beside ``db``, in (W, R) order."""
    found = []
    for name in glob.glob(glob.escape(os.fspath(db)) + ".rank*-of-*"):
        m = _SHARD_NAME.search(name)
        if m and os.path.isfile(name):
            found.append((int(m.group(2)), int(m.group(1)), Path(name)))
    return [p for _, _, p in sorted(found)]


def _rank_device(device: str | None, local_rank: int) -> str | None:
    """``cuda:<LOCAL_RANK>`` (modulo the GPUs) when the device is unset or plain ``cuda``
    and CUDA is available; otherwise the device as given."""
    if device in (None, "cuda") and torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return f"cuda:{index}"
    return device


def _join_group(ranks: TorchrunEnv) -> tuple[Any, bool]:
    """A gloo process group over every rank, and whether this call created it.

    Gloo, whatever the devices: the sweep only exchanges a plan, outcomes and barriers
    (small Python objects), never tensors, and gloo needs no GPU for that.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != ranks.world_size or dist.get_rank() != ranks.rank:
            raise SweepSetupError(
                f"the initialised process group has rank {dist.get_rank()} of "
                f"{dist.get_world_size()}, but RANK={ranks.rank}, WORLD_SIZE="
                f"{ranks.world_size}; run the sweep on every rank of the job."
            )
        if dist.get_backend() == "gloo":
            return None, False
        return dist.new_group(backend="gloo", timeout=DIST_TIMEOUT), False
    missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(n)]
    if missing:
        raise SweepSetupError(
            f"WORLD_SIZE={ranks.world_size} is set but {' and '.join(missing)} not; launch "
            "with torchrun (which sets them) or unset WORLD_SIZE."
        )
    dist.init_process_group(
        backend="gloo",
        rank=ranks.rank,
        world_size=ranks.world_size,
        timeout=DIST_TIMEOUT,
    )
    return None, True


def _agree(group: Any, world: int, error: str | None) -> None:
    """Raise the first rank's setup error on every rank (so that none waits forever)."""
    import torch.distributed as dist

    errors: list[Any] = [None] * world
    dist.all_gather_object(errors, error, group=group)
    for r, e in enumerate(errors):
        if e:
            raise SweepSetupError(e if r == 0 or e.startswith("rank ") else f"rank {r}: {e}")


@dataclass(frozen=True)
class _Plan:
    """Rank 0's plan, sent to every rank: which checkpoints are done, which to share.

    It carries rank 0's checkpoint list: ranks that listed the folder at another moment
    (training still writing checkpoints, a lagging network file system) must not read an
    index as another checkpoint.
    """

    tasks: tuple[CheckpointTask, ...]
    skipped: tuple[int, ...]  # indices into the task list
    todo: tuple[tuple[int, frozenset[tuple[str, str]]], ...]  # (index, digests stored)
    leftovers: tuple[str, ...]  # shard stores of an earlier run, merged into --db
    problem: str | None  # why leftovers were kept


def _leader_plan(config: SweepConfig, prep: _Prepared, tasks: list[CheckpointTask]) -> _Plan:
    """Rank 0 before any rank starts: merge shard stores an interrupted run left beside
    ``--db`` into it, then list what ``--db`` already holds."""

    db = Path(config.db)
    try:
        ResultStore(db).close()  # created when missing; a damaged store fails here
    except (ValueError, OSError) as exc:
        raise SweepSetupError(_one_line(f"database {db}: {exc}")) from exc
    leftovers = shard_stores(db)
    problem = None
    if leftovers:
        problem = _merge_shards(
            leftovers, db, keep=config.keep_shards, when="left by an earlier run"
        )
    with ResultStore(db, read_only=True) as store:
        state = _stored_state(store)
    skipped, todo = [], []
    for i, task in enumerate(tasks):
        reps = state.get((task.run, task.path))
        if _is_complete(prep, reps):
            skipped.append(i)
        else:
            known = frozenset(
                (rep, dg) for rep, (digests, _) in (reps or {}).items() for dg in digests
            )
            todo.append((i, known))
    return _Plan(tuple(tasks), tuple(skipped), tuple(todo), tuple(map(str, leftovers)), problem)


def _merge_shards(shards: Sequence[Path], db: Path, *, keep: bool, when: str) -> str | None:
    """Merge ``shards`` into ``db``; remove them unless ``keep`` or something went wrong.

    Returns ``None``, or the one-line problem (a damaged shard, conflicting values) for
    which the shards were kept.
    """
    from sslwatch.offline.store import merge_stores

    names = ", ".join(map(str, shards))
    try:
        result = merge_stores(shards, db)
    except (ValueError, OSError) as exc:
        return _one_line(
            f"merging the shard stores {when} ({names}) into {db} failed: {exc}; they are "
            f"kept: repair them (sslwatch doctor) and run sslwatch merge ... -o {db}"
        )
    if result.n_conflicts:
        first = result.conflicts[0]
        return _one_line(
            f"the shard stores {when} ({names}) disagree with {db} on {result.n_conflicts} "
            f"value(s) (first: {first}); the first values were kept and the shards are kept"
        )
    if not keep:
        for shard in shards:
            for path in (shard, *(Path(f"{shard}{x}") for x in ("-wal", "-shm", "-journal"))):
                path.unlink(missing_ok=True)
    return None


def _run_distributed(
    config: SweepConfig,
    ranks: TorchrunEnv,
    start: float,
    on_start: Callable[[int], None] | None,
    on_outcome: Callable[[CheckpointOutcome], None] | None,
) -> SweepSummary:
    """:func:`~sslwatch.offline.sweep.run_sweep` on one torchrun rank; see *Distributed* in
    :mod:`sslwatch.offline.sweep`."""
    import torch.distributed as dist

    group, owned = _join_group(ranks)
    try:
        return _distributed_sweep(config, ranks, group, start, on_start, on_outcome)
    finally:
        if owned:
            dist.destroy_process_group()


def _distributed_sweep(
    config: SweepConfig,
    ranks: TorchrunEnv,
    group: Any,
    start: float,
    on_start: Callable[[int], None] | None,
    on_outcome: Callable[[CheckpointOutcome], None] | None,
) -> SweepSummary:
    import torch.distributed as dist

    rank, world = ranks.rank, ranks.world_size
    config = replace(config, device=_rank_device(config.device, ranks.local_rank))
    error = None
    tasks: list[CheckpointTask] = []
    try:
        if int(config.workers) > 1:
            raise SweepSetupError(
                f"workers={config.workers} under torchrun: every rank is already one worker; "
                "drop --workers and raise --nproc-per-node instead."
            )
        tasks = plan_checkpoints(config)
        prep = _prepare(config)
    except SweepSetupError as exc:
        error = str(exc)
    _agree(group, world, error)

    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = _leader_plan(config, prep, tasks)
        except SweepSetupError as exc:
            box[0] = str(exc)
    dist.broadcast_object_list(box, src=0, group=group)
    if isinstance(box[0], str):
        raise SweepSetupError(box[0])
    plan: _Plan = box[0]
    tasks = list(plan.tasks)
    if plan.problem and rank == 0:
        warnings.warn(plan.problem, RuntimeWarning, stacklevel=2)

    mine = plan.todo[rank::world]  # equal shares of what is left, round robin
    outcomes: dict[str, CheckpointOutcome] = {}

    def report(o: CheckpointOutcome) -> None:
        outcomes[o.path] = o
        if on_outcome is not None:
            on_outcome(o)

    if on_start is not None:
        on_start(len(mine) + (len(plan.skipped) if rank == 0 else 0))
    if rank == 0:
        for i in plan.skipped:
            t = tasks[i]
            report(CheckpointOutcome(t.path, t.run, t.epoch, t.step, "skipped"))
    shard = shard_store_path(config.db, rank, world)
    if mine:
        try:
            store = ResultStore(shard)
        except (ValueError, OSError) as exc:
            for i, _ in mine:
                t = tasks[i]
                error = _one_line(f"shard store {shard}: {exc}")
                report(
                    CheckpointOutcome(t.path, t.run, t.epoch, t.step, "failed", error, rank=rank)
                )
        else:
            with store:
                for i, known in mine:
                    report(_process(tasks[i], prep, store, known=known, rank=rank))

    gathered: list[Any] | None = [None] * world if rank == 0 else None
    mine_out = (str(shard) if mine else None, list(outcomes.values()))
    dist.gather_object(mine_out, gathered, dst=0, group=group)
    problem: str | None = None
    merged: tuple[str, ...] = ()
    if rank == 0:
        assert gathered is not None
        for r, (path, outs) in enumerate(gathered):
            if r:
                for o in outs:
                    outcomes[o.path] = o
            if path is not None and not os.path.isfile(path):
                problem = _one_line(
                    f"rank {r} wrote {path}, which rank 0 cannot see; put --db on a file "
                    "system every rank shares, then merge the shards with sslwatch merge"
                )
        # Every shard beside --db: this run's, and any an earlier run had to keep.
        shards = shard_stores(config.db)
        merged = tuple(map(str, shards))
        if shards and problem is None:
            problem = _merge_shards(
                shards, Path(config.db), keep=config.keep_shards, when="of this run"
            )
    dist.barrier(group=group)  # every rank ends after the merge
    order = [t.path for t in tasks if t.path in outcomes]
    return SweepSummary(
        db=str(config.db),
        outcomes=tuple(outcomes[p] for p in order),
        seconds=time.perf_counter() - start,
        workers=1,
        shard=config.shard,
        representations=prep.representations,
        metrics=prep.metric_names,
        rank=rank,
        world_size=world,
        shards=merged,
        shards_kept=bool(merged) and (config.keep_shards or problem is not None),
        merge_problem=problem,
    )
