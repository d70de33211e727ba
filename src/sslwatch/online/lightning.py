"""Lightning callback: label-free metrics of the embeddings your steps return.

Usage::

    class SimCLR(L.LightningModule):
        def training_step(self, batch, batch_idx):
            h = self.backbone(x1)
            z = self.projector(h)
            ...
            return {"loss": loss, "feats": h, "z": z}

    trainer = L.Trainer(callbacks=[
        SSLWatchCallback({"backbone": "feats", "projector": "z"}, every_n_steps=200)
    ])

Where the embeddings come from (``key``):

* a string: ``outputs[key]`` of ``training_step`` (default ``"embeddings"``); the
  representation is named after the key (``name=`` overrides it);
* a mapping ``{representation: output key}``: one :class:`~sslwatch.online.monitor.Monitor` per
  representation;
* a function ``(outputs, batch, pl_module) -> tensor | {representation: tensor}``; a value
  may also be an ``(embeddings, views)`` pair. Under DDP it must return the same
  representations on every rank (each one's compute is a collective).

``views_key`` (a string, or ``{representation: key}``) names an output holding (n, q, d)
augmented views for LiDAR, alignment and uniformity; view metrics in an explicit
``metrics`` list are dropped for representations that have no views. A missing key is a
warning (once per stage and key), never an error: monitoring must not kill a run.

When values are logged (each log covers the embeddings seen since the previous log of
that stage, then the window is cleared):

* ``every_n_steps=N``: every N optimizer steps (``trainer.global_step``). These are
  written straight to every attached logger, as Lightning's own ``LearningRateMonitor``
  does (``pl_module.log(on_step=True)`` would only reach the loggers on
  ``log_every_n_steps`` boundaries), at Lightning's logging step of that batch (the step
  its own ``self.log`` values get: ``global_step - 1`` with one optimizer), and put into
  ``trainer.callback_metrics``. ``MonitorResult.step`` is ``trainer.global_step``.
* ``on_epoch_end``: at the end of each training epoch, through
  ``pl_module.log_dict(on_epoch=True)``. By default (``None``) always without
  ``every_n_steps``, and with it whenever optimizer steps ran since the last step log
  (an epoch whose length N does not divide ends with its tail computed, so epoch-level
  monitors always see fresh values; ``global_step`` decides, the same on every rank).
  The values reach
  every logger (TensorBoard, CSV, W&B, MLflow, ...) and ``trainer.callback_metrics``
  (``ModelCheckpoint(monitor="sslwatch/backbone/rankme", mode="max")`` works). Values are
  already identical on every rank, so ``sync_dist`` is not used.
* ``validation=True``: the same for ``validation_step`` outputs, logged at the end of
  each validation run (not during the sanity check) as ``sslwatch/val/<name>/<metric>``.

Names: ``<prefix>/<representation>/<metric>`` (``prefix="sslwatch"``), plus
``<prefix>/<representation>/nonfinite_rows``.

Alarms: a :class:`~sslwatch.online.alarms.CollapseAlarms` with ``stop_on_collapse=True`` makes
the callback set ``trainer.should_stop`` when an alarm fires (every rank agrees, since
every rank computes the same values).

Entry point: :func:`callbacks_factory` is registered under
``lightning.pytorch.callbacks_factory``, which Lightning calls for *every* Trainer. It
returns no callback unless the environment variable ``SSLWATCH_CALLBACK=1`` is set, so
installing sslwatch never changes someone's training silently.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Unpack

import lightning.pytorch as pl
import torch

from sslwatch.core.registry import REGISTRY
from sslwatch.metrics._validation import as_int
from sslwatch.online.budget import UpdateBudget
from sslwatch.online.monitor import Monitor, MonitorResult
from sslwatch.online.settings import MonitorOptions, MonitorSettings

__all__ = ["ENV_FLAG", "SSLWatchCallback", "callbacks_factory"]

ENV_FLAG = "SSLWATCH_CALLBACK"
"""Set to ``1`` (or ``true``/``yes``/``on``) to let the entry point attach the callback."""

Extractor = Callable[[Any, Any, Any], Any]
_TRUE = {"1", "true", "yes", "on"}


class SSLWatchCallback(pl.Callback):
    """Stream the embeddings of each step into :class:`~sslwatch.online.monitor.Monitor` objects
    and log their label-free metrics through Lightning.

    Args:
        key: where the embeddings are (see the module docstring): an output key, a
            mapping ``{representation: output key}``, or a function
            ``(outputs, batch, pl_module)``.
        views_key: output key (or ``{representation: key}``) of (n, q, d) views, or None.
        name: representation name for a single string ``key`` (default: the key).
        metrics: registry names (``None``: the default label-free set).
        every_n_steps: compute and log every N optimizer steps (``None``: not by step).
        on_epoch_end: compute and log at the end of each training epoch: ``True``
            always, ``False`` never, ``None`` (default) always without ``every_n_steps``
            and with it when steps ran since the last step log.
        validation: also monitor ``validation_step`` outputs (logged per validation run).
        update_every_n_batches: feed the monitor only every N-th training batch (a cheap
            way to bound the cost; 1 = every batch).
        overhead_budget: instead of a fixed N, keep the monitor's update time under this
            fraction of the training step's time (e.g. 0.02): a
            :class:`~sslwatch.online.budget.UpdateBudget` measures both and feeds every
            ``stride``-th batch (a power of two), logged as ``<prefix>/update_stride``.
            Useful at large D on a CPU, where exact moments of every batch cost several
            percent of a small network's step. ``None`` (default): feed by
            ``update_every_n_batches``.
        prefix: log-name prefix.
        **monitor_options: the settings of every :class:`~sslwatch.online.monitor.Monitor`
            (``reservoir_size``, ``k``, ``seed``, ``alarms``, ``on_error``, ``params``,
            ``gram_dtype``, ``moment_fraction``, ``blas_threads``), documented, defaulted
            and checked (here, once) by :class:`~sslwatch.online.settings.MonitorSettings`.
    """

    def __init__(
        self,
        key: str | Mapping[str, str] | Extractor = "embeddings",
        *,
        views_key: str | Mapping[str, str] | None = None,
        name: str | None = None,
        metrics: Iterable[str] | None = None,
        every_n_steps: int | None = None,
        on_epoch_end: bool | None = None,
        validation: bool = False,
        update_every_n_batches: int = 1,
        overhead_budget: float | None = None,
        prefix: str = "sslwatch",
        **monitor_options: Unpack[MonitorOptions],
    ) -> None:
        super().__init__()
        if not (isinstance(key, str | Mapping) or callable(key)):
            raise ValueError(
                "key must be an output key (str), a {representation: key} mapping or a "
                f"function (outputs, batch, pl_module) -> tensor; got {type(key).__name__}"
            )
        if isinstance(key, Mapping) and not key:
            raise ValueError("key mapping is empty; give at least one {representation: key}")
        for what, n in (
            ("every_n_steps", every_n_steps),
            ("update_every_n_batches", update_every_n_batches),
        ):
            if n is not None:
                as_int(n, what)
        self.key = key
        self.views_key = views_key
        self.name = name
        self.every_n_steps = every_n_steps
        self.on_epoch_end = on_epoch_end
        self.validation = validation
        self.update_every_n_batches = update_every_n_batches
        if overhead_budget is not None and update_every_n_batches != 1:
            raise ValueError(
                "give either update_every_n_batches (a fixed stride) or overhead_budget (a "
                "measured one), not both"
            )
        self.budget = UpdateBudget(overhead_budget) if overhead_budget is not None else None
        self._batch_started: float | None = None
        self.prefix = prefix
        metrics = None if metrics is None else tuple(metrics)
        self.settings = MonitorSettings(metrics=metrics, **monitor_options)
        self.monitors: dict[str, dict[str, Monitor]] = {"train": {}, "val": {}}
        self.results: list[MonitorResult] = []
        self._warned: set[str] = set()
        self._last_logged_step = -1
        self._saved_state: dict[str, Any] = {}
        for stage in ("train", "val"):
            for rep in self._static_names():
                self._monitor(stage, rep)

    # -- monitors -------------------------------------------------------------------------

    def _static_names(self) -> list[str]:
        if isinstance(self.key, str):
            return [self.name or self.key]
        if isinstance(self.key, Mapping):
            return list(self.key)
        return []

    def _monitor(self, stage: str, rep: str) -> Monitor:
        monitors = self.monitors[stage]
        if rep not in monitors:
            name = rep if stage == "train" else f"val/{rep}"
            settings = self.settings
            if settings.metrics is not None and not self._has_views_source(rep):
                # a representation without views: explicit view metrics would only be NaN
                kept = tuple(m for m in settings.metrics if REGISTRY[m].kind != "views")
                settings = replace(settings, metrics=kept or settings.metrics)
            monitor = Monitor(name=name, settings=settings)
            saved = self._saved_state.get(f"{stage}/{rep}")
            if saved:
                monitor.load_state_dict(saved)
            monitors[rep] = monitor
        return monitors[rep]

    def _has_views_source(self, rep: str) -> bool:
        if callable(self.key) and not isinstance(self.key, str | Mapping):
            return True  # the function may return (embeddings, views) pairs
        if isinstance(self.views_key, Mapping):
            return rep in self.views_key
        return self.views_key is not None

    # -- extraction -----------------------------------------------------------------------

    def _warn_once(self, tag: str, message: str) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            warnings.warn(f"SSLWatchCallback: {message}", RuntimeWarning, stacklevel=3)

    def _lookup(self, outputs: Any, key: str, stage: str, what: str) -> Any:
        if isinstance(outputs, Mapping) and key in outputs:
            return outputs[key]
        got = list(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
        step = "training_step" if stage == "train" else "validation_step"
        self._warn_once(
            f"{stage}:{what}:{key}",
            f"the {step} output has no {what} key {key!r} (it has {got}); return e.g. "
            f"{{'loss': loss, {key!r}: z}} from {step}, or pass "
            f"{'key' if what == 'embeddings' else 'views_key'}=... to the callback. "
            "Those batches are not monitored.",
        )
        return None

    def _extract(
        self, outputs: Any, batch: Any, pl_module: pl.LightningModule, stage: str
    ) -> dict[str, tuple[Any, Any]]:
        out: dict[str, tuple[Any, Any]] = {}
        if callable(self.key) and not isinstance(self.key, str | Mapping):
            got = self.key(outputs, batch, pl_module)
            if got is None:
                return out
            items = got.items() if isinstance(got, Mapping) else [(self.name or "embeddings", got)]
            for rep, value in items:
                if isinstance(value, tuple | list) and len(value) == 2:
                    out[str(rep)] = (value[0], value[1])
                else:
                    out[str(rep)] = (value, None)
            return out
        pairs = (
            [(self.name or self.key, self.key)]
            if isinstance(self.key, str)
            else list(self.key.items())
        )
        for rep, output_key in pairs:
            value = self._lookup(outputs, output_key, stage, "embeddings")
            if value is None:
                continue
            views = None
            if isinstance(self.views_key, str):
                views = self._lookup(outputs, self.views_key, stage, "views")
            elif isinstance(self.views_key, Mapping) and rep in self.views_key:
                views = self._lookup(outputs, self.views_key[rep], stage, "views")
            out[rep] = (value, views)
        return out

    def _update(
        self,
        stage: str,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
    ) -> None:
        for rep, (embeddings, views) in self._extract(outputs, batch, pl_module, stage).items():
            self._monitor(stage, rep).update(embeddings, views, step=trainer.global_step)

    # -- computing and logging ------------------------------------------------------------

    def _compute(self, stage: str, trainer: pl.Trainer) -> dict[str, float]:
        values: dict[str, float] = {}
        for rep in sorted(self.monitors[stage]):
            monitor = self.monitors[stage][rep]
            with warnings.catch_warnings():
                # an empty window (no batch had the key) is skipped below, not an error
                warnings.filterwarnings("ignore", message=".*no finite embeddings since")
                result = monitor.compute(step=trainer.global_step, epoch=trainer.current_epoch)
            monitor.reset()
            if result.n_rows == 0:
                continue
            self.results.append(result)
            values.update(result.log_dict(self.prefix))
            if monitor.should_stop:
                trainer.should_stop = True
        if values and self.budget is not None and stage == "train":
            values[f"{self.prefix}/update_stride"] = float(self.budget.stride)
        return values

    def _log_to_loggers(self, trainer: pl.Trainer, values: Mapping[str, float]) -> None:
        if not values:
            return
        loop = getattr(trainer, "fit_loop", None)
        epoch_loop = getattr(loop, "epoch_loop", None)
        step = int(getattr(epoch_loop, "_batches_that_stepped", trainer.global_step))
        for logger in trainer.loggers:
            logger.log_metrics(dict(values), step=step)
        trainer.callback_metrics.update(
            {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
        )

    @staticmethod
    def _log_epoch(pl_module: pl.LightningModule, values: Mapping[str, float]) -> None:
        if values:
            pl_module.log_dict(
                dict(values), on_step=False, on_epoch=True, sync_dist=False, batch_size=1
            )

    # -- hooks ----------------------------------------------------------------------------

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start timing the step (only with ``overhead_budget``)."""
        if self.budget is not None:
            self._batch_started = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: torch.Tensor | Mapping[str, Any] | None,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Feed the batch's embeddings; every ``every_n_steps`` steps compute and log."""
        if self.budget is None:
            if batch_idx % self.update_every_n_batches == 0:
                self._update("train", trainer, pl_module, outputs, batch)
        else:
            if self._batch_started is not None:
                self.budget.record_step(time.perf_counter() - self._batch_started)
            if self.budget.should_update():
                started = time.perf_counter()
                self._update("train", trainer, pl_module, outputs, batch)
                self.budget.record_update(time.perf_counter() - started)
        step = trainer.global_step
        if (
            self.every_n_steps is not None
            and step > 0
            and step % self.every_n_steps == 0
            and step != self._last_logged_step
        ):
            self._last_logged_step = step
            self._log_to_loggers(trainer, self._compute("train", trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute and log the epoch's window (see ``on_epoch_end``)."""
        if self.on_epoch_end is None:
            due = self.every_n_steps is None or trainer.global_step != self._last_logged_step
        else:
            due = self.on_epoch_end
        if due:
            self._log_epoch(pl_module, self._compute("train", trainer))

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: torch.Tensor | Mapping[str, Any] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Feed validation embeddings (when ``validation``; not during the sanity check)."""
        if self.validation and not trainer.sanity_checking:
            self._update("val", trainer, pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute and log the validation run's values (when ``validation``)."""
        if self.validation and not trainer.sanity_checking:
            self._log_epoch(pl_module, self._compute("val", trainer))

    # -- checkpointing --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The monitors' alarm references (the current window is not checkpointed)."""
        return {
            f"{stage}/{rep}": monitor.state_dict()
            for stage, monitors in self.monitors.items()
            for rep, monitor in monitors.items()
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self._saved_state = dict(state_dict)
        for stage, monitors in self.monitors.items():
            for rep, monitor in monitors.items():
                saved = state_dict.get(f"{stage}/{rep}")
                if saved:
                    monitor.load_state_dict(saved)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from None


def callbacks_factory() -> list[pl.Callback]:
    """Entry point for ``lightning.pytorch.callbacks_factory`` (opt-in).

    Lightning calls this for every ``Trainer``. It returns ``[]`` unless
    ``SSLWATCH_CALLBACK`` is ``1``/``true``/``yes``/``on``; then one
    :class:`SSLWatchCallback` configured by:

    * ``SSLWATCH_KEY``: output key (default ``embeddings``), or ``rep=key,rep=key`` for
      several representations;
    * ``SSLWATCH_EVERY_N_STEPS``: log every N steps (default: at each epoch end);
    * ``SSLWATCH_METRICS``: comma-separated metric names (default: the default set);
    * ``SSLWATCH_RESERVOIR_SIZE``: reservoir size (default 4096).
    """
    if os.environ.get(ENV_FLAG, "").strip().lower() not in _TRUE:
        return []
    raw_key = os.environ.get("SSLWATCH_KEY", "embeddings").strip() or "embeddings"
    key: str | dict[str, str] = raw_key
    if "=" in raw_key:
        pairs = [p.split("=", 1) for p in raw_key.split(",") if p.strip()]
        key = {rep.strip(): k.strip() for rep, k in pairs}
    metrics_env = os.environ.get("SSLWATCH_METRICS", "").strip()
    metrics = [m.strip() for m in metrics_env.split(",") if m.strip()] or None
    options: MonitorOptions = {}
    reservoir = _env_int("SSLWATCH_RESERVOIR_SIZE")
    if reservoir:
        options["reservoir_size"] = reservoir
    return [
        SSLWatchCallback(
            key,
            metrics=metrics,
            every_n_steps=_env_int("SSLWATCH_EVERY_N_STEPS"),
            **options,
        )
    ]
