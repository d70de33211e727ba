"""Watch any layer of a model through forward hooks, without touching the model.

Usage::

    with sslwatch.online.hooks.watch(
        model, {"backbone": "encoder", "block3": "encoder.layer3"}, reservoir_size=2048
    ) as layers:
        for x in loader:
            loss = step(model, x)          # each watched layer's output is fed as it runs
        results = layers.compute(step=step_no, epoch=epoch)   # {"block3": MonitorResult, ...}

:func:`watch` resolves each path with ``model.get_submodule`` and registers one
``register_forward_hook`` per layer; :meth:`LayerWatch.remove` (or leaving the ``with``
block) removes them, leaving the model exactly as it was. The hooks never change an
output and keep no graph: each output is detached and pooled under ``torch.no_grad``.
Every forward call of a watched layer is fed (a two-view SSL step feeds both views).

Pooling: how one layer's output becomes the (N, D) rows a
:class:`~sslwatch.online.monitor.Monitor` takes (:class:`Pooling`):

* (N, D): passed through.
* (N, C, *spatial) convolution maps, 4-D and 5-D (and 3-D, see ``layout``):
  ``pool="avg"`` (default) the global average over the spatial dimensions (N, C);
  ``"max"`` the global maximum (N, C); ``"flatten"`` every value (N, C * prod(spatial)).
* (N, T, D) token sequences (transformers): ``tokens="mean"`` (default) the mean over
  the T tokens (N, D); ``"cls"`` the first token ``x[:, 0]`` (N, D). PyTorch's
  transformer layers are sequence first, (T, N, D), unless built with
  ``batch_first=True``: ``layout="sequence_first"`` pools over dim 0 (``x[0]`` for
  ``"cls"``).
* A 3-D output is either (N, C, L) (a 1-D convolution) or (N, T, D) (tokens).
  ``layout="auto"`` (default) reads it by the last layer of a known kind that the
  watched module registers (itself included): a convolution, batch/group/instance
  norm or pooling layer means (N, C, L), a Linear, attention, LayerNorm, RMSNorm,
  Embedding or transformer layer means (N, T, D), or (T, N, D) when the last layer
  that states ``batch_first`` states False. A module with none (an activation,
  a dropout) is read by the modules registered before it in its parent (in
  ``nn.Sequential``, those that ran before it), then its parent's, and so on; when
  nothing decides, a 3-D output is an error asking for ``layout="channels_first"``
  or ``"tokens"``, which say it outright. :attr:`LayerWatch.pooling` states the rule
  each layer got.
* A tuple, list, dict or other non-tensor output (an attention block's ``(out,
  weights)``, a Hugging Face ``ModelOutput``) is an error naming the layer: pass
  ``select=`` a function picking the tensor, e.g. ``select=lambda out: out[0]``.

Each of ``pool``, ``tokens``, ``layout`` and ``select`` is one value for every layer or
a ``{layer name: value}`` mapping.

Activation checkpointing re-runs a layer's forward during the backward pass; a watched
layer inside a checkpointed region is then fed twice per step.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Unpack

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from sslwatch.online.monitor import Monitor, MonitorResult
from sslwatch.online.settings import MonitorOptions, MonitorSettings

__all__ = ["LayerHooks", "LayerWatch", "Pooling", "resolve_layers", "watch"]

Pool = Literal["avg", "max", "flatten"]
Tokens = Literal["mean", "cls"]
Layout = Literal["auto", "channels_first", "tokens", "sequence_first"]
When = Literal["train", "eval", "always"]
Select = Callable[[Any], Any]
Sink = Callable[[str, torch.Tensor], None]

_POOLS = ("avg", "max", "flatten")
_TOKENS = ("mean", "cls")
_LAYOUTS = ("auto", "channels_first", "tokens", "sequence_first")
_WHEN = ("train", "eval", "always")

# layers whose output is channels first, (N, C, *spatial)
_CHANNELS_FIRST: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
)
# layers that act on the last axis: a 3-D output is (N, T, D)
_TOKEN_WISE: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.MultiheadAttention,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.Embedding,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Pooling:
    """How one layer's output becomes (N, D) rows (see the module docstring).

    Attributes:
        pool: convolution maps: ``"avg"`` (global average over the spatial dimensions),
            ``"max"`` (global maximum) or ``"flatten"``.
        tokens: (N, T, D) sequences: ``"mean"`` (mean over tokens) or ``"cls"`` (first token).
        layout: how a 3-D output is read: ``"auto"``, ``"channels_first"``, ``"tokens"``
            (N, T, D) or ``"sequence_first"`` (T, N, D).
        select: a function picking the tensor out of a non-tensor output, or ``None``.
    """

    pool: Pool = "avg"
    tokens: Tokens = "mean"
    layout: Layout = "auto"
    select: Select | None = None

    def __post_init__(self) -> None:
        for what, value, allowed in (
            ("pool", self.pool, _POOLS),
            ("tokens", self.tokens, _TOKENS),
            ("layout", self.layout, _LAYOUTS),
        ):
            if value not in allowed:
                choices = ", ".join(repr(a) for a in allowed)
                raise ValueError(f"{what} must be one of {choices}; got {value!r}")
        if self.select is not None and not callable(self.select):
            raise ValueError(
                f"select must be a function output -> tensor; got {type(self.select).__name__}"
            )

    def resolve(self, model: nn.Module, path: str) -> Pooling:
        """This pooling with ``layout="auto"`` decided for ``model``'s submodule ``path``
        (it stays ``"auto"`` when nothing decides; a 3-D output is then an error)."""
        if self.layout != "auto":
            return self
        return Pooling(self.pool, self.tokens, _infer_layout(model, path), self.select)

    def describe(self, ndim: int | None = None) -> str:
        """The rule in words, e.g. ``"(N, C, *spatial) -> mean over spatial dims"``."""
        conv = {
            "avg": "mean over the spatial dims",
            "max": "max over the spatial dims",
            "flatten": "flattened",
        }[self.pool]
        seq = {"mean": "mean over tokens", "cls": "first token"}[self.tokens]
        three = {
            "channels_first": f"(N, C, L) -> {conv}",
            "tokens": f"(N, T, D) -> {seq}",
            "sequence_first": f"(T, N, D) -> {seq}",
            "auto": "3-D: undecided (an error; pass layout=)",
        }[self.layout]
        rules = {2: "(N, D) as is", 3: three, 4: f"(N, C, H, W) -> {conv}"}
        if ndim is not None:
            return rules.get(ndim, f"(N, C, *spatial) -> {conv}")
        return f"(N, D) as is; {three}; (N, C, *spatial) -> {conv}"

    def __call__(self, output: Any, name: str = "layer") -> torch.Tensor:
        """The pooled, detached (N, D) rows of one output of layer ``name``."""
        if self.select is not None:
            output = self.select(output)
        if not isinstance(output, torch.Tensor):
            raise ValueError(_not_a_tensor(output, name, self.select is not None))
        with torch.no_grad():
            return self._pool(output.detach(), name)

    def _pool(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if x.ndim == 2:
            return x
        if x.ndim < 2:
            raise ValueError(
                f"layer {name!r} returned shape {tuple(x.shape)}: no feature dimension to "
                "monitor. Watch a layer whose output is (N, D), (N, C, *spatial) or (N, T, D)."
            )
        if x.ndim == 3 and self.layout == "tokens":
            return x.mean(dim=1) if self.tokens == "mean" else x[:, 0]
        if x.ndim == 3 and self.layout == "sequence_first":
            return x.mean(dim=0) if self.tokens == "mean" else x[0]
        if x.ndim == 3 and self.layout == "auto":
            raise ValueError(
                f"layer {name!r} returned shape {tuple(x.shape)}, and neither it nor the "
                "modules before it tell whether that is (N, C, L) or (N, T, D); pass "
                "layout='channels_first' (a 1-D convolution map: pooled over L) or "
                "layout='tokens' (a (N, T, D) sequence: pooled over T; 'sequence_first' for "
                "(T, N, D)), or a {layer: layout} mapping"
            )
        if self.pool == "flatten":
            return x.flatten(1)
        spatial = tuple(range(2, x.ndim))
        return x.mean(dim=spatial) if self.pool == "avg" else x.amax(dim=spatial)


def _last_kind(module: nn.Module) -> tuple[Layout | None, bool | None]:
    """The layout of the last layer of a known kind that ``module`` registers (or None),
    and the ``batch_first`` of the last layer that states one (or None)."""
    kind: Layout | None = None
    batch_first: bool | None = None
    for m in module.modules():
        if isinstance(m, _CHANNELS_FIRST):
            kind = "channels_first"
        elif isinstance(m, _TOKEN_WISE):
            kind = "tokens"
        order = getattr(m, "batch_first", None)
        if isinstance(order, bool):
            batch_first = order
    return kind, batch_first


def _infer_layout(model: nn.Module, path: str) -> Layout:
    """How a 3-D output of ``model.get_submodule(path)`` is read (see the module docstring):
    by its own layers, else by those registered before it, one parent at a time.

    Token-wise outputs are sequence first (T, N, D) when the nearest layer that states its
    batch order (``batch_first``: ``nn.TransformerEncoderLayer``, ``nn.MultiheadAttention``,
    ...), searched the same way, states False, PyTorch's default.
    """
    kind, batch_first = _last_kind(model.get_submodule(path))
    parts = path.split(".") if path else []
    while (kind is None or (kind == "tokens" and batch_first is None)) and parts:
        parent = model.get_submodule(".".join(parts[:-1]))
        children = list(parent.named_children())
        names = [n for n, _ in children]
        before = children[: names.index(parts[-1])] if parts[-1] in names else []
        for _, sibling in reversed(before):
            found, order = _last_kind(sibling)
            kind = kind or found
            batch_first = order if batch_first is None else batch_first
            if kind == "channels_first" or (kind is not None and batch_first is not None):
                break
        parts = parts[:-1]
    if kind == "tokens" and batch_first is False:
        return "sequence_first"
    return kind or "auto"


def _not_a_tensor(output: Any, name: str, selected: bool) -> str:
    if selected:
        return (
            f"select= returned {type(output).__name__} for layer {name!r}; it must return "
            "the torch.Tensor to monitor"
        )
    if isinstance(output, tuple | list):
        what = f"a {type(output).__name__} of {len(output)}"
        pick = "select=lambda out: out[0]"
    elif isinstance(output, Mapping):
        keys = list(output)[:5]
        what = f"a {type(output).__name__} with keys {keys}"
        pick = f"select=lambda out: out[{keys[0]!r}]" if keys else "select=..."
    else:
        what = f"a {type(output).__name__}"
        pick = "select=lambda out: out.last_hidden_state"
    return (
        f"layer {name!r} returned {what}, not a tensor; pass {pick} (or a {{layer: "
        "function}} mapping) to pick the tensor to monitor"
    )


def resolve_layers(model: nn.Module, layers: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """``{name: path}`` with every path checked against ``model`` (``get_submodule``).

    A sequence of paths names each layer by its path.

    Raises:
        ValueError: no layers, a name that is not a non-empty string, or a path that is not
            a submodule (the message lists the closest names).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(layers, str):
        raise ValueError(
            f"layers must be a {{name: path}} mapping or a list of paths; got the string "
            f"{layers!r} (write [{layers!r}] or {{'name': {layers!r}}})"
        )
    pairs = dict(layers) if isinstance(layers, Mapping) else {p: p for p in layers}
    if not pairs:
        raise ValueError("layers is empty; give at least one {name: submodule path}")
    names = [n for n, _ in model.named_modules() if n]
    for name, path in pairs.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"layer names must be non-empty strings; got {name!r}")
        if not isinstance(path, str):
            raise ValueError(f"layer {name!r}: the path must be a string; got {path!r}")
        try:
            model.get_submodule(path)
        except AttributeError:
            close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
            hint = f"close names: {', '.join(map(repr, close))}" if close else ""
            if not hint:
                listed = ", ".join(map(repr, names[:12])) + (", ..." if len(names) > 12 else "")
                hint = f"its submodules: {listed}" if names else "it has no submodules"
            raise ValueError(
                f"layer {name!r}: {type(model).__name__} has no submodule {path!r}; {hint} "
                "(all paths: [n for n, _ in model.named_modules()])"
            ) from None
    return pairs


