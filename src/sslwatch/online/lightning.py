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

    # or any submodule, without returning anything: forward hooks
    SSLWatchCallback(layers={"backbone": "backbone", "block3": "backbone.layer3"})

Where the embeddings come from (``key`` and ``layers``, either or both):

* a string: ``outputs[key]`` of ``training_step`` (default ``"embeddings"`` when no
  ``layers`` are given); the representation is named after the key (``name=``
  overrides it);
* a mapping ``{representation: output key}``: one :class:`~sslwatch.online.monitor.Monitor` per
  representation;
* a function ``(outputs, batch, pl_module) -> tensor | {representation: tensor}``; a value
  may also be an ``(embeddings, views)`` pair. Under DDP it must return the same
  representations on every rank (each one's compute is a collective);
* ``layers={representation: submodule path}`` (or a list of paths): forward hooks on
  submodules of the LightningModule (:mod:`sslwatch.online.hooks`), registered at
  ``setup`` (a bad path fails there, listing the close names) and removed at
  ``teardown``. They record only during the batches that are fed (training batches,
  and validation batches with ``validation=True``); every forward call of a layer in
  the step is fed (a two-view step feeds both views). Outputs are pooled by ``pool``,
  ``tokens``, ``layout`` and ``select``, as in :func:`sslwatch.online.hooks.watch`:
  convolution maps by their global spatial average, (N, T, D) sequences by the mean
  over tokens, by default.

``labels_key`` (an output key, or a function ``(outputs, batch, pl_module) -> labels``,
e.g. ``lambda out, batch, module: batch[1]``) gives each row's class label; the
monitors then add the label-based references (``knn_accuracy``, ``ridge_probe``), so
the trust in each label-free metric can be judged while training runs. The same labels
go to every representation with one row per label; a watched layer that ran k times in
the step (k views) gets them on each call. A representation whose row count differs is
fed without labels (a warning, once).

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
  ``pl_module.log_dict(on_epoch=True)``. By default (``None``) whenever optimizer steps
  ran since the last compute: with ``every_n_steps`` an epoch whose length N does not
  divide ends with its tail computed, and an epoch that ended on a step log is not
  computed twice (``global_step`` decides, the same on every rank); ``True`` always,
  ``False`` never. The values reach every logger (TensorBoard, CSV, W&B, MLflow, ...)
  and ``trainer.callback_metrics``. Values are already identical on every rank, so
  ``sync_dist`` is not used.
* before each validation run inside ``fit`` (unless ``on_epoch_end=False``), when
  optimizer steps ran since the last compute, as for ``every_n_steps``. Lightning runs
  validation *before* the epoch's end, and ModelCheckpoint saves (EarlyStopping checks)
  at the end of validation when validation does not run exactly once per epoch
  (``check_val_every_n_epoch > 1``, ``val_check_interval < 1``): this compute gives them
  the value of the steps up to that validation. With validation once per epoch it is
  the epoch-end compute, done a little earlier.
* ``validation=True``: the same for ``validation_step`` outputs, logged at the end of
  each validation run (not during the sanity check) as ``sslwatch/val/<name>/<metric>``.

ModelCheckpoint and EarlyStopping: the logged names work as their ``monitor=``
(``ModelCheckpoint(monitor="sslwatch/backbone/rankme", mode="max")``) wherever the
callback sits in ``callbacks=[...]``: at epoch end Lightning runs their
``on_train_epoch_end`` after every other callback's (and moves ModelCheckpoint to the
end of the list), and decisions at validation end read the compute made as that
validation started.
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
from lightning.pytorch.trainer.states import TrainerFn

from sslwatch.core.registry import REGISTRY
from sslwatch.metrics._validation import as_int
from sslwatch.online.budget import UpdateBudget
from sslwatch.online.hooks import LayerHooks, Layout, Pool, Select, Tokens, poolings, resolve_layers
from sslwatch.online.monitor import InvalidLabelsError, Monitor, MonitorResult
from sslwatch.online.settings import MonitorOptions, MonitorSettings

__all__ = ["ENV_FLAG", "SSLWatchCallback", "callbacks_factory"]

ENV_FLAG = "SSLWATCH_CALLBACK"
"""Set to ``1`` (or ``true``/``yes``/``on``) to let the entry point attach the callback."""

Extractor = Callable[[Any, Any, Any], Any]
_TRUE = {"1", "true", "yes", "on"}
_ARGUMENT = {"embeddings": "key", "views": "views_key", "labels": "labels_key"}


