"""In-memory datasets for the reference training code (generated, never downloaded)."""

from __future__ import annotations

import torch

from sslwatch.offline.data import generate_mnist1d

__all__ = ["mnist1d_tensors"]


def mnist1d_tensors(
    seed: int = 42, num_samples: int = 5000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D as tensors: :func:`sslwatch.offline.data.generate_mnist1d` for training.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 (N, 40) signals and int64 labels.
        The global numpy and ``random`` RNGs are left as they were.
    """
    x_train, y_train, x_test, y_test = generate_mnist1d(seed, num_samples)
    return (
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
    )
