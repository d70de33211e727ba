"""The reproduction study end to end at smoke size, and the recipes' plumbing."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from sslwatch.offline.store import ResultStore
from sslwatch.study.reproduce import (
    MNIST1D_RECIPES,
    MNIST_RECIPES,
    PRESETS,
    _config,
    digits_as_mnist,
    run_study,
    selection_run,
    swept_value,
)


@pytest.mark.parametrize(
    ("name", "recipes"), [("quick", MNIST1D_RECIPES), ("quick-mnist", MNIST_RECIPES)]
)
def test_recipes_sweep_their_own_value(tmp_path, name, recipes) -> None:  # type: ignore[no-untyped-def]
    preset = PRESETS[name]
    assert preset.recipes == recipes
    for recipe in recipes:
        own = swept_value(_config(preset, recipe, tmp_path, 0), recipe)
        assert any(math.isclose(v, own) for v in recipe.sweep_values)
        other = next(v for v in recipe.sweep_values if not math.isclose(v, own))
        variant = _config(preset, recipe.with_value(other), tmp_path, 0)
        assert swept_value(variant, recipe) == other
        assert variant.method == recipe.method and variant.epochs == preset.epochs
    assert selection_run(MNIST1D_RECIPES[0], 0.1) == "select/simclr/temperature=0.1"


@pytest.mark.slow
def test_smoke_study_produces_every_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    preset = replace(PRESETS["smoke"], max_samples=400, views_samples=32)
    seen: list[tuple[str, int]] = []
    result = run_study(
        preset,
        tmp_path,
        printer=lambda run, epoch, values: seen.append((run, epoch)),
        report=False,
    )
    methods = [r.method for r in preset.recipes]
    # every method's progress run scored at epoch 0 (random init) and epoch 1
    assert sorted(seen) == sorted(
        [(f"progress/{m}", e) for m in methods for e in (0, 1)]
        + [
            (selection_run(r, v), 1)
            for r in preset.recipes
            for v in r.sweep_values
            if not math.isclose(v, swept_value(_config(preset, r, tmp_path, 0), r))
        ]
    )
    for m in methods:
        rows = result.progress[f"progress/{m}"]
        assert [r["epoch"] for r in rows] == [0, 1]
        assert 0.0 <= rows[-1]["backbone/linear_probe"] <= 1.0
        assert "projector/rankme" in rows[-1] and "backbone/lidar" in rows[-1]
    names = {p.name for p in result.files}
    for m in methods:
        assert f"progress_{m}.csv" in names and f"progress_{m}.md" in names
    assert {"correlations.csv", "selection.csv", "selection.md", "selection_summary.md"} <= names
    assert {r["method"] for r in result.selection} == set(methods)
    for r in result.selection:
        assert r["regret"] >= 0 or math.isnan(r["regret"])

    # a second call resumes: nothing is retrained or rescored, nothing duplicated
    with ResultStore(result.db) as store:
        before = len(store.tidy_rows())
    seen.clear()
    run_study(
        preset, tmp_path, printer=lambda run, epoch, values: seen.append((run, epoch)), report=False
    )
    assert seen == []
    with ResultStore(result.db) as store:
        assert len(store.tidy_rows()) == before


@pytest.mark.slow
def test_reproduce_command_prints_epoch_rows_and_tables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from sslwatch.cli import app

    runner = CliRunner()
    out = tmp_path / "study"
    args = ["reproduce", "--preset", "smoke", "--methods", "simclr", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = result.output
    # one growing table per run: a header, then one row per scored epoch (0 and 1)
    assert "progress/simclr (backbone)" in text
    header = next(line for line in text.splitlines() if line.lstrip().startswith("epoch"))
    assert header.split() == ["epoch", "RankMe", "silhouette", "agreement", "entropy", "LP", "acc"]
    assert "Rank correlation with backbone LP accuracy" in text
    assert "Selection without labels" in text
    assert (out / "results.db").exists() and (out / "correlations.md").exists()
    # the judged claims are written, printed last, and head the report after the verdict
    claims = json.loads((out / "claims.json").read_text())
    assert claims and {"claim", "paper", "statistic", "value", "ci", "n", "verdict"} <= set(
        claims[0]
    )
    block = text[text.index("The papers' claims, judged") :]
    assert "done in" not in block and all(c["verdict"] in block for c in claims)
    page = (out / "report.html").read_text()
    assert page.index('id="verdict"') < page.index('id="claims-table"') < page.index('id="trust"')
    assert page.count("<tr><td>Xu et al.") + page.count("<tr><td>Garrido et al.") == len(claims)

    bad = runner.invoke(app, ["reproduce", "--preset", "nope", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown preset 'nope'" in bad.output


def test_quick_mnist_preset_configuration(tmp_path: Path) -> None:
    preset = PRESETS["quick-mnist"]
    assert preset.data == "mnist5k" and preset.transfer == "digits"
    assert [r.method for r in preset.recipes] == ["simclr", "moco_v2", "simsiam", "byol", "vicreg"]
    assert all(len(r.sweep_values) == 3 for r in preset.recipes)
    for recipe in preset.recipes:
        cfg = _config(preset, recipe, tmp_path, 0)
        assert cfg.backbone == "small_conv2d" and cfg.augment == "image"
        assert cfg.epochs == preset.epochs and cfg.augment_kwargs["hflip"] is False
    assert [(a.method, a.backbone, a.run) for a in preset.arch_runs] == [
        ("simclr", "mlp", "arch/mlp/simclr")
    ]
    assert "min" in preset.description


def test_digits_laid_out_like_mnist() -> None:
    """scikit-learn's digits, resized to MNIST's 20x20 box and centred in 28x28."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = digits_as_mnist()
    assert data.x.shape == (1797, 1, 28, 28) and data.x.dtype == torch.float32
    assert np.array_equal(data.y, digits.target)
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
    border = torch.ones(28, 28, dtype=torch.bool)
    border[4:24, 4:24] = False
    assert float(data.x[:, 0][:, border].abs().max()) == 0.0
    # bilinear resizing (half-pixel centres) keeps an image's mean brightness up to the
    # edge effects of its outermost pixels; compare with the plain numpy mean
    inner = data.x[:, 0, 4:24, 4:24].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(inner, digits.images.mean(axis=(1, 2)) / 16.0, atol=0.03)


