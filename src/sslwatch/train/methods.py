"""Five reference SSL methods sharing one small interface (no lightly / torchvision).

Every method is an :class:`SSLMethod`: an ``nn.Module`` holding a ``backbone`` (the
encoder being trained and scored) and a ``projector`` (the head the loss sees), plus
any predictor or momentum ("target") copies it needs. The shared interface:

* ``loss = method(x1, x2)`` — a scalar loss for two augmented views of one batch;
* ``method.on_after_step(step, total_steps)`` — called after every optimizer step
  (momentum-encoder updates live here; ``step`` counts optimizer steps from 1);
* ``method.embed(x, representation="backbone" | "projector")`` — features;
* ``method.hparams`` — the constructor's keyword arguments (JSON-serialisable), so a
  checkpoint can rebuild the method with :func:`build_method`.

Head sizes and loss constants default to each paper's ImageNet/ResNet-50 values; the
MNIST-1D recipes in :mod:`sslwatch.train.recipes` use smaller heads. Momentum (target)
networks are excluded from the optimizer (``requires_grad=False``). Every method runs
on one device: there is no cross-GPU gathering of negatives and no shuffled BN.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BYOL",
    "METHODS",
    "MoCoV2",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "VICReg",
    "build_method",
    "nt_xent_loss",
    "vicreg_loss",
]


def _backbone_dim(backbone: nn.Module) -> int:
    dim = getattr(backbone, "out_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(
            "The backbone must expose its feature size as an int attribute `out_dim` "
            f"(e.g. Conv1dNet().out_dim == 128); got {dim!r}."
        )
    return dim


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value}.")


def _mlp(
    dims: Sequence[int],
    *,
    hidden_bn: bool = True,
    last_bn: bool = False,
    last_bn_affine: bool = True,
    bias: bool = True,
) -> nn.Sequential:
    """Linear layers with (BN +) ReLU between them: dims = (in, hidden..., out)."""
    layers: list[nn.Module] = []
    n = len(dims) - 1
    for i in range(n):
        last = i == n - 1
        use_bn = last_bn if last else hidden_bn
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias and not use_bn))
        if use_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=last_bn_affine if last else True))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@torch.no_grad()
def _ema_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter."""
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.mul_(tau).add_(po.detach(), alpha=1.0 - tau)


def _frozen_copy(module: nn.Module) -> nn.Module:
    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    return clone


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy; Chen et al., ICML 2020).

    With ``z = normalize([z1; z2])`` (2N rows) and ``s_ij = z_i . z_j / t``, the loss is
    the mean over the 2N anchors of
    ``-log(exp(s_{i,p(i)}) / sum_{k != i} exp(s_ik))`` where ``p(i)`` is the other view of
    sample i.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VICReg loss (Bardes, Ponce, LeCun, ICLR 2022), as in the official code.

    ``lambda * MSE(z1, z2) + mu * [v(z1) + v(z2)] / 2 + nu * [c(z1) + c(z2)]`` with the
    variance hinge ``v(z) = mean_j relu(1 - sqrt(Var(z_j) + eps))`` and the covariance
    penalty ``c(z) = sum_{i != j} C(z)_ij^2 / D`` (C the (D, D) covariance).
    """
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)
    z1 = z1 - z1.mean(dim=0)
    z2 = z2 - z2.mean(dim=0)
    std1 = torch.sqrt(z1.var(dim=0) + eps)
    std2 = torch.sqrt(z2.var(dim=0) + eps)
    std = F.relu(1 - std1).mean() / 2 + F.relu(1 - std2).mean() / 2
    cov1 = (z1.T @ z1) / (n - 1)
    cov2 = (z2.T @ z2) / (n - 1)
    cov = _off_diagonal(cov1).pow(2).sum() / d + _off_diagonal(cov2).pow(2).sum() / d
    return sim_coeff * inv + std_coeff * std + cov_coeff * cov


def _neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity with a stop-gradient on z (SimSiam's D)."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SSLMethod(nn.Module, abc.ABC):
    """Base class: a backbone, a projector, a two-view loss and a post-step hook."""

    name: ClassVar[str]
    backbone: nn.Module
    projector: nn.Module

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]) -> None:
        super().__init__()
        _backbone_dim(backbone)
        self.backbone = backbone
        self._hparams = dict(hparams)

    @property
    def hparams(self) -> dict[str, Any]:
        """The method's keyword arguments (enough to rebuild it with ``build_method``)."""
        return dict(self._hparams)

    @abc.abstractmethod
    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Scalar loss for two augmented views of the same batch."""

    def on_after_step(self, step: int, total_steps: int) -> None:
        """Hook run after each optimizer step (``step`` counts from 1). No-op by default."""

    def embed(self, x: torch.Tensor, representation: str = "backbone") -> torch.Tensor:
        """Backbone features, or the projector's output for ``representation="projector"``."""
        h = self.backbone(x)
        if representation == "backbone":
            return h
        if representation == "projector":
            out: torch.Tensor = self.projector(h)
            return out
        raise ValueError(
            f"representation must be 'backbone' or 'projector'; got {representation!r}."
        )


