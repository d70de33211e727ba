"""Reading embedding files for ``sslwatch score``: .npy, .npz, .pt and .safetensors.

Nothing here executes code from a file: ``.npy``/``.npz`` are read with
``allow_pickle=False``, ``.pt`` with ``torch.load(weights_only=True)`` and
``.safetensors`` holds plain tensors by construction.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

EMBEDDING_KEYS = ("embeddings", "z", "features", "feats", "x", "X")
LABEL_KEYS = ("labels", "y", "targets", "target")
VIEW_KEYS = ("views",)
SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")


@dataclass
class EmbeddingFile:
    """Arrays read from one file: embeddings, and labels/views when present."""

    path: Path
    z: torch.Tensor
    labels: np.ndarray | None = None
    views: torch.Tensor | None = None
    keys: dict[str, str] = field(default_factory=dict)


def read_arrays(path: str | Path) -> dict[str, torch.Tensor]:
    """Read every array in ``path`` as a name -> tensor dict (no code execution).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported suffix, or a file that cannot be read safely.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"embedding file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return {"embeddings": torch.from_numpy(np.load(p, allow_pickle=False))}
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                return {k: torch.from_numpy(np.asarray(data[k])) for k in data.files}
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(p)))
        if suffix in (".pt", ".pth"):
            obj = torch.load(p, map_location="cpu", weights_only=True)
            return _tensors_from_object(obj, p)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{p}: cannot be read safely as {suffix} ({exc})") from exc
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(
                f"{p}: holds Python objects; save plain arrays (np.save / np.savez) instead"
            ) from exc
        raise ValueError(f"{p}: {exc}") from exc
    raise ValueError(f"{p}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")


def _tensors_from_object(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {"embeddings": obj}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(value, torch.Tensor):
                out[str(key)] = value
            elif isinstance(value, np.ndarray):
                out[str(key)] = torch.from_numpy(value)
            elif isinstance(value, list | tuple) and value and isinstance(value[0], int | float):
                out[str(key)] = torch.as_tensor(value)
        if out:
            return out
    raise ValueError(f"{path}: expected a tensor or a dict of tensors, got {type(obj).__name__}")


def load_embedding_file(
    path: str | Path,
    *,
    key: str | None = None,
    labels: str | Path | None = None,
    labels_key: str | None = None,
    views_key: str | None = None,
) -> EmbeddingFile:
    """Load embeddings (and optional labels and views) from one file.

    The embedding array is ``key`` if given, else the first of
    ``embeddings, z, features, feats, x, X`` present, else the only 2-D array. Labels
    come from the separate file ``labels`` if given (any supported format, or ``.txt``/
    ``.csv`` with one label per line), else from ``labels_key`` or the first of
    ``labels, y, targets, target``. Views (n, q, d) come from ``views_key`` or ``views``.
    """
    p = Path(path)
    arrays = read_arrays(p)
    keys: dict[str, str] = {}
    zkey = _pick(arrays, key, EMBEDDING_KEYS, "embeddings", p, ndim=2)
    keys["embeddings"] = zkey
    z = arrays[zkey]

    y: np.ndarray | None = None
    if labels is not None:
        y = _read_labels_file(Path(labels))
        keys["labels"] = str(labels)
    else:
        lkey = labels_key or next((k for k in LABEL_KEYS if k in arrays), None)
        if labels_key is not None and labels_key not in arrays:
            raise ValueError(f"{p}: no array named {labels_key!r}; it holds {sorted(arrays)}")
        if lkey is not None:
            y = arrays[lkey].cpu().numpy().reshape(-1)
            keys["labels"] = lkey

    v: torch.Tensor | None = None
    vkey = views_key or next((k for k in VIEW_KEYS if k in arrays), None)
    if views_key is not None and views_key not in arrays:
        raise ValueError(f"{p}: no array named {views_key!r}; it holds {sorted(arrays)}")
    if vkey is not None:
        v = arrays[vkey]
        keys["views"] = vkey
    return EmbeddingFile(path=p, z=z, labels=y, views=v, keys=keys)


def _read_labels_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    if path.suffix.lower() in (".txt", ".csv", ".tsv"):
        values = [line.strip().split(",")[0] for line in path.read_text().splitlines()]
        values = [v for v in values if v]
        try:
            return np.asarray([int(v) for v in values], dtype=np.int64)
        except ValueError:
            return np.asarray(values)
    arrays = read_arrays(path)
    lkey = next((k for k in (*LABEL_KEYS, "embeddings") if k in arrays), None)
    if lkey is None:
        if len(arrays) != 1:
            raise ValueError(f"{path}: several arrays {sorted(arrays)}; name one 'labels'")
        lkey = next(iter(arrays))
    return arrays[lkey].cpu().numpy().reshape(-1)


def _pick(
    arrays: Mapping[str, torch.Tensor],
    explicit: str | None,
    candidates: tuple[str, ...],
    what: str,
    path: Path,
    *,
    ndim: int,
) -> str:
    if explicit is not None:
        if explicit not in arrays:
            raise ValueError(f"{path}: no array named {explicit!r}; it holds {sorted(arrays)}")
        return explicit
    for name in candidates:
        if name in arrays:
            return name
    matching = [k for k, v in arrays.items() if v.ndim == ndim]
    if len(matching) == 1:
        return matching[0]
    raise ValueError(
        f"{path}: cannot tell which array holds the {what} (arrays: "
        f"{ {k: tuple(v.shape) for k, v in arrays.items()} }); name it with --key"
    )