def _per_layer(value: T | Mapping[str, T], names: Iterable[str], what: str) -> dict[str, T]:
    names = list(names)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(
                f"{what} names layers that are not watched: {unknown}; watched: {names}"
            )
        missing = sorted(set(names) - set(value))
        if missing:
            raise ValueError(f"{what} gives no value for the layers {missing}")
        return {n: value[n] for n in names}
    return dict.fromkeys(names, value)


def poolings(
    names: Iterable[str],
    *,
    pool: Pool | Mapping[str, Pool] = "avg",
    tokens: Tokens | Mapping[str, Tokens] = "mean",
    layout: Layout | Mapping[str, Layout] = "auto",
    select: Select | Mapping[str, Select] | None = None,
) -> dict[str, Pooling]:
    """One checked :class:`Pooling` per layer name from per-layer-or-shared settings."""
    names = list(names)
    pools: dict[str, Pool] = _per_layer(pool, names, "pool")
    toks: dict[str, Tokens] = _per_layer(tokens, names, "tokens")
    lays: dict[str, Layout] = _per_layer(layout, names, "layout")
    sels: dict[str, Select | None] = (
        dict.fromkeys(names) if select is None else dict(_per_layer(select, names, "select"))
    )
    return {n: Pooling(pools[n], toks[n], lays[n], sels[n]) for n in names}


