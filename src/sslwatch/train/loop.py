"""A small, resumable, deterministic SSL training loop over an in-memory tensor.

Checkpoint layout (``config.out_dir = OUT``)::

    OUT/config.json               the TrainConfig (JSON), written when training starts
    OUT/epoch_0000.safetensors    model weights at random initialisation (epoch 0)
    OUT/epoch_0001.safetensors    model weights after epoch 1, and so on
    OUT/epoch_0001.state.pt       optimizer, scheduler and RNG state after epoch 1

A weights file holds the whole method's ``state_dict`` (keys ``backbone.*``,
``projector.*``, predictor / momentum copies, BN running statistics, the MoCo queue)
and, as safetensors metadata (strings), ``method``, ``method_kwargs``, ``backbone``,
``backbone_kwargs`` (JSON), ``epoch`` and ``config`` (JSON), enough for
:func:`load_checkpoint` to rebuild the model. With ``checkpoint_format="pt"`` the
weights go to ``epoch_NNNN.pt`` instead, as ``torch.save({"state_dict", "metadata"})``.
State files contain plain tensors, numbers and dicts only and load with
``torch.load(path, weights_only=True)``. By default only the newest state file is kept
(``keep_all_states=True`` keeps them all); every weights file is kept. Files are
written to a temporary name and renamed, so an interruption never leaves a truncated
checkpoint. The epoch-0 weights are saved before the first step; note that their
BatchNorm running statistics are the defaults (mean 0, variance 1): recalibrate them
with :func:`sslwatch.train.recalibrate_batchnorm` before scoring.

Determinism: the initial weights come from ``torch.manual_seed(seed)`` (inside a forked
RNG, the global RNG is left untouched) and every random draw of the loop (batch order,
augmentations) comes from one CPU ``torch.Generator`` whose state is checkpointed. On CPU
an interrupted run resumed from its last checkpoint ends with exactly the weights of an
uninterrupted run. Callbacks cannot disturb this, as long as they do not modify the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sslwatch._files import atomic_path
from sslwatch._version import __version__
from sslwatch.metrics._validation import as_int, is_int
from sslwatch.train.augment import build_augment
from sslwatch.train.backbones import SHAPE_KWARGS, build_backbone
from sslwatch.train.methods import SSLMethod, build_method, canonical_method_name

__all__ = [
    "Callback",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "build_from_config",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "state_path",
    "train",
]

CHECKPOINT_FORMAT_VERSION = "sslwatch.train/1"
_OPTIMIZERS = ("adamw", "adam", "sgd")
_SCHEDULERS = ("cosine", "constant")
_FORMATS = ("safetensors", "pt")
# Fields that may change between an interrupted run and its resumption.
_RESUME_FREE_FIELDS = frozenset({"out_dir", "device", "progress", "resume", "keep_all_states"})
_WEIGHTS_RE = re.compile(r"^epoch_(\d+)\.(safetensors|pt)$")


class StopTraining(Exception):
    """Raise from a callback to end training cleanly after the current epoch."""


Callback = Callable[[int, SSLMethod, Path | None], Any]


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-serialisable).

    Attributes:
        method: ``simclr``, ``moco_v2``, ``simsiam``, ``byol`` or ``vicreg``.
        method_kwargs: keyword arguments of the method (head sizes, temperature, ...).
        backbone: ``conv1d``, ``small_conv2d``, ``resnet18_cifar`` or ``mlp``.
        backbone_kwargs: keyword arguments of the backbone; ``in_channels`` defaults to
            the data's channel count (``in_features``, for ``mlp``, to the values per
            sample).
        augment: ``auto`` (by input rank), ``mnist1d``, ``image`` or ``none``.
        augment_kwargs: keyword arguments of the augmentation.
        epochs: number of passes over the data.
        batch_size: samples per step (the last incomplete batch of an epoch is dropped).
        optimizer: ``adamw``, ``adam`` or ``sgd`` (with Nesterov-free momentum).
        lr: peak learning rate.
        weight_decay: weight decay (decoupled for AdamW, L2 for Adam and SGD).
        momentum: SGD momentum.
        scheduler: ``cosine`` (per-step cosine decay to 0 after a linear warmup) or
            ``constant`` (after the warmup).
        warmup_epochs: epochs of linear learning-rate warmup.
        seed: seed of the initial weights and of every random draw of the loop.
        out_dir: checkpoint directory; ``None`` trains in memory without checkpoints.
        checkpoint_format: ``safetensors`` (default) or ``pt`` for the weights files.
        keep_all_states: keep every epoch's optimizer/RNG state file, not just the newest.
        resume: resume from the newest checkpoint in ``out_dir`` if there is one.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        progress: show a tqdm progress bar.
    """

    method: str = "simclr"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone: str = "conv1d"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: str = "auto"
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    seed: int = 0
    out_dir: str | os.PathLike[str] | None = None
    checkpoint_format: str = "safetensors"
    keep_all_states: bool = False
    resume: bool = True
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        self.method = canonical_method_name(self.method)
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)
        self.optimizer = self.optimizer.lower()
        self.scheduler = self.scheduler.lower()
        self.checkpoint_format = self.checkpoint_format.lower()
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}; got {self.optimizer!r}.")
        if self.scheduler not in _SCHEDULERS:
            raise ValueError(f"scheduler must be one of {_SCHEDULERS}; got {self.scheduler!r}.")
        if self.checkpoint_format not in _FORMATS:
            raise ValueError(
                f"checkpoint_format must be one of {_FORMATS}; got {self.checkpoint_format!r}."
            )
        as_int(self.epochs, "epochs")
        as_int(self.batch_size, "batch_size", low=2, hint=" (BatchNorm needs 2 samples)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number; got {self.lr}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}.")
        if not is_int(self.warmup_epochs) or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"warmup_epochs must be in [0, epochs={self.epochs}]; got {self.warmup_epochs}."
            )
        try:
            json.dumps(self.to_dict())
        except TypeError as err:
            raise ValueError(
                f"TrainConfig must be JSON-serialisable (plain numbers, strings, lists, dicts "
                f"in *_kwargs): {err}"
            ) from err

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"Unknown TrainConfig fields {unknown}; valid fields: {sorted(names)}."
            )
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The fields that define the training trajectory (all but out_dir, device, ...)."""
        return {k: v for k, v in _jsonable(self.to_dict()).items() if k not in _RESUME_FREE_FIELDS}


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        method: the trained method (on the training device, in eval mode).
        config: the configuration used.
        losses: mean training loss of each epoch, ``losses[e - 1]`` for epoch e
            (including epochs run before a resumption).
        checkpoints: weights files of epochs 0..last (empty without ``out_dir``).
        start_epoch: the epoch this call started from (0 for a fresh run).
        last_epoch: the last completed epoch.
        stopped_early: a callback raised :class:`StopTraining`.
    """

    method: SSLMethod
    config: TrainConfig
    losses: list[float]
    checkpoints: list[Path]
    start_epoch: int
    last_epoch: int
    stopped_early: bool = False


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so tuples and lists compare equal."""
    return json.loads(json.dumps(obj))


def checkpoint_path(out_dir: str | os.PathLike[str], epoch: int, fmt: str = "safetensors") -> Path:
    """``OUT/epoch_NNNN.safetensors`` (or ``.pt``): the weights after ``epoch`` epochs."""
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}; got {fmt!r}.")
    return Path(out_dir) / f"epoch_{int(epoch):04d}.{fmt}"


def state_path(out_dir: str | os.PathLike[str], epoch: int) -> Path:
    """``OUT/epoch_NNNN.state.pt``: optimizer, scheduler and RNG state after ``epoch``."""
    return Path(out_dir) / f"epoch_{int(epoch):04d}.state.pt"


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """All weights files in ``out_dir`` as (epoch, path), sorted by epoch."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _WEIGHTS_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _metadata(
    method: SSLMethod, config: TrainConfig, backbone_kwargs: dict[str, Any], epoch: int
) -> dict[str, str]:
    return {
        "format": CHECKPOINT_FORMAT_VERSION,
        "method": config.method,
        "method_kwargs": json.dumps(method.hparams),
        "backbone": config.backbone,
        "backbone_kwargs": json.dumps(backbone_kwargs),
        "epoch": str(epoch),
        "config": json.dumps(config.to_dict()),
        "sslwatch_version": __version__,
    }


