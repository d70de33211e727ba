"""Embedding extraction: a model and data in, float32 ``(N, D)`` matrices out.

:func:`extract_embeddings` runs a model over a data set once, in eval mode and under
``torch.inference_mode``, and returns the model output and/or the outputs of named
submodules (captured with forward hooks in the same pass), optionally with ``q``
augmented views per sample for multi-view metrics (clustering agreement across views,
LiDAR). :func:`recalibrate_batchnorm` re-estimates BatchNorm running statistics, which
an untrained network has not got yet (at random initialisation the running statistics
are the defaults, mean 0 and variance 1, so eval-mode embeddings can look collapsed or
inflated).

Accepted ``data`` (both functions):

* a ``torch.Tensor`` or numpy array of inputs with a leading sample dimension (N, ...);
* an :class:`sslwatch.offline.data.Dataset` (its ``x`` is used);
* a map-style ``torch.utils.data.Dataset`` (read in index order by a ``DataLoader``
  with ``batch_size``, no shuffling, no workers);
* a ``torch.utils.data.DataLoader`` (its own batches and order are used).

An item or batch that is a tuple or list contributes its first element (the usual
``(input, label)`` pair); a dict contributes its ``"x"``, ``"input"``, ``"inputs"``,
``"image"`` or ``"images"`` entry. Floating inputs are cast to the dtype of the model's
parameters (float32 for a plain callable); integer inputs (token ids) are passed as is.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data import Dataset as TorchDataset

from sslwatch.metrics._validation import as_int
from sslwatch.offline.data import Dataset

__all__ = [
    "VIEWS_SUFFIX",
    "best_device",
    "extract_embeddings",
    "iter_embeddings",
    "recalibrate_batchnorm",
]

#: Suffix of the result keys holding augmented views: ``"<name>/views"`` -> (N, q, D).
VIEWS_SUFFIX = "/views"

_DICT_KEYS = ("x", "input", "inputs", "image", "images")
_AUTO_PROGRESS_MIN_BATCHES = 20


def best_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def extract_embeddings(
    model: nn.Module | Callable[[torch.Tensor], Any],
    data: Any,
    *,
    layers: Mapping[str, str] | Sequence[str] | str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    autocast: bool = False,
    views: int = 0,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Compute embeddings of ``data`` at one or several places of ``model``, in one pass.

    Args:
        model: an ``nn.Module``, a bound method of one (e.g. ``model.encode``) or any
            callable mapping a batch to a tensor (or a tuple whose first element is one).
        data: inputs; see the module docstring for the accepted forms.
        layers: where to read embeddings. ``None`` (default): the model output, under the
            key ``"output"``. A mapping ``{key: submodule_path}`` (paths as for
            ``model.get_submodule``, ``""`` meaning the whole model), a sequence of paths
            (each used as its own key) or one path. Submodule outputs are captured with
            forward hooks, removed afterwards even on error. Needs an ``nn.Module``.
        batch_size: samples per forward pass (tensor, numpy and torch-Dataset input).
        device: where to run. ``None``: the device the module's parameters are already on
            when that is not the CPU, otherwise the best available (CUDA > MPS > CPU).
            A module moved here is moved back afterwards. A plain callable (no module to
            inspect) runs its inputs on the CPU unless ``device`` is given.
        autocast: run the forward passes under ``torch.autocast`` (bfloat16 on CPU,
            float16 on CUDA/MPS); results are still returned as float32.
        views: number ``q`` of augmented views per sample (0: none). Needs ``augment``.
        augment: a batched augmentation, ``(B, ...) -> (B, ...)`` tensor to tensor, called
            ``q`` times per batch on the batch already on ``device``.
        seed: seeds the torch, numpy and ``random`` generators used by ``augment`` (their
            previous states are restored afterwards), so views are reproducible for the
            same seed, data order and ``batch_size``.
        progress: show a tqdm bar: ``True`` always, ``False`` never, ``None`` when there are
            at least 20 batches (or an unknown number) and stderr is a terminal.

    Returns:
        A dict of float32 CPU tensors: for each key, ``(N, D)`` embeddings of the clean
        inputs (each sample's output flattened); with ``views=q`` also
        ``"<key>/views"`` of shape ``(N, q, D)``. The tensors are ordinary (not inference)
        tensors, so they can feed a probe that is trained with autograd.

    Raises:
        ValueError: unsupported data, unknown layer path, ``views`` without ``augment``,
            an output that is not a tensor or whose first dimension is not the batch.

    The module (and all its submodules) are put in eval mode for the pass and their
    previous train/eval flags are restored afterwards. :func:`iter_embeddings` gives the
    same embeddings batch by batch, for data too large to hold as one matrix.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    with contextlib.closing(
        iter_embeddings(
            model,
            data,
            layers=layers,
            batch_size=batch_size,
            device=device,
            autocast=autocast,
            views=views,
            augment=augment,
            seed=seed,
            progress=progress,
        )
    ) as batches:
        for out in batches:
            for k, t in out.items():
                parts.setdefault(k, []).append(t)
    if not parts:
        raise ValueError("data is empty: no batch was produced, so there is nothing to embed.")
    # Concatenated outside inference mode: the results are ordinary tensors.
    return {k: _cat(v, k.removesuffix(VIEWS_SUFFIX)) for k, v in parts.items()}


def iter_embeddings(
    model: nn.Module | Callable[[torch.Tensor], Any],
    data: Any,
    *,
    layers: Mapping[str, str] | Sequence[str] | str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    autocast: bool = False,
    views: int = 0,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> Generator[dict[str, torch.Tensor], None, None]:
    """The embeddings of :func:`extract_embeddings`, one batch at a time, in data order.

    Takes the same arguments. Each item is a dict with the same keys as
    :func:`extract_embeddings` returns, holding that batch's rows: ``(B, D)`` float32
    CPU tensors (and ``(B, q, D)`` views), which are inference tensors: use them as
    inputs to other operations (``clone()`` one to change it in place). Concatenated,
    the batches are exactly :func:`extract_embeddings`'s result, so a caller can reduce
    them as they come (second moments, a sample of rows) and never hold all N rows.

    While the iteration runs (until it is exhausted or closed, e.g. by
    ``contextlib.closing``) the module stays in eval mode with its hooks in place, and
    with ``views`` the random generators stay seeded: code between batches should not run
    the module or draw random numbers. The forward passes run under
    ``torch.inference_mode``; the caller's code between batches does not.

    Raises:
        ValueError: as :func:`extract_embeddings`, when the first batch is requested;
            also a batch whose embedding size differs from the first batch's.
    """
    as_int(batch_size, "batch_size")
    as_int(views, "views", low=0)
    if views > 0 and augment is None:
        raise ValueError(
            f"views={views} needs an augment callable (batched tensor -> augmented tensor), "
            "e.g. a kornia AugmentationSequential."
        )
    module = _owning_module(model)
    layer_map = _normalise_layers(module, layers)
    keys = list(layer_map) if layer_map is not None else ["output"]

    dev = _choose_device(module, device)
    in_dtype = _param_dtype(module)
    batches, n_batches = _batches(data, batch_size, shuffle_seed=None)
    captured: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def forward(x: torch.Tensor, bsz: int) -> dict[str, torch.Tensor]:
        return _forward(model, x, dev, autocast, layer_map, captured, keys, bsz)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_hooked_eval(module, dev, layer_map, captured))
        if views > 0:
            stack.enter_context(_seeded(seed, dev))
        bar = _progress_bar(progress, n_batches)
        if bar is not None:
            stack.callback(bar.close)
        for raw in batches:
            with torch.inference_mode():
                xb = _prepare(raw, dev, in_dtype)
                out = forward(xb, int(xb.shape[0]))
                if views > 0:
                    assert augment is not None
                    for k, stacked in _view_outputs(forward, xb, augment, views, keys).items():
                        out[k + VIEWS_SUFFIX] = stacked
            for k in keys:
                shape = tuple(out[k].shape[1:])
                if shapes.setdefault(k, shape) != shape:
                    raise ValueError(
                        f"layer {k!r} produced embeddings of different sizes across batches "
                        f"{sorted({shapes[k], shape})}; inputs must share one shape."
                    )
            if bar is not None:
                bar.update(1)
            yield out


@contextlib.contextmanager
def _hooked_eval(
    module: nn.Module | None,
    dev: torch.device,
    layer_map: dict[str, str] | None,
    captured: dict[str, torch.Tensor],
) -> Iterator[None]:
    """``module`` on ``dev``, in eval mode, its layers hooked into ``captured``; afterwards
    (even on error) the hooks are removed and its device and train/eval flags restored."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    original_device = _module_device(module)
    moved = original_device is not None and original_device != dev
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        if moved:
            module.to(dev)
        module.eval()
        for key, path in (layer_map or {}).items():
            sub = module.get_submodule(path)
            handles.append(sub.register_forward_hook(_make_hook(key, path, captured)))
        yield
    finally:
        for h in handles:
            h.remove()
        if moved and original_device is not None:
            module.to(original_device)
        for m, flag in modes:
            m.training = flag