def test_quick_mnist_runs_one_tiny_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image preset's code path at smoke size: SimCLR on the CNN and on the MLP,
    one epoch on 256 digits, LP also on 300 of scikit-learn's digits at the last epoch."""
    from sslwatch.study import reproduce

    monkeypatch.setitem(
        reproduce.TRANSFER_DATA, "digits", lambda: digits_as_mnist().subset(range(300))
    )
    preset = replace(
        PRESETS["quick-mnist"],
        epochs=1,
        batch_size=64,
        max_samples=256,
        views_samples=16,
        sample_size=None,
        selection=False,
        metrics=("rankme", "silhouette", "entropy"),
    )
    result = run_study(preset, tmp_path, methods=["simclr"], report=False)
    assert set(result.progress) == {"progress/simclr", "arch/mlp/simclr"}
    for run in result.progress:
        rows = result.progress[run]
        assert [r["epoch"] for r in rows] == [0, 1]
        assert 0.0 <= rows[-1]["backbone/linear_probe"] <= 1.0
    assert 0.0 <= result.progress["progress/simclr"][-1]["backbone@digits/linear_probe"] <= 1.0
    assert "backbone@digits/linear_probe" not in result.progress["arch/mlp/simclr"][-1]
    with ResultStore(result.db) as store:
        rows = store.tidy_rows(representation="backbone@digits")
        archs = {r["run"]: r["architecture"] for r in store.tidy_rows(metric="rankme")}
    assert [(r["run"], r["epoch"], r["n"], r["d"]) for r in rows] == [
        ("progress/simclr", 1, 300, 128)
    ]
    assert archs == {"progress/simclr": "small_conv2d", "arch/mlp/simclr": "mlp"}
    names = {p.name for p in result.files}
    assert {"progress_simclr.csv", "progress_simclr_mlp.csv", "claims.json"} <= names
    assert {r["method"] for r in result.correlations} == {"simclr", "simclr (mlp)"}
    pooled = [c for c in result.claims if c.statistic.startswith("mean over architectures")]
    assert [c.method for c in pooled] == ["simclr"] * 3
    assert all("mlp vs small_conv2d" in c.statistic for c in pooled)
    (transfer,) = [c for c in result.claims if "LP on digits" in c.statistic]
    assert transfer.n == 0  # one run per method: no correlation across runs