class LayerHooks:
    """Forward hooks on named submodules that pool each output and hand it to ``sink``.

    The building block of :class:`LayerWatch` and of the Lightning callback's ``layers=``:
    ``sink(name, rows)`` receives the detached, pooled (N, D) rows of every forward call
    of layer ``name`` for which ``active(module)`` is true (nothing is pooled otherwise).

    Args:
        model: the model; it is not modified beyond the registered hooks.
        layers: ``{name: submodule path}`` (see :func:`resolve_layers`).
        pooling: ``{name: Pooling}``, one per layer.
        sink: where the rows go.
        active: whether to record a call of a layer (given that layer's module).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Mapping[str, str] | Iterable[str],
        pooling: Mapping[str, Pooling],
        sink: Sink,
        active: Callable[[nn.Module], bool] = lambda module: True,
    ) -> None:
        self.paths = resolve_layers(model, layers)
        self._sink = sink
        self._active = active
        self._handles: list[RemovableHandle] = []
        self.pooling: dict[str, Pooling] = {}
        self._described: dict[str, str] = {}
        try:
            for name, path in self.paths.items():
                module = model.get_submodule(path)
                self.pooling[name] = pooling[name].resolve(model, path)
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        pooling = self.pooling[name]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._active(module):
                return
            rows = pooling(output, name)
            if name not in self._described:
                self._described[name] = pooling.describe(_ndim(output, pooling))
            self._sink(name, rows)

        return hook

    @property
    def rules(self) -> dict[str, str]:
        """``{name: the pooling rule in words}``; the shape-specific rule once a layer ran."""
        return {n: self._described.get(n) or p.describe() for n, p in self.pooling.items()}

    @property
    def attached(self) -> bool:
        """Whether the hooks are still registered."""
        return bool(self._handles)

    def remove(self) -> None:
        """Remove every hook (idempotent); the model is as it was before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _ndim(output: Any, pooling: Pooling) -> int | None:
    x = pooling.select(output) if pooling.select is not None else output
    return x.ndim if isinstance(x, torch.Tensor) else None


