"""Content-derived reservoir keys: a seeded universal hash of each row's exact bits.

The monitor's reservoir is a *bottom-R sketch*: every row gets a pseudo-random 60-bit key
computed from its exact bits and a seed (:func:`content_keys`), and the sample is the R
rows with the smallest keys. Because a key depends only on the row's content and the
seed, the kept set is the same whatever the batch split, the arrival order, or the split
across DDP ranks: merging two sketches is "keep the R smallest keys of the union".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "KEY_PRIME",
    "KEY_SPACE",
    "LABEL_SALT",
    "NO_KEY",
    "VIEW_SALT",
    "KeyHasher",
    "content_keys",
    "heldout_rows",
]

KEY_PRIME = 1_048_573
"""The largest prime below 2**20: each of the three hash components lives in Z_p."""

KEY_SPACE = KEY_PRIME**3
"""Keys lie in [0, KEY_SPACE) (about 2**60); key / KEY_SPACE is the row's uniform draw."""

NO_KEY = torch.iinfo(torch.int64).max
"""The key of a non-finite row: larger than every real key, so it is never sampled."""

VIEW_SALT = 0x5EED
"""Views are hashed with the seed XOR this salt, independently of the embeddings."""

LABEL_SALT = 0x1AB3
"""Labelled rows are keyed with the seed XOR this salt: the key picks the held-out rows
(:func:`heldout_rows`) and orders the two labelled reservoirs, independently of the
point-metric sample."""

_HASHES = 3
_LIMB_CHUNK = 1 << 16  # limb columns per exact float64 product (see content_keys)


def _hash_coefficients(width: int, seed: int) -> torch.Tensor:
    """(width + 1, 3) float64 integer coefficients in [0, p); the last row is the offset."""
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randint(0, KEY_PRIME, (width + 1, _HASHES), generator=gen).to(torch.float64)


def _limbs(z: torch.Tensor) -> list[torch.Tensor]:
    """The row bits as 16-bit limbs (exact small integers in float64), one (n, D) per limb."""
    if z.dtype == torch.float64:
        bits = z.contiguous().view(torch.int64)
        return [((bits >> s) & 0xFFFF).to(torch.float64) for s in (0, 16, 32, 48)]
    if z.dtype != torch.float32:
        raise ValueError(f"content keys need float32 or float64 rows; got {z.dtype}")
    bits32 = z.contiguous().view(torch.int32)
    return [(bits32 & 0xFFFF).to(torch.float64), ((bits32 >> 16) & 0xFFFF).to(torch.float64)]


def _limbs_numpy(a: np.ndarray) -> list[np.ndarray]:
    """numpy twin of :func:`_limbs` (the CPU path: no thread wake-ups for small ops)."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.float64:
        b64 = a.view(np.uint64)
        return [((b64 >> s) & 0xFFFF).astype(np.float64) for s in (0, 16, 32, 48)]
    if a.dtype != np.float32:
        raise ValueError(f"content keys need float32 or float64 rows; got {a.dtype}")
    b32 = a.view(np.uint32)
    return [(b32 & 0xFFFF).astype(np.float64), (b32 >> 16).astype(np.float64)]


def _combine(h: list[Any]) -> Any:
    return (h[0] * KEY_PRIME + h[1]) * KEY_PRIME + h[2]


def content_keys(
    z: torch.Tensor, seed: int = 0, *, coefficients: torch.Tensor | None = None
) -> torch.Tensor:
    """Deterministic pseudo-random keys in [0, :data:`KEY_SPACE`), one per row of ``z``.

    The key of a row is a function of its exact bit pattern (float32 or float64) and the
    seed only: the same row gets the same key in any batch, on any rank, on any device.
    It is the seeded affine universal hash (Carter & Wegman 1979) of the row's 16-bit limbs
    x_j, with three independent components

        h_c = (b_c + sum_j a_{c,j} x_j) mod p,   p = 1,048,573,   key = (h_1 p + h_2) p + h_3,

    a_{c,j}, b_c uniform in [0, p) drawn from ``torch.Generator().manual_seed(seed)``.
    For distinct rows the keys are pairwise independent and uniform on [0, p^3), so "the R
    smallest keys" is a uniform-like sample (a bottom-k sketch). The sums are evaluated
    as float64 matrix-vector products of integers below 2^53, which are exact in any
    summation order, so BLAS blocking cannot change a key (CPU tensors go through numpy,
    other devices through torch; both give the same integers).

    Args:
        z: (n, D) float32 or float64 tensor (upcast half precision first).
        seed: hash seed.
        coefficients: precomputed ``(L * D + 1, 3)`` coefficients for this width (a cache);
            L = 2 limbs per float32 value, 4 per float64 value.

    Returns:
        (n,) int64 keys on ``z``'s device.
    """
    limbs_per_value = 4 if z.dtype == torch.float64 else 2
    d = int(z.shape[1])
    if coefficients is None:
        coefficients = _hash_coefficients(limbs_per_value * d, seed)
    if coefficients.shape != (limbs_per_value * d + 1, _HASHES):
        raise ValueError(
            f"coefficients have shape {tuple(coefficients.shape)}, expected "
            f"({limbs_per_value * d + 1}, {_HASHES}) for {z.dtype} rows of width {d}"
        )
    if z.device.type == "cpu":
        return torch.from_numpy(_keys_numpy(z.numpy(), coefficients.T.contiguous().numpy()))
    return _keys_torch(z, coefficients.to(z.device).T.contiguous())


def _keys_numpy(a: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Keys of the rows of ``a``; ``columns`` is the (3, L * D + 1) coefficient matrix."""
    limbs = _limbs_numpy(a)
    d = a.shape[1]
    parts = []
    for c in range(_HASHES):
        h = np.full(a.shape[0], columns[c, -1])
        for index, limb in enumerate(limbs):
            for start in range(0, d, _LIMB_CHUNK):
                stop = min(start + _LIMB_CHUNK, d)
                h = np.fmod(
                    h + limb[:, start:stop] @ columns[c, index * d + start : index * d + stop],
                    KEY_PRIME,
                )
        parts.append(h.astype(np.int64))
    return np.asarray(_combine(parts), dtype=np.int64)