def test_selection_summary_against_hand_computed_regrets() -> None:
    from sslwatch.analysis.selection import RunSelection
    from sslwatch.core.definitions import MetricDefinition
    from sslwatch.study.reproduce import selection_summary

    def selection(ranking: tuple[tuple[str, float, float], ...]) -> RunSelection:
        definition = MetricDefinition("rankme", {}, n=10, d=4)
        return RunSelection(
            *("m", None, "backbone", "rankme", 1, "a", 3.0, "linear_probe", 0.6, "b", 0.8),
            regret=0.2,
            ranking=ranking,
            excluded=(),
            digest=definition.digest(),
            definition=definition,
        )

    # candidates' LP accuracies 0.8, 0.7, 0.6: a random pick loses 0.8 - 0.7 on average
    ranking = (("a", 3.0, 0.6), ("b", 2.0, 0.8), ("c", 1.0, 0.7))
    assert selection(ranking).random_regret == pytest.approx(0.1)
    assert math.isnan(selection((("a", 1.0, math.nan),)).random_regret)
    sel = [
        {"method": "m1", "metric": "rankme", "regret": 0.0, "random_regret": 0.1},
        {"method": "m2", "metric": "rankme", "regret": 0.3, "random_regret": 0.2},
        {"method": "m1", "metric": "silhouette", "regret": 0.2, "random_regret": 0.1},
        {"method": "m2", "metric": "silhouette", "regret": math.nan, "random_regret": 0.2},
    ]
    rows = {r["metric"]: r for r in selection_summary(sel)}
    assert rows["rankme"]["mean_regret"] == pytest.approx(0.15)
    assert rows["rankme"]["max_regret"] == pytest.approx(0.3)
    assert rows["rankme"]["picked_oracle"] == 1 and rows["rankme"]["beat_random"] == 1
    assert rows["silhouette"]["methods"] == 1 and rows["silhouette"]["beat_random"] == 0
    assert rows["(random pick)"]["mean_regret"] == pytest.approx(0.15)
    ordered = [r["metric"] for r in selection_summary(sel)]
    assert ordered.index("silhouette") > ordered.index("rankme")


@pytest.mark.slow
def test_full_preset_pipeline_runs_on_cpu_at_toy_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The CIFAR-10 / ResNet-18 preset's code path (npz uint8 RGB images, kornia
    augmentations, ResNet-18, LiDAR views) end to end on 64 real MNIST digits padded to
    3 x 32 x 32: plumbing only; the science of this preset needs a GPU."""
    import numpy as np

    from sslwatch.offline.data import load_dataset

    digits = load_dataset("mnist5k")
    pick = np.sort(np.random.default_rng(0).choice(len(digits), 64, replace=False))
    x = (digits.x[pick].numpy() * 255).astype(np.uint8)  # (64, 1, 28, 28)
    rgb = np.pad(np.repeat(x, 3, axis=1), ((0, 0), (0, 0), (2, 2), (2, 2)))
    np.savez(tmp_path / "cifar_like.npz", x=rgb, y=digits.y[pick])
    full = PRESETS["full"]
    preset = replace(
        full,
        data=f"npz:{tmp_path / 'cifar_like.npz'}",
        epochs=1,
        batch_size=32,
        device="cpu",
        sample_size=64,
        views_samples=8,
        selection=False,
        metrics=("rankme", "silhouette", "lidar"),
        recipes=(full.recipes[0],),
    )
    result = run_study(preset, tmp_path / "out", report=False)
    rows = result.progress["progress/simclr"]
    assert [r["epoch"] for r in rows] == [0, 1]
    last = rows[-1]
    assert 0.0 <= last["backbone/linear_probe"] <= 1.0
    assert 1.0 <= last["backbone/rankme"] <= 64.0 and -1.0 <= last["backbone/silhouette"] <= 1.0
    assert math.isfinite(last["backbone/lidar"]) and math.isfinite(last["projector/rankme"])
    assert "backbone/linear_probe" in rows[0] and "correlations.csv" in {
        p.name for p in result.files
    }


def test_the_study_skips_its_report_without_the_report_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """render_report raises ImportError without matplotlib or jinja2: no report, no crash."""
    from sslwatch.study import reproduce

    def missing(*args: object, **kwargs: object) -> None:
        raise ImportError("the HTML report needs matplotlib and jinja2")

    monkeypatch.setattr(reproduce, "write_report", missing)
    assert reproduce._write_report(tmp_path / "results.db", tmp_path, {}, []) == []
    assert not (tmp_path / "report.html").exists()
