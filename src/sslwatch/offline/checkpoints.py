"""Safe model loading: factories, state dicts, checkpoint names.

Security: a ``torch.save`` file is a pickle, and unpickling can run arbitrary code. This
module loads ``.safetensors`` files with safetensors and everything else with
``torch.load(..., weights_only=True)``, which only rebuilds tensors and plain containers.
A checkpoint that needs pickled Python objects (a saved ``nn.Module``, a custom config
class, an ``argparse.Namespace``...) is refused with a :class:`CheckpointError` unless the
caller opts in with ``trust_checkpoints=True`` (``--trust-checkpoints`` on the command
line), which loads it with ``weights_only=False``. Only opt in for files you trust.

Wrappers are unwrapped without user code: a dict holding the weights under
``state_dict``, ``model_state_dict``, ``model``, ``module``, ``network`` or ``net`` (tried
in that order, recursively; Lightning checkpoints keep them under ``state_dict``), a
saved ``nn.Module`` (trusted loading only), DDP's ``module.`` prefix (stripped when every
key has it) and ``torch.compile``'s ``_orig_mod.`` (removed wherever it appears).
``state_key`` (a dot path such as ``"ema.model"``) selects anything else: it descends
through nested dicts and, where the dict is flat, keeps the keys under that prefix.
:func:`load_model` then matches the remaining key prefixes (for example Lightning's
``model.`` or ``backbone.``) against the keys of the model the factory builds.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "import_factory",
    "load_model",
    "load_state_dict",
    "parse_checkpoint_path",
    "pickle_refusal",
]

#: Keys under which checkpoints commonly nest their weights (tried in this order).
WRAPPER_KEYS: tuple[str, ...] = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "network",
    "net",
)

#: Directory names that say "checkpoints" rather than naming a run.
GENERIC_CHECKPOINT_DIRS: frozenset[str] = frozenset(
    {"checkpoints", "checkpoint", "ckpt", "ckpts", "weights", "models", "saved_models"}
)

_EPOCH_RE = re.compile(r"(?<![a-z])(?:epoch|ep)[_=-]?(\d+)", re.IGNORECASE)
_STEP_RE = re.compile(r"(?<![a-z])step[_=-]?(\d+)", re.IGNORECASE)
_TRUST_HINT = (
    "--trust-checkpoints (trust_checkpoints=True in Python) loads it, which executes code "
    "from the file: only for files you trust"
)
_MAX_LISTED = 5


class CheckpointError(ValueError):
    """A checkpoint could not be loaded; the one-line message always names the file.

    Attributes:
        path: the checkpoint file.
    """

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        one_line = " ".join(str(message).split())
        super().__init__(f"checkpoint {self.path}: {one_line}")


# --------------------------------------------------------------------------- factories


def import_factory(spec: str) -> Callable[..., Any]:
    """Import a model factory given as ``"package.module:factory"`` or ``"file.py:factory"``.

    The part after the last ``:`` is an attribute path inside the module (dots allowed,
    e.g. ``"models:Nets.small"``). The part before it is an importable module name or,
    when it ends in ``.py`` or contains a path separator, a Python file; the file is
    imported once per process under a private module name (registered in ``sys.modules``
    so that its classes pickle), with its own directory on ``sys.path`` while it runs so
    that it can import sibling modules.

    Raises:
        ValueError: malformed spec, module not importable, attribute missing or not callable.
        FileNotFoundError: the file form names a file that does not exist.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"factory must look like 'package.module:function' or 'path/to/file.py:function'; "
            f"got {spec!r}."
        )
    mod_part, _, attr = spec.rpartition(":")
    if not mod_part or not attr or not all(a.isidentifier() for a in attr.split(".")):
        raise ValueError(
            f"factory {spec!r}: expected 'module:function' with a Python name after the ':'."
        )
    if mod_part.endswith(".py") or "/" in mod_part or "\\" in mod_part:
        module = _import_file(Path(mod_part).expanduser())
        where = f"file {mod_part}"
    else:
        try:
            module = importlib.import_module(mod_part)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (
                mod_part == exc.name or mod_part.startswith(exc.name + ".")
            ):
                raise ValueError(
                    f"factory {spec!r}: module {mod_part!r} not found; check the name and that "
                    "it is installed or on PYTHONPATH."
                ) from exc
            raise ValueError(f"factory {spec!r}: importing {mod_part!r} failed: {exc}") from exc
        except ImportError as exc:
            raise ValueError(f"factory {spec!r}: importing {mod_part!r} failed: {exc}") from exc
        where = f"module {mod_part}"
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(
                n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))
            )
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ValueError(
                f"factory {spec!r}: {where} has no attribute {attr!r}; callables there: "
                f"{shown or '(none)'}."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"factory {spec!r}: {attr!r} is a {type(obj).__name__}, not callable.")
    return obj


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"factory file not found: {path}")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", resolved.stem)
    name = f"_sslwatch_factory_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent = str(resolved.parent)
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, Exception):
            raise ValueError(f"importing factory file {path} failed: {exc}") from exc
        raise
    finally:
        if added and parent in sys.path:
            sys.path.remove(parent)
    return module


