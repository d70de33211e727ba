"""What a sweep is asked to do: :class:`SweepConfig`, the shard and layer options, and
the checkpoint list (:func:`plan_checkpoints`)."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sslwatch.metrics._validation import as_int, is_int
from sslwatch.offline.checkpoints import parse_checkpoint_path
from sslwatch.offline.data import Dataset
from sslwatch.offline.sweep.outcomes import _one_line

#: The dtype of every embedding the sweep scores (``extract_embeddings`` returns float32).
EMBEDDING_DTYPE = "float32"

#: Representation name when no layers are given (the model output).
OUTPUT_REPRESENTATION = "output"


class SweepSetupError(ValueError):
    """The sweep cannot start (bad data, factory, option or checkpoint list); one line."""


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; see :mod:`sslwatch.offline.sweep` for the conventions.

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
            :mod:`sslwatch.offline.sweep`): ``False`` (default) never, ``True`` always (the
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
