"""Tests for sslwatch.offline.embed: hooks, eval mode, batching, views, BatchNorm recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sslwatch.offline.data import Dataset
from sslwatch.offline.embed import extract_embeddings, recalibrate_batchnorm


class TinyNet(nn.Module):
    """A small 1-D CNN backbone with a projector, BatchNorm and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv1d(1, 4, kernel_size=5, stride=2),
            nn.BatchNorm1d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.5),
        )
        self.projector = nn.Sequential(nn.Linear(4 * 30, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


@pytest.fixture()
def x_small(digits: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(digits[0][:200]).float().reshape(200, 1, 64) / 16.0


@pytest.fixture()
def net() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    # give BatchNorm non-default statistics so that eval vs train mode matters
    with torch.no_grad():
        model.backbone[1].running_mean.uniform_(-0.5, 0.5)
        model.backbone[1].running_var.uniform_(0.5, 2.0)
    return model


def test_hooks_equal_manual_eval_forward(net: TinyNet, x_small: torch.Tensor) -> None:
    net.train()
    out = extract_embeddings(
        net,
        x_small,
        layers={"backbone": "backbone", "projector": "projector"},
        device="cpu",
        batch_size=64,
    )
    net.eval()
    with torch.no_grad():
        b = net.backbone(x_small)
        p = net.projector(b)
    assert set(out) == {"backbone", "projector"}
    assert out["backbone"].shape == (200, 120) and out["backbone"].dtype == torch.float32
    torch.testing.assert_close(out["backbone"], b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["projector"], p, rtol=1e-5, atol=1e-6)
    # hooks were removed
    assert not net.backbone._forward_hooks and not net.projector._forward_hooks


def test_eval_mode_used_and_restored(net: TinyNet, x_small: torch.Tensor) -> None:
    net.train()
    net.projector[1].eval()  # mixed flags must come back exactly
    flags = {name: m.training for name, m in net.named_modules()}
    with torch.no_grad():
        t1, t2 = net(x_small), net(x_small)
    assert not torch.allclose(t1, t2)  # train mode: dropout makes the output random
    a = extract_embeddings(net, x_small, device="cpu")["output"]
    b = extract_embeddings(net, x_small, device="cpu")["output"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert {name: m.training for name, m in net.named_modules()} == flags
    net.eval()
    with torch.no_grad():
        ref = net(x_small)
    torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-6)


def test_batch_size_invariance(net: TinyNet, x_small: torch.Tensor) -> None:
    layers = ["backbone", "projector.0"]
    small = extract_embeddings(net, x_small, layers=layers, batch_size=7, device="cpu")
    big = extract_embeddings(net, x_small, layers=layers, batch_size=256, device="cpu")
    for key in layers:
        torch.testing.assert_close(small[key], big[key], rtol=1e-5, atol=1e-6)


def test_accepts_numpy_tensor_datasets_and_loaders(net: TinyNet, x_small: torch.Tensor) -> None:
    y = torch.zeros(200, dtype=torch.long)
    ref = extract_embeddings(net, x_small, device="cpu")["output"]
    inputs = {
        "numpy float64": x_small.double().numpy(),
        "sslwatch Dataset": Dataset("d", x_small, np.zeros(200, dtype=np.int64)),
        "torch Dataset": TensorDataset(x_small, y),
        "DataLoader": DataLoader(TensorDataset(x_small, y), batch_size=33, shuffle=False),
        "dict batches": DataLoader([{"x": x_small[i], "y": 0} for i in range(200)], batch_size=50),
    }
    for what, data in inputs.items():
        got = extract_embeddings(net, data, device="cpu", batch_size=40)["output"]
        assert got.shape == (200, 3), what
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6, msg=what)
    with pytest.raises(ValueError, match="unsupported data"):
        extract_embeddings(net, [1, 2, 3], device="cpu")


def test_views_shape_and_seeded_reproducibility(net: TinyNet, x_small: torch.Tensor) -> None:
    def augment(x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.randn_like(x)

    state = torch.get_rng_state()
    kw = {"layers": ["backbone"], "device": "cpu", "views": 3, "augment": augment, "batch_size": 64}
    a = extract_embeddings(net, x_small, seed=1, **kw)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), state)  # caller's RNG untouched
    b = extract_embeddings(net, x_small, seed=1, **kw)  # type: ignore[arg-type]
    c = extract_embeddings(net, x_small, seed=2, **kw)  # type: ignore[arg-type]
    assert a["backbone/views"].shape == (200, 3, 120)
    assert a["backbone"].shape == (200, 120)
    torch.testing.assert_close(a["backbone/views"], b["backbone/views"], rtol=0, atol=0)
    assert not torch.allclose(a["backbone/views"], c["backbone/views"])
    # the views differ from each other and from the clean embedding
    v = a["backbone/views"]
    assert not torch.allclose(v[:, 0], v[:, 1])
    torch.testing.assert_close(a["backbone"], c["backbone"])


def test_identity_views_equal_clean_embeddings(net: TinyNet, x_small: torch.Tensor) -> None:
    out = extract_embeddings(net, x_small, device="cpu", views=2, augment=lambda x: x.clone())
    assert set(out) == {"output", "output/views"}
    for q in range(2):
        torch.testing.assert_close(out["output/views"][:, q], out["output"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="augment"):
        extract_embeddings(net, x_small, device="cpu", views=2)


def test_integer_arguments_are_checked(net: TinyNet, x_small: torch.Tensor) -> None:
    for kwargs, message in (
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"views": -1}, "views must be an integer >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            extract_embeddings(net, x_small, device="cpu", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batches must be an integer >= 1"):
        recalibrate_batchnorm(net, x_small, batches=0)
    modes = [m.training for m in net.modules()]
    with pytest.raises(ValueError, match="no submodule"):
        extract_embeddings(net, x_small, device="cpu", layers={"z": "nope"})
    assert [m.training for m in net.modules()] == modes


def test_results_are_usable_with_autograd(net: TinyNet, x_small: torch.Tensor) -> None:
    emb = extract_embeddings(net, x_small, device="cpu")["output"]
    assert not emb.is_inference() and not emb.requires_grad
    probe = nn.Linear(3, 2)
    probe(emb).sum().backward()
    assert probe.weight.grad is not None


def test_autocast_cpu_bf16_close_and_float32(net: TinyNet, x_small: torch.Tensor) -> None:
    ref = extract_embeddings(net, x_small, device="cpu")["output"]
    amp = extract_embeddings(net, x_small, device="cpu", autocast=True)["output"]
    assert amp.dtype == torch.float32
    rel = float((amp - ref).norm() / ref.norm())
    assert rel < 0.05


def test_callables_and_bound_methods(net: TinyNet, x_small: torch.Tensor) -> None:
    net.eval()
    with torch.no_grad():
        ref = net.backbone(x_small)
    got = extract_embeddings(lambda x: (net.backbone(x), "extra"), x_small, device="cpu")
    torch.testing.assert_close(got["output"], ref, rtol=1e-5, atol=1e-6)
    net.train()
    bound = extract_embeddings(net.forward, x_small, layers="backbone", device="cpu")
    torch.testing.assert_close(bound["backbone"], ref, rtol=1e-5, atol=1e-6)
    assert net.training
    with pytest.raises(ValueError, match=r"no submodule 'encoder'.*backbone"):
        extract_embeddings(net, x_small, layers="encoder", device="cpu")


def test_hooks_removed_and_mode_restored_on_error(net: TinyNet, x_small: torch.Tensor) -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.inner(x)
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_embeddings(model, x_small, layers={"b": "inner.backbone"}, device="cpu")
    assert not net.backbone._forward_hooks
    assert all(m.training for m in model.modules())


def test_progress_bar_explicit(
    net: TinyNet, x_small: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    extract_embeddings(net, x_small, device="cpu", batch_size=50, progress=True)
    assert "embedding" in capsys.readouterr().err
    extract_embeddings(net, x_small, device="cpu", batch_size=50, progress=False)
    assert capsys.readouterr().err == ""


class LinBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.5)
        self.bn2 = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.drop(self.bn(self.lin(x))))


