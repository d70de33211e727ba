"""Offline evaluation of a model's checkpoints (``sslwatch sweep``): what to compute when,
and where to store it.

A sweep takes a model factory, checkpoint files (globs), a data set and a results store
(:class:`~sslwatch.offline.store.ResultStore`). For every checkpoint it loads the weights
(:func:`~sslwatch.offline.checkpoints.load_model`), embeds the data once in eval mode at every
requested place of the model (:func:`~sslwatch.offline.embed.extract_embeddings`; each place is
one *representation*, e.g. ``backbone`` and ``projector``), scores each representation
separately with the registry's metrics (:func:`~sslwatch.core.evaluate.evaluate`) and stores all
values of the checkpoint in one transaction.

Conventions (also shown by ``sslwatch sweep --help``):

* **Checkpoints.** Every ``--checkpoints`` entry is a glob (``**`` allowed) or a file.
  Matches are made absolute (``os.path.abspath``; the store identifies a checkpoint by
  this path), de-duplicated and sorted in natural order (``epoch_2`` before ``epoch_10``).
  ``run``, ``epoch`` and ``step`` come from :func:`~sslwatch.offline.checkpoints.
  parse_checkpoint_path`: by default the run is the parent folder (the grandparent when
  the parent is a generic ``checkpoints``/``ckpt``/``weights`` folder) and epoch/step are
  the numbers after ``epoch``/``ep`` and ``step`` in the file name; ``--pattern`` (a regex
  with named groups ``run``, ``epoch``, ``step``, searched in the absolute path)
  overrides any of them. Without layers the representation is called ``output``.
* **Labels.** Label-free metrics use every sample of the data set. Label-based
  references (linear probe, kNN accuracy, label AMI) use only the samples whose label is
  known: all of them, or with ``labelled_fraction=f`` a seeded (``seed``),
  class-stratified fraction (:meth:`~sslwatch.offline.data.Dataset.with_labelled_fraction`).
  ``labels=None`` uses labels when the data set has any, ``False`` ignores them, ``True``
  requires them. k (k-means clusters) defaults to the number of classes when labels are
  used, else to 10 (:func:`sslwatch.core.context.resolve_k`), and is the same for every
  checkpoint.
* **Definitions.** Every stored value carries the metric definition it was computed with
  (:class:`~sslwatch.core.definitions.MetricDefinition`), extended by the sweep with
  ``data`` (the data set name) and ``bn_recalibrated`` (whether BatchNorm statistics were
  re-estimated on the data before embedding; with ``bn_batches``, the number of
  batches), plus ``views`` (q) and ``augment`` for values computed from augmented views
  and ``labelled_fraction`` for label-based references. Metric parameters win if a name
  ever collides. Embeddings are always float32 (:func:`~sslwatch.offline.embed.extract_embeddings`).
* **Skipping.** Before any model work the sweep lists, per checkpoint and
  representation, the definitions it would produce and skips a checkpoint whose every
  one is stored. A definition depends on N (known from the data), the embedding
  dimension D (known only after embedding), the dtype (float32), parameters, k, seed and
  sample size. D is read from the values already stored for that checkpoint and
  representation (all metrics of one representation share it), so a finished
  checkpoint is recognised without loading it, and a re-run of a finished sweep does no
  model work at all. (A checkpoint path is assumed to keep its architecture between
  sweeps; use a new database for a different model.) A checkpoint with anything missing
  is loaded and embedded once, and only the missing definitions are computed.
* **Failures.** A checkpoint that fails to load or to embed is recorded with its
  one-line error (:meth:`~sslwatch.offline.store.ResultStore.record_failure`) and the sweep goes
  on; values already stored are never removed. When single metrics fail
  (``evaluate(..., on_error="warn")``) or a representation cannot be scored (e.g.
  non-finite embeddings), the values that worked are stored and the point is marked
  failed with the error text. A failed checkpoint counts as failed in the summary and
  is retried (only what is missing) by the next sweep. Exit code of the command line:
  ``min(failed, 100)``; 0 when every checkpoint is ok or skipped (:func:`exit_code`).
* **Cost.** Every stored value keeps the seconds of its own computation
  (:attr:`~sslwatch.core.evaluate.MetricValue.seconds`; ``results.seconds``). After the values,
  a checkpoint's stage timings (``load``, ``recalibrate``, ``embed``, ``metrics``,
  ``store``, ``total``; ``total`` up to that write) and the seconds of each
  representation's shared steps (``kmeans[sample,seed=0]``, ``second_moments``,
  ``spectra``, ``probe_split``; summed when two passes share a step) are stored with
  :meth:`~sslwatch.offline.store.ResultStore.record_timings`, replacing the point's earlier
  ones. :attr:`CheckpointOutcome.costs` carries the same numbers to the caller.
* **Crash safety.** Each checkpoint's values are written in one transaction; a sweep
  killed at any moment (even by SIGKILL) loses only the checkpoint in flight, and the
  next run computes exactly what is missing.
* **Scale.** ``workers=N`` evaluates checkpoints in N processes (``spawn`` context) on
  one machine, each with its own store connection and ``max(1, cores // N)`` torch
  threads. ``shard=(i, n)`` (``--shard i/n``, 0 <= i < n) keeps checkpoints ``i, i + n,
  i + 2n, ...`` of the sorted list: give each job its own database file and join them
  with :func:`~sslwatch.offline.store.merge_stores` (``sslwatch merge``). In a SLURM job
  array ``--shard auto`` is this task's slice (:func:`slurm_array_shard`:
  ``SLURM_ARRAY_TASK_ID``, ``_COUNT``, ``_MIN``, ``_STEP``).
* **Distributed (torchrun).** With ``distributed=None`` (the command line) and the
  torchrun variables set (``RANK``, ``WORLD_SIZE`` > 1, ``LOCAL_RANK``), every rank runs
  the sweep: rank 0 first merges any shard stores an interrupted run left beside ``db``
  into it, then lists what ``db`` holds; the checkpoints not complete there are dealt
  round robin (rank r takes items r, r + W, ... of that list, so each is embedded by
  exactly one rank), and the digests ``db`` already holds for them are sent along so
  only the missing values are computed. Rank r works on ``cuda:LOCAL_RANK`` (modulo the
  GPUs) when CUDA is available and ``device`` is unset or ``"cuda"``, else as for one
  process, and writes its own store ``<db>.rank<r>-of-<W>`` (:func:`shard_store_path`),
  so no two processes write one SQLite file (which network file systems do not lock
  reliably). When every rank is done, rank 0 merges every ``<db>.rank*-of-*`` file into
  ``db`` (:func:`~sslwatch.offline.store.merge_stores`) and removes them, unless
  ``keep_shards`` or the merge failed or found conflicting values (then they are kept
  and :attr:`SweepSummary.merge_problem` says why; the exit code is at least 1). A
  crash at any moment loses at most the checkpoints in flight: the next run merges the
  leftover shards first and computes only what is missing. Ranks meet through a gloo
  process group (torchrun's rendezvous; gloo also when the ranks use GPUs, since only a
  plan, outcomes and barriers travel, no tensors), rather than by polling marker files:
  a rank that dies ends the others' wait at once instead of leaving rank 0 polling, and
  one rank's setup error is raised on every rank. ``db`` must be on a file system every
  rank sees. ``shard`` combines with torchrun (the ranks split the shard's slice);
  ``workers > 1`` does not.
* **Memory.** Without views, a checkpoint's embeddings are never held whole: batches
  from :func:`~sslwatch.offline.embed.iter_embeddings` are reduced as they come into
  float64 second moments over every row (spectrum metrics: RankMe, alpha-ReQ, stable
  rank, Gaussian entropy, ...) and the rows of the seeded point sample
  (:func:`~sslwatch.core.evaluate.sample_indices`, the rows ``evaluate`` would draw), so
  memory is O(D^2 + sample_size * D) per representation, flat in N, and values equal
  ``evaluate`` on the whole matrix (spectrum metrics to round-off, point metrics
  exactly). Every row is kept only when it is needed anyway: ``sample_size=None`` (or
  at least N) with point metrics, or N < D (spectra from the N x N Gram matrix). With
  ``views`` every sample's (q, D) views are held, as the views metrics need them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslwatch.core.context import MetricContext, resolve_k
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.evaluate import (
    Evaluation,
    compute_metrics,
    definition_for,
    evaluate,
    sample_indices,
)
from sslwatch.core.registry import REGISTRY, MetricSpec, check_params
from sslwatch.metrics._threads import torch_threads
from sslwatch.metrics._validation import as_int, is_int
from sslwatch.metrics.spectrum import SecondMoments, second_moments
from sslwatch.offline.checkpoints import import_factory, load_model, parse_checkpoint_path
from sslwatch.offline.data import Dataset, load_dataset
from sslwatch.offline.embed import (
    VIEWS_SUFFIX,
    best_device,
    extract_embeddings,
    iter_embeddings,
    recalibrate_batchnorm,
)
from sslwatch.offline.store import ResultStore

__all__ = [
    "MAX_EXIT_FAILURES",
    "CheckpointOutcome",
    "CheckpointTask",
    "SweepConfig",
    "SweepSetupError",
    "SweepSummary",
    "TorchrunEnv",
    "exit_code",
    "expected_definitions",
    "find_checkpoints",
    "parse_layers",
    "parse_shard",
    "plan_checkpoints",
    "run_sweep",
    "shard_store_path",
    "shard_stores",
    "slurm_array_shard",
    "torchrun_env",
]

#: Exit codes count failed checkpoints up to this value.
MAX_EXIT_FAILURES = 100

#: The dtype of every embedding the sweep scores (``extract_embeddings`` returns float32).
EMBEDDING_DTYPE = "float32"

#: Representation name when no layers are given (the model output).
OUTPUT_REPRESENTATION = "output"

_MAX_ERROR_CHARS = 1000
_METRIC_FAILED = re.compile(r"metric '\w+' failed: ")


class SweepSetupError(ValueError):
    """The sweep cannot start (bad data, factory, option or checkpoint list); one line."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; see the module docstring for the conventions.

    Attributes:
        model: model factory, ``"package.module:function"`` or ``"path/file.py:function"``
            (see :func:`~sslwatch.offline.checkpoints.import_factory`), or a callable returning an
            ``nn.Module`` (picklable when ``workers > 1``).
        checkpoints: globs or file paths.
        data: a data set spec for :func:`~sslwatch.offline.data.load_dataset` (``digits``,
            ``mnist1d``, ``mnist5k``, ``npz:PATH``, ``folder:PATH``) or a loaded
            :class:`~sslwatch.offline.data.Dataset`.
        db: the results store file (created when missing).
        layers: ``{representation: submodule path}``; ``None`` scores the model output
            (representation ``"output"``).
        labels: use the data set's labels: ``None`` when it has any, ``True`` (required),
            ``False`` (ignore; label-free metrics only).
        labelled_fraction: keep labels on this seeded, class-stratified fraction only.
        views: q augmented views per sample (0 = none; else >= 2, needs ``augment``).
        augment: a batched augmentation ``(B, ...) -> (B, ...)``: a callable, a
            ``"module:callable"`` spec, or a name of :mod:`sslwatch.train.augment`
            (``mnist1d``, ``image``, ``auto``, ``none``).
        metrics: registry names; ``None`` = the default set for the inputs.
        params: per-metric parameter overrides, ``{"linear_probe": {"l2": 1e-3}}``.
        k: k-means clusters (default: number of classes with labels, else 10).
        sample_size: rows for point-based metrics (``None`` = all rows).
        seed: seed for samples, k-means, probe splits, views, BN batches, label fraction.
        recalibrate_bn: re-estimate BatchNorm statistics on ``bn_batches`` seeded batches
            of the data before embedding (recorded in every definition).
        bn_batches: batches for the BatchNorm re-estimation.
        batch_size: samples per forward pass.
        device: where to run the model (default: CUDA > MPS > CPU).
        autocast: forward passes under ``torch.autocast``.
        state_key: dot path of the weights inside each checkpoint.
        trust_checkpoints: allow unpickling Python objects (only for trusted files).
        pattern: regex overriding how run/epoch/step are read from paths.
        method: recorded on every run of the sweep (optional).
        architecture: recorded on every run of the sweep (optional).
        workers: processes evaluating checkpoints in parallel.
        shard: ``(i, n)``: evaluate only slice ``i`` of ``n`` of the sorted checkpoints.
        distributed: split the checkpoints across torchrun ranks (see *Distributed* in
            the module docstring): ``False`` (default) never, ``True`` always (the
            torchrun variables must be set), ``None`` when they are (the command line).
        keep_shards: keep every rank's shard store after rank 0 merged it into ``db``.
    """

    model: str | Callable[..., Any]
    checkpoints: Sequence[str]
    data: str | Dataset
    db: str | os.PathLike[str]
    layers: Mapping[str, str] | None = None
    labels: bool | None = None
    labelled_fraction: float | None = None
    views: int = 0
    augment: str | Callable[[torch.Tensor], torch.Tensor] | None = None
    metrics: Sequence[str] | None = None
    params: Mapping[str, Mapping[str, Any]] | None = None
    k: int | None = None
    sample_size: int | None = 10000
    seed: int = 0
    recalibrate_bn: bool = False
    bn_batches: int = 10
    batch_size: int = 256
    device: str | None = None
    autocast: bool = False
    state_key: str | None = None
    trust_checkpoints: bool = False
    pattern: str | None = None
    method: str | None = None
    architecture: str | None = None
    workers: int = 1
    shard: tuple[int, int] | None = None
    distributed: bool | None = False
    keep_shards: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.checkpoints, str):
            object.__setattr__(self, "checkpoints", (self.checkpoints,))
        if not self.checkpoints:
            raise SweepSetupError("no checkpoints given; pass one or more globs or files.")
        if not is_int(self.views) or self.views < 0 or self.views == 1:
            raise SweepSetupError(
                f"views must be 0 (none) or >= 2 augmented views per sample; got {self.views!r}."
            )
        if self.views and self.augment is None:
            raise SweepSetupError(f"views={self.views} needs an augmentation; pass augment.")
        if self.labelled_fraction is not None:
            if not 0.0 < float(self.labelled_fraction) <= 1.0:
                raise SweepSetupError(
                    "labelled_fraction must be in (0, 1] (fraction of labels kept); got "
                    f"{self.labelled_fraction}."
                )
            if self.labels is False:
                raise SweepSetupError("labelled_fraction needs labels; do not pass labels=False.")
        if self.sample_size is not None:
            _check_int(self.sample_size, "sample_size", low=2, hint=" or None (all rows)")
        if self.k is not None:
            _check_int(self.k, "k", low=2, hint=" (k-means clusters) or None")
        for name in ("workers", "batch_size", "bn_batches"):
            _check_int(getattr(self, name), name, low=1)
        if self.shard is not None:
            i, n = self.shard
            if not (is_int(i) and is_int(n)) or n < 1 or not 0 <= i < n:
                raise SweepSetupError(f"shard must be (i, n) with 0 <= i < n; got {self.shard}.")
        if self.layers is not None and not self.layers:
            raise SweepSetupError("layers is empty; pass None to score the model output.")


def _check_int(value: Any, name: str, *, low: int, hint: str = "") -> None:
    """The metrics' integer check (:func:`~sslwatch.metrics._validation.as_int`), failing
    as a :class:`SweepSetupError`."""
    try:
        as_int(value, name, low=low, hint=hint)
    except ValueError as exc:
        raise SweepSetupError(str(exc)) from None


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Parse ``"I/N"`` (0-based slice ``I`` of ``N``) as ``(I, N)``; ``"auto"`` reads the
    SLURM job array's variables (:func:`slurm_array_shard`).

    Raises:
        SweepSetupError: malformed text or ``I`` outside ``[0, N)``; for ``auto``, no
            SLURM array variables.
    """
    if (text or "").strip().lower() == "auto":
        return slurm_array_shard(env)
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if m is None:
        raise SweepSetupError(
            f"--shard must look like I/N (e.g. 0/4: the first of 4 slices) or auto (inside a "
            f"SLURM job array); got {text!r}."
        )
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or i >= n:
        raise SweepSetupError(
            f"--shard {text}: need 0 <= I < N (I is 0-based, e.g. $SLURM_ARRAY_TASK_ID with "
            "--array=0-{N-1})."
        )
    return i, n