def _keys_torch(z: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Keys of the rows of ``z`` on its device (no host sync)."""
    limbs = _limbs(z)
    d = int(z.shape[1])
    parts = []
    # One matrix-vector product per component: thin (n, D) x (D, 3) GEMMs are much slower
    # than three GEMVs in several BLAS builds (threading overhead); same exact integers.
    for c in range(_HASHES):
        h = columns[c, -1].expand(z.shape[0]).clone()
        for index, limb in enumerate(limbs):
            for start in range(0, d, _LIMB_CHUNK):
                stop = min(start + _LIMB_CHUNK, d)
                a = columns[c, index * d + start : index * d + stop]
                h = torch.fmod(h + torch.mv(limb[:, start:stop], a), KEY_PRIME)
        parts.append(h.to(torch.int64))
    out: torch.Tensor = _combine(parts)
    return out


class KeyHasher:
    """``content_keys`` with the coefficients cached per (width, dtype, device, salt)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._cache: dict[tuple[int, torch.dtype, str], torch.Tensor | np.ndarray] = {}

    def _columns(self, d: int, dtype: torch.dtype, device: torch.device, salt: int) -> Any:
        key = (d, dtype, f"{device}/{salt}")
        cols = self._cache.get(key)
        if cols is None:
            limbs = 4 if dtype == torch.float64 else 2
            coef = _hash_coefficients(limbs * d, self.seed ^ salt).T.contiguous()
            cols = coef.numpy() if device.type == "cpu" else coef.to(device)
            self._cache[key] = cols
        return cols

    def numpy(self, a: np.ndarray, salt: int = 0) -> np.ndarray:
        """Keys of a float32/float64 numpy matrix (the CPU path)."""
        dtype = torch.float64 if a.dtype == np.float64 else torch.float32
        return _keys_numpy(a, self._columns(a.shape[1], dtype, torch.device("cpu"), salt))

    def __call__(self, z: torch.Tensor, salt: int = 0) -> torch.Tensor:
        if z.device.type == "cpu":
            return torch.from_numpy(self.numpy(z.numpy(), salt))
        return _keys_torch(z, self._columns(int(z.shape[1]), z.dtype, z.device, salt))


def heldout_rows(keys: torch.Tensor, fraction: float) -> torch.Tensor:
    """Which labelled rows are held out: those whose key is below ``fraction * KEY_SPACE``.

    ``keys`` are the rows' :data:`LABEL_SALT` content keys, so the choice depends on a
    row's content and the seed only (the same on any number of ranks, in any batch) and
    holds out each distinct row with probability ``fraction``. ``NO_KEY`` rows (non-finite)
    are never held out.
    """
    return keys < int(fraction * KEY_SPACE)