def _save_weights(path: Path, method: SSLMethod, metadata: dict[str, str], fmt: str) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in method.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    else:
        with atomic_path(path) as tmp:
            torch.save({"state_dict": tensors, "metadata": metadata}, tmp)


def _load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ValueError(f"{path} is not an sslwatch .pt checkpoint (no 'state_dict' entry).")
    return dict(blob["state_dict"]), dict(blob.get("metadata", {}))


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a weights file: method, backbone, their kwargs, epoch, config.

    JSON-valued entries (``*_kwargs``, ``config``) are decoded; ``epoch`` is an int.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"No checkpoint at {p}; list them with list_checkpoints(out_dir).")
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            raw = dict(f.metadata() or {})
    else:
        raw = _load_weights(p)[1]
    if raw.get("format") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{p} was not written by sslwatch.train (metadata format {raw.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT_VERSION!r})."
        )
    out: dict[str, Any] = dict(raw)
    for key in ("method_kwargs", "backbone_kwargs", "config"):
        out[key] = json.loads(raw[key])
    out["epoch"] = int(raw["epoch"])
    return out


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SSLMethod:
    """Rebuild the method saved in a weights file (either format) and load its weights.

    The model is returned in eval mode on ``device``. For the epoch-0 checkpoint,
    recalibrate BatchNorm statistics before scoring (see the module docstring).
    """
    meta = read_checkpoint_metadata(path)
    backbone = build_backbone(meta["backbone"], **meta["backbone_kwargs"])
    method = build_method(meta["method"], backbone, **meta["method_kwargs"])
    tensors, _ = _load_weights(Path(path))
    method.load_state_dict(tensors, strict=True)
    return method.to(device).eval()


