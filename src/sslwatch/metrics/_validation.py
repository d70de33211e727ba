"""Input checking shared by every metric (the public boundary).

Every public metric accepts a ``torch.Tensor`` or a numpy array. These helpers turn it
into a floating ``torch.Tensor`` on its own device, upcast half precision, and reject
bad input with a ``ValueError`` that names the problem and the fix. They never copy
data that is already in the right form.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeGuard

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

_HALF = (torch.float16, torch.bfloat16)


def as_matrix(
    z: Any,
    *,
    name: str = "z",
    min_rows: int = 2,
    dtype: torch.dtype | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Validate an (N, D) embedding matrix and return it as a floating tensor.

    Args:
        z: a 2-D ``torch.Tensor`` or numpy array of shape (N, D).
        name: the argument's name, used in error messages.
        min_rows: the smallest N accepted.
        dtype: cast to this dtype if given; otherwise float16/bfloat16 are upcast to
            float32, integer and bool inputs are rejected, and float32/float64 are kept.
        check_finite: reject NaN and Inf entries.

    Raises:
        ValueError: on a wrong type, wrong number of dimensions, too few rows, zero
            columns, a non-float dtype or non-finite values.
    """
    t = _to_tensor(z, name)
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (N, D) (samples x features); got "
            f"{t.ndim}-D shape {tuple(t.shape)}. Reshape it, e.g. z.reshape(len(z), -1)."
        )
    return _check_float_tensor(t, name, min_rows, dtype, check_finite)


def as_views(
    views: Any,
    *,
    name: str = "views",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Validate a multi-view tensor of shape (n, q, d): n samples, q views each."""
    t = _to_tensor(views, name)
    if t.ndim != 3:
        raise ValueError(
            f"{name} must be 3-D with shape (n_samples, n_views, dim); got {t.ndim}-D "
            f"shape {tuple(t.shape)}. Stack the views with torch.stack(views, dim=1)."
        )
    n, q, d = t.shape
    if n == 0 or q == 0 or d == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(t.shape)}); it needs at least 2 samples, "
            "2 views per sample and 1 feature."
        )
    if q < 2:
        raise ValueError(
            f"{name} has {q} view per sample; multi-view metrics need at least 2 views "
            "per sample (shape (n, q>=2, d))."
        )
    flat = _check_float_tensor(t.reshape(n * q, d), name, 2, dtype, True)
    return flat.reshape(n, q, d)


def as_labels(labels: Any, n: int, *, name: str = "labels") -> np.ndarray:
    """Validate a 1-D label vector of length ``n`` and return it as int64 numpy.

    Labels may be any hashable values; they are re-coded to 0..C-1 preserving order of
    first sorted appearance (``np.unique``), so only the partition matters.
    """
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with one label per sample; got shape {arr.shape}. "
            "Flatten it or pass class indices, not one-hot rows."
        )
    if arr.shape[0] != n:
        raise ValueError(
            f"{name} has length {arr.shape[0]} but there are {n} samples; pass exactly "
            "one label per row of the embedding matrix."
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf; labels must be finite class ids.")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64, copy=False).reshape(-1)


def is_int(value: Any) -> TypeGuard[int | np.integer]:
    """True for a Python or numpy integer; False for bools, floats and everything else."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_real(value: Any) -> bool:
    """True for a Python or numpy real number (integers included); False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def as_int(value: Any, name: str, *, low: int = 1, hint: str = "") -> int:
    """``value`` as a Python int, or a ValueError naming ``name``, the bound and ``hint``.

    Accepts Python and numpy integers (not bools, not floats) that are at least ``low``.
    """
    if not is_int(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{hint}; got {value!r}.")
    return int(value)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detach, move to CPU and return a numpy view/copy of ``t``."""
    return t.detach().cpu().numpy()


def _to_tensor(z: Any, name: str) -> torch.Tensor:
    if isinstance(z, torch.Tensor):
        return z.detach()
    if isinstance(z, np.ndarray):
        if z.dtype == object:
            raise ValueError(f"{name} is a numpy object array; pass a numeric float array.")
        return torch.from_numpy(np.ascontiguousarray(z))
    if isinstance(z, list | tuple):
        try:
            return torch.as_tensor(np.asarray(z, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} could not be read as a numeric array: {exc}") from exc
    raise ValueError(f"{name} must be a torch.Tensor or a numpy array; got {type(z).__name__}.")


def _check_float_tensor(
    t: torch.Tensor,
    name: str,
    min_rows: int,
    dtype: torch.dtype | None,
    check_finite: bool,
) -> torch.Tensor:
    if t.is_complex():
        raise ValueError(f"{name} is complex; embeddings must be real-valued.")
    if dtype is not None:
        t = t.to(dtype)
    elif t.dtype in _HALF:
        t = t.float()
    elif not t.is_floating_point():
        raise ValueError(
            f"{name} has dtype {t.dtype}; embeddings must be floating point. "
            "Cast with z.float() (or z.astype('float32'))."
        )
    n, d = t.shape
    if n < min_rows:
        raise ValueError(f"{name} has {n} row(s); this metric needs at least {min_rows} samples.")
    if d == 0:
        raise ValueError(f"{name} has 0 columns; embeddings need at least one feature.")
    if check_finite and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise ValueError(
            f"{name} contains NaN or Inf in {bad} of {n} rows; drop or fix those rows "
            "(non-finite embeddings usually mean the training diverged)."
        )
    return t