class SSLWatchCallback(pl.Callback):
    """Stream the embeddings of each step into :class:`~sslwatch.online.monitor.Monitor` objects
    and log their label-free metrics through Lightning.

    Args:
        key: where the embeddings are (see the module docstring): an output key, a
            mapping ``{representation: output key}``, or a function
            ``(outputs, batch, pl_module)``; ``None`` (default): ``"embeddings"``, or no
            output key when ``layers`` are given.
        layers: ``{representation: submodule path}`` of the LightningModule (or a list of
            paths), watched through forward hooks (:mod:`sslwatch.online.hooks`).
        pool: how a watched layer's convolution maps are pooled: ``"avg"`` (default),
            ``"max"`` or ``"flatten"`` (or a ``{layer: value}`` mapping).
        tokens: how (N, T, D) sequence outputs are pooled: ``"mean"`` (default) or ``"cls"``.
        layout: how 3-D layer outputs are read: ``"auto"`` (default), ``"channels_first"``,
            ``"tokens"`` (N, T, D) or ``"sequence_first"`` (T, N, D).
        select: a function picking the tensor of a layer's tuple/dict output.
        views_key: output key (or ``{representation: key}``) of (n, q, d) views, or None.
        labels_key: output key of the batch's labels, or a function
            ``(outputs, batch, pl_module) -> labels``; ``None``: no labels.
        name: representation name for a single string ``key`` (default: the key).
        metrics: registry names (``None``: the default label-free set).
        every_n_steps: compute and log every N optimizer steps (``None``: not by step).
        on_epoch_end: compute and log at the end of each training epoch (and before each
            validation run inside ``fit``): ``True`` always, ``False`` never, ``None``
            (default) when optimizer steps ran since the last compute.
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
        key: str | Mapping[str, str] | Extractor | None = None,
        *,
        layers: Mapping[str, str] | Iterable[str] | None = None,
        pool: Pool | Mapping[str, Pool] = "avg",
        tokens: Tokens | Mapping[str, Tokens] = "mean",
        layout: Layout | Mapping[str, Layout] = "auto",
        select: Select | Mapping[str, Select] | None = None,
        views_key: str | Mapping[str, str] | None = None,
        labels_key: str | Extractor | None = None,
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
        if key is None:
            key = None if layers is not None else "embeddings"
        if key is not None and not (isinstance(key, str | Mapping) or callable(key)):
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
        self.name = name
        self.layers: dict[str, str] = {}
        if layers is not None:
            if isinstance(layers, str):
                raise ValueError(
                    f"layers must be a {{name: path}} mapping or a list of paths; got the "
                    f"string {layers!r} (write [{layers!r}])"
                )
            self.layers = dict(layers) if isinstance(layers, Mapping) else {p: p for p in layers}
            if not self.layers:
                raise ValueError("layers is empty; give at least one {name: submodule path}")
        self.pooling = poolings(self.layers, pool=pool, tokens=tokens, layout=layout, select=select)
        clash = sorted(set(self.layers) & set(self._key_names()))
        if clash:
            raise ValueError(
                f"{clash} name both a layer and an output key; give them different names"
            )
        self._hooks: LayerHooks | None = None
        self._capturing: str | None = None  # the stage whose batch is being captured
        self._captured: dict[str, list[torch.Tensor]] = {}
        self._feed = False
        self.views_key = views_key
        if labels_key is not None and not (isinstance(labels_key, str) or callable(labels_key)):
            raise ValueError(
                "labels_key must be an output key (str) or a function (outputs, batch, "
                f"pl_module) -> labels; got {type(labels_key).__name__}"
            )
        self.labels_key = labels_key
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
        self._last_compute_step = -1
        self._saved_state: dict[str, Any] = {}
        for stage in ("train", "val"):
            for rep in self._static_names():
                self._monitor(stage, rep)

    # -- monitors -------------------------------------------------------------------------

    def _key_names(self) -> list[str]:
        if isinstance(self.key, str):
            return [self.name or self.key]
        if isinstance(self.key, Mapping):
            return list(self.key)
        return []

    def _static_names(self) -> list[str]:
        return [*self._key_names(), *self.layers]

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
        if rep in self.layers:
            return False  # a layer's output has no views
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
            f"{_ARGUMENT[what]}=... to the callback. "
            "Those batches are not monitored.",
        )
        return None

    def _extract(
        self, outputs: Any, batch: Any, pl_module: pl.LightningModule, stage: str
    ) -> dict[str, tuple[Any, Any]]:
        out: dict[str, tuple[Any, Any]] = {}
        if self.key is None:
            return out
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

    def _labels(self, outputs: Any, batch: Any, pl_module: pl.LightningModule, stage: str) -> Any:
        """The batch's labels from ``labels_key`` (``None``: none, or a warned-about miss)."""
        if self.labels_key is None:
            return None
        if isinstance(self.labels_key, str):
            return self._lookup(outputs, self.labels_key, stage, "labels")
        return self.labels_key(outputs, batch, pl_module)

    def _matching(self, labels: Any, rows: Any, rep: str, stage: str) -> Any:
        """``labels`` when there is one per row of ``rows``, else ``None`` (warned once):
        a mismatch must not stop training."""
        if labels is None:
            return None
        n_labels, n_rows = len(labels), int(getattr(rows, "shape", (len(rows),))[0])
        if n_labels == n_rows:
            return labels
        self._warn_once(
            f"{stage}:labels:{rep}",
            f"{rep!r} has {n_rows} rows for {n_labels} labels in a batch; its rows are fed "
            "without labels (give labels_key a function returning one label per row).",
        )
        return None

    def _update(
        self,
        stage: str,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
    ) -> None:
        step = trainer.global_step
        labels = self._labels(outputs, batch, pl_module, stage)
        for rep, (embeddings, views) in self._extract(outputs, batch, pl_module, stage).items():
            mine = self._matching(labels, embeddings, rep, stage)
            self._update_monitor(stage, rep, embeddings, views, mine, step)
        captured, self._captured = self._captured, {}
        for rep, calls in captured.items():
            # One entry per forward call of the layer (e.g. per view). Labels go with the
            # first call only: two views of one input would fall on both sides of the
            # content-key split, and each held-out view would find its sibling in the kNN
            # bank (an inflated knn_accuracy).
            for i, rows in enumerate(calls):
                mine = self._matching(labels, rows, rep, stage) if i == 0 else None
                self._update_monitor(stage, rep, rows, None, mine, step)

    def _update_monitor(
        self, stage: str, rep: str, rows: Any, views: Any, labels: Any, step: int
    ) -> None:
        """``Monitor.update``; labels it refuses (e.g. -1 for unlabelled rows) are warned
        about once and the rows fed without them: monitoring must not stop training."""
        monitor = self._monitor(stage, rep)
        if labels is not None:
            try:
                monitor.update(rows, views, labels=labels, step=step)
                return
            except InvalidLabelsError as exc:
                self._warn_once(
                    f"{stage}:bad-labels:{rep}",
                    f"{rep!r}: {exc} Those rows are fed without labels.",
                )
        monitor.update(rows, views, step=step)

    # -- layers ---------------------------------------------------------------------------

    def _capture(self, rep: str, rows: torch.Tensor) -> None:
        self._captured.setdefault(rep, []).append(rows)

    def _start_capture(self, stage: str | None) -> None:
        """Record the watched layers' outputs of the batch that starts (``None``: don't)."""
        self._capturing = stage if self._hooks is not None else None
        self._captured = {}

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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Register the forward hooks of ``layers`` on the LightningModule's submodules."""
        if self.layers and self._hooks is None:
            resolve_layers(pl_module, self.layers)  # a bad path fails here, before training
            self._hooks = LayerHooks(
                pl_module,
                self.layers,
                self.pooling,
                self._capture,
                active=lambda module: self._capturing is not None,
            )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the forward hooks: the module is left as it was."""
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None
        self._start_capture(None)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Decide whether this batch is fed (and only then capture the watched layers)."""
        if self.budget is None:
            self._feed = batch_idx % self.update_every_n_batches == 0
        else:
            self._feed = self.budget.should_update()
            self._batch_started = time.perf_counter()
        self._start_capture("train" if self._feed else None)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: torch.Tensor | Mapping[str, Any] | None,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Feed the batch's embeddings; every ``every_n_steps`` steps compute and log."""
        self._capturing = None
        if self.budget is not None and self._batch_started is not None:
            self.budget.record_step(time.perf_counter() - self._batch_started)
        if self._feed:
            started = time.perf_counter()
            self._update("train", trainer, pl_module, outputs, batch)
            if self.budget is not None:
                self.budget.record_update(time.perf_counter() - started)
        self._captured = {}
        step = trainer.global_step
        if (
            self.every_n_steps is not None
            and step > 0
            and step % self.every_n_steps == 0
            and step != self._last_compute_step
        ):
            self._log_train_now(trainer)

    def _log_train_now(self, trainer: pl.Trainer) -> None:
        """Compute the training window and write it to the loggers and callback_metrics."""
        self._last_compute_step = trainer.global_step
        self._log_to_loggers(trainer, self._compute("train", trainer))

    def _steps_since_compute(self, trainer: pl.Trainer) -> bool:
        return trainer.global_step != self._last_compute_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Inside ``fit``: compute the training window first when steps ran since the last
        compute, so that ModelCheckpoint and EarlyStopping deciding at the end of this
        validation run read a fresh value (see ``on_epoch_end``)."""
        if (
            self.on_epoch_end is not False
            and not trainer.sanity_checking
            and trainer.state.fn == TrainerFn.FITTING
            and self._steps_since_compute(trainer)
        ):
            self._log_train_now(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute and log the epoch's window (see ``on_epoch_end``)."""
        due = self._steps_since_compute(trainer) if self.on_epoch_end is None else self.on_epoch_end
        if due:
            self._last_compute_step = trainer.global_step
            self._log_epoch(pl_module, self._compute("train", trainer))

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Capture the watched layers during validation (when ``validation``)."""
        self._start_capture("val" if self._monitors_validation(trainer) else None)

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
        self._capturing = None
        if self._monitors_validation(trainer):
            self._update("val", trainer, pl_module, outputs, batch)
        self._captured = {}

    def _monitors_validation(self, trainer: pl.Trainer) -> bool:
        return self.validation and not trainer.sanity_checking

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute and log the validation run's values (when ``validation``)."""
        if self._monitors_validation(trainer):
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