def _prepare_data(x_train: Any) -> torch.Tensor:
    if isinstance(x_train, np.ndarray):
        x_train = torch.from_numpy(x_train)
    if not isinstance(x_train, torch.Tensor):
        raise ValueError(
            f"x_train must be a torch.Tensor or numpy array; got {type(x_train).__name__}."
        )
    if not x_train.is_floating_point():
        raise ValueError(f"x_train must hold floats; got dtype {x_train.dtype}. Cast it first.")
    if x_train.ndim < 2:
        raise ValueError(
            f"x_train must have a sample axis and at least one input axis, e.g. (N, 40) or "
            f"(N, C, H, W); got shape {tuple(x_train.shape)}."
        )
    if not bool(torch.isfinite(x_train).all()):
        raise ValueError("x_train contains NaN or Inf; clean or impute the inputs first.")
    return x_train.detach().to(torch.float32)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r} is not a valid torch device: {err}") from err


def _backbone_kwargs(config: TrainConfig, sample_shape: tuple[int, ...]) -> dict[str, Any]:
    kwargs = dict(config.backbone_kwargs)
    if SHAPE_KWARGS.get(config.backbone.lower()) == "in_features":
        kwargs.setdefault("in_features", math.prod(sample_shape))
    elif "in_channels" not in kwargs:
        kwargs["in_channels"] = 1 if len(sample_shape) == 1 else int(sample_shape[0])
    out: dict[str, Any] = _jsonable(kwargs)
    return out


