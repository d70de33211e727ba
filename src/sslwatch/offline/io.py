"""Reading embedding files for ``sslwatch score``: .npy, .npz, .pt and .safetensors.

Nothing here executes code from a file: ``.npy``/``.npz`` are read with
``allow_pickle=False``, ``.pt`` with ``torch.load(weights_only=True)`` (unless the caller
trusts the file) and ``.safetensors`` holds plain tensors by construction.

Only the arrays needed are read: an ``.npz`` is opened lazily and only the selected
keys are loaded, so an unrelated array (even one of Python objects) beside the
embeddings does no harm. Numeric arrays of any byte order are accepted (converted to
the native order). Labels of any type (integers, floats, strings) become class ids
0..C-1 in sorted order of their unique values, as scikit-learn's ``LabelEncoder`` does.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

EMBEDDING_KEYS = ("embeddings", "z", "features", "feats", "x", "X")
LABEL_KEYS = ("labels", "y", "targets", "target")
VIEW_KEYS = ("views",)
SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")

#: A raw array as a file holds it: numpy (any dtype, any byte order) or a torch tensor.
Raw = np.ndarray | torch.Tensor


@dataclass
class EmbeddingFile:
    """Arrays read from one file: embeddings, and labels/views when present.

    ``labels`` are class ids 0..C-1 (int64); ``classes`` holds the original label of each
    id (as text) when labels were read.
    """

    path: Path
    z: torch.Tensor
    labels: np.ndarray | None = None
    views: torch.Tensor | None = None
    keys: dict[str, str] = field(default_factory=dict)
    classes: list[str] | None = None


class ArrayFile:
    """The arrays of one file, each read only when asked for.

    ``shapes`` maps every array name to its shape (``None`` when it cannot be told
    without reading the array); :meth:`raw` reads one array.
    """

    def __init__(
        self,
        path: Path,
        shapes: Mapping[str, tuple[int, ...] | None],
        reader: Callable[[str], Raw],
    ) -> None:
        self.path = path
        self.shapes = dict(shapes)
        self._reader = reader
        self._cache: dict[str, Raw] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def names(self) -> list[str]:
        """Array names, sorted."""
        return sorted(self.shapes)

    def raw(self, name: str) -> Raw:
        """Read array ``name`` (once)."""
        if name not in self._cache:
            self._cache[name] = self._reader(name)
        return self._cache[name]


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...] | None]:
    """Name -> shape of every array in an .npz, read from the headers alone."""
    out: dict[str, tuple[int, ...] | None] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            name = member[: -len(".npy")]
            try:
                with archive.open(member) as fh:
                    out[name] = _npy_header(fh)[0]
            except (ValueError, OSError):
                out[name] = None
    return out


def _refusal(path: Path, exc: BaseException) -> ValueError:
    """One line for an array or file that cannot be read without running code."""
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
        from sslwatch.offline.checkpoints import pickle_refusal

        return ValueError(f"{path}: {pickle_refusal(str(exc))}")
    if "pickle" in str(exc).lower():
        return ValueError(
            f"{path}: holds Python objects (dtype=object), which need pickle to read; save "
            "plain arrays instead (np.save / np.savez; labels as np.array(labels, dtype=str))"
        )
    first = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    return ValueError(f"{path}: cannot be read as {path.suffix} ({first})")


def open_arrays(path: str | Path, *, trust: bool = False) -> ArrayFile:
    """Open ``path`` for reading its arrays one by one (no code execution).

    Args:
        path: an .npy, .npz, .pt/.pth or .safetensors file.
        trust: load a .pt that needs pickle code (``weights_only=False``): this executes
            code from the file; only for files you trust.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported suffix, or a file that cannot be read safely.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise FileNotFoundError(f"embedding file {what}: {p}")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{p}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    try:
        if suffix == ".npy":
            array = np.load(p, allow_pickle=False)
            return ArrayFile(p, {"embeddings": tuple(array.shape)}, lambda _: array)
        if suffix == ".npz":
            return _open_npz(p)
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors: dict[str, Raw] = dict(load_file(str(p)))
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*weights_only.*")
                warnings.filterwarnings("ignore", message=".*pickle protocol.*")
                obj = torch.load(p, map_location="cpu", weights_only=not trust)
            tensors = _arrays_from_object(obj)
    except Exception as exc:  # garbage bytes can raise anything inside a reader
        raise _refusal(p, exc) from None
    return ArrayFile(p, {k: tuple(v.shape) for k, v in tensors.items()}, tensors.__getitem__)


