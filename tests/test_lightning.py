"""SSLWatchCallback in real Lightning runs (CPU, a few steps): logging, robustness, alarms."""

from __future__ import annotations

import csv
import dataclasses
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from sslwatch.core.registry import REGISTRY  # noqa: E402
from sslwatch.metrics.spectrum import rankme  # noqa: E402
from sslwatch.online.alarms import CollapseAlarms, CollapseWarning  # noqa: E402
from sslwatch.online.lightning import (  # noqa: E402
    ENV_FLAG,
    SSLWatchCallback,
    callbacks_factory,
)
from sslwatch.online.monitor import Monitor, NonFiniteWarning  # noqa: E402
from sslwatch.online.settings import MonitorSettings  # noqa: E402

METRICS = ["rankme", "stable_rank", "silhouette", "collapse_std"]


class TinySimCLR(pl.LightningModule):
    """A 2-layer MLP backbone + linear projector trained with InfoNCE on noisy views."""

    def __init__(self, d_in: int = 16, d_feat: int = 12, d_proj: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d_in, 32), nn.ReLU(), nn.Linear(32, d_feat))
        self.projector = nn.Linear(d_feat, d_proj)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        (x,) = batch
        x1 = x + 0.1 * torch.randn_like(x)
        x2 = x + 0.1 * torch.randn_like(x)
        h1, h2 = self.backbone(x1), self.backbone(x2)
        z1 = nn.functional.normalize(self.projector(h1), dim=1)
        z2 = nn.functional.normalize(self.projector(h2), dim=1)
        logits = z1 @ z2.T / 0.5
        loss = nn.functional.cross_entropy(logits, torch.arange(len(x)))
        return {"loss": loss, "feats": h1, "z": z1, "views": torch.stack([z1, z2], dim=1)}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        (x,) = batch
        h = self.backbone(x)
        z1 = self.projector(h)
        z2 = self.projector(self.backbone(x + 0.1 * torch.randn_like(x)))
        return {"feats": h, "z": z1, "views": torch.stack([z1, z2], dim=1)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(n: int = 96, batch: int = 24, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=gen) @ torch.randn(16, 16, generator=gen)
    return DataLoader(TensorDataset(x), batch_size=batch, shuffle=False)


def trainer(tmp_path: Path, callback: SSLWatchCallback, **kwargs: Any) -> Any:
    opts: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "logger": [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")],
        "callbacks": [callback],
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "num_sanity_val_steps": 0,
    }
    opts.update(kwargs)
    return pl.Trainer(**opts)


def fit(tr: Any, model: pl.LightningModule, val: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*(LeafSpec|number of training batches).*")
        warnings.filterwarnings("ignore", message=".*have no `val_dataloader`.*")
        tr.fit(model, loader(), loader(48, seed=1) if val else None)


def read_csv_metrics(tmp_path: Path) -> list[dict[str, str]]:
    files = list((tmp_path / "csv").rglob("metrics.csv"))
    assert len(files) == 1
    with open(files[0], newline="") as fh:
        return list(csv.DictReader(fh))


def read_tensorboard(tmp_path: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    assert len(dirs) == 1
    acc = EventAccumulator(str(dirs.pop()))
    acc.Reload()
    return acc


@pytest.mark.filterwarnings("ignore:LiDAR. the ridge delta:UserWarning")  # tiny toy views
def test_fit_logs_metrics_to_csv_and_tensorboard(tmp_path: Path) -> None:
    callback = SSLWatchCallback(
        {"backbone": "feats", "projector": "z"},
        views_key={"projector": "views"},
        metrics=[*METRICS, "lidar"],
        every_n_steps=3,
        on_epoch_end=True,
        validation=True,
        reservoir_size=64,
    )
    tr = trainer(tmp_path, callback)
    fit(tr, TinySimCLR(), val=True)
    assert tr.global_step == 8

    rows = read_csv_metrics(tmp_path)
    columns = set(rows[0])
    for rep in ("backbone", "projector"):
        for metric in METRICS:
            assert f"sslwatch/{rep}/{metric}" in columns
            assert f"sslwatch/val/{rep}/{metric}" in columns
    assert "sslwatch/projector/lidar" in columns and "sslwatch/backbone/lidar" not in columns
    step_rows = [r for r in rows if r.get("sslwatch/backbone/rankme")]
    logged_steps = sorted({int(r["step"]) for r in step_rows})
    # every_n_steps=3 -> computed at global steps 3 and 6, written at Lightning's logging
    # step of those batches (2 and 5, where the batch's own self.log values go); the two
    # epoch-end logs land at steps 3 and 7
    assert logged_steps == [2, 3, 5, 7]
    values = [float(r["sslwatch/backbone/rankme"]) for r in step_rows]
    assert values and all(math.isfinite(v) and 1.0 <= v <= 12.0 for v in values)
    val_values = [
        float(r["sslwatch/val/projector/rankme"])
        for r in rows
        if r.get("sslwatch/val/projector/rankme")
    ]
    assert len(val_values) == 2 and all(math.isfinite(v) for v in val_values)  # one per epoch
    lidar = [
        float(r["sslwatch/val/projector/lidar"])
        for r in rows
        if r.get("sslwatch/val/projector/lidar")
    ]
    assert len(lidar) == 2 and all(math.isfinite(v) for v in lidar)

    acc = read_tensorboard(tmp_path)
    tags = set(acc.Tags()["scalars"])
    assert {
        "sslwatch/backbone/rankme",
        "sslwatch/projector/silhouette",
        "sslwatch/val/backbone/collapse_std",
    } <= tags
    events = acc.Scalars("sslwatch/projector/rankme")
    assert len(events) >= 3 and all(math.isfinite(e.value) for e in events)
    assert {e.step for e in events} == {2, 3, 5, 7}
    # the values logged are the monitor's results
    first = next(r for r in callback.results if r.name == "backbone" and r.step == 3)
    tb_first = next(e.value for e in acc.Scalars("sslwatch/backbone/rankme") if e.step == 2)
    assert tb_first == pytest.approx(first["rankme"], rel=1e-6)
    assert "sslwatch/backbone/rankme" in tr.callback_metrics


def test_nan_embeddings_and_a_failing_metric_do_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: Any, p: Any) -> float:
        raise RuntimeError("planted failure")

    spec = REGISTRY["silhouette"]
    monkeypatch.setitem(REGISTRY._specs, "silhouette", dataclasses.replace(spec, compute=boom))

    def poisoned(outputs: Any, batch: Any, module: Any) -> torch.Tensor:
        z = outputs["feats"].detach().clone()
        z[:3] = float("nan")
        return z

    callback = SSLWatchCallback(poisoned, name="backbone", metrics=METRICS, reservoir_size=64)
    tr = trainer(tmp_path, callback)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tr, TinySimCLR())
    assert tr.global_step == 8  # the run completed
    messages = [str(w.message) for w in caught]
    assert any(
        issubclass(w.category, NonFiniteWarning) and "3 of 24" in str(w.message) for w in caught
    )
    assert any("silhouette" in m and "planted failure" in m for m in messages)
    rows = [r for r in read_csv_metrics(tmp_path) if r.get("sslwatch/backbone/rankme")]
    assert len(rows) == 2  # one per epoch
    assert all(math.isnan(float(r["sslwatch/backbone/silhouette"])) for r in rows)
    assert all(math.isfinite(float(r["sslwatch/backbone/rankme"])) for r in rows)
    assert all(float(r["sslwatch/backbone/nonfinite_rows"]) == 12.0 for r in rows)


def test_missing_key_warns_once_and_training_continues(tmp_path: Path) -> None:
    callback = SSLWatchCallback("embeddings", metrics=["rankme"])
    tr = trainer(tmp_path, callback, max_epochs=1, logger=False)
    with pytest.warns(RuntimeWarning, match="no embeddings key 'embeddings'") as record:
        fit(tr, TinySimCLR())
    assert tr.global_step == 4
    assert sum("no embeddings key" in str(w.message) for w in record) == 1


def test_collapse_alarm_stops_the_run(tmp_path: Path) -> None:
    def collapsing(outputs: Any, batch: Any, module: Any) -> torch.Tensor:
        z = outputs["feats"].detach()
        if module.global_step >= 4:  # the representation collapses to one point
            return torch.ones_like(z) + 1e-6 * torch.randn_like(z)
        return z

    callback = SSLWatchCallback(
        collapsing,
        name="backbone",
        metrics=["rankme", "collapse_std"],
        every_n_steps=2,
        alarms=CollapseAlarms(stop_on_collapse=True),
    )
    tr = trainer(tmp_path, callback, max_epochs=10, logger=False)
    with pytest.warns(CollapseWarning, match="backbone.*at step 6"):
        fit(tr, TinySimCLR())
    assert tr.should_stop and tr.global_step < 40
    assert tr.global_step in (6, 7)


def test_overhead_budget_feeds_a_measured_stride_and_logs_it(tmp_path: Path) -> None:
    callback = SSLWatchCallback("feats", metrics=["rankme"], overhead_budget=1e-6)
    assert callback.budget is not None
    callback.budget.warmup, callback.budget.every, callback.budget.max_stride = 2, 2, 2
    fit(trainer(tmp_path, callback, max_epochs=2), TinySimCLR())
    # 4 batches per epoch; a budget of 1e-6 of a step is never met, so after the 2
    # warm-up batches the stride goes to its cap (2): batches 0, 1, 2 then 4, 6 are fed
    assert callback.budget.stride > 1
    assert callback.budget.step_seconds and callback.budget.update_seconds
    first, second = callback.results[0], callback.results[1]
    assert (first.n_rows, second.n_rows) == (3 * 24, 2 * 24)
    rows = read_csv_metrics(tmp_path)
    logged = [float(r["sslwatch/update_stride"]) for r in rows if r.get("sslwatch/update_stride")]
    assert logged and logged[-1] == callback.budget.stride
    with pytest.raises(ValueError, match="not both"):
        SSLWatchCallback(update_every_n_batches=2, overhead_budget=0.02)


def test_callbacks_factory_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_FLAG, raising=False)
    assert callbacks_factory() == []
    monkeypatch.setenv(ENV_FLAG, "0")
    assert callbacks_factory() == []
    monkeypatch.setenv(ENV_FLAG, "1")
    monkeypatch.setenv("SSLWATCH_KEY", "backbone=feats, projector=z")
    monkeypatch.setenv("SSLWATCH_EVERY_N_STEPS", "50")
    monkeypatch.setenv("SSLWATCH_METRICS", "rankme,collapse_std")
    (cb,) = callbacks_factory()
    assert isinstance(cb, SSLWatchCallback)
    assert cb.key == {"backbone": "feats", "projector": "z"} and cb.every_n_steps == 50
    assert set(cb.monitors["train"]) == {"backbone", "projector"}
    assert cb.monitors["train"]["backbone"].metrics == ["rankme", "collapse_std"]
    monkeypatch.setenv("SSLWATCH_EVERY_N_STEPS", "often")
    with pytest.raises(ValueError, match="SSLWATCH_EVERY_N_STEPS"):
        callbacks_factory()