class SimCLR(SSLMethod):
    """SimCLR (Chen, Kornblith, Norouzi, Hinton, ICML 2020).

    Projector ``Linear(d, hidden) -> BN -> ReLU -> Linear(hidden, proj_dim)``
    (paper: hidden = d = 2048, proj_dim = 128) and the NT-Xent loss
    (:func:`nt_xent_loss`). Temperature: the paper uses 0.1 on ImageNet (large batches)
    and 0.5 on CIFAR-10; 0.1-0.5 is the useful range, 0.5 suits small data and batches.

    Args:
        backbone: encoder with ``out_dim``.
        hidden_dim: projector hidden width (None: the backbone's ``out_dim``).
        proj_dim: projector output size.
        temperature: NT-Xent temperature ``t > 0``.
    """

    name = "simclr"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        hidden_dim: int | None = None,
        proj_dim: int = 128,
        temperature: float = 0.5,
    ) -> None:
        super().__init__(
            backbone, {"hidden_dim": hidden_dim, "proj_dim": proj_dim, "temperature": temperature}
        )
        _positive("temperature", temperature)
        d = _backbone_dim(backbone)
        self.temperature = float(temperature)
        self.projector = _mlp([d, hidden_dim or d, proj_dim])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        return nt_xent_loss(z1, z2, self.temperature)


