"""Forward hooks on named layers: pooling rules, values, removal, errors."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from sslwatch.online.hooks import LayerHooks, LayerWatch, Pooling, poolings, watch
from sslwatch.online.monitor import Monitor

METRICS = ["rankme", "stable_rank", "collapse_std", "silhouette"]


class SmallCNN(nn.Module):
    """conv -> relu -> pool blocks (no batch norm: a second pass gives the same values)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        )
        self.head = nn.Linear(16 * 4 * 4, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(2, 6, 3, padding=1), nn.ReLU())
        self.mlp = nn.Linear(5, 4)  # acts on the last axis: (N, 6, 5) -> (N, 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.block(x))


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a, _ = self.attn(h, h, h)
        return self.out(a)


class DictOut(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"feats": 2 * x, "logits": x[:, :2]}


def images(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def captured(model: nn.Module, path: str, x: torch.Tensor, **pooling: Any) -> torch.Tensor:
    """What the hook hands on for one forward pass of ``model`` (train mode)."""
    got: list[torch.Tensor] = []
    hooks = LayerHooks(model, {"l": path}, poolings(["l"], **pooling), lambda n, r: got.append(r))
    model(x)
    hooks.remove()
    (rows,) = got
    return rows


# -- pooling rules against torch by hand ----------------------------------------------------


def test_conv_maps_pool_by_spatial_mean_max_or_flatten() -> None:
    torch.manual_seed(0)
    model, x = SmallCNN(), images(6)
    fmap = model.features[0](x)  # (6, 8, 8, 8)
    avg = captured(model, "features.0", x)
    assert avg.shape == (6, 8)
    torch.testing.assert_close(avg, fmap.mean(dim=(2, 3)))
    mx = captured(model, "features.0", x, pool="max")
    torch.testing.assert_close(mx, fmap.reshape(6, 8, -1).max(dim=-1).values)
    flat = captured(model, "features.0", x, pool="flatten")
    torch.testing.assert_close(flat, fmap.reshape(6, -1))
    # (N, D) passes through untouched
    torch.testing.assert_close(captured(model, "head", x), model(x))


def test_sequence_first_transformers_pool_over_tokens_not_the_batch() -> None:
    """PyTorch's transformer layers default to (T, N, D): pooling must keep N rows."""
    torch.manual_seed(0)
    t, n, d = 7, 4, 16
    x = torch.randn(t, n, d)
    for batch_first, seq in ((False, x), (True, x.transpose(0, 1))):
        net = nn.Sequential(
            nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=batch_first),
            nn.Linear(d, d),  # says nothing of the batch order: the layer before decides
        ).eval()
        out = net(seq)
        by_tokens = out.mean(dim=0) if not batch_first else out.mean(dim=1)
        first = out[0] if not batch_first else out[:, 0]
        for path in ("0", "1"):
            want = by_tokens if path == "1" else net[0](seq).mean(dim=0 if not batch_first else 1)
            torch.testing.assert_close(captured(net.train(), path, seq), want)
        torch.testing.assert_close(captured(net, "1", seq, tokens="cls"), first)
    # said outright, whatever the modules say
    mlp = nn.Sequential(nn.Linear(d, d))
    torch.testing.assert_close(captured(mlp, "0", x, layout="sequence_first"), mlp(x).mean(dim=0))
    assert "(T, N, D)" in poolings(["l"], layout="sequence_first")["l"].describe(3)


def test_5d_maps_average_every_spatial_dim() -> None:
    conv = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1))
    x = torch.randn(3, 1, 4, 5, 6)
    torch.testing.assert_close(captured(conv, "0", x), conv(x).mean(dim=(2, 3, 4)))