def test_lightning_loads_the_factory_through_its_entry_point_loader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lightning's own loader, given our entry point (as pyproject registers it)."""
    from importlib.metadata import EntryPoint

    import lightning.fabric.utilities.registry as registry

    group = "lightning.pytorch.callbacks_factory"
    ours = EntryPoint("sslwatch", "sslwatch.online.lightning:callbacks_factory", group)
    monkeypatch.setattr(registry, "entry_points", lambda group=None: [ours])
    monkeypatch.delenv(ENV_FLAG, raising=False)
    assert not any(isinstance(c, SSLWatchCallback) for c in pl.Trainer(logger=False).callbacks)
    monkeypatch.setenv(ENV_FLAG, "1")
    assert any(isinstance(c, SSLWatchCallback) for c in pl.Trainer(logger=False).callbacks)


def test_installed_entry_point_attaches_only_when_opted_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib.metadata import entry_points

    names = [ep.name for ep in entry_points(group="lightning.pytorch.callbacks_factory")]
    if "sslwatch" not in names:
        pytest.skip("the sslwatch entry point is not installed (reinstall: pip install -e .)")
    monkeypatch.delenv(ENV_FLAG, raising=False)
    assert not any(isinstance(c, SSLWatchCallback) for c in pl.Trainer(logger=False).callbacks)
    monkeypatch.setenv(ENV_FLAG, "1")
    assert any(isinstance(c, SSLWatchCallback) for c in pl.Trainer(logger=False).callbacks)