class MoCoV2(SSLMethod):
    """MoCo v2 (He et al., CVPR 2020; Chen, Fan, Girshick, He, arXiv 2003.04297).

    A query encoder (backbone + MLP head ``Linear -> ReLU -> Linear``, no BN), a key
    encoder that is its exponential moving average (``momentum``, updated in
    :meth:`on_after_step`), and a queue of ``queue_size`` past keys used as negatives in
    the InfoNCE loss ``-log(exp(q.k+/t) / (exp(q.k+/t) + sum_queue exp(q.k-/t)))``.
    Paper defaults: momentum 0.999, queue 65536, temperature 0.2, head 2048 -> 128; on
    small data momentum 0.99 and a queue of a few thousand keys work better. The queue
    is updated only in training mode. ``symmetric=True`` averages the loss over both
    view orders (as MoCo v3 does) and enqueues both keys.

    Args:
        backbone: encoder with ``out_dim``.
        hidden_dim: head hidden width (None: the backbone's ``out_dim``).
        proj_dim: head output size (and queue key size).
        temperature: InfoNCE temperature.
        momentum: key-encoder EMA coefficient in [0, 1).
        queue_size: number of negative keys kept.
        symmetric: symmetrise the loss.
    """

    name = "moco_v2"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        hidden_dim: int | None = None,
        proj_dim: int = 128,
        temperature: float = 0.2,
        momentum: float = 0.999,
        queue_size: int = 65536,
        symmetric: bool = False,
    ) -> None:
        super().__init__(
            backbone,
            {
                "hidden_dim": hidden_dim,
                "proj_dim": proj_dim,
                "temperature": temperature,
                "momentum": momentum,
                "queue_size": queue_size,
                "symmetric": symmetric,
            },
        )
        _positive("temperature", temperature)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}.")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1; got {queue_size}.")
        d = _backbone_dim(backbone)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.symmetric = bool(symmetric)
        self.projector = _mlp([d, hidden_dim or d, proj_dim], hidden_bn=False)
        self.backbone_momentum = _frozen_copy(self.backbone)
        self.projector_momentum = _frozen_copy(self.projector)
        gen = torch.Generator().manual_seed(0)
        queue = F.normalize(torch.randn(queue_size, proj_dim, generator=gen), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.queue: torch.Tensor
        self.queue_ptr: torch.Tensor

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x)), dim=1)

    @torch.no_grad()
    def _key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector_momentum(self.backbone_momentum(x)), dim=1)

    def _infonce(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ queue.T
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[-size:]
        idx = (int(self.queue_ptr) + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + keys.shape[0]) % size)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        queue = self.queue.clone().detach()
        q1 = self._query(x1)
        k2 = self._key(x2)
        if self.symmetric:
            q2 = self._query(x2)
            k1 = self._key(x1)
            loss = 0.5 * (self._infonce(q1, k2, queue) + self._infonce(q2, k1, queue))
            keys = torch.cat([k2, k1])
        else:
            loss = self._infonce(q1, k2, queue)
            keys = k2
        if self.training:
            self._enqueue(keys)
        return loss

    def on_after_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the key encoder: ``theta_k <- m theta_k + (1 - m) theta_q``."""
        _ema_(self.backbone_momentum, self.backbone, self.momentum)
        _ema_(self.projector_momentum, self.projector, self.momentum)


class SimSiam(SSLMethod):
    """SimSiam (Chen and He, CVPR 2021).

    Projector of ``proj_layers`` (3 on ImageNet, 2 on CIFAR) ``Linear -> BN (-> ReLU)``
    layers of width ``proj_dim`` (the last BN without affine parameters), a bottleneck
    predictor ``Linear(proj_dim, pred_hidden_dim) -> BN -> ReLU -> Linear`` and the
    symmetric negative-cosine loss with a stop-gradient on the targets:
    ``L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2``, ``D(p, z) = -cos(p, z)`` (minimum -1).
    Paper: proj_dim 2048, pred_hidden_dim 512. (The paper's fixed predictor learning
    rate is not used: the predictor follows the common schedule, which the paper
    reports also works.)

    Args:
        backbone: encoder with ``out_dim``.
        proj_dim: projector width and output size.
        pred_hidden_dim: predictor bottleneck width.
        proj_layers: 2 or 3 projector layers.
    """

    name = "simsiam"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        proj_dim: int = 2048,
        pred_hidden_dim: int = 512,
        proj_layers: int = 3,
    ) -> None:
        super().__init__(
            backbone,
            {"proj_dim": proj_dim, "pred_hidden_dim": pred_hidden_dim, "proj_layers": proj_layers},
        )
        if proj_layers not in (2, 3):
            raise ValueError(f"proj_layers must be 2 or 3; got {proj_layers}.")
        d = _backbone_dim(backbone)
        dims = [d] + [proj_dim] * proj_layers
        self.projector = _mlp(dims, last_bn=True, last_bn_affine=False, bias=False)
        self.predictor = _mlp([proj_dim, pred_hidden_dim, proj_dim])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        p1 = self.predictor(z1)
        p2 = self.predictor(z2)
        return 0.5 * _neg_cosine(p1, z2) + 0.5 * _neg_cosine(p2, z1)


class BYOL(SSLMethod):
    """BYOL (Grill et al., NeurIPS 2020).

    Online network: backbone, projector ``Linear(d, hidden) -> BN -> ReLU ->
    Linear(hidden, proj_dim)`` and a predictor of the same shape on ``proj_dim``. The
    target network (backbone + projector) is an EMA of the online one. Loss, symmetrised
    over the two view orders: ``2 - 2 cos(q_online, sg(z_target))`` averaged over the
    batch, summed over both orders. With ``cosine_momentum`` the EMA coefficient follows
    ``tau_k = 1 - (1 - momentum) (cos(pi k / K) + 1) / 2``, rising from ``momentum`` to 1
    (the paper's schedule, base 0.996); otherwise it stays at ``momentum``.

    Args:
        backbone: encoder with ``out_dim``.
        hidden_dim: projector/predictor hidden width (paper 4096).
        proj_dim: projector/predictor output size (paper 256).
        momentum: base EMA coefficient in [0, 1).
        cosine_momentum: use the cosine schedule towards 1.
    """

    name = "byol"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        hidden_dim: int = 4096,
        proj_dim: int = 256,
        momentum: float = 0.996,
        cosine_momentum: bool = True,
    ) -> None:
        super().__init__(
            backbone,
            {
                "hidden_dim": hidden_dim,
                "proj_dim": proj_dim,
                "momentum": momentum,
                "cosine_momentum": cosine_momentum,
            },
        )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}.")
        d = _backbone_dim(backbone)
        self.momentum = float(momentum)
        self.cosine_momentum = bool(cosine_momentum)
        self.projector = _mlp([d, hidden_dim, proj_dim])
        self.predictor = _mlp([proj_dim, hidden_dim, proj_dim])
        self.backbone_target = _frozen_copy(self.backbone)
        self.projector_target = _frozen_copy(self.projector)

    def tau(self, step: int, total_steps: int) -> float:
        """EMA coefficient after ``step`` of ``total_steps`` optimizer steps."""
        if not self.cosine_momentum or total_steps <= 0:
            return self.momentum
        frac = min(max(step / total_steps, 0.0), 1.0)
        return 1.0 - (1.0 - self.momentum) * (math.cos(math.pi * frac) + 1.0) / 2.0

    @staticmethod
    def _regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (2.0 - 2.0 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        q1 = self.predictor(self.projector(self.backbone(x1)))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            t1 = self.projector_target(self.backbone_target(x1))
            t2 = self.projector_target(self.backbone_target(x2))
        return self._regression(q1, t2) + self._regression(q2, t1)

    def on_after_step(self, step: int, total_steps: int) -> None:
        """EMA update of the target network with ``tau(step, total_steps)``."""
        tau = self.tau(step, total_steps)
        _ema_(self.backbone_target, self.backbone, tau)
        _ema_(self.projector_target, self.projector, tau)


class VICReg(SSLMethod):
    """VICReg (Bardes, Ponce, LeCun, ICLR 2022).

    Expander ``Linear -> BN -> ReLU`` layers with a final plain ``Linear`` (paper:
    8192-8192-8192) and :func:`vicreg_loss` with invariance 25, variance 25 and
    covariance 1.

    Args:
        backbone: encoder with ``out_dim``.
        expander_dims: widths of the expander layers (the last is the output size).
        sim_coeff: invariance weight lambda.
        std_coeff: variance weight mu.
        cov_coeff: covariance weight nu.
    """

    name = "vicreg"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        expander_dims: Sequence[int] = (8192, 8192, 8192),
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
    ) -> None:
        dims = [int(v) for v in expander_dims]
        super().__init__(
            backbone,
            {
                "expander_dims": dims,
                "sim_coeff": sim_coeff,
                "std_coeff": std_coeff,
                "cov_coeff": cov_coeff,
            },
        )
        if not dims or any(v < 1 for v in dims):
            raise ValueError(f"expander_dims must be positive ints; got {expander_dims!r}.")
        d = _backbone_dim(backbone)
        self.coeffs = (float(sim_coeff), float(std_coeff), float(cov_coeff))
        self.projector = _mlp([d, *dims])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        sim, std, cov = self.coeffs
        return vicreg_loss(z1, z2, sim_coeff=sim, std_coeff=std, cov_coeff=cov)


METHODS: dict[str, Callable[..., SSLMethod]] = {
    "simclr": SimCLR,
    "moco_v2": MoCoV2,
    "simsiam": SimSiam,
    "byol": BYOL,
    "vicreg": VICReg,
}

_ALIASES = {"mocov2": "moco_v2", "moco": "moco_v2", "moco-v2": "moco_v2"}


def canonical_method_name(name: str) -> str:
    """Registry key for a method name (case-insensitive; ``moco``/``mocov2`` -> ``moco_v2``)."""
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"Unknown SSL method {name!r}; choose one of {sorted(METHODS)}.")
    return key


def build_method(name: str, backbone: nn.Module, **hparams: Any) -> SSLMethod:
    """Build one of the five methods around ``backbone`` (see each class for hparams).

    Raises:
        ValueError: on an unknown method name or invalid hyperparameters.
    """
    cls = METHODS[canonical_method_name(name)]
    try:
        return cls(backbone, **hparams)
    except TypeError as err:
        raise ValueError(f"Bad hyperparameters for method {name!r}: {err}") from err