def _view_outputs(
    forward: Callable[[torch.Tensor, int], dict[str, torch.Tensor]],
    xb: torch.Tensor,
    augment: Callable[[torch.Tensor], torch.Tensor],
    views: int,
    keys: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Per key, the (B, q, D) outputs of ``views`` augmentations of the batch ``xb``."""
    bsz = int(xb.shape[0])
    per_view: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for _ in range(views):
        xa = augment(xb)
        if not isinstance(xa, torch.Tensor) or xa.shape[0] != bsz:
            raise ValueError(
                "augment must return a tensor with the same batch size as its "
                f"input ({bsz}); got {_describe(xa)}."
            )
        o = forward(xa, bsz)
        for k in keys:
            per_view[k].append(o[k])
    return {k: torch.stack(per_view[k], dim=1) for k in keys}


def recalibrate_batchnorm(
    model: nn.Module,
    data: Any,
    *,
    batches: int = 10,
    batch_size: int = 256,
    seed: int = 0,
) -> nn.Module:
    """Re-estimate BatchNorm running statistics from a few batches, without gradients.

    Every BatchNorm layer that tracks running statistics (``BatchNorm1d/2d/3d``,
    ``SyncBatchNorm``) has its statistics reset and re-estimated as the *cumulative
    average* over the batches (``momentum=None``): ``running_mean`` is the mean of the
    per-batch means and ``running_var`` the mean of the per-batch unbiased variances.
    All other modules run in eval mode (dropout off), as in the later embedding pass.
    Momenta and train/eval flags are restored afterwards; on error the previous running
    statistics are restored too.

    Which batches: tensor, numpy and :class:`sslwatch.offline.data.Dataset` input: a seeded
    random sample (``torch.randperm`` with ``seed``) of ``batches * batch_size`` rows (all
    rows if fewer), in chunks of ``batch_size``; a last, smaller chunk is dropped when
    there are several, so that each batch weighs the same. A torch ``Dataset`` is read by
    a seeded shuffling ``DataLoader``; a ``DataLoader`` gives its first ``batches``
    batches in its own order. Batches of a single sample are skipped (BatchNorm needs two).
    The forward runs on the device of the model's parameters.

    Args:
        model: the network (modified in place and returned).
        data: inputs; see the module docstring.
        batches: number of batches to average over.
        batch_size: samples per batch.
        seed: seed for choosing the samples.

    Returns:
        ``model`` itself, for chaining. A model without BatchNorm is returned unchanged.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"recalibrate_batchnorm needs an nn.Module; got {type(model).__name__}.")
    as_int(batches, "batches")
    as_int(batch_size, "batch_size")
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns:
        return model
    dev = _module_device(model) or torch.device("cpu")
    in_dtype = _param_dtype(model)
    loader, _ = _batches(data, batch_size, shuffle_seed=seed, limit=batches)

    modes = [(m, m.training) for m in model.modules()]
    momenta = [bn.momentum for bn in bns]
    backup = [
        (_clone(bn.running_mean), _clone(bn.running_var), _clone(bn.num_batches_tracked))
        for bn in bns
    ]
    ok = False
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        used = 0
        with torch.no_grad():
            for raw in loader:
                if used >= batches:
                    break
                xb = _prepare(raw, dev, in_dtype)
                if xb.shape[0] < 2:
                    continue
                model(xb)
                used += 1
        if used == 0:
            raise ValueError(
                "recalibrate_batchnorm got no batch with at least 2 samples; pass more data."
            )
        ok = True
    finally:
        for bn, mom in zip(bns, momenta, strict=True):
            bn.momentum = mom
        for m, flag in modes:
            m.training = flag
        if not ok:
            for bn, (mean, var, count) in zip(bns, backup, strict=True):
                _restore_buffer(bn, "running_mean", mean)
                _restore_buffer(bn, "running_var", var)
                _restore_buffer(bn, "num_batches_tracked", count)
    return model


