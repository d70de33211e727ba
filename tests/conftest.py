"""Shared fixtures: real data that ships offline (never downloaded)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads

import numpy as np
import pytest
import torch

# Under pytest-xdist every worker gets one thread, so 2 workers fill 2 cores without
# oversubscription; a plain run uses up to 2 threads.
torch.set_num_threads(
    1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads()))
)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits as (X float64 (1797, 64), y int64)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float64), data.target.astype(np.int64)


@pytest.fixture(scope="session")
def mnist1d() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D generated procedurally (4000 train + 1000 test, 40 features), train part."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"], dtype=np.int64)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
