"""Tests for sslwatch.offline.checkpoints: safe loading, unwrapping, key matching, names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sslwatch.offline.checkpoints import (
    CheckpointError,
    import_factory,
    load_model,
    load_state_dict,
    parse_checkpoint_path,
)


def make_backbone() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


class SSLModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = make_backbone()
        self.projector = nn.Linear(3, 2)


class RunConfig:
    """A custom class: pickling it into a checkpoint requires trusted loading."""

    def __init__(self, width: int) -> None:
        self.width = width


def _trained_sd(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = make_backbone()
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].num_batches_tracked.fill_(7)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_safetensors_and_pt_state_dicts(tmp_path: Path) -> None:
    sd = _trained_sd()
    st, pt = tmp_path / "w.safetensors", tmp_path / "w.pt"
    save_file(sd, str(st))
    torch.save(sd, pt)
    _assert_same(load_state_dict(st), sd)
    _assert_same(load_state_dict(pt), sd)
    for path in (st, pt):
        model = load_model(make_backbone, path)
        _assert_same(model.state_dict(), sd)
        assert not model.training


@pytest.mark.parametrize(
    "wrapper", ["state_dict", "model", "model_state_dict", "module", "network"]
)
def test_wrapped_dicts(tmp_path: Path, wrapper: str) -> None:
    sd = _trained_sd()
    opt = torch.optim.SGD(make_backbone().parameters(), lr=0.1, momentum=0.9)
    path = tmp_path / "c.pth"
    torch.save({wrapper: sd, "epoch": 4, "optimizer": opt.state_dict(), "note": "x"}, path)
    _assert_same(load_state_dict(path), sd)


def test_ddp_and_compile_prefixes(tmp_path: Path) -> None:
    sd = _trained_sd()
    path = tmp_path / "ddp.pt"
    torch.save({"model": {"module._orig_mod." + k: v for k, v in sd.items()}}, path)
    _assert_same(load_state_dict(path), sd)
    _assert_same(load_model(make_backbone, path).state_dict(), sd)


def test_lightning_style_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    full = SSLModel()
    inner = full.state_dict()
    ckpt = {
        "epoch": 9,
        "global_step": 90,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {"model." + k: v for k, v in inner.items()}
        | {"criterion.temperature": torch.tensor(0.5)},
        "hyper_parameters": {"lr": 0.1, "arch": "mlp"},
        "optimizer_states": [],
    }
    path = tmp_path / "epoch=9-step=90.ckpt"
    torch.save(ckpt, path)
    raw = load_state_dict(path)
    assert "model.backbone.0.weight" in raw and "criterion.temperature" in raw
    # the whole SSL model: strip "model."
    _assert_same(load_model(SSLModel, path).state_dict(), inner)
    # only the backbone: strip "model.backbone."
    backbone = load_model(make_backbone, path).state_dict()
    _assert_same(backbone, {k[len("backbone.") :]: v for k, v in inner.items() if "backbone" in k})
    # explicit state_key as a prefix of the flat dict
    again = load_model(make_backbone, path, state_key="state_dict.model.backbone").state_dict()
    _assert_same(again, backbone)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_real_lightning_checkpoint(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.backbone = make_backbone()
            self.head = nn.Linear(3, 1)

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            return self.head(self.backbone(batch[0])).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])

    data = torch.utils.data.TensorDataset(torch.randn(8, 4))
    trainer = lightning.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=str(tmp_path),
    )
    module = Module()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    path = tmp_path / "run" / "checkpoints" / "epoch=0-step=2.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    model = load_model(make_backbone, path)
    _assert_same(model.state_dict(), module.backbone.state_dict())
    assert parse_checkpoint_path(path) == ("run", 0, 2)


def test_nested_state_key_and_ambiguity(tmp_path: Path) -> None:
    student, teacher = _trained_sd(1), _trained_sd(2)
    path = tmp_path / "dino.pt"
    torch.save({"student": student, "teacher": teacher, "ema": {"model": teacher}}, path)
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_state_dict(path)
    _assert_same(load_state_dict(path, state_key="ema.model"), teacher)
    _assert_same(load_model(make_backbone, path, state_key="student").state_dict(), student)
    flat = tmp_path / "flat.pt"
    torch.save(
        {"student." + k: v for k, v in student.items()}
        | {"teacher." + k: v for k, v in teacher.items()},
        flat,
    )
    with pytest.raises(CheckpointError, match=r"ambiguous.*student.*teacher") as info:
        load_model(make_backbone, flat)
    assert str(flat) in str(info.value)
    _assert_same(load_model(make_backbone, flat, state_key="teacher").state_dict(), teacher)
    with pytest.raises(CheckpointError, match="state_key 'pupil' not found"):
        load_state_dict(flat, state_key="pupil")


def test_pickle_checkpoint_needs_opt_in(tmp_path: Path) -> None:
    sd = _trained_sd()
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": sd, "config": RunConfig(5)}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    msg = str(info.value)
    assert "--trust-checkpoints" in msg and "trust_checkpoints=True" in msg
    assert str(path) in msg and "RunConfig" in msg and "\n" not in msg
    _assert_same(load_state_dict(path, trust_checkpoints=True), sd)
    # a whole pickled module as well
    whole = tmp_path / "whole.pt"
    model = make_backbone()
    torch.save(model, whole)
    with pytest.raises(CheckpointError, match="--trust-checkpoints"):
        load_model(make_backbone, whole)
    loaded = load_model(make_backbone, whole, trust_checkpoints=True)
    _assert_same(loaded.state_dict(), model.state_dict())


def test_corrupt_files(tmp_path: Path) -> None:
    sd = _trained_sd()
    good_pt, good_st = tmp_path / "good.pt", tmp_path / "good.safetensors"
    torch.save(sd, good_pt)
    save_file(sd, str(good_st))
    cases = {
        "trunc.pt": good_pt.read_bytes()[:200],
        "trunc.safetensors": good_st.read_bytes()[:-10],
        "noise.pt": os.urandom(512),
        "empty.ckpt": b"",
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        for trust in (False, True):
            with pytest.raises(CheckpointError) as info:
                load_state_dict(path, trust_checkpoints=trust)
            assert str(path) in str(info.value), name
            assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_state_dict(tmp_path / "missing.pt")


def test_missing_unexpected_and_shape_mismatch(tmp_path: Path) -> None:
    sd = _trained_sd()
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("3.")}, path)
    with pytest.raises(CheckpointError, match=r"missing.*3\.weight") as info:
        load_model(make_backbone, path)
    assert str(path) in str(info.value)
    with pytest.warns(UserWarning, match=r"3\.weight"):
        model = load_model(make_backbone, path, strict=False)
    assert torch.equal(model.state_dict()["0.weight"], sd["0.weight"])

    extra = tmp_path / "extra.pt"
    torch.save(sd | {"head.weight": torch.zeros(2)}, extra)
    with pytest.raises(CheckpointError, match=r"unexpected.*head\.weight"):
        load_model(make_backbone, extra)

    wide = tmp_path / "wide.pt"
    torch.save(
        nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).state_dict(),
        wide,
    )
    with pytest.raises(CheckpointError, match=r"wrong shape.*0\.weight.*\(6, 4\).*\(5, 4\)"):
        load_model(make_backbone, wide)


def test_import_factory_forms(tmp_path: Path) -> None:
    assert import_factory("collections:OrderedDict")() == {}
    assert import_factory("os.path:join")("a", "b") == os.path.join("a", "b")
    with pytest.raises(ValueError, match="module 'no_such_module_xyz' not found"):
        import_factory("no_such_module_xyz:make")
    with pytest.raises(ValueError, match=r"no attribute 'nope'.*dumps"):
        import_factory("json:nope")
    with pytest.raises(ValueError, match="module:function"):
        import_factory("json.dumps")

    (tmp_path / "helpers_for_net.py").write_text("WIDTH = 7\n")
    src = tmp_path / "mynet.py"
    src.write_text(
        "from torch import nn\nfrom helpers_for_net import WIDTH\n\n"
        "def make():\n    return nn.Linear(2, WIDTH)\n"
    )
    factory = import_factory(f"{src}:make")
    assert factory().out_features == 7
    torch.manual_seed(0)
    ref = nn.Linear(2, 7)
    ckpt = tmp_path / "lin.safetensors"
    save_file(ref.state_dict(), str(ckpt))
    _assert_same(load_model(f"{src}:make", ckpt).state_dict(), ref.state_dict())
    with pytest.raises(FileNotFoundError, match=r"absent\.py"):
        import_factory(f"{tmp_path / 'absent.py'}:make")


def test_parse_checkpoint_path_default() -> None:
    assert parse_checkpoint_path("runs/lr0.1/checkpoints/epoch=3-step=120.ckpt") == (
        "lr0.1",
        3,
        120,
    )
    assert parse_checkpoint_path("sweep/run_a/epoch_07.pt") == ("run_a", 7, None)
    assert parse_checkpoint_path("sweep/run_b/last.ckpt") == ("run_b", None, None)
    assert parse_checkpoint_path("sweep/run_c/global_step-500.pt") == ("run_c", None, 500)
    assert parse_checkpoint_path("sweep/run_d/model_ep10.pth") == ("run_d", 10, None)
    assert parse_checkpoint_path(Path("x/simclr/Epoch-2_Step-40.pt")) == ("simclr", 2, 40)


def test_parse_checkpoint_path_pattern() -> None:
    pat = r"(?P<run>lr[\d.]+)_s(?P<step>\d+)\.pt$"
    assert parse_checkpoint_path("out/epoch5/lr0.01_s2000.pt", pat) == ("lr0.01", None, 2000)
    # groups the pattern lacks fall back to the default rule
    assert parse_checkpoint_path("out/r1/ckpt_epoch=4.pt", r"ckpt_epoch=(?P<epoch>\d+)") == (
        "r1",
        4,
        None,
    )
    with pytest.raises(ValueError, match="does not match"):
        parse_checkpoint_path("out/other.pt", pat)
    with pytest.raises(ValueError, match="named groups"):
        parse_checkpoint_path("out/other.pt", r"(\d+)")
    with pytest.raises(ValueError, match="invalid"):
        parse_checkpoint_path("out/other.pt", r"(?P<run>")