# --------------------------------------------------------------------------- helpers


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone()


def _restore_buffer(bn: nn.Module, name: str, value: torch.Tensor | None) -> None:
    current = getattr(bn, name, None)
    if isinstance(current, torch.Tensor) and value is not None:
        with torch.no_grad():
            current.copy_(value)


def _owning_module(model: Any) -> nn.Module | None:
    if isinstance(model, nn.Module):
        return model
    owner = getattr(model, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner
    if not callable(model):
        raise ValueError(f"model must be an nn.Module or a callable; got {type(model).__name__}.")
    return None


def _normalise_layers(
    module: nn.Module | None, layers: Mapping[str, str] | Sequence[str] | str | None
) -> dict[str, str] | None:
    if layers is None:
        return None
    if isinstance(layers, str):
        layer_map = {layers or "output": layers}
    elif isinstance(layers, Mapping):
        layer_map = {str(k): str(v) for k, v in layers.items()}
    else:
        layer_map = {str(p) or "output": str(p) for p in layers}
    if not layer_map:
        raise ValueError("layers is empty; pass None for the model output or name submodules.")
    if module is None:
        raise ValueError(
            "layers= needs the model to be an nn.Module (or a bound method of one) so that "
            "submodules can be hooked; pass the module itself."
        )
    for key, path in layer_map.items():
        if key.endswith(VIEWS_SUFFIX):
            raise ValueError(f"layer key {key!r} must not end with {VIEWS_SUFFIX!r} (reserved).")
        try:
            module.get_submodule(path)
        except AttributeError as exc:
            names = [n for n, _ in module.named_modules() if n]
            shown = ", ".join(names[:15]) + (", ..." if len(names) > 15 else "")
            raise ValueError(
                f"layer {key!r}: the model has no submodule {path!r}; available: {shown}."
            ) from exc
    return layer_map


def _module_device(module: nn.Module | None) -> torch.device | None:
    if module is None:
        return None
    for param in module.parameters():
        return param.device
    for buf in module.buffers():
        return buf.device
    return None


def _choose_device(module: nn.Module | None, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if module is None:
        return torch.device("cpu")
    current = _module_device(module)
    if current is not None and current.type != "cpu":
        return current
    return best_device()


def _param_dtype(module: nn.Module | None) -> torch.dtype:
    if module is not None:
        for p in module.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def _extract_input(item: Any) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, np.ndarray):
        return torch.from_numpy(item)
    if isinstance(item, list | tuple) and item:
        return _extract_input(item[0])
    if isinstance(item, Mapping):
        for key in _DICT_KEYS:
            if key in item:
                return _extract_input(item[key])
        raise ValueError(
            f"a batch is a dict with keys {sorted(map(str, item))}; expected one of "
            f"{list(_DICT_KEYS)} holding the inputs."
        )
    raise ValueError(
        f"cannot read inputs from a batch of type {type(item).__name__}; batches must be "
        "tensors, arrays, (input, label) tuples or dicts with an 'x' entry."
    )


def _prepare(raw: Any, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    xb = _extract_input(raw)
    if xb.ndim == 0:
        raise ValueError("a batch is a scalar; inputs need a leading sample dimension.")
    xb = xb.to(dev, non_blocking=True)
    if xb.is_floating_point() and xb.dtype != dtype:
        xb = xb.to(dtype)
    return xb


def _as_tensor_data(data: Any) -> torch.Tensor | None:
    if isinstance(data, Dataset):
        return data.x
    if isinstance(data, torch.Tensor):
        return data.detach()
    if isinstance(data, np.ndarray):
        if data.dtype == object:
            raise ValueError("data is a numpy object array; pass a numeric array.")
        return torch.from_numpy(np.ascontiguousarray(data))
    return None


def _batches(
    data: Any,
    batch_size: int,
    *,
    shuffle_seed: int | None,
    limit: int | None = None,
) -> tuple[Iterator[Any], int | None]:
    """Return an iterator over raw batches and the number of batches (None if unknown)."""
    x = _as_tensor_data(data)
    if x is not None:
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(
                f"data must have a leading sample dimension with N >= 1; got shape "
                f"{tuple(x.shape)}."
            )
        n = int(x.shape[0])
        if shuffle_seed is None:
            starts = list(range(0, n, batch_size))
            return (x[s : s + batch_size] for s in starts), len(starts)
        gen = torch.Generator().manual_seed(int(shuffle_seed))
        take = n if limit is None else min(n, limit * batch_size)
        idx = torch.randperm(n, generator=gen)[:take]
        chunks = list(idx.split(batch_size))
        if len(chunks) > 1 and chunks[-1].numel() < batch_size:
            chunks = chunks[:-1]
        return (x[c] for c in chunks), len(chunks)
    if isinstance(data, DataLoader):
        if shuffle_seed is None and isinstance(data.sampler, RandomSampler):
            warnings.warn(
                "the DataLoader shuffles: embeddings follow its random order, so rows will "
                "not line up with the data set's labels. Pass shuffle=False.",
                stacklevel=3,
            )
        try:
            n_b: int | None = len(data)
        except TypeError:
            n_b = None
        return iter(data), n_b
    if isinstance(data, TorchDataset):
        if not hasattr(data, "__len__"):
            raise ValueError(
                "an iterable-style torch Dataset must be wrapped in a DataLoader by the caller."
            )
        if shuffle_seed is None:
            loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        else:
            gen = torch.Generator().manual_seed(int(shuffle_seed))
            loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen)
        return iter(loader), len(loader)
    raise ValueError(
        f"unsupported data of type {type(data).__name__}; pass a torch.Tensor, a numpy "
        "array, an sslwatch.offline.data.Dataset, a torch Dataset or a DataLoader."
    )


def _make_hook(
    key: str, path: str, captured: dict[str, torch.Tensor]
) -> Callable[[nn.Module, Any, Any], None]:
    def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        if key in captured:
            raise ValueError(
                f"submodule {path!r} (layer {key!r}) ran more than once in one forward pass; "
                "its embedding is ambiguous. Hook a module that runs once, or pass a callable "
                "that makes a single forward."
            )
        captured[key] = _flatten(out, f"submodule {path!r}")

    return hook


def _flatten(out: Any, where: str, batch: int | None = None) -> torch.Tensor:
    t = out
    if isinstance(t, list | tuple) and t:
        t = t[0]
    if not isinstance(t, torch.Tensor):
        raise ValueError(
            f"{where} returned {_describe(out)}; embeddings must be tensors (a tuple's first "
            "element is used). Name the submodule that produces the tensor with layers=."
        )
    if t.ndim == 0:
        raise ValueError(f"{where} returned a scalar; expected a batch of embeddings.")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(
            f"{where} returned shape {tuple(t.shape)} for a batch of {batch}; the first "
            "dimension must be the batch."
        )
    return t.detach().reshape(t.shape[0], -1).float().cpu()


def _forward(
    model: Callable[[torch.Tensor], Any],
    xb: torch.Tensor,
    dev: torch.device,
    autocast: bool,
    layer_map: dict[str, str] | None,
    captured: dict[str, torch.Tensor],
    keys: list[str],
    bsz: int,
) -> dict[str, torch.Tensor]:
    captured.clear()
    if autocast:
        amp_dtype = torch.bfloat16 if dev.type == "cpu" else torch.float16
        with torch.autocast(device_type=dev.type, dtype=amp_dtype):
            out = model(xb)
    else:
        out = model(xb)
    if layer_map is None:
        return {"output": _flatten(out, "the model", bsz)}
    result: dict[str, torch.Tensor] = {}
    for k in keys:
        if k not in captured:
            raise ValueError(
                f"submodule {layer_map[k]!r} (layer {k!r}) did not run during the forward pass."
            )
        t = captured[k]
        if t.shape[0] != bsz:
            raise ValueError(
                f"submodule {layer_map[k]!r} returned {t.shape[0]} rows for a batch of {bsz}; "
                "the first dimension must be the batch."
            )
        result[k] = t
    captured.clear()
    return result


def _cat(parts: list[torch.Tensor], key: str) -> torch.Tensor:
    dims = {tuple(p.shape[1:]) for p in parts}
    if len(dims) > 1:
        raise ValueError(
            f"layer {key!r} produced embeddings of different sizes across batches {sorted(dims)}; "
            "inputs must share one shape."
        )
    return torch.cat(parts, dim=0)


@contextlib.contextmanager
def _seeded(seed: int, dev: torch.device) -> Iterator[None]:
    # The legacy global numpy state is what user augmentations draw from; seed it.
    np_state = np.random.get_state()  # noqa: NPY002
    py_state = random.getstate()
    if dev.type == "cpu":
        rng_ctx = torch.random.fork_rng(devices=[])
    else:
        index = dev.index if dev.index is not None else 0
        rng_ctx = torch.random.fork_rng(devices=[index], device_type=dev.type)
    try:
        with rng_ctx:
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))  # noqa: NPY002
            random.seed(seed)
            yield
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


def _progress_bar(progress: bool | None, n_batches: int | None) -> Any:
    if progress is False:
        return None
    if progress is None and n_batches is not None and n_batches < _AUTO_PROGRESS_MIN_BATCHES:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=n_batches,
        desc="embedding",
        unit="batch",
        disable=None if progress is None else False,
        leave=False,
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"
