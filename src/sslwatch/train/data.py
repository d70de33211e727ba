"""In-memory datasets for the reference training code (generated, never downloaded)."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["mnist1d_tensors"]


def mnist1d_tensors(
    seed: int = 42, num_samples: int = 5000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D (Greydanus, 2020) generated procedurally with ``mnist1d``.

    Calls ``mnist1d.data.make_dataset(get_dataset_args())`` with the given ``seed`` and
    ``num_samples`` (never ``get_dataset(download=True)``). The defaults (seed 42, 5000
    samples, 80/20 split) reproduce the standard dataset: 4000 training and 1000 test
    signals of length 40.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 (N, 40) signals and int64 labels.
        The global numpy and ``random`` RNGs are left as they were (``make_dataset``
        reseeds them).
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10; got {num_samples}.")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = int(num_samples)
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)

    def f32(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    def i64(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64))

    return f32(data["x"]), i64(data["y"]), f32(data["x_test"]), i64(data["y_test"])
