"""Tests of the reference SSL training code (sslwatch.train): fast, CPU only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sslwatch.offline.embed import extract_embeddings, recalibrate_batchnorm
from sslwatch.train import (
    BYOL,
    MLP,
    Conv1dNet,
    ImageAugment,
    MNIST1DAugment,
    MoCoV2,
    ResNet18Cifar,
    SmallConv2d,
    StopTraining,
    TrainConfig,
    build_augment,
    build_backbone,
    build_from_config,
    build_method,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    mnist1d_tensors,
    read_checkpoint_metadata,
    state_path,
    train,
)
from sslwatch.train.methods import nt_xent_loss, vicreg_loss

# Small heads so every method trains in well under a second on CPU.
SMALL_HEADS: dict[str, dict[str, object]] = {
    "simclr": {"hidden_dim": 32, "proj_dim": 16, "temperature": 0.5},
    "moco_v2": {"hidden_dim": 32, "proj_dim": 16, "queue_size": 256, "momentum": 0.9},
    "simsiam": {"proj_dim": 32, "pred_hidden_dim": 8},
    "byol": {"hidden_dim": 32, "proj_dim": 16, "momentum": 0.9},
    "vicreg": {"expander_dims": [32, 32]},
}
SMALL_BACKBONE = {"widths": [8, 16, 16]}


@pytest.fixture(scope="module")
def signals(mnist1d: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(mnist1d[0][:96], dtype=torch.float32)


# ----------------------------------------------------------------------------- backbones


def test_conv1dnet_shapes() -> None:
    net = Conv1dNet()
    assert net.out_dim == 128
    assert net(torch.randn(4, 40)).shape == (4, 128)
    assert net(torch.randn(4, 1, 40)).shape == (4, 128)
    wide = Conv1dNet(in_channels=2, widths=(8, 24))
    assert wide.out_dim == 24
    assert wide(torch.randn(3, 2, 17)).shape == (3, 24)
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(4, 3, 40))


def test_small_conv2d_shapes() -> None:
    net = SmallConv2d()
    assert net.out_dim == 128
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 128)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 128)
    assert SmallConv2d(in_channels=3, widths=(4, 6))(torch.randn(2, 3, 8, 8)).shape == (2, 6)


def test_resnet18_cifar_shape_and_size() -> None:
    net = ResNet18Cifar()
    assert net.out_dim == 512
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    # CIFAR ResNet-18 (3x3 stem, no max-pool) has 11,173,962 parameters with its
    # 512 -> 10 classifier (5,130 parameters); without it: 11,168,832.
    assert sum(p.numel() for p in net.parameters()) == 11_173_962 - 5_130
    assert ResNet18Cifar(in_channels=1)(torch.randn(2, 1, 16, 16)).shape == (2, 512)


def test_mlp_shapes_and_flattening() -> None:
    net = MLP(in_features=784)
    assert net.out_dim == 128
    images = torch.randn(5, 1, 28, 28)
    assert net(images).shape == (5, 128)
    # it flattens: an image and its flat copy give the same features
    net.eval()
    torch.testing.assert_close(net(images), net(images.reshape(5, 784)))
    assert MLP(in_features=40, widths=(16, 8))(torch.randn(3, 1, 40)).shape == (3, 8)
    # a plain linear stack: Linear(784->512), Linear(512->256), Linear(256->128), no bias
    n_linear = 784 * 512 + 512 * 256 + 256 * 128
    n_bn = 2 * (512 + 256 + 128)
    assert sum(p.numel() for p in net.parameters()) == n_linear + n_bn
    with pytest.raises(ValueError, match="784 values per sample"):
        net(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="in_features"):
        MLP(in_features=0)


def test_mlp_trains_with_its_input_size_filled_in(tmp_path: Path) -> None:
    images = torch.rand(32, 1, 8, 8)
    cfg = TrainConfig(
        method="simclr",
        method_kwargs=SMALL_HEADS["simclr"],
        backbone="mlp",
        backbone_kwargs={"widths": [16, 8]},
        augment="none",
        epochs=1,
        batch_size=16,
        out_dir=str(tmp_path),
        progress=False,
    )
    result = train(cfg, images)
    assert math.isfinite(result.losses[0])
    assert read_checkpoint_metadata(result.checkpoints[-1])["backbone_kwargs"] == {
        "in_features": 64,
        "widths": [16, 8],
    }
    loaded = load_checkpoint(result.checkpoints[-1])
    assert isinstance(loaded.backbone, MLP) and loaded.backbone.in_features == 64
    torch.testing.assert_close(loaded.backbone(images), result.method.backbone(images))


def test_build_backbone_registry() -> None:
    assert isinstance(build_backbone("conv1d"), Conv1dNet)
    assert isinstance(build_backbone("ResNet18_Cifar"), ResNet18Cifar)
    assert isinstance(build_backbone("mlp", in_features=10), MLP)
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("vit")


# ----------------------------------------------------------------------------- augmentations


def test_mnist1d_augment_identity_when_all_ops_off(signals: torch.Tensor) -> None:
    aug = MNIST1DAugment(
        max_shift=0, crop_scale=(1, 1), warp=0, amplitude=(1, 1), shear=0, noise_std=0
    )
    out = aug(signals, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, signals, atol=1e-5, rtol=0)


def test_mnist1d_circular_shift_preserves_sum(signals: torch.Tensor) -> None:
    # A circular shift with linear interpolation gives every sample total weight 1.
    aug = MNIST1DAugment(
        max_shift=0.5, crop_scale=(1, 1), warp=0, amplitude=(1, 1), shear=0, noise_std=0
    )
    out = aug(signals, torch.Generator().manual_seed(1))
    assert not torch.allclose(out, signals)
    torch.testing.assert_close(out.sum(dim=1), signals.sum(dim=1), atol=1e-4, rtol=1e-5)


def test_mnist1d_zero_padded_shift_moves_values_out() -> None:
    x = torch.ones(64, 40)
    aug = MNIST1DAugment(
        max_shift=0.5,
        circular=False,
        crop_scale=(1, 1),
        warp=0,
        amplitude=(1, 1),
        shear=0,
        noise_std=0,
    )
    out = aug(x, torch.Generator().manual_seed(2))
    assert float(out.min()) == 0.0 and float(out.max()) <= 1.0 + 1e-6
    assert bool((out.sum(dim=1) <= 40 + 1e-4).all())


def test_mnist1d_amplitude_and_noise(signals: torch.Tensor) -> None:
    amp = MNIST1DAugment(
        max_shift=0, crop_scale=(1, 1), warp=0, amplitude=(0.5, 2.0), shear=0, noise_std=0
    )
    out = amp(signals, torch.Generator().manual_seed(3))
    ratio = out / signals
    per_sample = ratio.median(dim=1).values
    assert bool(((per_sample >= 0.5 - 1e-5) & (per_sample <= 2.0 + 1e-5)).all())
    torch.testing.assert_close(ratio, per_sample[:, None].expand_as(ratio), atol=1e-3, rtol=1e-3)
    noisy = MNIST1DAugment(
        max_shift=0, crop_scale=(1, 1), warp=0, amplitude=(1, 1), shear=0, noise_std=0.3
    )
    diff = noisy(torch.zeros(2000, 40), torch.Generator().manual_seed(4))
    assert abs(float(diff.std()) - 0.3) < 0.01


def test_mnist1d_augment_seeded_and_shapes(signals: torch.Tensor) -> None:
    aug = MNIST1DAugment()
    a = aug(signals, torch.Generator().manual_seed(5))
    b = aug(signals, torch.Generator().manual_seed(5))
    c = aug(signals, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == signals.shape
    assert aug(signals[:, None, :], torch.Generator()).shape == (96, 1, 40)
    with pytest.raises(ValueError, match="warp"):
        MNIST1DAugment(warp=1.5)


def test_image_augment_seeded_and_leaves_global_rng() -> None:
    x = torch.rand(6, 3, 16, 16)
    aug = ImageAugment(16, 3)
    before = torch.get_rng_state()
    a = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(before, torch.get_rng_state())
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    gray = build_augment("auto", (1, 8, 8))
    assert gray(torch.rand(4, 1, 8, 8), torch.Generator()).shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aug(x * 255, torch.Generator())


# ----------------------------------------------------------------------------- losses (oracles)


def _nt_xent_numpy(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        sims = [z[i] @ z[k] / t for k in range(n2) if k != i]
        total -= z[i] @ z[pos] / t - math.log(sum(math.exp(s) for s in sims))
    return total / n2


def test_nt_xent_matches_plain_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(6, 5, generator=g, dtype=torch.float64),
        torch.randn(6, 5, generator=g, dtype=torch.float64),
    )
    for t in (0.1, 0.5):
        got = float(nt_xent_loss(z1, z2, t))
        assert got == pytest.approx(_nt_xent_numpy(z1.numpy(), z2.numpy(), t), rel=1e-10)


def test_vicreg_loss_matches_plain_numpy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 6)) * 0.5, rng.normal(size=(20, 6))
    inv = np.mean((a - b) ** 2)

    def var_term(z: np.ndarray) -> float:
        return float(np.mean(np.maximum(0.0, 1 - np.sqrt(z.var(axis=0, ddof=1) + 1e-4))))

    def cov_term(z: np.ndarray) -> float:
        c = np.cov(z, rowvar=False)
        return float((c**2).sum() - (np.diag(c) ** 2).sum()) / z.shape[1]

    expected = 25 * inv + 25 * (var_term(a) + var_term(b)) / 2 + (cov_term(a) + cov_term(b))
    got = float(vicreg_loss(torch.from_numpy(a), torch.from_numpy(b)))
    assert got == pytest.approx(expected, rel=1e-10)


def test_byol_momentum_schedule_closed_form() -> None:
    byol = BYOL(Conv1dNet(widths=(4,)), hidden_dim=8, proj_dim=4, momentum=0.99)
    assert byol.tau(0, 100) == pytest.approx(0.99)
    assert byol.tau(50, 100) == pytest.approx(0.995)
    assert byol.tau(100, 100) == pytest.approx(1.0)
    flat = BYOL(Conv1dNet(widths=(4,)), hidden_dim=8, proj_dim=4, cosine_momentum=False)
    assert flat.tau(70, 100) == pytest.approx(0.996)


def test_moco_momentum_update_and_queue() -> None:
    moco = MoCoV2(Conv1dNet(widths=(4,)), hidden_dim=8, proj_dim=4, queue_size=10, momentum=0.9)
    with torch.no_grad():
        for p in moco.backbone.parameters():
            p.add_(1.0)
    q = [p.detach().clone() for p in moco.backbone.parameters()]
    k = [p.detach().clone() for p in moco.backbone_momentum.parameters()]
    moco.on_after_step(1, 10)
    for pk, qk, kk in zip(moco.backbone_momentum.parameters(), q, k, strict=True):
        torch.testing.assert_close(pk, 0.9 * kk + 0.1 * qk)
    x = torch.randn(6, 40)
    moco.train()
    moco(x, x)
    assert int(moco.queue_ptr) == 6
    moco(x, x)
    assert int(moco.queue_ptr) == 2  # wrapped around a queue of 10
    keys = moco._key(x)
    torch.testing.assert_close(moco.queue[:2], keys[4:])
    moco.eval()
    moco(x, x)
    assert int(moco.queue_ptr) == 2  # eval mode never enqueues


# ----------------------------------------------------------------------------- methods train


def _loss_without_side_effects(method: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> float:
    saved = {k: v.clone() for k, v in method.state_dict().items()}
    with torch.no_grad():
        loss = float(method(x1, x2))
    method.load_state_dict(saved)
    return loss


@pytest.mark.parametrize("name", sorted(SMALL_HEADS))
def test_each_method_loss_decreases_on_a_fixed_batch(name: str, signals: torch.Tensor) -> None:
    torch.manual_seed(0)
    method = build_method(name, Conv1dNet(widths=(16, 32)), **SMALL_HEADS[name])
    g = torch.Generator().manual_seed(0)
    aug = MNIST1DAugment()
    x = signals[:48]
    x1, x2 = aug(x, g), aug(x, g)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    method.train()
    before = _loss_without_side_effects(method, x1, x2)
    # MoCo's queue would fill with keys of this very batch (its own positives); keep its
    # negatives fixed (the initial random unit vectors) so the objective stays the same.
    initial_queue = method.queue.clone() if isinstance(method, MoCoV2) else None
    steps = 30
    for step in range(1, steps + 1):
        loss = method(x1, x2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_after_step(step, steps)
        if initial_queue is not None:
            method.queue.copy_(initial_queue)
    after = _loss_without_side_effects(method, x1, x2)
    assert math.isfinite(before) and math.isfinite(after)
    assert after < before - 0.05 * abs(before), (name, before, after)


def test_method_registry_and_interface() -> None:
    for name in SMALL_HEADS:
        method = build_method(name, Conv1dNet(widths=(8,)), **SMALL_HEADS[name])
        assert isinstance(method.backbone, Conv1dNet)
        assert isinstance(method.projector, nn.Module)
        rebuilt = build_method(method.name, Conv1dNet(widths=(8,)), **method.hparams)
        assert rebuilt.state_dict().keys() == method.state_dict().keys()
        x = torch.randn(4, 40)
        assert method.embed(x).shape == (4, 8)
        assert method.embed(x, "projector").shape[0] == 4
    assert build_method("MoCo", Conv1dNet(widths=(8,))).name == "moco_v2"
    with pytest.raises(ValueError, match="Unknown SSL method"):
        build_method("dino", Conv1dNet())
    with pytest.raises(ValueError, match="Bad hyperparameters"):
        build_method("simclr", Conv1dNet(), temprature=0.1)


# ----------------------------------------------------------------------------- training loop


def _config(tmp: Path | None, method: str = "simclr", **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "method": method,
        "method_kwargs": SMALL_HEADS[method],
        "backbone_kwargs": SMALL_BACKBONE,
        "epochs": 4,
        "batch_size": 32,
        "lr": 3e-3,
        "warmup_epochs": 1,
        "seed": 7,
        "out_dir": None if tmp is None else str(tmp),
        "progress": False,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


class _Crash(RuntimeError):
    pass


def _crash_after(epoch: int):  # type: ignore[no-untyped-def]
    def cb(e: int, method: nn.Module, path: Path | None) -> None:
        if e == epoch:
            raise _Crash(f"simulated crash after epoch {e}")

    return cb


@pytest.mark.parametrize("method", sorted(SMALL_HEADS))
def test_resume_after_interruption_is_bit_identical(
    method: str, signals: torch.Tensor, tmp_path: Path
) -> None:
    full = train(_config(tmp_path / "full", method), signals)
    cfg = _config(tmp_path / "cut", method)
    with pytest.raises(_Crash):
        train(cfg, signals, callbacks=[_crash_after(2)])
    assert [e for e, _ in list_checkpoints(tmp_path / "cut")] == [0, 1, 2]
    seen: list[int] = []
    resumed = train(cfg, signals, callbacks=[lambda e, m, p: seen.append(e)])
    assert resumed.start_epoch == 2 and resumed.last_epoch == 4 and seen == [3, 4]
    full_sd, res_sd = full.method.state_dict(), resumed.method.state_dict()
    assert full_sd.keys() == res_sd.keys()
    for key, value in full_sd.items():
        assert torch.equal(value, res_sd[key]), key
    assert resumed.losses == full.losses and len(full.losses) == 4
    # The weights changed during training (the test above is not vacuous).
    init = load_file(str(checkpoint_path(tmp_path / "full", 0)))
    assert not torch.equal(
        init["backbone.features.0.weight"], full_sd["backbone.features.0.weight"]
    )


def test_checkpoints_load_weights_only(signals: torch.Tensor, tmp_path: Path) -> None:
    seen: list[tuple[int, Path | None]] = []
    result = train(
        _config(tmp_path, "moco_v2", epochs=2),
        signals,
        callbacks=[lambda e, m, p: seen.append((e, p))],
    )
    assert [e for e, _ in seen] == [0, 1, 2]
    assert [p.name for p in result.checkpoints] == [
        "epoch_0000.safetensors",
        "epoch_0001.safetensors",
        "epoch_0002.safetensors",
    ]
    assert seen[-1][1] == checkpoint_path(tmp_path, 2)
    # Only the newest state file is kept by default; it loads with weights_only=True.
    assert not state_path(tmp_path, 1).exists()
    state = torch.load(state_path(tmp_path, 2), weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 2 * (96 // 32)
    assert {"optimizer", "scheduler", "generator", "losses"} <= set(state)
    weights = load_file(str(checkpoint_path(tmp_path, 2)))
    live = result.method.state_dict()
    assert weights.keys() == live.keys() and "queue" in weights
    assert all(torch.equal(weights[k], live[k].cpu()) for k in live)
    meta = read_checkpoint_metadata(checkpoint_path(tmp_path, 2))
    assert meta["method"] == "moco_v2" and meta["epoch"] == 2
    assert meta["backbone_kwargs"] == {"widths": [8, 16, 16], "in_channels": 1}
    loaded = load_checkpoint(checkpoint_path(tmp_path, 2))
    assert not loaded.training
    x = signals[:8]
    torch.testing.assert_close(loaded.embed(x), result.method.eval().embed(x), rtol=0, atol=0)
    # Epoch 0 holds the seeded random initialisation.
    fresh = build_from_config(result.config, (40,))
    init = load_file(str(checkpoint_path(tmp_path, 0)))
    assert all(torch.equal(init[k], v) for k, v in fresh.state_dict().items())
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "moco_v2"


def test_pt_format_and_keep_all_states(signals: torch.Tensor, tmp_path: Path) -> None:
    result = train(
        _config(tmp_path, "byol", epochs=2, checkpoint_format="pt", keep_all_states=True),
        signals,
    )
    assert state_path(tmp_path, 1).exists() and state_path(tmp_path, 2).exists()
    blob = torch.load(checkpoint_path(tmp_path, 2, "pt"), weights_only=True)
    assert set(blob) == {"state_dict", "metadata"}
    loaded = load_checkpoint(checkpoint_path(tmp_path, 2, "pt"))
    for k, v in result.method.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_training_is_seeded(signals: torch.Tensor) -> None:
    a = train(_config(None, epochs=2), signals).method.state_dict()
    b = train(_config(None, epochs=2), signals).method.state_dict()
    c = train(_config(None, epochs=2, seed=8), signals).method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_stop_training_and_finished_run(signals: torch.Tensor, tmp_path: Path) -> None:
    def stop(e: int, method: nn.Module, path: Path | None) -> None:
        if e == 1:
            raise StopTraining

    cfg = _config(tmp_path, epochs=3)
    first = train(cfg, signals, callbacks=[stop])
    assert first.stopped_early and first.last_epoch == 1
    rest = train(cfg, signals)
    assert rest.start_epoch == 1 and rest.last_epoch == 3 and len(rest.losses) == 3
    again = train(cfg, signals)
    assert again.start_epoch == 3 and again.last_epoch == 3


def test_resume_refuses_a_different_config(signals: torch.Tensor, tmp_path: Path) -> None:
    train(_config(tmp_path, epochs=1), signals)
    with pytest.raises(ValueError, match="lr"):
        train(_config(tmp_path, epochs=1, lr=1e-2), signals)
    with pytest.raises(ValueError, match="resume=True"):
        train(_config(tmp_path, epochs=1, resume=False), signals)
    # Fields that do not change the trajectory may differ.
    assert train(_config(tmp_path, epochs=1, progress=True), signals).start_epoch == 1


def test_train_rejects_bad_input(signals: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        train(_config(None, batch_size=1000), signals)
    with pytest.raises(ValueError, match="floats"):
        train(_config(None), torch.ones(64, 40, dtype=torch.long))
    bad = signals.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train(_config(None), bad)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        TrainConfig(epochs=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=5, warmup_epochs=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON"):
        TrainConfig(method_kwargs={"temperature": object()})


def test_sgd_and_image_training(tmp_path: Path) -> None:
    images = torch.rand(32, 1, 8, 8)
    cfg = TrainConfig(
        method="simsiam",
        method_kwargs=SMALL_HEADS["simsiam"],
        backbone="small_conv2d",
        backbone_kwargs={"widths": [4, 8]},
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        lr=0.05,
        scheduler="constant",
        out_dir=str(tmp_path),
        progress=False,
    )
    result = train(cfg, images)
    assert len(result.losses) == 1 and math.isfinite(result.losses[0])
    assert isinstance(load_checkpoint(result.checkpoints[-1]).backbone, SmallConv2d)


# ----------------------------------------------------------------------------- scoring protocol


def test_recalibrated_init_checkpoint_is_not_collapsed(signals: torch.Tensor) -> None:
    """The scoring protocol of epoch 0 (sslwatch.offline.embed on backbone + projector) fixes BN."""
    method = build_from_config(_config(None), (40,))
    net = nn.Sequential(method.backbone, method.projector)
    raw = extract_embeddings(net, signals, layers="0", progress=False)["0"]
    recalibrate_batchnorm(net, signals, batches=3, batch_size=32)
    fixed = extract_embeddings(net, signals, layers="0", progress=False)["0"]
    # With recalibrated statistics the eval-mode activations are standardised per
    # channel before the ReLU; with the default ones (mean 0, var 1) they are not.
    with torch.no_grad():
        method.train()
        batch = method.backbone(signals)
    assert not torch.allclose(raw, fixed)
    assert float((fixed.mean(0) - batch.mean(0)).abs().max()) < 0.05


def test_mnist1d_tensors_match_the_generator() -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = 200, 3
    reference = make_dataset(args)  # the plain mnist1d call, as an oracle
    state = np.random.get_state()  # noqa: NPY002 - the legacy global RNG is the subject
    x_train, y_train, x_test, y_test = mnist1d_tensors(seed=3, num_samples=200)
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002
    assert x_train.shape == (160, 40) and x_test.shape == (40, 40)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    np.testing.assert_allclose(x_train.numpy(), reference["x"].astype(np.float32))
    np.testing.assert_allclose(x_test.numpy(), reference["x_test"].astype(np.float32))
    assert np.array_equal(y_train.numpy(), reference["y"])
    assert np.array_equal(y_test.numpy(), reference["y_test"])


def test_mnist1d_recipes_are_valid_configs() -> None:
    from sslwatch.train.recipes import MNIST1D_METHOD_KWARGS, mnist1d_config

    for name in MNIST1D_METHOD_KWARGS:
        cfg = mnist1d_config(name, epochs=1)
        assert cfg.method == name and cfg.warmup_epochs <= cfg.epochs
        method = build_from_config(cfg, (40,))
        assert method.backbone.out_dim == 128
    cfg = mnist1d_config("moco", epochs=5, lr=1e-3, method_kwargs={"queue_size": 64})
    assert cfg.lr == 1e-3 and cfg.method_kwargs["queue_size"] == 64
    assert cfg.method_kwargs["temperature"] == MNIST1D_METHOD_KWARGS["moco_v2"]["temperature"]


def test_mnist_recipes_are_valid_configs() -> None:
    from sslwatch.train.recipes import MNIST_METHOD_KWARGS, RECIPE_BOOKS, mnist_config

    assert RECIPE_BOOKS["mnist"] is mnist_config
    for name in MNIST_METHOD_KWARGS:
        cfg = mnist_config(name, epochs=1)
        assert cfg.method == name and cfg.backbone == "small_conv2d" and cfg.augment == "image"
        method = build_from_config(cfg, (1, 28, 28))
        assert method.backbone.out_dim == 128
        aug = build_augment(cfg.augment, (1, 28, 28), **cfg.augment_kwargs)
        assert isinstance(aug, ImageAugment)
        assert aug(torch.rand(4, 1, 28, 28), torch.Generator().manual_seed(0)).shape == (
            4,
            1,
            28,
            28,
        )
    # no flips: a mirrored digit is another glyph
    assert mnist_config("simclr").augment_kwargs["hflip"] is False
    mlp = mnist_config("simclr", backbone="mlp")
    assert build_from_config(mlp, (1, 28, 28)).backbone.in_features == 784