# --------------------------------------------------------------------------- state dicts


def load_state_dict(
    path: str | Path,
    *,
    state_key: str | None = None,
    trust_checkpoints: bool = False,
) -> dict[str, torch.Tensor]:
    """Load the weights of a checkpoint as a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``. Wrappers, DDP and
    ``torch.compile`` prefixes are removed as described in the module docstring; other
    prefixes (Lightning's ``model.``) are kept here and matched by :func:`load_model`.

    Args:
        path: the checkpoint file.
        state_key: dot path selecting the weights inside the checkpoint (e.g.
            ``"ema.model"`` or ``"state_dict.model"``): nested dict keys first, then a key
            prefix of a flat dict (the prefix is stripped).
        trust_checkpoints: allow unpickling Python objects (``weights_only=False``) when
            the file needs it. Only for files you trust.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: corrupt or truncated file, a file that needs unpickling without
            the opt-in, no weights found, or ``state_key`` not found.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise CheckpointError(p, "is a directory; pass the checkpoint file inside it.")
    raw = _load_safetensors(p) if p.suffix == ".safetensors" else _torch_load(p, trust_checkpoints)
    sd = _select(raw, state_key, p) if state_key else _unwrap(raw, p)
    return _strip_wrapping_prefixes(sd)


def _load_safetensors(p: Path) -> Any:
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(
            p, f"cannot read as safetensors (corrupt or truncated file?): {exc}"
        ) from exc


def _file_magic(p: Path) -> bytes:
    with p.open("rb") as fh:
        return fh.read(4)


def _looks_like_torch_file(p: Path) -> bool:
    head = _file_magic(p)
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and head[1] <= 5)


def _torch_load(p: Path, trust: bool) -> Any:
    if p.stat().st_size == 0:
        raise CheckpointError(p, "is empty (0 bytes); the save was interrupted or failed.")
    try:
        return _torch_load_raw(p, weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" not in msg or not _looks_like_torch_file(p):
            raise CheckpointError(
                p,
                "is not a readable PyTorch checkpoint (neither a torch.save zip archive nor a "
                "pickle; corrupt, truncated or another format?)",
            ) from exc
        if not trust:
            raise CheckpointError(p, f"{pickle_refusal(msg)}.") from exc
    except Exception as exc:  # garbage bytes can raise anything inside the unpickler
        raise CheckpointError(
            p, f"cannot be read (corrupt or truncated file?): {_first_line(str(exc))}"
        ) from exc
    # Only reached with trust_checkpoints=True after the safe attempt failed.
    try:
        return _torch_load_raw(p, weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise CheckpointError(
            p,
            f"needs Python code that cannot be imported here: {exc}; import the module that "
            "defines the saved classes first (or save a plain state_dict).",
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            p, f"cannot be read even with trusted loading (corrupt file?): {_first_line(str(exc))}"
        ) from exc


def pickle_refusal(torch_message: str) -> str:
    """Our one-line refusal of a file that ``torch.load(weights_only=True)`` rejected.

    Says that the file needs pickle code to load, what it holds (the first class torch
    named in ``torch_message``), that ``--trust-checkpoints`` loads it and that this
    executes code from the file; torch's own multi-line text is not repeated.
    """
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", torch_message)
    what = (
        f"it holds Python objects such as {found.group(1)}"
        if found
        else "it is an old-style pickle or holds Python objects"
    )
    return f"needs pickle code to load ({what}); {_TRUST_HINT}"


def _torch_load_raw(p: Path, *, weights_only: bool) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pickle protocol.*")
        warnings.filterwarnings("ignore", message=".*weights_only.*", category=FutureWarning)
        return torch.load(str(p), map_location="cpu", weights_only=weights_only)


def _first_line(msg: str) -> str:
    line = next((s.strip() for s in msg.splitlines() if s.strip()), "") or "(no message)"
    if len(line) > 200 and ". " in line:
        line = line.split(". ")[0] + "."
    return line if len(line) <= 200 else line[:197] + "..."


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _unwrap(obj: Any, p: Path, depth: int = 0) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        if depth < 6:
            for key in WRAPPER_KEYS:
                inner = obj.get(key)
                if isinstance(inner, Mapping | nn.Module):
                    try:
                        return _unwrap(inner, p, depth + 1)
                    except CheckpointError:
                        continue
        if not obj:
            raise CheckpointError(p, "holds an empty dict; there are no weights to load.")
        keys = [str(k) for k in list(obj)[:12]]
        more = ", ..." if len(obj) > 12 else ""
        raise CheckpointError(
            p,
            f"no state dict found (top-level keys: {', '.join(keys)}{more}); pass "
            "state_key='...' (--state-key) with the dot path of the weights.",
        )
    state_dict = getattr(obj, "state_dict", None)
    if callable(state_dict):
        return _unwrap(state_dict(), p, depth + 1)
    raise CheckpointError(
        p, f"holds a {type(obj).__name__}, not a state dict or a dict containing one."
    )


def _select(raw: Any, state_key: str, p: Path) -> dict[str, torch.Tensor]:
    parts = [s for s in state_key.split(".") if s]
    if not parts:
        raise CheckpointError(p, f"state_key {state_key!r} is empty.")
    cur = raw
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif not isinstance(cur, Mapping) and hasattr(cur, part):
            cur = getattr(cur, part)
        else:
            break
        i += 1
    if i == len(parts):
        return _unwrap(cur, p)
    # The rest of the path is a key prefix of a flat state dict.
    rest = ".".join(parts[i:]) + "."
    for base in (cur, raw):
        try:
            flat = _unwrap(base, p)
        except CheckpointError:
            continue
        sub = {k[len(rest) :]: v for k, v in flat.items() if k.startswith(rest)}
        if sub:
            return sub
    available = _describe_keys(cur)
    raise CheckpointError(p, f"state_key {state_key!r} not found ({available}).")


def _describe_keys(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"reached a {type(obj).__name__}"
    if _is_state_dict(obj):
        tops = sorted({k.split(".")[0] for k in obj})
        return "prefixes there: " + ", ".join(tops[:12]) + (", ..." if len(tops) > 12 else "")
    keys = [str(k) for k in obj]
    return "keys there: " + ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")


def _strip_wrapping_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
    if len(out) != len(sd):  # removing _orig_mod. merged keys: keep the original names
        out = dict(sd)
    while out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


# --------------------------------------------------------------------------- models


def load_model(
    factory: Callable[..., Any] | str,
    checkpoint_path: str | Path,
    *,
    state_key: str | None = None,
    trust_checkpoints: bool = False,
    strict: bool = True,
    factory_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a model with ``factory`` and load the checkpoint's weights into it.

    Key matching: if the checkpoint's keys equal the model's, they are used as they are.
    Otherwise every key prefix of the checkpoint (up to four dotted levels, e.g.
    ``model.`` or ``model.backbone.``) is tried: keep the keys under the prefix, strip it,
    and optionally add a prefix shared by all of the model's keys. The mapping that
    reproduces the model's key set exactly (with matching shapes) is used; if two
    different mappings do (e.g. ``student.`` and ``teacher.``), that is an error naming
    them — choose with ``state_key``.

    Args:
        factory: a callable returning an ``nn.Module``, or a spec for :func:`import_factory`.
        checkpoint_path: the checkpoint file (see :func:`load_state_dict`).
        state_key: dot path of the weights inside the checkpoint.
        trust_checkpoints: allow unpickling (see :func:`load_state_dict`).
        strict: require every model key to be loaded and no checkpoint key to be left
            over. With ``strict=False`` the mapping with the most matching keys is loaded
            and missing keys are reported with a ``UserWarning``.
        factory_kwargs: keyword arguments for the factory.

    Returns:
        The model with its weights loaded, in eval mode, on the CPU.

    Raises:
        CheckpointError: unreadable file, or keys/shapes that do not fit the model (the
            message lists a few missing and unexpected keys).
        ValueError: the factory does not return an ``nn.Module``.
    """
    fn = import_factory(factory) if isinstance(factory, str) else factory
    name = factory if isinstance(factory, str) else getattr(factory, "__qualname__", "factory")
    model = fn(**dict(factory_kwargs or {}))
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"factory {name!r} returned a {type(model).__name__}; it must return an nn.Module."
        )
    p = Path(checkpoint_path).expanduser()
    sd = load_state_dict(p, state_key=state_key, trust_checkpoints=trust_checkpoints)
    target = model.state_dict()
    mapped = _match_keys(sd, target, p, strict=strict)
    bad_shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in mapped.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    if bad_shapes:
        raise CheckpointError(
            p,
            f"{len(bad_shapes)} tensor(s) have the wrong shape for the model from {name}: "
            + "; ".join(bad_shapes[:_MAX_LISTED])
            + ("; ..." if len(bad_shapes) > _MAX_LISTED else "")
            + ". Check the factory's arguments (width, depth, classes).",
        )
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target))
    if strict and (missing or unexpected):
        raise CheckpointError(p, _mismatch_message(missing, unexpected, sd, name))
    if missing:
        warnings.warn(
            f"checkpoint {p}: {len(missing)} model key(s) not in the checkpoint kept their "
            f"initial values: {_listing(missing)}",
            stacklevel=2,
        )
    model.load_state_dict({k: v for k, v in mapped.items() if k in target}, strict=False)
    return model.eval()


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def _mismatch_message(
    missing: list[str], unexpected: list[str], sd: Mapping[str, Any], name: str
) -> str:
    parts = [f"keys do not match the model from {name}:"]
    if missing:
        parts.append(f"{len(missing)} missing ({_listing(missing)});")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)});")
    tops = sorted({k.split(".")[0] for k in sd})
    parts.append(
        "checkpoint top-level prefixes: "
        + ", ".join(tops[:10])
        + (", ..." if len(tops) > 10 else "")
        + ". Pass state_key='...' or check the factory, or strict=False to load what fits."
    )
    return " ".join(parts)


