"""Small backbones for the reference SSL training code (no torchvision).

Every backbone maps a batch of inputs to a flat feature vector of size ``out_dim``
(the *backbone representation* that sslwatch scores). All of them use BatchNorm, so
score them in eval mode and, for an untrained network, only after
:func:`sslwatch.train.recalibrate_batchnorm`.

=====================  ==============================  ==========================
name (registry)        input                           output
=====================  ==============================  ==========================
``conv1d``             (B, L) or (B, C, L), e.g. L=40  (B, widths[-1]) = (B, 128)
``small_conv2d``       (B, C, H, W), e.g. 28x28, 8x8   (B, widths[-1]) = (B, 128)
``resnet18_cifar``     (B, C, H, W), e.g. 32x32        (B, 512)
``mlp``                (B, ...) with in_features       (B, widths[-1]) = (B, 128)
                       values per sample, flattened
=====================  ==============================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "BACKBONES",
    "MLP",
    "Conv1dNet",
    "ResNet18Cifar",
    "SmallConv2d",
    "build_backbone",
]


def _check_widths(widths: Sequence[int], name: str) -> tuple[int, ...]:
    w = tuple(int(v) for v in widths)
    if len(w) == 0 or any(v < 1 for v in w):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints; got {widths!r}.")
    return w


class Conv1dNet(nn.Module):
    """Small 1-D CNN for MNIST-1D-like signals.

    Stages of ``Conv1d(kernel_size) -> BatchNorm1d -> ReLU``; the first stage keeps the
    length, every later stage halves it (stride 2). Global average pooling over time
    gives the feature vector of size ``out_dim = widths[-1]`` (128 by default).

    Args:
        in_channels: input channels; an input of shape (B, L) is treated as (B, 1, L).
        widths: output channels of the stages.
        kernel_size: odd convolution width.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 128),
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        w = _check_widths(widths, "widths")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1; got {in_channels}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int; got {kernel_size}.")
        self.in_channels = int(in_channels)
        layers: list[nn.Module] = []
        prev = self.in_channels
        for i, width in enumerate(w):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv1d(
                    prev, width, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
                ),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.out_dim = w[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, L) or (B, C, L) to (B, out_dim)."""
        if x.ndim == 2:
            x = x.unsqueeze(1)
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv1dNet expects (B, L) or (B, {self.in_channels}, L); got shape "
                f"{tuple(x.shape)}."
            )
        return self.features(x).mean(dim=-1)


class SmallConv2d(nn.Module):
    """Small 2-D CNN for 28x28 or 8x8 grayscale digits.

    Stages of ``Conv2d(3x3) -> BatchNorm2d -> ReLU``, with a 2x2 max-pool after every
    stage but the last while the feature map is at least 4 pixels wide (so an 8x8 input
    is pooled once, a 28x28 input twice); global average pooling gives
    ``out_dim = widths[-1]`` (128 by default).

    Args:
        in_channels: input channels (1 for grayscale).
        widths: output channels of the stages.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        w = _check_widths(widths, "widths")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1; got {in_channels}.")
        self.in_channels = int(in_channels)
        self.stages = nn.ModuleList()
        prev = self.in_channels
        for width in w:
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            prev = width
        self.out_dim = w[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, out_dim)."""
        if x.ndim == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SmallConv2d expects (B, {self.in_channels}, H, W); got shape {tuple(x.shape)}."
            )
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < last and min(x.shape[-2:]) >= 4:
                x = nn.functional.max_pool2d(x, 2)
        return x.mean(dim=(-2, -1))


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with a (projected) identity shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """CIFAR-style ResNet-18 (He et al., CVPR 2016; the variant used by SimCLR on CIFAR).

    A 3x3 stride-1 stem without max-pooling, then four stages of two basic blocks with
    64, 128, 256 and 512 channels (stride 2 from the second stage on) and global average
    pooling: a (B, 3, 32, 32) input gives (B, 512). ``out_dim = 512``.

    Args:
        in_channels: input channels (3 for RGB, 1 for grayscale).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1; got {in_channels}.")
        self.in_channels = int(in_channels)
        self.conv1 = nn.Conv2d(self.in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks: list[nn.Module] = []
        prev = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_BasicBlock(prev, planes, stride))
                prev = planes
        self.layers = nn.Sequential(*blocks)
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, 512)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet18Cifar expects (B, {self.in_channels}, H, W); got shape {tuple(x.shape)}."
            )
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return out.mean(dim=(-2, -1))


class MLP(nn.Module):
    """Fully connected backbone: flatten, then stages of ``Linear -> BatchNorm1d -> ReLU``.

    Any input (B, ...) is flattened to (B, in_features), so one MLP serves signals and
    images alike; it has no notion of locality, which makes it the second architecture
    of the reproduction study (clustering metrics compared within and across
    architectures, Xu et al. 2024). ``out_dim = widths[-1]`` (128 by default, the width
    of the convolutional backbones).

    Args:
        in_features: values per sample (e.g. 784 for 1x28x28, 40 for MNIST-1D).
        widths: output sizes of the stages.
    """

    def __init__(self, in_features: int, widths: Sequence[int] = (512, 256, 128)) -> None:
        super().__init__()
        w = _check_widths(widths, "widths")
        if int(in_features) < 1:
            raise ValueError(f"in_features must be >= 1; got {in_features}.")
        self.in_features = int(in_features)
        layers: list[nn.Module] = []
        prev = self.in_features
        for width in w:
            layers += [
                nn.Linear(prev, width, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.out_dim = w[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, ...) with ``in_features`` values per sample to (B, out_dim)."""
        if x.ndim < 2 or x[0].numel() != self.in_features:
            raise ValueError(
                f"MLP expects (B, ...) with {self.in_features} values per sample; got shape "
                f"{tuple(x.shape)}."
            )
        out: torch.Tensor = self.features(x.reshape(x.shape[0], -1))
        return out


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "conv1d": Conv1dNet,
    "small_conv2d": SmallConv2d,
    "resnet18_cifar": ResNet18Cifar,
    "mlp": MLP,
}

SHAPE_KWARGS: dict[str, str] = {"mlp": "in_features"}
"""Backbones sized by their flattened input (``in_features``) rather than by
``in_channels``; the training loop fills the one the backbone takes."""


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered backbone by name (``conv1d``, ``small_conv2d``,
    ``resnet18_cifar``, ``mlp``).

    Raises:
        ValueError: on an unknown name.
    """
    key = name.lower()
    if key not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}.")
    return BACKBONES[key](**kwargs)