def test_3d_outputs_follow_the_module_or_the_layout_given() -> None:
    torch.manual_seed(0)
    net, x = Conv1dNet(), torch.randn(5, 2, 5)
    fmap = net.block(x)  # (5, 6, 5): a 1-D conv map, channels first
    torch.testing.assert_close(captured(net, "block", x), fmap.mean(dim=2))
    # the Linear's (N, 6, 4) output is read as 6 tokens of width 4
    out = net(x)
    torch.testing.assert_close(captured(net, "mlp", x), out.mean(dim=1))
    torch.testing.assert_close(captured(net, "mlp", x, tokens="cls"), out[:, 0])
    torch.testing.assert_close(captured(net, "mlp", x, layout="channels_first"), out.mean(dim=2))
    torch.testing.assert_close(captured(net, "block", x, layout="tokens"), fmap.mean(dim=1))
    # a module of no known kind (the ReLU) is read by the layers registered before it
    torch.testing.assert_close(captured(net, "block.1", x), fmap.mean(dim=2))
    mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.0))
    t = torch.randn(3, 7, 4)
    torch.testing.assert_close(captured(mlp, "2", t), mlp(t).mean(dim=1))
    # nothing decides: a 3-D output is an error naming the two readings
    with pytest.raises(ValueError, match=r"shape \(3, 7, 4\).*layout='channels_first'.*'tokens'"):
        captured(nn.Sequential(nn.Identity()), "0", t)
    torch.testing.assert_close(
        captured(nn.Sequential(nn.Identity()), "0", t, layout="tokens"), t.mean(dim=1)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nothing to compute here; only the rules
        lw = watch(net, {"conv": "block", "tok": "mlp"}, metrics=["rankme"])
    net(x)
    lw.remove()
    assert "(N, C, L) -> mean over the spatial dims" in lw.pooling["conv"]
    assert "(N, T, D) -> mean over tokens" in lw.pooling["tok"]


def test_per_layer_settings_and_their_errors() -> None:
    torch.manual_seed(0)
    model, x = SmallCNN(), images(4)
    got: dict[str, torch.Tensor] = {}
    pool = poolings(["a", "b"], pool={"a": "max", "b": "avg"})
    hooks = LayerHooks(model, {"a": "features.0", "b": "features.1"}, pool, got.__setitem__)
    model(x)
    hooks.remove()
    f0 = model.features[0](x)
    torch.testing.assert_close(got["a"], f0.amax(dim=(2, 3)))
    torch.testing.assert_close(got["b"], model.features[1](f0).mean(dim=(2, 3)))
    with pytest.raises(ValueError, match=r"pool names layers that are not watched: \['c'\]"):
        poolings(["a", "b"], pool={"a": "max", "c": "avg"})
    with pytest.raises(ValueError, match=r"gives no value for the layers \['b'\]"):
        poolings(["a", "b"], layout={"a": "tokens"})
    with pytest.raises(ValueError, match="pool must be one of 'avg', 'max', 'flatten'"):
        Pooling(pool="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokens must be one of"):
        Pooling(tokens="first")  # type: ignore[arg-type]


# -- values: the same as a Monitor fed the pooled tensors by hand ---------------------------


def test_values_equal_a_monitor_fed_by_hand() -> None:
    torch.manual_seed(0)
    model = SmallCNN().train()
    batches = [images(40, seed=s) for s in range(3)]
    opts: dict[str, Any] = {"metrics": METRICS, "reservoir_size": 64, "alarms": None}
    with watch(model, {"block1": "features.0", "head": "head"}, **opts) as lw:
        for x in batches:
            model(x)
        results = lw.compute(step=7, epoch=1)
    assert not lw.attached
    by_hand = {"block1": Monitor(name="block1", **opts), "head": Monitor(name="head", **opts)}
    with torch.no_grad():
        for x in batches:
            by_hand["block1"].update(model.features[0](x).mean(dim=(2, 3)))
            by_hand["head"].update(model(x))
    for name, monitor in by_hand.items():
        expected = monitor.compute()
        got = results[name]
        assert got.name == name and (got.step, got.epoch) == (7, 1)
        assert got.n_rows == expected.n_rows == 120
        assert set(got) == set(METRICS)
        for metric in METRICS:
            assert math.isfinite(expected[metric])
            assert got[metric] == pytest.approx(expected[metric], rel=1e-9, abs=1e-12)
    # the two layers are distinct representations (8 vs 12 dimensions)
    assert lw.monitors["block1"].dim == 8 and lw.monitors["head"].dim == 12
    # reset starts a new window
    lw.reset()
    assert all(m.n_updates == 0 for m in lw.monitors.values())


@pytest.mark.filterwarnings("ignore:sslwatch monitor 'head'. no finite embeddings")
def test_when_selects_train_or_eval_passes() -> None:
    torch.manual_seed(0)
    model, x = SmallCNN(), images(30)
    opts: dict[str, Any] = {"metrics": ["rankme"], "alarms": None}
    train_w = watch(model, ["head"], when="train", **opts)
    eval_w = watch(model, ["head"], when="eval", **opts)
    both_w = watch(model, ["head"], when="always", **opts)
    model.train()
    model(x)
    model.eval()
    with torch.no_grad():
        model(x[:16])
    for lw in (train_w, eval_w, both_w):
        lw.remove()
    assert train_w.monitors["head"].compute().n_rows == 30
    assert eval_w.monitors["head"].compute().n_rows == 16
    assert both_w.monitors["head"].compute().n_rows == 46
    quiet = watch(model, ["head"], **opts)  # when="train", model still in eval mode
    with torch.no_grad():
        model(x)
    quiet.remove()
    with pytest.warns(RuntimeWarning, match=r"'head'.*recorded no output.*model\.train\(\)"):
        result = quiet.compute()
    assert math.isnan(result["head"]["rankme"])
    with pytest.raises(ValueError, match="when must be"):
        watch(model, ["head"], when="training")  # type: ignore[arg-type]


def test_hooks_keep_no_graph_and_do_not_change_outputs() -> None:
    torch.manual_seed(0)
    model, x = SmallCNN(), images(8)
    before = model(x)
    seen: list[torch.Tensor] = []
    hooks = LayerHooks(
        model, {"a": "features.1", "b": "head"}, poolings(["a", "b"]), lambda n, r: seen.append(r)
    )
    out = model(x)
    assert torch.equal(out, before) and out.requires_grad
    assert len(seen) == 2
    assert all(not r.requires_grad and r.grad_fn is None for r in seen)
    out.sum().backward()  # training's own graph is untouched
    assert model.head.weight.grad is not None
    hooks.remove()


# -- removal --------------------------------------------------------------------------------


def test_remove_restores_the_model() -> None:
    torch.manual_seed(0)
    model, x = SmallCNN(), images(8)
    users: list[int] = []
    model.features[0].register_forward_hook(lambda m, a, o: users.append(1))  # the user's own
    hooks_before = {n: dict(m._forward_hooks) for n, m in model.named_modules()}
    before = model(x)
    lw = watch(model, {"b0": "features.0", "b1": "features.1", "all": ""}, metrics=["rankme"])
    assert len(model.features[0]._forward_hooks) == 2 and len(model._forward_hooks) == 1
    lw.remove()
    lw.remove()  # idempotent
    assert {n: dict(m._forward_hooks) for n, m in model.named_modules()} == hooks_before
    assert model._forward_hooks == {}
    after = model(x)
    assert torch.equal(after, before)
    assert users == [1, 1]  # the user's own hook ran on both passes, and stays
    with watch(model, ["head"], metrics=["rankme"]):
        assert len(model.head._forward_hooks) == 1
    assert {n: dict(m._forward_hooks) for n, m in model.named_modules()} == hooks_before


# -- errors ---------------------------------------------------------------------------------


def test_a_bad_path_names_the_close_ones() -> None:
    model = SmallCNN()
    with pytest.raises(
        ValueError, match=r"no submodule 'features\.3'.*close names: 'features"
    ) as e:
        watch(model, {"b": "features.3"})
    assert "'features.0'" in str(e.value) or "'features.1'" in str(e.value)
    with pytest.raises(ValueError, match=r"no submodule 'encoder'.*its submodules: 'features'"):
        watch(model, {"b": "encoder"})
    assert all(not m._forward_hooks for m in model.modules())  # nothing left behind
    with pytest.raises(ValueError, match="layers is empty"):
        watch(model, {})
    with pytest.raises(ValueError, match=r"got the string 'head'.*\['head'\]"):
        watch(model, "head")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must be a torch\.nn\.Module"):
        watch(object(), ["head"])  # type: ignore[arg-type]


def test_tuple_and_dict_outputs_ask_for_select() -> None:
    torch.manual_seed(0)
    net, x = Tokens(), torch.randn(4, 5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own notes on the attention fast path
        lw = watch(net, {"attn": "attn"}, metrics=["rankme"])
        with pytest.raises(ValueError, match=r"'attn' returned a tuple of 2.*select=lambda out"):
            net(x)
        lw.remove()
        picked = captured(net, "attn", x, select=lambda out: out[0])
        h = net.embed(x)
        a, _ = net.attn(h, h, h)
    torch.testing.assert_close(picked, a.mean(dim=1))
    d = DictOut()
    dict_error = r"a dict with keys \['feats', 'logits'\].*out\['feats'\]"
    with watch(d, {"o": ""}, metrics=["rankme"]), pytest.raises(ValueError, match=dict_error):
        d(torch.randn(3, 4))
    xs = torch.randn(3, 4)
    torch.testing.assert_close(captured(d, "", xs, select=lambda o: o["feats"]), 2 * xs)
    with pytest.raises(ValueError, match="select= returned dict"):
        captured(d, "", xs, select=lambda o: o)
    scalar = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    with pytest.raises(ValueError, match=r"returned shape \(3,\): no feature dimension"):
        captured(scalar, "1", xs)


def test_layerwatch_repr_and_type() -> None:
    model = SmallCNN()
    lw = watch(model, {"h": "head"}, metrics=["rankme"])
    assert isinstance(lw, LayerWatch) and "attached" in repr(lw)
    lw.remove()
    assert "removed" in repr(lw)


def test_monitor_watch_and_the_package_export_are_the_same_entry() -> None:
    import sslwatch

    torch.manual_seed(0)
    model = SmallCNN().train()
    x = images(40, seed=1)
    opts: dict[str, Any] = {"metrics": METRICS, "reservoir_size": 64, "alarms": None}
    values = []
    for entry in (Monitor.watch, sslwatch.watch):
        with entry(model, {"head": "head"}, **opts) as lw:
            model(x)
            values.append(dict(lw.compute()["head"]))
        assert isinstance(lw, sslwatch.LayerWatch) and not lw.attached
    with torch.no_grad():
        by_hand = Monitor(name="head", **opts)
        by_hand.update(model(x))
        expected = dict(by_hand.compute())
    for got in values:
        assert got.keys() == expected.keys()
        for metric, value in expected.items():
            assert got[metric] == pytest.approx(value, rel=1e-9, abs=1e-12)