def slurm_array_shard(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(I, N)`` of this SLURM array task: ``--shard auto``.

    ``N`` is ``SLURM_ARRAY_TASK_COUNT``; ``I = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN)
    / SLURM_ARRAY_TASK_STEP`` (``MIN`` 0 and ``STEP`` 1 when unset), so ``--array=0-7``,
    ``--array=1-8`` and ``--array=0-14:2`` all give ``I`` in 0..7. The map from task ids
    to ``I`` is one-to-one; an array whose ids are not evenly spaced (``--array=1,4,5``)
    makes some task's ``I`` fall outside ``[0, N)``, which is an error, never a silent
    overlap.

    Raises:
        SweepSetupError: a variable is missing or not an integer, or ``I`` is out of range.
    """
    env = os.environ if env is None else env
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
    missing = [name for name in names if not env.get(name, "").strip()]
    if missing:
        raise SweepSetupError(
            f"--shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: run it "
            "inside a SLURM job array (sbatch --array=0-N) or pass --shard I/N."
        )
    values: dict[str, int] = {}
    for name, default in (*((n, None) for n in names), ("SLURM_ARRAY_TASK_MIN", "0")):
        raw = env.get(name, "").strip() or default
        try:
            values[name] = int(str(raw))
        except ValueError:
            raise SweepSetupError(
                f"--shard auto: {name}={raw!r} is not an integer; pass --shard I/N instead."
            ) from None
    step_raw = env.get("SLURM_ARRAY_TASK_STEP", "").strip() or "1"
    step = int(step_raw) if step_raw.isdigit() and int(step_raw) >= 1 else 1
    task, count = values["SLURM_ARRAY_TASK_ID"], values["SLURM_ARRAY_TASK_COUNT"]
    offset = task - values["SLURM_ARRAY_TASK_MIN"]
    if count < 1 or offset < 0 or offset % step or offset // step >= count:
        raise SweepSetupError(
            f"--shard auto: array task {task} is not one of {count} evenly spaced ids from "
            f"{values['SLURM_ARRAY_TASK_MIN']} (step {step}); launch the array as "
            f"--array=0-{max(count, 1) - 1} or pass --shard I/N."
        )
    return offset // step, count


def parse_layers(text: str | None) -> dict[str, str] | None:
    """Parse ``"backbone=backbone,projector=projector.net"`` (or ``"backbone,projector"``).

    Each item is ``name=submodule.path`` or just a path (used as its own name).

    Raises:
        SweepSetupError: an empty item, name or path, or a repeated name.
    """
    if text is None or not text.strip():
        return None
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise SweepSetupError(f"--layers {text!r} has an empty item; use name=path,...")
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep:
            path = name
        if not name or not path:
            raise SweepSetupError(f"--layers item {item!r} needs name=submodule.path.")
        if name in out:
            raise SweepSetupError(f"--layers names {name!r} twice; names must be unique.")
        out[name] = path
    return out


def _natural_key(path: str) -> list[Any]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path)]


def find_checkpoints(patterns: Iterable[str], *, shard: tuple[int, int] | None = None) -> list[str]:
    """Expand globs (``**`` recursive) and file paths into sorted absolute file paths.

    Sorted in natural order (digit runs compared as numbers), de-duplicated, directories
    ignored; ``shard=(i, n)`` keeps items ``i, i + n, ...`` of that list.

    Raises:
        SweepSetupError: a pattern matches no file.
    """
    found: set[str] = set()
    for pat in patterns:
        expanded = os.path.expanduser(str(pat))
        if os.path.isfile(expanded) or not glob.has_magic(expanded):
            matches = [expanded]  # an existing file is that file, brackets and all
        else:
            matches = glob.glob(expanded, recursive=True)
            if not matches and ("[" in expanded or "]" in expanded):
                # runs/exp[v1]/*.pt: brackets taken literally when as a class they match none
                literal = glob.escape(expanded).replace("[*]", "*").replace("[?]", "?")
                matches = glob.glob(literal, recursive=True)
        files = [m for m in matches if os.path.isfile(m)]
        if not files:
            what = "matched no file" if glob.has_magic(expanded) else "is not a file"
            raise SweepSetupError(f"checkpoints {pat!r} {what}; check the path or the glob.")
        found.update(os.path.abspath(f) for f in files)
    paths = sorted(found, key=_natural_key)
    if shard is not None:
        i, n = shard
        paths = paths[i::n]
    return paths


@dataclass(frozen=True)
class CheckpointTask:
    """One checkpoint to evaluate: its absolute path and where it belongs."""

    path: str
    run: str
    epoch: int | None
    step: int | None


def plan_checkpoints(config: SweepConfig) -> list[CheckpointTask]:
    """The checkpoints of this sweep (and shard), with run/epoch/step parsed from paths.

    Raises:
        SweepSetupError: no checkpoint found, or a path that the pattern does not match.
    """
    tasks = []
    for path in find_checkpoints(config.checkpoints, shard=config.shard):
        try:
            run, epoch, step = parse_checkpoint_path(path, config.pattern)
        except ValueError as exc:
            raise SweepSetupError(_one_line(str(exc))) from exc
        if not run:
            raise SweepSetupError(
                f"no run name for checkpoint {path}; give --pattern a (?P<run>...) group."
            )
        tasks.append(CheckpointTask(path, run, epoch, step))
    return tasks


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class CheckpointOutcome:
    """What happened to one checkpoint.

    Attributes:
        path, run, epoch, step: the checkpoint.
        status: ``"ok"`` (what was missing is now stored), ``"skipped"`` (everything was
            already stored; no model work) or ``"failed"``.
        error: the one-line error of a failed checkpoint.
        loaded: whether the model was loaded (model work was attempted).
        values_stored: values newly written to the store.
        warnings: distinct warnings raised while it was processed.
        timings: seconds: ``load``, ``recalibrate``, ``embed``, ``metrics``, ``store``
            (store reads and writes) and ``total``.
        costs: seconds inside ``metrics``, per metric (its own time) and per shared step
            (``kmeans[sample,seed=0]``, ``second_moments``, ``spectra``, ...), summed over
            representations and passes.
        rank: the torchrun rank that evaluated it (``None`` in a one-process sweep and for
            checkpoints skipped before any rank started).
    """

    path: str
    run: str
    epoch: int | None
    step: int | None
    status: str
    error: str | None = None
    loaded: bool = False
    values_stored: int = 0
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    costs: Mapping[str, float] = field(default_factory=dict)
    rank: int | None = None

    def top_costs(self, n: int = 3, *, group_steps: bool = True) -> list[tuple[str, float]]:
        """The ``n`` most expensive stages (load, recalibrate, embed, store), metrics and
        shared steps, most expensive first; zero-second items are left out.

        With ``group_steps`` a step's bracketed settings are dropped and its seconds summed
        (``kmeans[sample,seed=0]`` and ``kmeans[view0,seed=0]`` count as ``kmeans``).
        """
        items: dict[str, float] = {}
        stages = {k: v for k, v in self.timings.items() if k not in ("metrics", "total")}
        for key, seconds in [*stages.items(), *self.costs.items()]:
            name = key.partition("[")[0] if group_steps else key
            items[name] = items.get(name, 0.0) + seconds
        ranked = sorted(items.items(), key=lambda kv: -kv[1])
        return [(k, v) for k, v in ranked if v > 0][: max(0, n)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        out["timings"] = dict(self.timings)
        out["costs"] = dict(self.costs)
        return out


@dataclass(frozen=True)
class SweepSummary:
    """The result of :func:`run_sweep`: one outcome per checkpoint, in checkpoint order.

    Under torchrun (``rank``/``world_size`` set), rank 0's summary covers every rank's
    checkpoints, with ``shards`` (the shard stores it merged into ``db``),
    ``shards_kept`` and ``merge_problem`` (why the merge did not finish cleanly); another
    rank's covers only the checkpoints it evaluated.
    """

    db: str
    outcomes: tuple[CheckpointOutcome, ...]
    seconds: float
    workers: int = 1
    shard: tuple[int, int] | None = None
    representations: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    rank: int | None = None
    world_size: int | None = None
    shards: tuple[str, ...] = ()
    shards_kept: bool = False
    merge_problem: str | None = None

    def _count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def n_checkpoints(self) -> int:
        """Checkpoints in this sweep (this shard)."""
        return len(self.outcomes)

    @property
    def n_ok(self) -> int:
        """Checkpoints evaluated successfully by this sweep."""
        return self._count("ok")

    @property
    def n_skipped(self) -> int:
        """Checkpoints whose values were all stored already (no model work)."""
        return self._count("skipped")

    @property
    def n_failed(self) -> int:
        """Checkpoints that failed to load, to embed, or had a metric error."""
        return self._count("failed")

    @property
    def n_loaded(self) -> int:
        """Checkpoints whose model was loaded (model work done)."""
        return sum(1 for o in self.outcomes if o.loaded)

    @property
    def n_values(self) -> int:
        """Values newly stored."""
        return sum(o.values_stored for o in self.outcomes)

    @property
    def failures(self) -> list[CheckpointOutcome]:
        """The failed outcomes."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """``min(failed, 100)``: 0 when no checkpoint failed (see :func:`exit_code`); at
        least 1 when rank 0 could not merge the shard stores (:attr:`merge_problem`)."""
        return max(exit_code(self.n_failed), 1 if self.merge_problem else 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary with counts and every outcome."""
        return {
            "db": self.db,
            "checkpoints": self.n_checkpoints,
            "ok": self.n_ok,
            "skipped": self.n_skipped,
            "failed": self.n_failed,
            "loaded": self.n_loaded,
            "values_stored": self.n_values,
            "seconds": self.seconds,
            "workers": self.workers,
            "shard": list(self.shard) if self.shard else None,
            "rank": self.rank,
            "world_size": self.world_size,
            "shards": list(self.shards),
            "shards_kept": self.shards_kept,
            "merge_problem": self.merge_problem,
            "representations": list(self.representations),
            "metrics": list(self.metrics),
            "exit_code": self.exit_code,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


def exit_code(n_failed: int) -> int:
    """The sweep's exit code: the number of failed checkpoints, capped at 100."""
    return int(min(max(0, n_failed), MAX_EXIT_FAILURES))


def _one_line(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    line = " ".join(str(text).split()) or "(no message)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error_text(exc: BaseException, path: str, doing: str) -> str:
    msg = str(exc)
    if path not in msg:
        msg = f"checkpoint {path}: {doing} failed: {type(exc).__name__}: {msg}"
    return _one_line(msg)


# --------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class _Pass:
    """One call of ``evaluate`` per representation: which metrics, on which rows."""

    specs: tuple[MetricSpec, ...]
    rows: np.ndarray | None  # None = every row
    labels: np.ndarray | None  # aligned with the rows, or None
    n_total: int
    use_views: bool


@dataclass
class _Prepared:
    """Per-process state of a sweep: data, factory, passes, definition extras."""

    config: SweepConfig
    dataset: Dataset
    factory: Callable[..., Any]
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    representations: tuple[str, ...]
    passes: tuple[_Pass, ...]
    k: int | None
    overrides: dict[str, dict[str, Any]]
    base_extras: dict[str, Any]
    view_extras: dict[str, Any]
    label_extras: dict[str, Any]
    run_meta: dict[str, Any]
    # torch threads of every forward pass (BN re-estimation, embedding) on the CPU: the
    # sweep process's count, in worker processes too, because the float32 rounding of a
    # forward pass depends on it, and stored values must not depend on --workers (the
    # metrics themselves do not depend on the thread count).
    model_threads: int = field(default_factory=torch.get_num_threads)
    _expected: dict[int, dict[str, tuple[MetricDefinition, str]]] = field(default_factory=dict)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(s.name for p in self.passes for s in p.specs)

    def expected(self, d: int) -> dict[str, tuple[MetricDefinition, str]]:
        """Metric name -> (decorated definition, digest) for a representation of dim ``d``."""
        if d not in self._expected:
            out = {}
            for p in self.passes:
                for spec, defn in _predict_pass(self, p, d):
                    decorated = self.decorate(spec, defn)
                    out[spec.name] = (decorated, decorated.digest())
            self._expected[d] = out
        return self._expected[d]

    def decorate(self, spec: MetricSpec, defn: MetricDefinition) -> MetricDefinition:
        """Add the sweep's own settings to a definition (metric parameters win)."""
        extras = dict(self.base_extras)
        if self.view_extras and (spec.kind == "views" or defn.params.get("source") == "views"):
            extras.update(self.view_extras)
        if spec.needs == "labels":
            extras.update(self.label_extras)
        return replace(defn, params={**extras, **dict(defn.params)})


def _load_data(config: SweepConfig) -> Dataset:
    if isinstance(config.data, Dataset):
        ds = config.data
        if config.labelled_fraction is not None:
            ds = ds.with_labelled_fraction(config.labelled_fraction, seed=config.seed)
        return ds
    try:
        return load_dataset(
            config.data, labelled_fraction=config.labelled_fraction, seed=config.seed
        )
    except FileNotFoundError as exc:
        raise SweepSetupError(
            _one_line(f"data {config.data!r}: {exc} (no such file or folder)")
        ) from exc
    except ValueError as exc:
        raise SweepSetupError(_one_line(f"data {config.data!r}: {exc}")) from exc


def _resolve_augment(
    config: SweepConfig, dataset: Dataset
) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str | None]:
    aug = config.augment
    if config.views == 0 or aug is None:
        return None, None
    if callable(aug):
        return aug, getattr(aug, "__qualname__", type(aug).__name__)
    spec = str(aug)
    if ":" in spec:
        try:
            return import_factory(spec), spec
        except (ValueError, FileNotFoundError) as exc:
            raise SweepSetupError(_one_line(f"augment: {exc}")) from exc
    try:
        from sslwatch.train.augment import build_augment

        built = build_augment(spec, tuple(int(s) for s in dataset.x.shape[1:]))
    except (ImportError, ValueError) as exc:
        raise SweepSetupError(_one_line(f"augment {spec!r}: {exc}")) from exc

    def augment(x: torch.Tensor) -> torch.Tensor:
        return built(x, None)

    return augment, spec


def _prepare(config: SweepConfig, dataset: Dataset | None = None) -> _Prepared:
    """Everything a process needs before its first checkpoint; raises only
    :class:`SweepSetupError`."""
    ds = _load_data(config) if dataset is None else dataset
    n = len(ds)
    if n < 2:
        raise SweepSetupError(f"data set {ds.name!r} has {n} sample(s); need at least 2.")
    factory, model_name = _resolve_factory(config)
    augment, augment_name = _resolve_augment(config, ds)

    has_labels = ds.y is not None and bool(ds.labelled_mask.any())
    if config.labels is True and not has_labels:
        raise SweepSetupError(f"labels requested but data set {ds.name!r} has no labels.")
    use_labels = has_labels and config.labels is not False
    mask = ds.labelled_mask if use_labels else np.zeros(n, dtype=bool)
    y_all = ds.y if use_labels else None

    specs = _select_metrics(config, use_labels)
    try:
        overrides = check_params(config.params or {}, specs)
    except ValueError as exc:
        raise SweepSetupError(str(exc)) from None
    k = config.k
    if k is None and y_all is not None:  # the class count, the same for every checkpoint
        k = resolve_k(None, n, y_all[mask])
    passes = _plan_passes(config, specs, y_all, mask)
    for p in passes:
        _check_k_fits(config, p, k)

    layers = dict(config.layers) if config.layers is not None else None
    base_extras: dict[str, Any] = {
        "data": ds.name,
        "bn_recalibrated": bool(config.recalibrate_bn),
    }
    if config.recalibrate_bn:
        base_extras["bn_batches"] = int(config.bn_batches)
    view_extras = {"views": int(config.views), "augment": augment_name} if config.views else {}
    run_meta = {
        "sweep": {
            "model": model_name,
            "data": ds.name,
            "layers": layers,
            "views": int(config.views),
            "augment": augment_name,
            "labelled_fraction": config.labelled_fraction,
            "bn_recalibrated": bool(config.recalibrate_bn),
            "state_key": config.state_key,
        }
    }
    return _Prepared(
        config=config,
        dataset=ds,
        factory=factory,
        augment=augment,
        representations=tuple(layers) if layers is not None else (OUTPUT_REPRESENTATION,),
        passes=tuple(passes),
        k=k,
        overrides=overrides,
        base_extras=base_extras,
        view_extras=view_extras,
        label_extras={"labelled_fraction": config.labelled_fraction},
        run_meta=run_meta,
    )


def _resolve_factory(config: SweepConfig) -> tuple[Callable[..., Any], str]:
    """The model factory and the name recorded for it."""
    if isinstance(config.model, str):
        try:
            return import_factory(config.model), config.model
        except (ValueError, FileNotFoundError) as exc:
            raise SweepSetupError(_one_line(f"model: {exc}")) from exc
    if callable(config.model):
        return config.model, getattr(config.model, "__qualname__", type(config.model).__name__)
    raise SweepSetupError(
        f"model must be a factory spec 'module:function' or a callable; got "
        f"{type(config.model).__name__}."
    )


def _select_metrics(config: SweepConfig, use_labels: bool) -> list[MetricSpec]:
    """The registry's metrics for ``config.metrics`` (``None``: the default set)."""
    try:
        specs = REGISTRY.select(
            list(config.metrics) if config.metrics is not None else None,
            has_views=config.views > 0,
            has_labels=use_labels,
        )
    except ValueError as exc:
        raise SweepSetupError(_one_line(f"metrics: {exc}")) from exc
    if not specs:
        raise SweepSetupError("no metric selected; check --metrics.")
    return list(specs)


def _plan_passes(
    config: SweepConfig,
    specs: Sequence[MetricSpec],
    y_all: np.ndarray | None,
    mask: np.ndarray,
) -> list[_Pass]:
    """The ``evaluate`` calls per representation: one when every sample is labelled (the
    k-means shared by all metrics), else the label-free metrics on every sample and the
    label-based ones on the labelled samples."""
    n, n_lab = len(mask), int(mask.sum())
    use_views = config.views > 0
    free = tuple(s for s in specs if not s.label_based)
    labelled = tuple(s for s in specs if s.label_based)
    if labelled and n_lab == n:
        return [_Pass(tuple(specs), None, y_all, n, use_views)]
    passes = []
    if free:
        passes.append(_Pass(free, None, None, n, use_views))
    if labelled:
        rows = np.flatnonzero(mask)
        passes.append(_Pass(labelled, rows, y_all[rows], n_lab, False))  # type: ignore[index]
    return passes


def _check_k_fits(config: SweepConfig, p: _Pass, k: int | None) -> None:
    """Refuse k-means clusters that the pass's sample is too small for."""
    if not any(s.kind in ("sample", "labels") for s in p.specs):
        return
    n_points = p.n_total if config.sample_size is None else min(config.sample_size, p.n_total)
    kk = resolve_k(k, n_points)
    if n_points < 2 or kk >= n_points:
        which = "labelled samples" if p.rows is not None else "samples"
        raise SweepSetupError(
            f"k={kk} k-means clusters need more than {n_points} {which}; lower k or use "
            "more (labelled) data."
        )


def _predict_pass(prep: _Prepared, p: _Pass, d: int) -> list[tuple[MetricSpec, MetricDefinition]]:
    """The definitions ``evaluate`` will give for pass ``p`` on embeddings of dimension d.

    Builds a :class:`MetricContext` of the right shape from zero-size "meta" tensors (no
    data, no memory) and asks :func:`sslwatch.core.evaluate.definition_for`, so the prediction
    follows the suite's own rules.
    """
    cfg = prep.config
    point_based = any(s.kind in ("sample", "labels") for s in p.specs)
    sample = None
    if point_based:
        n_points = p.n_total if cfg.sample_size is None else min(cfg.sample_size, p.n_total)
        sample = torch.empty((n_points, 0), device="meta")
    n_sample = 0 if sample is None else int(sample.shape[0])
    views = None
    if p.use_views:
        views = torch.empty((p.n_total, cfg.views, 0), device="meta")
    kk = resolve_k(prep.k, n_sample)
    ctx = MetricContext(
        n_total=p.n_total,
        d=int(d),
        dtype=EMBEDDING_DTYPE,
        sample=sample,
        views=views,
        labels=None,
        k=kk,
        seed=cfg.seed,
        sample_size=cfg.sample_size,
    )
    return [
        (s, definition_for(s, ctx, {**s.params, **prep.overrides.get(s.name, {})})) for s in p.specs
    ]


def expected_definitions(
    config: SweepConfig, dims: Mapping[str, int], dataset: Dataset | None = None
) -> list[tuple[str, MetricDefinition]]:
    """The ``(representation, definition)`` pairs a sweep stores for one checkpoint.

    Computed without any model work from the data set's size, the embedding dimension of
    each representation (``dims``), the metric selection and the sweep's settings.

    Raises:
        SweepSetupError: as :func:`run_sweep` for bad settings.
    """
    prep = _prepare(config, dataset)
    return [(rep, defn) for rep in dims for defn, _ in prep.expected(int(dims[rep])).values()]


# --------------------------------------------------------------------------- skipping


def _stored_state(
    store: ResultStore,
) -> dict[tuple[str, str], dict[str, tuple[set[str], set[int]]]]:
    """(run, path) -> representation -> (stored digests, embedding dimensions seen)."""
    state: dict[tuple[str, str], dict[str, tuple[set[str], set[int]]]] = {}
    for row in store.tidy_rows(source="checkpoint"):
        if row["path"] is None:
            continue
        reps = state.setdefault((row["run"], row["path"]), {})
        digests, dims = reps.setdefault(row["representation"], (set(), set()))
        digests.add(row["digest"])
        dims.add(int(row["d"]))
    return state


def _is_complete(prep: _Prepared, reps: Mapping[str, tuple[set[str], set[int]]] | None) -> bool:
    if not reps:
        return False
    for rep in prep.representations:
        if rep not in reps:
            return False
        digests, dims = reps[rep]
        if not any(all(dg in digests for _, dg in prep.expected(d).values()) for d in dims):
            return False
    return True


# --------------------------------------------------------------------------- one checkpoint


def _process(
    task: CheckpointTask,
    prep: _Prepared,
    store: ResultStore,
    *,
    known: Iterable[tuple[str, str]] = (),
    rank: int | None = None,
) -> CheckpointOutcome:
    """Load, embed, score what is missing and store it; never raises an ``Exception``.

    ``known``: ``(representation, digest)`` pairs stored elsewhere (a distributed sweep's
    ``--db`` while this rank writes its shard), not computed again. ``rank`` is recorded
    on the outcome.
    """
    cfg = prep.config
    timings = dict.fromkeys(("load", "recalibrate", "embed", "metrics", "store"), 0.0)
    steps: dict[str, dict[str, float]] = {}
    costs: dict[str, float] = {}
    start = time.perf_counter()
    seen: list[str] = []

    def outcome(status: str, error: str | None, loaded: bool, stored: int) -> CheckpointOutcome:
        timings["total"] = time.perf_counter() - start
        return CheckpointOutcome(
            task.path,
            task.run,
            task.epoch,
            task.step,
            status,
            error,
            loaded,
            stored,
            tuple(dict.fromkeys(seen)),
            dict(timings),
            dict(costs),
            rank,
        )

    def save_timings(point: int) -> None:
        """Store the stages and shared steps (total: up to this write); never raises."""
        timings["total"] = time.perf_counter() - start
        try:
            store.record_timings(point, {"": timings, **steps})
        except Exception as exc:  # the values are stored; only the timings are missing
            seen.append(f"could not store the timings of {task.path}: {_one_line(str(exc))}")

    t = time.perf_counter()
    try:
        run_id = store.ensure_run(
            task.run, method=cfg.method, architecture=cfg.architecture, meta=prep.run_meta
        )
        point = store.ensure_point(run_id, path=task.path, epoch=task.epoch, step=task.step)
        stored_before = store.stored_digests(point) | set(known)
    except Exception as exc:  # a conflicting stored point, a locked database...
        timings["store"] += time.perf_counter() - t
        return outcome("failed", _error_text(exc, task.path, "recording"), False, 0)
    timings["store"] += time.perf_counter() - t

    def fail(error: str, loaded: bool) -> CheckpointOutcome:
        t0 = time.perf_counter()
        try:
            store.record_failure(point, error)
        except Exception as exc:  # pragma: no cover - the database itself failed
            error = f"{error} (could not record the failure: {exc})"
        timings["store"] += time.perf_counter() - t0
        save_timings(point)
        return outcome("failed", error, loaded, 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            t = time.perf_counter()
            model = load_model(
                prep.factory,
                task.path,
                state_key=cfg.state_key,
                trust_checkpoints=cfg.trust_checkpoints,
            )
            timings["load"] = time.perf_counter() - t
        except Exception as exc:
            timings["load"] = time.perf_counter() - t
            seen.extend(_warning_texts(caught))
            return fail(_error_text(exc, task.path, "loading the model"), False)
        try:
            dev = torch.device(cfg.device) if cfg.device else best_device()
            threads = (
                torch_threads(prep.model_threads) if dev.type == "cpu" else contextlib.nullcontext()
            )
            with threads:
                if cfg.views:  # views metrics read every sample's (q, D) views
                    source: _Embedded | _Streamed = _Embedded(_forward(model, prep, dev, timings))
                else:
                    source = _stream_forward(model, prep, dev, timings, stored_before)
        except Exception as exc:
            seen.extend(_warning_texts(caught))
            return fail(_error_text(exc, task.path, "embedding"), True)
        del model

        t = time.perf_counter()
        rows, errors = _score(prep, source, stored_before, steps, costs)
        timings["metrics"] = time.perf_counter() - t + source.reduce_seconds
        seen.extend(_warning_texts(caught))

    t = time.perf_counter()
    try:
        n_new = store.record_results(point, rows, status="failed" if errors else "ok")
        if errors:
            error = _one_line(f"checkpoint {task.path}: " + "; ".join(errors))
            store.record_failure(point, error)
    except Exception as exc:
        timings["store"] += time.perf_counter() - t
        return outcome("failed", _error_text(exc, task.path, "storing the results"), True, 0)
    timings["store"] += time.perf_counter() - t
    save_timings(point)
    if errors:
        return outcome("failed", error, True, n_new)
    return outcome("ok", None, True, n_new)


def _forward(
    model: torch.nn.Module, prep: _Prepared, dev: torch.device, timings: dict[str, float]
) -> dict[str, torch.Tensor]:
    """BatchNorm re-estimation (when asked) and the embedding pass, timed."""
    cfg = prep.config
    if cfg.recalibrate_bn:
        t = time.perf_counter()
        model.to(dev)
        recalibrate_batchnorm(
            model, prep.dataset, batches=cfg.bn_batches, batch_size=cfg.batch_size, seed=cfg.seed
        )
        timings["recalibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    emb = extract_embeddings(
        model,
        prep.dataset,
        layers=dict(cfg.layers) if cfg.layers is not None else None,
        batch_size=cfg.batch_size,
        device=dev,
        autocast=cfg.autocast,
        views=cfg.views,
        augment=prep.augment,
        seed=cfg.seed,
        progress=False,
    )
    timings["embed"] = time.perf_counter() - t
    return emb


class _Embedded:
    """Every representation's (N, D) embeddings (and views), held whole."""

    reduce_seconds = 0.0

    def __init__(self, emb: Mapping[str, torch.Tensor]) -> None:
        self.emb = emb

    def dim(self, rep: str) -> int:
        return int(self.emb[rep].shape[1])

    def evaluate(self, prep: _Prepared, rep: str, index: int, names: list[str]) -> Evaluation:
        p = prep.passes[index]
        z = self.emb[rep]
        views = self.emb.get(rep + VIEWS_SUFFIX)
        return evaluate(
            z if p.rows is None else z[torch.from_numpy(p.rows)],
            views=views if p.use_views else None,
            labels=p.labels,
            k=prep.k,
            metrics=names,
            sample_size=prep.config.sample_size,
            seed=prep.config.seed,
            params={n: v for n, v in prep.overrides.items() if n in names},
            on_error="warn",
        )


@dataclass
class _PassStream:
    """One pass of one representation, reduced while the embedding batches stream by.

    Route (fixed by the pass's metrics, N and D, never by what is missing, so a value is
    computed the same way in every sweep): ``keep_all`` keeps every row of the pass and
    scores it with ``evaluate`` as an embedded matrix, when the point sample is every row
    anyway or the spectrum metrics take the N x N Gram route of N < D. Otherwise only
    the float64 second moments of the pass's rows (spectrum metrics) and the rows of its
    seeded sample (point metrics: :func:`~sslwatch.core.evaluate.sample_indices`, the rows
    ``evaluate`` would draw) are kept: memory O(D^2 + sample_size * D), flat in N.
    """

    names: list[str]  # the metrics to compute (those not stored yet)
    rows: np.ndarray | None  # sorted row ids of the pass; None = every row
    keep_all: bool
    accumulate: bool  # second moments wanted (streamed route)
    sample_rows: np.ndarray | None  # sorted row ids of the sample (streamed route), or None
    sample_labels: np.ndarray | None
    moments: SecondMoments | None = None
    parts: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0  # accumulating the moments
    seen: int = 0
    bad_rows: int = 0

    @classmethod
    def plan(
        cls, prep: _Prepared, p: _Pass, rep: str, d: int, stored: set[tuple[str, str]]
    ) -> _PassStream:
        cfg = prep.config
        expected = prep.expected(d)
        missing = [s for s in p.specs if (rep, expected[s.name][1]) not in stored]
        point_kinds = ("sample", "labels")
        index = sample_indices(p.n_total, cfg.sample_size, cfg.seed)
        keep_all = (any(s.kind in point_kinds for s in p.specs) and index is None) or (
            any(s.kind == "spectrum" for s in p.specs) and p.n_total < d
        )
        wants_sample = not keep_all and any(s.kind in point_kinds for s in missing)
        sample_rows = sample_labels = None
        if wants_sample and index is not None:
            sample_rows = index if p.rows is None else p.rows[index]
            sample_labels = None if p.labels is None else p.labels[index]
        return cls(
            names=[s.name for s in missing],
            rows=p.rows,
            keep_all=keep_all,
            accumulate=not keep_all and any(s.kind == "spectrum" for s in missing),
            sample_rows=sample_rows,
            sample_labels=sample_labels,
        )

    def feed(self, zb: torch.Tensor, start: int) -> None:
        """Take the batch of rows ``start .. start + len(zb)`` of the data set."""
        if not self.names:
            return
        zp = zb if self.rows is None else zb[_rows_within(self.rows, start, len(zb))]
        self.seen += int(zp.shape[0])
        if zp.shape[0] == 0:
            return
        if not bool(torch.isfinite(zp).all()):
            self.bad_rows += int((~torch.isfinite(zp)).any(dim=1).sum())
        if self.bad_rows:  # the pass cannot be scored; only the count goes on
            self.parts.clear()
            self.moments = None
            return
        if self.keep_all:
            self.parts.append(zp)
            return
        if self.accumulate:
            t = time.perf_counter()
            m = second_moments(zp)
            self.moments = m if self.moments is None else self.moments.merge(m)
            self.seconds += time.perf_counter() - t
        if self.sample_rows is not None:
            local = _rows_within(self.sample_rows, start, len(zb))
            if local.numel():
                self.parts.append(zb[local])


def _rows_within(rows: np.ndarray, start: int, size: int) -> torch.Tensor:
    """Positions, within the batch of rows ``start .. start + size``, of the sorted ``rows``
    that fall in it."""
    lo, hi = np.searchsorted(rows, [start, start + size])
    return torch.from_numpy(rows[lo:hi] - start)


class _Streamed:
    """Every representation's passes, reduced batch by batch (:class:`_PassStream`)."""

    def __init__(
        self, dims: Mapping[str, int], streams: Mapping[str, list[_PassStream]], seconds: float
    ) -> None:
        self.dims = dict(dims)
        self.streams = streams
        self.reduce_seconds = seconds

    def dim(self, rep: str) -> int:
        return self.dims[rep]

    def evaluate(self, prep: _Prepared, rep: str, index: int, names: list[str]) -> Evaluation:
        """The pass's metrics ``names``, as :func:`evaluate` gives them on the whole
        matrix: the same sample rows and labels, the second moments of the same rows."""
        cfg, p, ps = prep.config, prep.passes[index], self.streams[rep][index]
        params = {n: v for n, v in prep.overrides.items() if n in names}
        if ps.bad_rows:
            raise ValueError(
                f"z contains NaN or Inf in {ps.bad_rows} of {ps.seen} rows; drop or fix those "
                "rows (non-finite embeddings usually mean the training diverged)."
            )
        if ps.keep_all:
            return evaluate(
                torch.cat(ps.parts),
                labels=p.labels,
                k=prep.k,
                metrics=names,
                sample_size=cfg.sample_size,
                seed=cfg.seed,
                params=params,
                on_error="warn",
            )
        specs = REGISTRY.select(names, has_views=False, has_labels=p.labels is not None)
        overrides = check_params(params, specs)
        point = any(s.kind in ("sample", "labels") for s in specs)
        sample = torch.cat(ps.parts) if point and ps.parts else None
        labels = ps.sample_labels if point else p.labels
        n_points = p.n_total if sample is None else int(sample.shape[0])
        k = resolve_k(prep.k, n_points, labels)
        if point and k >= n_points:
            raise ValueError(
                f"the point metrics cluster {n_points} points into k={k} clusters, which "
                f"needs at least {k + 1} points; lower k or raise sample_size."
            )
        ctx = MetricContext(
            n_total=p.n_total,
            d=self.dims[rep],
            dtype=EMBEDDING_DTYPE,
            sample=sample,
            labels=labels,
            k=k,
            seed=cfg.seed,
            sample_size=cfg.sample_size,
        )
        if ps.moments is not None:
            moments = ps.moments
            ctx.moments = ctx.cached("second_moments", lambda: moments)
            ctx.timings["second_moments"] = ps.seconds  # accumulated during the pass
        return Evaluation(compute_metrics(ctx, specs, overrides, on_error="warn"), ctx.timings)


def _stream_forward(
    model: torch.nn.Module,
    prep: _Prepared,
    dev: torch.device,
    timings: dict[str, float],
    stored: set[tuple[str, str]],
) -> _Streamed:
    """BatchNorm re-estimation (when asked) and the embedding pass, reduced batch by batch
    into second moments and sample rows; ``embed`` excludes the reduction's seconds."""
    cfg = prep.config
    if cfg.recalibrate_bn:
        t = time.perf_counter()
        model.to(dev)
        recalibrate_batchnorm(
            model, prep.dataset, batches=cfg.bn_batches, batch_size=cfg.batch_size, seed=cfg.seed
        )
        timings["recalibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    dims: dict[str, int] = {}
    streams: dict[str, list[_PassStream]] = {}
    start, reduce_seconds = 0, 0.0
    batches = iter_embeddings(
        model,
        prep.dataset,
        layers=dict(cfg.layers) if cfg.layers is not None else None,
        batch_size=cfg.batch_size,
        device=dev,
        autocast=cfg.autocast,
        progress=False,
    )
    with contextlib.closing(batches):
        for out in batches:
            t0 = time.perf_counter()
            if not streams:
                for rep in prep.representations:
                    dims[rep] = int(out[rep].shape[1])
                    streams[rep] = [
                        _PassStream.plan(prep, p, rep, dims[rep], stored) for p in prep.passes
                    ]
            size = 0
            for rep in prep.representations:
                size = int(out[rep].shape[0])
                for ps in streams[rep]:
                    ps.feed(out[rep], start)
            start += size
            reduce_seconds += time.perf_counter() - t0
    if not streams:
        raise ValueError("data is empty: no batch was produced, so there is nothing to embed.")
    timings["embed"] = time.perf_counter() - t - reduce_seconds
    return _Streamed(dims, streams, reduce_seconds)


def _score(
    prep: _Prepared,
    source: _Embedded | _Streamed,
    stored: set[tuple[str, str]],
    steps: dict[str, dict[str, float]],
    costs: dict[str, float],
) -> tuple[list[tuple[str, MetricDefinition, float, float]], list[str]]:
    """Compute the missing values of every representation; (rows, error texts).

    Rows are ``(representation, definition, value, seconds)``. Adds the seconds of shared
    steps to ``steps[representation]`` and those of metrics and steps, summed over
    representations, to ``costs``.
    """
    rows: list[tuple[str, MetricDefinition, float, float]] = []
    errors: list[str] = []
    for rep in prep.representations:
        expected = prep.expected(source.dim(rep))
        for index, p in enumerate(prep.passes):
            names = [s.name for s in p.specs if (rep, expected[s.name][1]) not in stored]
            if not names:
                continue
            try:
                result = source.evaluate(prep, rep, index, names)
            except Exception as exc:
                errors.append(f"{rep}: {type(exc).__name__}: {_one_line(str(exc), 300)}")
                continue
            for key, seconds in result.timings.items():
                costs[key] = costs.get(key, 0.0) + seconds
                if key not in result.records:  # a shared step (a pass may repeat one)
                    mine = steps.setdefault(rep, {})
                    mine[key] = mine.get(key, 0.0) + seconds
            for name, rec in result.records.items():
                if rec.error:
                    errors.append(f"{rep}/{name}: {_one_line(rec.error, 300)}")
                    continue
                defn = prep.decorate(REGISTRY[name], rec.definition)
                if defn.digest() != expected[name][1]:  # the skip rule would miss this value
                    warnings.warn(
                        f"sslwatch sweep: the predicted definition of {name!r} on {rep!r} "
                        f"differs from the computed one "
                        f"({'; '.join(defn.differences(expected[name][0]))}); re-runs will "
                        "recompute it. Please report this.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                rows.append((rep, defn, rec.value, max(0.0, rec.seconds)))
    return rows, errors


def _warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    out = []
    for w in caught:
        message = str(w.message)
        if issubclass(w.category, RuntimeWarning) and _METRIC_FAILED.match(message):
            continue  # already recorded as the point's error
        text = f"{w.category.__name__}: {_one_line(message, 300)}"
        if text not in out:
            out.append(text)
    caught.clear()
    return out


# --------------------------------------------------------------------------- workers

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


# --------------------------------------------------------------------------- the sweep


def run_sweep(
    config: SweepConfig,
    *,
    on_start: Callable[[int], None] | None = None,
    on_outcome: Callable[[CheckpointOutcome], None] | None = None,
) -> SweepSummary:
    """Embed and score every checkpoint of ``config``, storing what is missing.

    Args:
        config: the sweep (see :class:`SweepConfig` and the module docstring).
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


# --------------------------------------------------------------------------- torchrun

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
    """Rank 0's plan, sent to every rank: which checkpoints are done, which to share."""

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
    return _Plan(tuple(skipped), tuple(todo), tuple(map(str, leftovers)), problem)


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
    """:func:`run_sweep` on one torchrun rank; see *Distributed* in the module docstring."""
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