def _open_npz(p: Path) -> ArrayFile:
    shapes = _npz_shapes(p)

    def read(name: str) -> Raw:
        try:
            with np.load(p, allow_pickle=False) as data:
                return np.asarray(data[name])
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            msg = str(exc)
            if "pickle" in msg.lower():
                raise ValueError(
                    f"{p}: array {name!r} holds Python objects (dtype=object), which need "
                    "pickle to read; save it as a plain array (labels as np.array(labels, "
                    "dtype=str))"
                ) from None
            raise _refusal(p, exc) from None

    return ArrayFile(p, shapes, read)


def _arrays_from_object(obj: Any) -> dict[str, Raw]:
    if isinstance(obj, torch.Tensor):
        return {"embeddings": obj}
    if isinstance(obj, np.ndarray):
        return {"embeddings": obj}
    if isinstance(obj, Mapping):
        out: dict[str, Raw] = {}
        for key, value in obj.items():
            if isinstance(value, torch.Tensor | np.ndarray):
                out[str(key)] = value
            elif isinstance(value, list | tuple) and value:
                if all(isinstance(v, bool | int | float) for v in value):
                    out[str(key)] = torch.as_tensor(value)
                elif all(isinstance(v, str) for v in value):
                    out[str(key)] = np.asarray(value, dtype=str)  # labels as text
        if out:
            return out
    raise ValueError(f"expected a tensor or a dict of tensors, got {type(obj).__name__}")


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order (a big-endian file is valid data)."""
    if arr.dtype.fields is None and not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _refuse_structured(arr: np.ndarray, name: str, path: Path) -> None:
    if arr.dtype.names:
        raise ValueError(
            f"{path}: array {name!r} is a structured array with fields "
            f"{', '.join(arr.dtype.names)}; save the values as one plain numeric array "
            "(e.g. np.stack([a[f] for f in a.dtype.names], axis=1))"
        )


def as_tensor(raw: Raw, name: str, path: Path) -> torch.Tensor:
    """A numeric array read from ``path`` as a tensor (native byte order), or a one-line
    ``ValueError`` naming the array and what it holds instead of numbers."""
    if isinstance(raw, torch.Tensor):
        return raw
    arr = np.asarray(raw)
    _refuse_structured(arr, name, path)
    if arr.dtype.kind not in "biufc":
        raise ValueError(
            f"{path}: array {name!r} holds {arr.dtype} values, not numbers; save the "
            "embeddings as a float array"
        )
    return torch.from_numpy(np.ascontiguousarray(_native(arr)))


def class_ids(raw: Raw | list[Any], name: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """Labels of any type as class ids 0..C-1 (sorted unique values, as scikit-learn's
    ``LabelEncoder``) and the label of each id, as text.

    Raises:
        ValueError: a structured array, labels that are not one per row, NaN/Inf, or
            values of several types that cannot be sorted together.
    """
    if isinstance(raw, torch.Tensor):
        arr = raw.detach().cpu().numpy()
    else:
        arr = np.asarray(raw)
    _refuse_structured(arr, name, path)
    arr = _native(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(
            f"{path}: labels {name!r} must be 1-D with one label per row; got shape "
            f"{tuple(arr.shape)} (pass class ids, not one-hot rows)"
        )
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: labels {name!r} contain NaN or Inf; labels must be finite")
    try:
        values, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise ValueError(
            f"{path}: labels {name!r} mix values that cannot be sorted together ({exc}); "
            "use one type (all text or all numbers)"
        ) from None
    return codes.astype(np.int64).reshape(-1), [str(v) for v in values]


def load_embedding_file(
    path: str | Path,
    *,
    key: str | None = None,
    labels: str | Path | None = None,
    labels_key: str | None = None,
    views_key: str | None = None,
    trust: bool = False,
) -> EmbeddingFile:
    """Load embeddings (and optional labels and views) from one file.

    The embedding array is ``key`` if given, else the first of
    ``embeddings, z, features, feats, x, X`` present, else the only 2-D array. Labels
    come from the separate file ``labels`` if given (any supported format, or ``.txt``/
    ``.csv`` with one label per line), else from ``labels_key`` or the first of
    ``labels, y, targets, target``; any type, mapped to class ids. Views (n, q, d) come
    from ``views_key`` or ``views``. Only these arrays are read. ``trust`` lets a .pt
    that needs pickle code load (this executes code from the file).
    """
    arrays = open_arrays(path, trust=trust)
    p = arrays.path
    keys: dict[str, str] = {}
    zkey = _pick(arrays, key, EMBEDDING_KEYS, "embeddings", ndim=2)
    keys["embeddings"] = zkey
    z = as_tensor(arrays.raw(zkey), zkey, p)

    y: np.ndarray | None = None
    classes: list[str] | None = None
    if labels is not None:
        y, classes = _read_labels_file(Path(labels), trust=trust)
        keys["labels"] = str(labels)
    else:
        if labels_key is not None and labels_key not in arrays:
            raise ValueError(f"{p}: no array named {labels_key!r}; it holds {arrays.names()}")
        lkey = labels_key or next((k for k in LABEL_KEYS if k in arrays), None)
        if lkey is not None:
            y, classes = class_ids(arrays.raw(lkey), lkey, p)
            keys["labels"] = lkey
    if y is not None and len(y) != z.shape[0]:
        where = labels if labels is not None else f"{p} ({keys['labels']!r})"
        raise ValueError(
            f"{where}: {len(y)} labels for {z.shape[0]} embeddings; pass one label per row"
        )

    v: torch.Tensor | None = None
    if views_key is not None and views_key not in arrays:
        raise ValueError(f"{p}: no array named {views_key!r}; it holds {arrays.names()}")
    vkey = views_key or next((k for k in VIEW_KEYS if k in arrays), None)
    if vkey is not None:
        v = as_tensor(arrays.raw(vkey), vkey, p)
        keys["views"] = vkey
    return EmbeddingFile(path=p, z=z, labels=y, views=v, keys=keys, classes=classes)


def _read_labels_file(path: Path, *, trust: bool = False) -> tuple[np.ndarray, list[str]]:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"labels file {what}: {path}")
    if path.suffix.lower() in (".txt", ".csv", ".tsv"):
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: labels text is not UTF-8 ({exc.reason})") from None
        values = [line.strip().split(",")[0].strip() for line in lines]
        values = [v for v in values if v]
        try:
            ints = np.asarray([int(v) for v in values], dtype=np.int64)
        except ValueError:
            return class_ids(np.asarray(values, dtype=str), "labels", path)
        return class_ids(ints, "labels", path)
    arrays = open_arrays(path, trust=trust)
    lkey = next((k for k in (*LABEL_KEYS, "embeddings") if k in arrays), None)
    if lkey is None:
        if len(arrays.shapes) != 1:
            raise ValueError(f"{path}: several arrays {arrays.names()}; name one 'labels'")
        lkey = arrays.names()[0]
    return class_ids(arrays.raw(lkey), lkey, path)


def _pick(
    arrays: ArrayFile,
    explicit: str | None,
    candidates: tuple[str, ...],
    what: str,
    *,
    ndim: int,
) -> str:
    path = arrays.path
    if explicit is not None:
        if explicit not in arrays:
            raise ValueError(f"{path}: no array named {explicit!r}; it holds {arrays.names()}")
        return explicit
    for name in candidates:
        if name in arrays:
            return name
    matching = [k for k, s in arrays.shapes.items() if s is not None and len(s) == ndim]
    if len(matching) == 1:
        return matching[0]
    listed = {k: s for k, s in sorted(arrays.shapes.items())}
    raise ValueError(
        f"{path}: cannot tell which array holds the {what} (arrays: {listed}); name it with --key"
    )