def test_bad_callback_arguments() -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        SSLWatchCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="key mapping is empty"):
        SSLWatchCallback({})
    with pytest.raises(ValueError, match="needs labels"):
        SSLWatchCallback(metrics=["linear_probe"])
    with pytest.raises(ValueError, match="gram_dtype"):
        SSLWatchCallback(gram_dtype="float16")  # type: ignore[arg-type]


def test_callback_checks_the_monitor_settings_once_and_passes_them_on() -> None:
    callback = SSLWatchCallback(
        {"backbone": "feats", "projector": "z"},
        views_key={"projector": "views"},
        metrics=["rankme", "lidar"],
        reservoir_size=64,
        seed=5,
    )
    expected = MonitorSettings(metrics=("rankme", "lidar"), reservoir_size=64, seed=5)
    assert callback.settings == expected
    assert callback.monitors["train"]["projector"].settings is callback.settings
    # a representation without views drops the view metrics, nothing else
    assert callback.monitors["train"]["backbone"].settings == dataclasses.replace(
        expected, metrics=("rankme",)
    )


def test_import_sslwatch_does_not_import_lightning() -> None:
    code = (
        "import sys, sslwatch, sslwatch.online, sslwatch.online.monitor, sslwatch.online.sinks;"
        "bad = [m for m in ('lightning', 'pytorch_lightning') if m in sys.modules];"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_logged_names_drive_modelcheckpoint_and_earlystopping(tmp_path: Path) -> None:
    """every_n_steps=3 on 4-batch epochs: each epoch still ends with a compute of its
    tail, so ModelCheckpoint and EarlyStopping (both at epoch end, strict about a missing
    monitor) read a fresh sslwatch value every epoch."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    callback = SSLWatchCallback("feats", name="backbone", metrics=["rankme"], every_n_steps=3)
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="sslwatch/backbone/rankme", mode="max", save_top_k=1
    )
    stop = EarlyStopping(monitor="sslwatch/backbone/rankme", mode="max", patience=10)
    tr = trainer(
        tmp_path, callback, max_epochs=3, logger=False, enable_checkpointing=True,
        callbacks=[callback, ckpt, stop],
    )  # fmt: skip
    fit(tr, TinySimCLR())
    assert tr.global_step == 12 and not tr.should_stop
    # steps 3, 6, 9, 12 by step; epoch tails at 4 and 8 (12 was just logged by step)
    assert [r.step for r in callback.results if r.name == "backbone"] == [3, 4, 6, 8, 9, 12]
    assert ckpt.best_model_score is not None and math.isfinite(float(ckpt.best_model_score))
    best = max(r["rankme"] for r in callback.results if r.step in (4, 8, 12))
    assert float(ckpt.best_model_score) == pytest.approx(best, rel=1e-6)
    assert Path(ckpt.best_model_path).is_file()
    assert float(stop.best_score) == pytest.approx(best, rel=1e-6)


# -- layers through forward hooks ------------------------------------------------------------


class TinyConvSSL(pl.LightningModule):
    """A 1-D CNN backbone (two conv blocks, global pooling) and a linear projector, trained
    on two noisy views: the backbone runs twice per step."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv1d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(6, 10, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.projector = nn.Linear(10, 8)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        (x,) = batch
        x = x.unsqueeze(1)
        h1 = self.backbone(x + 0.1 * torch.randn_like(x))
        h2 = self.backbone(x + 0.1 * torch.randn_like(x))
        z1 = nn.functional.normalize(self.projector(h1), dim=1)
        z2 = nn.functional.normalize(self.projector(h2), dim=1)
        loss = nn.functional.cross_entropy(z1 @ z2.T / 0.5, torch.arange(len(x)))
        return {"loss": loss, "z": z1}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        (x,) = batch
        return {"z": self.projector(self.backbone(x.unsqueeze(1)))}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def all_hooks(module: nn.Module) -> dict[str, dict[int, Any]]:
    return {name: dict(m._forward_hooks) for name, m in module.named_modules()}


def test_layers_are_fed_through_forward_hooks_and_removed_after(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyConvSSL()
    # the oracle: the layers' raw training outputs, recorded by plain hooks of our own
    raw: dict[str, list[torch.Tensor]] = {"backbone": [], "block": []}
    for name, module in (("backbone", model.backbone), ("block", model.backbone[3])):
        module.register_forward_hook(
            lambda m, a, o, name=name: raw[name].append(o.detach().clone()) if m.training else None
        )
    before = all_hooks(model)
    metrics = ["rankme", "stable_rank", "collapse_std"]
    callback = SSLWatchCallback(
        {"projector": "z"},
        layers={"backbone": "backbone", "block": "backbone.3"},
        metrics=metrics,
        reservoir_size=64,
        alarms=None,
    )
    fit(trainer(tmp_path, callback, max_epochs=2, logger=False), model)
    assert all_hooks(model) == before  # the callback's hooks are gone, the user's stay
    results = {(r.name, r.epoch): r for r in callback.results}
    assert set(results) == {(n, e) for n in ("projector", "backbone", "block") for e in (0, 1)}
    # two views per step, 4 batches of 24 per epoch: 8 calls of each layer per epoch
    assert len(raw["backbone"]) == len(raw["block"]) == 16
    for epoch in (0, 1):
        calls = slice(8 * epoch, 8 * (epoch + 1))
        hand = {
            "backbone": Monitor(metrics, name="backbone", alarms=None, reservoir_size=64),
            "block": Monitor(metrics, name="block", alarms=None, reservoir_size=64),
        }
        for out in raw["backbone"][calls]:
            hand["backbone"].update(out)
        for out in raw["block"][calls]:  # (N, 10, 16) conv maps: the mean over length
            assert out.shape == (24, 10, 16)
            hand["block"].update(out.mean(dim=2))
        for name, monitor in hand.items():
            expected, got = monitor.compute(), results[(name, epoch)]
            assert got.n_rows == expected.n_rows == 2 * 96
            for metric in metrics:
                assert got[metric] == pytest.approx(expected[metric], rel=1e-9, abs=1e-12)
    assert results[("projector", 0)].n_rows == 96  # the output key: one view per step


def test_layers_in_validation_and_bad_layer_arguments(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyConvSSL()
    callback = SSLWatchCallback(
        layers=["backbone"], metrics=["rankme"], validation=True, alarms=None
    )
    assert callback.key is None  # layers only: no output key is looked up
    tr = trainer(tmp_path, callback, max_epochs=1, logger=False)
    fit(tr, model, val=True)
    names = sorted({r.name for r in callback.results})
    assert names == ["backbone", "val/backbone"]
    val = next(r for r in callback.results if r.name == "val/backbone")
    assert val.n_rows == 48  # one eval pass over the 48 validation rows
    expected = rankme(model.backbone(loader(48, seed=1).dataset.tensors[0].unsqueeze(1)))
    assert val["rankme"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"no submodule 'backbone\.9'.*close names"):
        fit(trainer(tmp_path, SSLWatchCallback(layers={"b": "backbone.9"})), TinyConvSSL())
    with pytest.raises(ValueError, match=r"\['z'\] name both a layer and an output key"):
        SSLWatchCallback({"z": "z"}, layers={"z": "projector"})
    with pytest.raises(ValueError, match="layers must be a"):
        SSLWatchCallback(layers="backbone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool must be one of"):
        SSLWatchCallback(layers=["backbone"], pool="mean")  # type: ignore[arg-type]


# -- Lightning reads what the callback logs -------------------------------------------------


@pytest.mark.parametrize("ours_first", [True, False])
def test_modelcheckpoint_keeps_the_best_logged_layer_value(
    tmp_path: Path, ours_first: bool
) -> None:
    """ModelCheckpoint and EarlyStopping decide at train epoch end, after every other
    callback (Lightning runs monitoring callbacks last): the place of the callback in the
    list does not matter."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    torch.manual_seed(0)
    name = "sslwatch/backbone/rankme"
    callback = SSLWatchCallback(layers={"backbone": "backbone"}, metrics=["rankme"], alarms=None)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=name, mode="max", save_top_k=-1)
    stop = EarlyStopping(monitor=name, mode="max", patience=10)
    order = [callback, ckpt, stop] if ours_first else [ckpt, stop, callback]
    tr = trainer(
        tmp_path, callback, max_epochs=3, enable_checkpointing=True, callbacks=order,
        logger=CSVLogger(tmp_path, name="csv"),
    )  # fmt: skip
    fit(tr, TinyConvSSL())
    logged = {int(r["epoch"]): float(r[name]) for r in read_csv_metrics(tmp_path) if r.get(name)}
    assert sorted(logged) == [0, 1, 2]
    computed = {r.epoch: r["rankme"] for r in callback.results}
    for epoch, value in logged.items():
        assert value == pytest.approx(computed[epoch], rel=1e-6)
    # one checkpoint per epoch, each scored with that epoch's value
    saved = {
        int(torch.load(p, weights_only=False)["epoch"]): float(s)
        for p, s in ckpt.best_k_models.items()
    }
    assert saved == pytest.approx(logged, rel=1e-6)
    best_epoch = max(logged, key=logged.__getitem__)
    assert float(ckpt.best_model_score) == pytest.approx(logged[best_epoch], rel=1e-6)
    assert torch.load(ckpt.best_model_path, weights_only=False)["epoch"] == best_epoch
    assert float(stop.best_score) == pytest.approx(logged[best_epoch], rel=1e-6)


def test_earlystopping_on_a_logged_metric_stops_training(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    torch.manual_seed(0)
    callback = SSLWatchCallback(layers={"backbone": "backbone"}, metrics=["rankme"], alarms=None)
    # no value can improve by 1e6: epoch 0 sets the best, epoch 1 exhausts the patience
    stop = EarlyStopping(monitor="sslwatch/backbone/rankme", mode="max", min_delta=1e6, patience=1)
    tr = trainer(tmp_path, callback, max_epochs=10, logger=False, callbacks=[stop, callback])
    fit(tr, TinyConvSSL())
    assert tr.should_stop and stop.stopped_epoch == 1
    assert tr.global_step == 8 and tr.current_epoch == 2
    assert float(stop.best_score) == pytest.approx(callback.results[0]["rankme"], rel=1e-6)


def test_epoch_end_computes_the_tail_when_every_n_steps_does_not_divide(tmp_path: Path) -> None:
    def run(every: int, path: Path) -> SSLWatchCallback:
        callback = SSLWatchCallback(
            "feats", name="backbone", metrics=["rankme"], every_n_steps=every
        )
        tr = trainer(path, callback, max_epochs=2, logger=CSVLogger(path, name="csv"))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(workers|LeafSpec|training batches)")
            tr.fit(TinySimCLR(), loader(7 * 8, batch=8))  # 7 batches per epoch
        return callback

    cb = run(3, tmp_path / "three")
    # by step: 3, 6 | 9, 12; each epoch end (7, 14) computes the batches since the last log
    assert [r.step for r in cb.results] == [3, 6, 7, 9, 12, 14]
    assert [r.n_rows for r in cb.results] == [24, 24, 8, 16, 24, 16]
    assert [r.epoch for r in cb.results] == [0, 0, 0, 1, 1, 1]
    rows = read_csv_metrics(tmp_path / "three")
    epoch_rows = [r for r in rows if r.get("sslwatch/backbone/rankme") and r["step"] in ("6", "13")]
    assert {int(r["epoch"]) for r in epoch_rows} == {0, 1}  # each epoch end logged a value
    # a dividing N: the step log at the epoch's last step is not repeated
    assert [r.step for r in run(7, tmp_path / "seven").results] == [7, 14]


@pytest.mark.parametrize("when", ["every_2nd_epoch", "twice_per_epoch"])
def test_decisions_at_validation_end_read_a_fresh_value(tmp_path: Path, when: str) -> None:
    """ModelCheckpoint saves (and EarlyStopping checks) at the end of validation when
    validation does not run once per epoch; validation runs before the epoch's end, so
    the callback computes the training window as each validation run starts."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    torch.manual_seed(0)
    name = "sslwatch/backbone/rankme"
    callback = SSLWatchCallback(layers={"backbone": "backbone"}, metrics=["rankme"], alarms=None)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=name, mode="max", save_top_k=-1)
    stop = EarlyStopping(monitor=name, mode="max", patience=10)
    schedule = (
        {"check_val_every_n_epoch": 2} if when == "every_2nd_epoch" else {"val_check_interval": 0.5}
    )
    tr = trainer(
        tmp_path, callback, max_epochs=2 if when == "twice_per_epoch" else 4, logger=False,
        enable_checkpointing=True, callbacks=[stop, ckpt, callback], **schedule,
    )  # fmt: skip
    fit(tr, TinyConvSSL(), val=True)
    assert not ckpt._should_save_on_train_epoch_end(tr)  # decisions at validation end
    computed = {r.step: r["rankme"] for r in callback.results}
    val_steps = [8, 16] if when == "every_2nd_epoch" else [2, 4, 6, 8]
    assert all(step in computed for step in val_steps)
    saved = {
        int(torch.load(p, weights_only=False)["global_step"]): float(s)
        for p, s in ckpt.best_k_models.items()
    }
    assert sorted(saved) == val_steps
    for step, score in saved.items():  # each checkpoint scored with its own step's value
        assert score == pytest.approx(computed[step], rel=1e-6)
    assert float(stop.best_score) == pytest.approx(max(saved.values()), rel=1e-6)


# -- labels -----------------------------------------------------------------------------------


class LabelledSimCLR(TinySimCLR):
    """TinySimCLR on (x, y) batches; returns the labels as an output too."""

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {**super().training_step((x,), batch_idx), "y": y}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {**super().validation_step((x,), batch_idx), "y": y}


def labelled_loader(n: int = 96, batch: int = 24, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 16, generator=gen) + 2.0 * nn.functional.one_hot(y, 16).float()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


@pytest.mark.parametrize("how", ["output key", "function of the batch"])
def test_labels_reach_the_monitors(tmp_path: Path, how: str) -> None:
    torch.manual_seed(0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def feats(outputs: Any, batch: Any, module: Any) -> torch.Tensor:
        seen.append((outputs["feats"].detach().clone(), batch[1].clone()))
        return outputs["feats"]

    labels_key: Any = "y" if how == "output key" else (lambda out, batch, module: batch[1])
    opts: dict[str, Any] = {"reservoir_size": 64, "alarms": None}
    callback = SSLWatchCallback(feats, name="backbone", labels_key=labels_key, **opts)
    tr = trainer(tmp_path, callback, max_epochs=1, logger=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(workers|LeafSpec|training batches)")
        tr.fit(LabelledSimCLR(), labelled_loader())
    (result,) = callback.results
    plain, hand = Monitor(name="backbone", **opts), Monitor(name="backbone", **opts)
    for z, y in seen:
        plain.update(z)
        hand.update(z, labels=y)
    without, expected = plain.compute(), hand.compute()
    assert set(expected) - set(without), "labels add the label-based references"
    assert set(result) == set(expected)
    for metric in expected:
        assert result[metric] == pytest.approx(expected[metric], rel=1e-9, nan_ok=True)


def test_labels_with_layers_and_a_row_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    model = LabelledSimCLR()
    model.backbone.register_forward_hook(
        lambda m, a, o: seen.append(o.detach().clone()) if m.training else None
    )
    opts: dict[str, Any] = {"reservoir_size": 64, "alarms": None}

    def doubled(outputs: Any, batch: Any, module: Any) -> dict[str, torch.Tensor]:
        return {"doubled": torch.cat([outputs["z"], outputs["z"]])}

    callback = SSLWatchCallback(doubled, layers={"backbone": "backbone"}, labels_key="y", **opts)
    tr = trainer(tmp_path, callback, max_epochs=1, logger=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit(model, labelled_loader())
    mismatch = [str(w.message) for w in caught if "rows for" in str(w.message)]
    assert len(mismatch) == 1 and "'doubled' has 48 rows for 24 labels" in mismatch[0]
    assert tr.global_step == 4  # the run went on
    ys = [y for _, y in labelled_loader()]
    hand = Monitor(name="backbone", **opts)
    for i, out in enumerate(seen):  # two views per batch, the batch's labels on the first
        hand.update(out, labels=ys[i // 2] if i % 2 == 0 else None)
    expected = hand.compute()
    got = next(r for r in callback.results if r.name == "backbone")
    assert got.n_rows == 2 * 96
    assert set(got) == set(expected)
    for metric in expected:
        assert got[metric] == pytest.approx(expected[metric], rel=1e-9, nan_ok=True)
    unlabelled = next(r for r in callback.results if r.name == "doubled")
    assert set(got) - set(unlabelled)  # fed without labels: no label-based references


def test_labels_go_with_one_view_so_siblings_never_inflate_knn(tmp_path: Path) -> None:
    """Uninformative labels, two near-identical views: fed with both views, each held-out
    view would find its sibling in the kNN bank (accuracy far above chance)."""
    torch.manual_seed(0)
    n, classes = 240, 6

    class TwoNearViews(LabelledSimCLR):
        def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
            x, y = batch
            z1 = self.backbone(x)
            z2 = self.backbone(x + 1e-3 * torch.randn_like(x))
            return {"loss": (z1 - z2).pow(2).mean() + 0 * z1.sum(), "y": y}

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)  # independent of x
    loader = DataLoader(TensorDataset(x, y), batch_size=40, shuffle=False)
    callback = SSLWatchCallback(
        None, layers={"backbone": "backbone"}, labels_key="y", metrics=["knn_accuracy"],
        reservoir_size=512, alarms=None,
    )  # fmt: skip
    tr = trainer(tmp_path, callback, max_epochs=1, logger=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(workers|LeafSpec|training batches)")
        tr.fit(TwoNearViews(), loader)
    (result,) = [r for r in callback.results if r.name == "backbone"]
    assert result.n_rows == 2 * n
    assert result["knn_accuracy"] < 0.45  # chance is 1/6; a sibling match gives ~1


def test_labels_the_monitor_refuses_are_dropped_with_one_warning(tmp_path: Path) -> None:
    torch.manual_seed(0)
    callback = SSLWatchCallback(
        None, layers={"backbone": "backbone"}, reservoir_size=64, alarms=None,
        labels_key=lambda out, batch, module: batch[1] - 1,  # -1: "unlabelled", as STL-10
    )  # fmt: skip
    tr = trainer(tmp_path, callback, max_epochs=1, logger=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit(LabelledSimCLR(), labelled_loader())
    refused = [str(w.message) for w in caught if "fed without labels" in str(w.message)]
    assert len(refused) == 1 and "non-negative" in refused[0]
    assert tr.global_step == 4  # training went on
    (result,) = [r for r in callback.results if r.name == "backbone"]
    assert result.n_rows == 2 * 96 and "knn_accuracy" not in set(result)
