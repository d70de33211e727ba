"""Reference SSL training code (optional extra ``sslwatch[train]``).

Backbones, batched augmentations, five SSL methods (SimCLR, MoCo v2, SimSiam, BYOL,
VICReg) and a resumable deterministic training loop with per-epoch checkpoints. Scoring
checkpoints uses the library itself (:mod:`sslwatch.offline.embed` for BatchNorm recalibration
and embeddings, :mod:`sslwatch.metrics.probes` for the linear probe). Used by
``sslwatch demo`` and ``sslwatch reproduce``.
"""

from sslwatch.train.augment import ImageAugment, MNIST1DAugment, build_augment
from sslwatch.train.backbones import (
    BACKBONES,
    MLP,
    Conv1dNet,
    ResNet18Cifar,
    SmallConv2d,
    build_backbone,
)
from sslwatch.train.data import mnist1d_tensors
from sslwatch.train.loop import (
    StopTraining,
    TrainConfig,
    TrainResult,
    build_from_config,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint_metadata,
    state_path,
    train,
)
from sslwatch.train.methods import (
    BYOL,
    METHODS,
    MoCoV2,
    SimCLR,
    SimSiam,
    SSLMethod,
    VICReg,
    build_method,
)
from sslwatch.train.recipes import MNIST1D_METHOD_KWARGS, mnist1d_config

__all__ = [
    "BACKBONES",
    "BYOL",
    "METHODS",
    "MLP",
    "MNIST1D_METHOD_KWARGS",
    "Conv1dNet",
    "ImageAugment",
    "MNIST1DAugment",
    "MoCoV2",
    "ResNet18Cifar",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "SmallConv2d",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "VICReg",
    "build_augment",
    "build_backbone",
    "build_from_config",
    "build_method",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "mnist1d_config",
    "mnist1d_tensors",
    "read_checkpoint_metadata",
    "state_path",
    "train",
]