def _when(when: When) -> Callable[[nn.Module], bool]:
    if when not in _WHEN:
        raise ValueError(f"when must be 'train', 'eval' or 'always'; got {when!r}")
    if when == "train":
        return lambda module: module.training
    if when == "eval":
        return lambda module: not module.training
    return lambda module: True


class LayerWatch:
    """One :class:`~sslwatch.online.monitor.Monitor` per watched layer, fed by forward hooks.

    Made by :func:`watch`. A context manager: leaving the ``with`` block removes the
    hooks (so does :meth:`remove`); the monitors and their values stay readable.

    Attributes:
        monitors: ``{layer name: Monitor}`` (each monitor is named after its layer).
        paths: ``{layer name: submodule path}``.
        when: ``"train"``, ``"eval"`` or ``"always"``: which forward calls are recorded
            (by the watched module's ``training`` flag).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Mapping[str, str] | Iterable[str],
        *,
        pooling: Mapping[str, Pooling],
        when: When,
        settings: MonitorSettings,
        process_group: Any = None,
    ) -> None:
        active = _when(when)
        self.when = when
        paths = resolve_layers(model, layers)
        self.monitors: dict[str, Monitor] = {
            name: Monitor(name=name, settings=settings, process_group=process_group)
            for name in paths
        }
        self._hooks = LayerHooks(model, paths, pooling, self._feed, active)
        self.paths = self._hooks.paths

    def _feed(self, name: str, rows: torch.Tensor) -> None:
        self.monitors[name].update(rows)

    @property
    def pooling(self) -> dict[str, str]:
        """``{layer name: the pooling rule it got, in words}``."""
        return self._hooks.rules

    def compute(
        self, *, step: int | None = None, epoch: int | None = None
    ) -> dict[str, MonitorResult]:
        """``{layer name: MonitorResult}`` over everything recorded since the last reset.

        A collective under ``torch.distributed`` (each monitor's compute is): call it on
        every rank. A layer that recorded nothing has NaN values and a warning saying
        why it may have been skipped (``when`` against the model's mode).
        """
        out: dict[str, MonitorResult] = {}
        for name, monitor in self.monitors.items():
            if monitor.n_updates == 0:
                mode = {"train": "model.train()", "eval": "model.eval()"}.get(self.when)
                why = f" (when={self.when!r} records only under {mode})" if mode else ""
                warnings.warn(
                    f"sslwatch: layer {name!r} ({self.paths[name]!r}) recorded no output since "
                    f"the last reset on this rank{why}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            out[name] = monitor.compute(step=step, epoch=epoch)
        return out

    def reset(self) -> None:
        """Start a new window in every monitor."""
        for monitor in self.monitors.values():
            monitor.reset()

    def remove(self) -> None:
        """Remove the hooks (idempotent); the model is exactly as before :func:`watch`."""
        self._hooks.remove()

    @property
    def attached(self) -> bool:
        """Whether the hooks are still registered."""
        return self._hooks.attached

    def __enter__(self) -> LayerWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        return f"LayerWatch({self.paths!r}, when={self.when!r}, {state})"


def watch(
    model: nn.Module,
    layers: Mapping[str, str] | Iterable[str],
    *,
    pool: Pool | Mapping[str, Pool] = "avg",
    tokens: Tokens | Mapping[str, Tokens] = "mean",
    layout: Layout | Mapping[str, Layout] = "auto",
    select: Select | Mapping[str, Select] | None = None,
    when: When = "train",
    metrics: Iterable[str] | None = None,
    process_group: Any = None,
    **monitor_options: Unpack[MonitorOptions],
) -> LayerWatch:
    """Watch named submodules of ``model`` through forward hooks, one Monitor per layer.

    Args:
        model: any ``torch.nn.Module`` (unchanged but for the hooks, until ``remove``).
        layers: ``{name: submodule path}`` (``"encoder.layer3"``, as in
            ``model.named_modules()``), or a list of paths (each named by its path).
        pool: convolution maps: ``"avg"`` (default), ``"max"`` or ``"flatten"``.
        tokens: (N, T, D) sequences: ``"mean"`` (default) or ``"cls"``.
        layout: 3-D outputs: ``"auto"`` (default), ``"channels_first"``, ``"tokens"`` or
            ``"sequence_first"``.
        select: picks the tensor from a tuple/dict/object output (e.g. ``lambda o: o[0]``).
        when: record forward calls in training mode (``"train"``, default), in eval mode
            (``"eval"``) or both (``"always"``), by the watched module's ``training`` flag.
        metrics: registry names (``None``: the default label-free set).
        process_group: the ``torch.distributed`` group the monitors reduce over.
        **monitor_options: the monitors' settings (``reservoir_size``, ``k``, ``seed``,
            ...), checked once by :class:`~sslwatch.online.settings.MonitorSettings`.

    Each of ``pool``, ``tokens``, ``layout`` and ``select`` may also be a
    ``{layer name: value}`` mapping. See the module docstring for the pooling rule.

    Returns:
        A :class:`LayerWatch` (a context manager that removes the hooks on exit).
    """
    paths = resolve_layers(model, layers)
    metrics = None if metrics is None else tuple(metrics)
    settings = MonitorSettings(metrics=metrics, **monitor_options)
    pooling = poolings(paths, pool=pool, tokens=tokens, layout=layout, select=select)
    return LayerWatch(
        model, paths, pooling=pooling, when=when, settings=settings, process_group=process_group
    )
