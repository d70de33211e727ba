"""Helpers to score trained (or untrained) backbones: BN recalibration, features, probe.

* :func:`recalibrate_batchnorm` — at random initialisation BatchNorm's running
  statistics are the defaults (mean 0, variance 1), so eval-mode embeddings of an
  untrained network are not those of the network a training batch sees. Re-estimate
  them on a few batches before scoring an epoch-0 checkpoint.
* :func:`extract_features` — embeddings in eval mode, without gradients.
* :func:`linear_probe_accuracy` — the label-based reference: a logistic regression on
  standardised features (the usual linear-probe protocol), test-set accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from sslwatch.train.methods import SSLMethod

__all__ = ["extract_features", "linear_probe_accuracy", "recalibrate_batchnorm"]

_BN = nn.modules.batchnorm._BatchNorm
M = TypeVar("M", bound=nn.Module)


def _as_float_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a float torch.Tensor or numpy array; got {type(x)}.")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1; got {tuple(x.shape)}.")
    return x.to(torch.float32)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _default_forward(model: nn.Module, representation: str) -> Callable[[torch.Tensor], Any]:
    if isinstance(model, SSLMethod):
        return lambda xb: model.embed(xb, representation)
    if representation != "backbone":
        raise ValueError("representation='projector' needs an SSLMethod (it has a projector).")
    return model


@torch.no_grad()
def recalibrate_batchnorm(
    model: M,
    x: torch.Tensor | np.ndarray,
    *,
    batches: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> M:
    """Re-estimate every BatchNorm layer's running mean/variance from data, in place.

    Resets the running statistics, then runs ``batches`` forward passes in training mode
    without gradients on seeded random batches of ``x`` (at most ``len(x)`` samples, no
    repeats), with ``momentum=None`` so the statistics become the plain average over the
    batches (PyTorch's cumulative moving average). Only the BN layers the forward pass
    reaches are updated: for an :class:`SSLMethod` the default forward is
    ``projector(backbone(x))`` (predictors and momentum copies are left as they are).
    Each module's train/eval mode and BN momentum are restored afterwards; weights are
    not changed.

    Args:
        model: a backbone or an SSLMethod.
        x: inputs (N, ...) in the layout the model takes.
        batches: number of batches (>= 1).
        batch_size: samples per batch (>= 2; batches of one sample are skipped).
        seed: seed of the batch sampling.
        forward: what to call on a batch (defaults as above).

    Returns:
        ``model`` (modified in place).
    """
    if batches < 1 or batch_size < 2:
        raise ValueError(f"batches must be >= 1 and batch_size >= 2; got {batches}, {batch_size}.")
    data = _as_float_tensor(x, "x")
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        return model
    fwd: Callable[[torch.Tensor], Any]
    if forward is not None:
        fwd = forward
    elif isinstance(model, SSLMethod):
        fwd = _default_forward(model, "projector")
    else:
        fwd = model
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    device = _model_device(model)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(data.shape[0], generator=gen)[: batches * batch_size]
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        for start in range(0, order.numel(), batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() < 2:
                continue
            fwd(data[idx].to(device))
    finally:
        for bn, mom in momenta.items():
            bn.momentum = mom
        for m, mode in modes.items():
            m.train(mode)
    return model


@torch.no_grad()
def extract_features(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    *,
    representation: str = "backbone",
    batch_size: int = 1024,
) -> torch.Tensor:
    """Embeddings of ``x`` in eval mode, as a float32 (N, D) CPU tensor.

    For an :class:`SSLMethod`, ``representation`` picks the backbone output or the
    projector output; any other module is called directly. The model's train/eval
    mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    data = _as_float_tensor(x, "x")
    fwd = _default_forward(model, representation)
    modes = {m: m.training for m in model.modules()}
    device = _model_device(model)
    model.eval()
    try:
        chunks = [
            torch.as_tensor(fwd(data[i : i + batch_size].to(device))).float().flatten(1).cpu()
            for i in range(0, data.shape[0], batch_size)
        ]
    finally:
        for m, mode in modes.items():
            m.train(mode)
    return torch.cat(chunks)


def linear_probe_accuracy(
    z_train: torch.Tensor | np.ndarray,
    y_train: torch.Tensor | np.ndarray,
    z_test: torch.Tensor | np.ndarray,
    y_test: torch.Tensor | np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 2000,
) -> float:
    """Test accuracy of a logistic regression trained on standardised features.

    ``StandardScaler`` fitted on the training features, then scikit-learn's
    ``LogisticRegression(C=c)`` (L-BFGS, multinomial); returns the fraction of test
    samples classified correctly.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def arr(a: Any) -> np.ndarray:
        return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)

    ztr, zte, ytr, yte = arr(z_train), arr(z_test), arr(y_train), arr(y_test)
    if ztr.ndim != 2 or zte.ndim != 2 or ztr.shape[1] != zte.shape[1]:
        raise ValueError(
            f"z_train and z_test must be 2-D with the same width; got {ztr.shape} and {zte.shape}."
        )
    if len(ytr) != len(ztr) or len(yte) != len(zte):
        raise ValueError("Each label vector must have one label per feature row.")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    probe.fit(ztr.astype(np.float64), ytr)
    return float(np.mean(probe.predict(zte.astype(np.float64)) == yte))
