"""Settled training recipes (hyperparameters validated on this project's CPU machines).

:func:`mnist1d_config` returns the :class:`~sslwatch.train.TrainConfig` used by
``sslwatch demo`` / ``sslwatch reproduce`` and by :mod:`sslwatch.train.validate` for
each of the five methods on MNIST-1D (4000 training signals of length 40) with the
default :class:`~sslwatch.train.Conv1dNet` backbone (128-d features).

Common settings: AdamW, batch 128, learning rate 2e-3 with 2 warmup epochs and a
per-step cosine decay, weight decay 1e-4, the default :class:`MNIST1DAugment`. Heads are
smaller than the papers' (ImageNet/ResNet-50) heads, to suit a 128-d backbone and a CPU
(``hidden_dim=None``: the backbone's width, 128, as SimCLR and MoCo v2 use their
backbone's width).

:func:`mnist_config` does the same for 28x28 grey digits (the 5000 real MNIST digits of
``--data mnist5k``) with the :class:`~sslwatch.train.SmallConv2d` backbone (128-d
features) and :class:`~sslwatch.train.ImageAugment` without flips (a flipped digit is
another glyph), with the same heads (:data:`MNIST_METHOD_KWARGS`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from sslwatch.train.loop import TrainConfig
from sslwatch.train.methods import canonical_method_name

__all__ = [
    "MNIST1D_METHOD_KWARGS",
    "MNIST_METHOD_KWARGS",
    "RECIPE_BOOKS",
    "mnist1d_config",
    "mnist_config",
]

MNIST1D_METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "simclr": {"hidden_dim": None, "proj_dim": 128, "temperature": 0.2},
    "moco_v2": {
        "hidden_dim": None,
        "proj_dim": 128,
        "temperature": 0.2,
        "momentum": 0.99,
        "queue_size": 1024,
        "symmetric": True,
    },
    "simsiam": {"proj_dim": 512, "pred_hidden_dim": 128, "proj_layers": 2},
    "byol": {"hidden_dim": 512, "proj_dim": 128, "momentum": 0.99, "cosine_momentum": True},
    "vicreg": {"expander_dims": [512, 512, 512]},
}

_COMMON: dict[str, Any] = {
    "backbone": "conv1d",
    "augment": "mnist1d",
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "scheduler": "cosine",
    "warmup_epochs": 2,
}


MNIST_METHOD_KWARGS: dict[str, dict[str, Any]] = copy.deepcopy(MNIST1D_METHOD_KWARGS)

_MNIST_COMMON: dict[str, Any] = {
    "backbone": "small_conv2d",
    "augment": "image",
    "augment_kwargs": {"crop_scale": [0.3, 1.0], "hflip": False, "jitter": 0.5},
    "batch_size": 256,
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "scheduler": "cosine",
    "warmup_epochs": 1,
}


def _config(
    common: dict[str, Any],
    kwargs: dict[str, dict[str, Any]],
    method: str,
    epochs: int,
    seed: int,
    out_dir: str | os.PathLike[str] | None,
    overrides: dict[str, Any],
) -> TrainConfig:
    key = canonical_method_name(method)
    fields: dict[str, Any] = copy.deepcopy(common)
    method_kwargs = copy.deepcopy(kwargs[key])
    method_kwargs.update(overrides.pop("method_kwargs", {}))
    fields.update(
        method=key, method_kwargs=method_kwargs, epochs=epochs, seed=seed, out_dir=out_dir
    )
    fields.update(overrides)
    if fields["warmup_epochs"] > fields["epochs"]:
        fields["warmup_epochs"] = fields["epochs"]
    return TrainConfig(**fields)


def mnist1d_config(
    method: str,
    *,
    epochs: int = 100,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> TrainConfig:
    """The validated MNIST-1D configuration of ``method``; any field can be overridden.

    ``method_kwargs`` given in ``overrides`` are merged into the recipe's method kwargs.
    """
    return _config(_COMMON, MNIST1D_METHOD_KWARGS, method, epochs, seed, out_dir, overrides)


def mnist_config(
    method: str,
    *,
    epochs: int = 10,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> TrainConfig:
    """The validated configuration of ``method`` on 28x28 grey digits in [0, 1]
    (``mnist5k``); any field can be overridden, ``method_kwargs`` are merged."""
    return _config(_MNIST_COMMON, MNIST_METHOD_KWARGS, method, epochs, seed, out_dir, overrides)


RECIPE_BOOKS: dict[str, Callable[..., TrainConfig]] = {
    "mnist1d": mnist1d_config,
    "mnist": mnist_config,
}
"""The recipe functions by name, as a study preset names them."""