def build_from_config(config: TrainConfig, sample_shape: tuple[int, ...]) -> SSLMethod:
    """The method described by ``config`` with its seeded initial weights (on CPU).

    ``sample_shape`` is one input's shape, e.g. ``(40,)`` or ``(3, 32, 32)``; it sets the
    backbone's ``in_channels`` unless ``backbone_kwargs`` gives it. The global RNG is
    left untouched.
    """
    bkw = _backbone_kwargs(config, sample_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = build_backbone(config.backbone, **bkw)
        return build_method(config.method, backbone, **config.method_kwargs)


def _make_optimizer(config: TrainConfig, method: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in method.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    cosine = config.scheduler == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine or total <= warmup:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return factor


def _latest_resumable(out: Path, fmt: str) -> int | None:
    """Newest epoch that has both a weights file and a state file (epoch 0 needs none)."""
    epochs = [e for e, p in list_checkpoints(out) if p.suffix == f".{fmt}"]
    for e in sorted(epochs, reverse=True):
        if e == 0 or state_path(out, e).is_file():
            return e
    return None


def train(
    config: TrainConfig,
    x_train: torch.Tensor | np.ndarray,
    *,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``config.method`` on the inputs ``x_train`` (no labels needed).

    Each step draws a batch (seeded shuffling, last incomplete batch dropped), makes two
    augmented views, computes ``loss = method(v1, v2)``, steps the optimizer and the
    per-step learning-rate schedule, then calls ``method.on_after_step``. After every
    epoch ``e`` (and once for the random initialisation, ``e = 0``) the weights and the
    training state are checkpointed and every callback is called as
    ``callback(e, method, weights_path)`` (``weights_path`` is ``None`` without
    ``out_dir``). A callback may raise :class:`StopTraining` to end training; callbacks
    must not modify the model (score a ``copy.deepcopy`` if you need to, e.g. to
    recalibrate BatchNorm). If ``out_dir`` holds checkpoints of the same configuration,
    training resumes after the newest one; a finished run returns without training.

    Args:
        config: the run's configuration.
        x_train: float inputs, (N, L), (N, C, L) or (N, C, H, W); cast to float32.
        callbacks: functions called at the end of every epoch.

    Raises:
        ValueError: on bad inputs, a batch size larger than the data, or an ``out_dir``
            holding checkpoints of a different configuration (or any while
            ``resume=False``).
        FloatingPointError: when the loss becomes NaN or Inf (lower the learning rate).
    """
    from tqdm import tqdm

    x = _prepare_data(x_train)
    n = x.shape[0]
    if n < config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {n} training samples; lower it."
        )
    sample_shape = tuple(x.shape[1:])
    device = _resolve_device(config.device)
    augment = build_augment(config.augment, sample_shape, **config.augment_kwargs)
    session = _Session.start(config, sample_shape, n, device)
    out = Path(config.out_dir) if config.out_dir is not None else None

    start_epoch = 0
    resumed = False
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        latest = _latest_resumable(out, config.checkpoint_format)
        if latest is not None:
            if not config.resume:
                raise ValueError(
                    f"{out} already holds checkpoints; use an empty out_dir or resume=True."
                )
            _check_same_run(out, config)
            session.resume(out, latest)
            start_epoch, resumed = latest, True
        config_json = json.dumps(config.to_dict(), indent=2)
        with atomic_path(out / "config.json") as tmp:
            tmp.write_text(config_json)

    def save(epoch: int) -> Path | None:
        return None if out is None else session.save(out, epoch)

    def run_callbacks(epoch: int, path: Path | None) -> bool:
        for cb in callbacks:
            try:
                cb(epoch, session.method, path)
            except StopTraining:
                return True
        return False

    stopped = False
    if not resumed:
        stopped = run_callbacks(0, save(0))
    last_epoch = start_epoch
    x = x.to(device)
    bar = tqdm(
        range(start_epoch + 1, config.epochs + 1),
        desc=f"{config.method}",
        unit="epoch",
        disable=not config.progress or stopped,
        initial=start_epoch,
        total=config.epochs,
    )
    for epoch in bar:
        if stopped:
            break
        session.run_epoch(x, augment, epoch)
        bar.set_postfix(loss=f"{session.losses[-1]:.4f}")
        last_epoch = epoch
        stopped = run_callbacks(epoch, save(epoch))
    bar.close()
    session.method.eval()
    fmt = config.checkpoint_format
    checkpoints = [p for _, p in list_checkpoints(out) if p.suffix == f".{fmt}"] if out else []
    return TrainResult(
        method=session.method,
        config=config,
        losses=session.losses,
        checkpoints=checkpoints,
        start_epoch=start_epoch,
        last_epoch=last_epoch,
        stopped_early=stopped,
    )


@dataclass
class _Session:
    """What one training run updates: the method, its optimizer and schedule, the one
    generator of every random draw, and the epoch losses so far."""

    config: TrainConfig
    method: SSLMethod
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    backbone_kwargs: dict[str, Any]
    n: int
    steps_per_epoch: int
    losses: list[float] = field(default_factory=list)

    @classmethod
    def start(
        cls, config: TrainConfig, sample_shape: tuple[int, ...], n: int, device: torch.device
    ) -> _Session:
        """A fresh run: seeded initial weights on ``device``, optimizer, schedule."""
        bkw = _backbone_kwargs(config, sample_shape)
        method = build_from_config(config, sample_shape).to(device)
        optimizer = _make_optimizer(config, method)
        steps_per_epoch = n // config.batch_size
        factor = _lr_factor(config, steps_per_epoch)
        return cls(
            config=config,
            method=method,
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, factor),
            generator=torch.Generator().manual_seed(config.seed),
            backbone_kwargs=bkw,
            n=n,
            steps_per_epoch=steps_per_epoch,
        )

    def resume(self, out: Path, epoch: int) -> None:
        """Load the weights of ``epoch`` and, after epoch 0, the training state."""
        tensors, _ = _load_weights(checkpoint_path(out, epoch, self.config.checkpoint_format))
        self.method.load_state_dict(tensors, strict=True)
        if epoch > 0:
            state = torch.load(state_path(out, epoch), map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.generator.set_state(state["generator"])
            self.losses = [float(v) for v in state["losses"].tolist()]

    def save(self, out: Path, epoch: int) -> Path:
        """Write the weights of ``epoch`` and, after epoch 0, the state to resume from (the
        older state files removed unless ``keep_all_states``); return the weights' path."""
        config, fmt = self.config, self.config.checkpoint_format
        path = checkpoint_path(out, epoch, fmt)
        metadata = _metadata(self.method, config, self.backbone_kwargs, epoch)
        _save_weights(path, self.method, metadata, fmt)
        if epoch > 0:
            state = {
                "epoch": epoch,
                "global_step": epoch * self.steps_per_epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "losses": torch.tensor(self.losses, dtype=torch.float64),
                "config": json.dumps(config.to_dict()),
            }
            with atomic_path(state_path(out, epoch)) as tmp:
                torch.save(state, tmp)
            if not config.keep_all_states:
                for old in range(epoch - 1, -1, -1):
                    stale = state_path(out, old)
                    if not stale.exists():
                        break
                    stale.unlink()
        return path

    def run_epoch(self, x: torch.Tensor, augment: Callable[..., torch.Tensor], epoch: int) -> None:
        """One pass over ``x`` in seeded random batches (the last incomplete one dropped);
        appends the epoch's mean loss to :attr:`losses`."""
        config, method, batch = self.config, self.method, self.config.batch_size
        total_steps = self.steps_per_epoch * config.epochs
        method.train()
        perm = torch.randperm(self.n, generator=self.generator).to(x.device)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for b in range(self.steps_per_epoch):
            xb = x[perm[b * batch : (b + 1) * batch]]
            v1 = augment(xb, self.generator)
            v2 = augment(xb, self.generator)
            loss = method(v1, v2)
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(
                    f"{config.method} loss became {float(loss)} at epoch {epoch}, step {b + 1}; "
                    f"lower the learning rate (lr={config.lr}) or check the inputs."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            method.on_after_step((epoch - 1) * self.steps_per_epoch + b + 1, total_steps)
            total += loss.detach().to(torch.float64)
        self.losses.append(float(total) / self.steps_per_epoch)


def _check_same_run(out: Path, config: TrainConfig) -> None:
    """Refuse to resume checkpoints written by a different configuration."""
    cfg_file = out / "config.json"
    if not cfg_file.is_file():
        return
    try:
        saved = TrainConfig.from_dict(json.loads(cfg_file.read_text())).identity()
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{cfg_file} is not a valid TrainConfig ({err}); use another out_dir."
        ) from err
    now = config.identity()
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(
            f"{out} holds checkpoints of a different configuration ({details}); use a new "
            "out_dir to start a new run, or restore the old settings to resume."
        )