def _prefixes(keys: Iterable[str], max_depth: int = 4) -> list[str]:
    found: set[str] = set()
    for k in keys:
        parts = k.split(".")
        for d in range(1, min(max_depth, len(parts) - 1) + 1):
            found.add(".".join(parts[:d]) + ".")
    return sorted(found, key=lambda s: (s.count("."), s))


def _common_prefixes(keys: list[str], max_depth: int = 4) -> list[str]:
    out = [""]
    if not keys:
        return out
    first = keys[0].split(".")
    for d in range(1, min(max_depth, len(first) - 1) + 1):
        pre = ".".join(first[:d]) + "."
        if all(k.startswith(pre) for k in keys):
            out.append(pre)
        else:
            break
    return out


def _match_keys(
    sd: dict[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    p: Path,
    *,
    strict: bool,
) -> dict[str, torch.Tensor]:
    target_keys = set(target)
    if set(sd) == target_keys:
        return sd
    shapes_ok: list[tuple[str, str, dict[str, torch.Tensor]]] = []
    shape_bad: list[tuple[str, str, dict[str, torch.Tensor]]] = []
    best: tuple[int, dict[str, torch.Tensor]] = (len(set(sd) & target_keys), sd)
    for strip in ["", *_prefixes(sd)]:
        sub = {k[len(strip) :]: v for k, v in sd.items() if k.startswith(strip)}
        if not sub or (strict and len(sub) != len(target_keys)):
            continue
        for add in _common_prefixes(sorted(target_keys)):
            if not strip and not add:
                continue
            mapped = {add + k: v for k, v in sub.items()}
            keys = set(mapped)
            if keys == target_keys:
                fits = all(tuple(mapped[k].shape) == tuple(target[k].shape) for k in keys)
                (shapes_ok if fits else shape_bad).append((strip, add, mapped))
            overlap = len(keys & target_keys)
            if overlap > best[0]:
                best = (overlap, mapped)
    exact = shapes_ok or shape_bad
    if exact:
        distinct = {_identity(m) for _, _, m in exact}
        if len(distinct) > 1:
            options = ", ".join(f"strip {s!r}" + (f" add {a!r}" if a else "") for s, a, _ in exact)
            raise CheckpointError(
                p,
                f"ambiguous: several parts of the checkpoint fit the model ({options}); "
                "choose one with state_key='...'.",
            )
        return exact[0][2]
    if strict:
        return sd
    if best[0] == 0:
        raise CheckpointError(
            p,
            "no key of the checkpoint matches the model (e.g. checkpoint "
            f"{_listing(sorted(sd))}; model {_listing(sorted(target_keys))}).",
        )
    return best[1]


def _identity(mapped: Mapping[str, torch.Tensor]) -> frozenset[tuple[str, int]]:
    return frozenset((k, id(v)) for k, v in mapped.items())


# --------------------------------------------------------------------------- names


def parse_checkpoint_path(
    path: str | Path, pattern: str | re.Pattern[str] | None = None
) -> tuple[str, int | None, int | None]:
    """Read ``(run, epoch, step)`` from a checkpoint's path.

    Default rule: ``run`` is the name of the file's parent directory, or of the
    grandparent when the parent has a generic name (``checkpoints``, ``ckpt``, ``ckpts``,
    ``weights``, ``models``, ``saved_models``; Lightning writes
    ``<run>/checkpoints/epoch=3-step=120.ckpt``). ``epoch`` is the number after
    ``epoch`` or ``ep`` and ``step`` the number after ``step`` in the *file name*, each
    optionally followed by one of ``_ = -`` (regexes ``(?:epoch|ep)[_=-]?(\\d+)`` and
    ``step[_=-]?(\\d+)``, case-insensitive, not preceded by a letter, so ``step`` is not
    read as ``ep``). Absent numbers are None.

    ``pattern``: a regex searched in the full path (forward slashes) with named groups
    ``run``, ``epoch`` and/or ``step``; a group the pattern does not define falls back to
    the default rule, a defined group that did not take part in the match gives None.

    Raises:
        ValueError: the pattern is invalid, defines none of the groups, or does not match.
    """
    pth = Path(path)
    run, epoch, step = _default_parse(pth)
    if pattern is None:
        return run, epoch, step
    try:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as exc:
        raise ValueError(f"invalid checkpoint name pattern {pattern!r}: {exc}") from exc
    groups = set(rx.groupindex)
    if not groups & {"run", "epoch", "step"}:
        raise ValueError(
            f"checkpoint name pattern {rx.pattern!r} must define at least one of the named "
            "groups (?P<run>...), (?P<epoch>...), (?P<step>...)."
        )
    m = rx.search(pth.as_posix())
    if m is None:
        raise ValueError(
            f"checkpoint path {pth.as_posix()} does not match the pattern {rx.pattern!r}."
        )
    if "run" in groups:
        run = m.group("run") or ""
    if "epoch" in groups:
        epoch = _to_int(m.group("epoch"), "epoch", pth)
    if "step" in groups:
        step = _to_int(m.group("step"), "step", pth)
    return run, epoch, step


def _to_int(value: str | None, what: str, pth: Path) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(
            f"the pattern's {what} group matched {value!r} in {pth.as_posix()}, not an integer."
        ) from exc


def _default_parse(pth: Path) -> tuple[str, int | None, int | None]:
    parent = pth.parent if pth.parent.name else pth.absolute().parent
    run = parent.name
    if run.lower() in GENERIC_CHECKPOINT_DIRS and parent.parent.name:
        run = parent.parent.name
    name = pth.name
    e = _EPOCH_RE.search(name)
    s = _STEP_RE.search(name)
    return run, int(e.group(1)) if e else None, int(s.group(1)) if s else None