def _bn_input(model: LinBN, x: np.ndarray) -> np.ndarray:
    w = model.lin.weight.detach().double().numpy()
    b = model.lin.bias.detach().double().numpy()
    return x @ w.T + b


def test_recalibrate_single_batch_matches_data_statistics(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    torch.manual_seed(0)
    model = LinBN().train()
    x = digits[0][:128]
    recalibrate_batchnorm(model, x, batches=1, batch_size=256)
    h = _bn_input(model, x)
    np.testing.assert_allclose(model.bn.running_mean.numpy(), h.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.bn.running_var.numpy(), h.var(0, ddof=1), rtol=1e-4)
    assert model.bn.momentum == 0.1 and model.bn2.momentum == 0.1
    assert all(m.training for m in model.modules())
    # dropout was off during recalibration: bn2 saw bn's deterministic eval-mode output
    h2 = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)  # train-mode BN: biased batch var
    h2 = h2 * model.bn.weight.detach().double().numpy() + model.bn.bias.detach().double().numpy()
    np.testing.assert_allclose(model.bn2.running_var.numpy(), h2.var(0, ddof=1), rtol=1e-3)


def test_recalibrate_cumulative_average_over_loader_batches(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    torch.manual_seed(1)
    model = LinBN().eval()
    x = torch.from_numpy(digits[0][:100]).float()
    loader = DataLoader(TensorDataset(x), batch_size=16, shuffle=False)
    recalibrate_batchnorm(model, loader, batches=3)
    h = _bn_input(model, x.double().numpy())[:48].reshape(3, 16, 6)
    np.testing.assert_allclose(model.bn.running_mean.numpy(), h.mean(1).mean(0), rtol=1e-4)
    np.testing.assert_allclose(model.bn.running_var.numpy(), h.var(1, ddof=1).mean(0), rtol=1e-4)
    assert int(model.bn.num_batches_tracked) == 3
    assert not any(m.training for m in model.modules())


def test_recalibrate_without_batchnorm_is_noop() -> None:
    model = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_batchnorm(model, torch.randn(10, 3)) is model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
