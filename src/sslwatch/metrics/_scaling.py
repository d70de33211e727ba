"""Exact power-of-two rescaling, so scale-free metrics see the same numbers at any scale.

Multiplying by 2^k changes only a float's exponent, so it is exact (unless a value
leaves the normal range, which the exponents chosen here avoid for every value within
2^-100 of the largest). Metrics whose definition does not depend on the scale of z
(silhouette, k-means labels, cosine similarities, L2-normalised rows, ...) compute on
the rescaled rows; squares and norms then neither overflow (float32 z ~ 1e19) nor
underflow (z ~ 1e-30) in the working precision.
"""

from __future__ import annotations

import math

import torch

__all__ = ["times_power_of_two", "unit_rows", "unit_scaled"]


def unit_scaled(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(x * 2^-e, e)`` with e the binary exponent of max |x| (result in [0.5, 1)).

    An all-zero x is returned as is with e = 0. The product is exact, so for any
    scale-invariant f, ``f(x) == f(x * 2^-e)`` bit for bit.
    """
    if x.numel() == 0:
        return x, 0
    amax = float(x.abs().max())
    if not amax > 0.0 or not math.isfinite(amax):
        return x, 0
    e = math.frexp(amax)[1]
    if e == 0:
        return x, 0
    return times_power_of_two(x, -e), e


def times_power_of_two(x: torch.Tensor, e: int) -> torch.Tensor:
    """``x * 2^e``, in two exact halves: 2^e alone overflows for |e| beyond the dtype's
    exponent range (float32: subnormal data has e < -127)."""
    half = e // 2
    return x * math.ldexp(1.0, half) * math.ldexp(1.0, e - half)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their Euclidean norm, whatever their scale; zero rows stay zero.

    Each row is first multiplied by the exact power of two that brings its largest |entry|
    into [0.5, 1), so the norm is computed without overflow or underflow (a plain
    ``z / max(||z||, 1e-12)`` shrinks rows with norms below 1e-12 and overflows float32
    rows above ~1e19).
    """
    amax = x.abs().amax(dim=1, keepdim=True)
    exponent = torch.frexp(amax).exponent
    scaled = torch.ldexp(x, -exponent)
    norms = torch.linalg.vector_norm(scaled, dim=1, keepdim=True)
    return torch.where(norms > 0, scaled / torch.where(norms > 0, norms, 1.0), scaled)
