"""The reproduction study behind ``sslwatch demo`` and ``sslwatch reproduce``.

Two studies, both stored in one results database and written as CSV and Markdown:

* **Progress study** (Xu, Lowe, Trappenberg 2024, arXiv 2409.06612): train each SSL
  method, score every epoch checkpoint (backbone and projector separately) with every
  label-free metric and the label-based references (linear probe, kNN, AMI of k-means vs
  labels), then correlate each label-free metric with the backbone linear-probe accuracy
  (Spearman and Kendall; over all trained epochs and over the later half of training).
  A preset's ``arch_runs`` train a method on a second backbone too (runs
  ``arch/<backbone>/<method>``, scored every epoch) for Xu et al.'s cross-architecture
  claim.
* **Selection study** (Garrido et al. 2023, RankMe): a sweep of one hyperparameter per
  method at the same epoch budget; select a run per method by each label-free metric
  and by the linear-probe oracle; report the selected run's accuracy and the regret.
  A preset's ``transfer`` data set (a related one at hand offline, e.g. scikit-learn's
  digits for MNIST) is linear-probed too at the last epoch, stored as the representation
  ``backbone@<name>``, for Garrido et al.'s transfer claim.

Scoring protocol (recorded in every definition through the run metadata): embeddings in
eval mode on all samples of the data set; the random initialisation (epoch 0) is scored
after re-estimating BatchNorm statistics on the training inputs (its running statistics
are still the initial ones, which eval mode would otherwise use); label-based
references use a seeded stratified 80/20 split (see :func:`sslwatch.evaluate`); views for
LiDAR, alignment, uniformity and cross-view clustering agreement are two augmentations of
the first ``views_samples`` inputs. Epoch 0 is stored and shown but kept out of the
correlations and the selection (RankMe of random features is high).
"""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from sslwatch.analysis import correlations, select_runs
from sslwatch.core.evaluate import Evaluation, evaluate
from sslwatch.core.registry import REGISTRY
from sslwatch.metrics.spectrum import singular_values
from sslwatch.offline.data import Dataset, load_dataset
from sslwatch.offline.embed import VIEWS_SUFFIX, extract_embeddings, recalibrate_batchnorm
from sslwatch.offline.store import ResultStore
from sslwatch.report import SpectrumKey, write_report
from sslwatch.study.claims import (
    VARIANTS_NOTE,
    VERDICT_RULE,
    Claim,
    claim_rows,
    claims_from_rows,
    transfer_representation,
    write_claims,
)
from sslwatch.train import SSLMethod, TrainConfig, build_augment, list_checkpoints, train
from sslwatch.train.loop import load_checkpoint
from sslwatch.train.recipes import RECIPE_BOOKS

REPRESENTATIONS = ("backbone", "projector")
REFERENCE = "linear_probe"
LABEL_METRICS = ("linear_probe", "knn_accuracy", "label_ami")
PROBE_L2 = 1e-3
"""Fixed L2 strength of the study's linear probe (on standardised features).

Fixed rather than searched on a held-out split, so each checkpoint's probe is one fit;
the value is recorded in every probe definition."""


@dataclass(frozen=True)
class MethodRecipe:
    """One SSL method, the hyperparameter its selection sweep varies, and its values.

    ``overrides`` are :class:`~sslwatch.train.TrainConfig` fields set on top of the
    preset's base configuration (``method_kwargs`` are merged). ``sweep_param`` is
    ``"lr"``, ``"weight_decay"`` or ``"method_kwargs.NAME"``; the progress run uses the
    configuration's own value, which must be one of ``sweep_values``.
    """

    method: str
    sweep_param: str
    sweep_values: tuple[float, ...]
    overrides: dict[str, Any] = field(default_factory=dict)

    def with_value(self, value: float) -> MethodRecipe:
        """The recipe with ``sweep_param`` set to ``value``."""
        overrides = copy.deepcopy(self.overrides)
        if self.sweep_param.startswith("method_kwargs."):
            overrides.setdefault("method_kwargs", {})[self.sweep_name] = value
        else:
            overrides[self.sweep_param] = value
        return replace(self, overrides=overrides)

    @property
    def sweep_name(self) -> str:
        """The swept hyperparameter's short name (``temperature``, ``lr``, ...)."""
        return self.sweep_param.removeprefix("method_kwargs.")


def swept_value(config: TrainConfig, recipe: MethodRecipe) -> float:
    """The value of ``recipe.sweep_param`` in a resolved configuration."""
    if recipe.sweep_param.startswith("method_kwargs."):
        return float(config.method_kwargs[recipe.sweep_name])
    return float(getattr(config, recipe.sweep_param))


@dataclass(frozen=True)
class ArchRun:
    """A progress run of ``method`` (its preset recipe) on a second backbone, named
    ``arch/<backbone>/<method>``: the data of the cross-architecture claim."""

    method: str
    backbone: str
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def run(self) -> str:
        """The run's name in the store."""
        return f"arch/{self.backbone}/{self.method}"


@dataclass(frozen=True)
class Preset:
    """A complete, named study configuration.

    ``recipe_book`` names the recipe function of :data:`sslwatch.train.recipes.RECIPE_BOOKS`
    that gives each method's base configuration (``None``: a plain
    :class:`~sslwatch.train.TrainConfig` with the preset's backbone and batch size).
    ``arch_runs`` are progress runs on other backbones. ``transfer`` names a related
    labelled data set (see :data:`TRANSFER_DATA`) on which the last epoch's backbone is
    also linear-probed, stored under the representation
    :func:`~sslwatch.study.claims.transfer_representation`.
    """

    name: str
    data: str
    backbone: str
    epochs: int
    batch_size: int
    recipes: tuple[MethodRecipe, ...]
    selection: bool = True
    views_samples: int = 1000
    sample_size: int | None = None
    max_samples: int | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    description: str = ""
    metrics: tuple[str, ...] | None = None
    """Label-free metrics to compute (``None``: the default set of the inputs)."""
    recipe_book: str | None = None
    arch_runs: tuple[ArchRun, ...] = ()
    transfer: str | None = None


# MNIST-1D: the validated recipes of sslwatch.train.recipes, one swept value each side.
MNIST1D_RECIPES = (
    MethodRecipe("simclr", "method_kwargs.temperature", (0.1, 0.2, 0.5)),
    MethodRecipe("moco_v2", "method_kwargs.temperature", (0.07, 0.2, 0.5)),
    MethodRecipe("simsiam", "weight_decay", (0.0, 1e-4, 1e-2)),
    MethodRecipe("byol", "method_kwargs.momentum", (0.9, 0.99, 0.999)),
    MethodRecipe(
        "vicreg",
        "method_kwargs.sim_coeff",
        (5.0, 25.0, 100.0),
        {"method_kwargs": {"sim_coeff": 25.0}},
    ),
)

# MNIST (mnist5k): the same swept values around sslwatch.train.recipes.mnist_config
# (the base recipes differ by data set; the values each side of them do not).
MNIST_RECIPES = MNIST1D_RECIPES

PRESETS: dict[str, Preset] = {
    "demo": Preset(
        name="demo",
        data="mnist1d",
        backbone="conv1d",
        recipe_book="mnist1d",
        epochs=8,
        batch_size=256,
        recipes=tuple(r for r in MNIST1D_RECIPES if r.method in ("simclr", "simsiam")),
        selection=False,
        views_samples=0,
        sample_size=2000,
        metrics=("rankme", "stable_rank", "silhouette", "cluster_agreement", "entropy"),
        description="SimCLR and SimSiam on MNIST-1D, a few epochs (under 3 min on 2 cores)",
    ),
    "quick": Preset(
        name="quick",
        data="mnist1d",
        backbone="conv1d",
        recipe_book="mnist1d",
        epochs=20,
        batch_size=256,
        recipes=MNIST1D_RECIPES,
        description="five methods on MNIST-1D, progress and selection (about 25 min on 2 cores)",
    ),
    "smoke": Preset(
        name="smoke",
        data="mnist1d",
        backbone="conv1d",
        recipe_book="mnist1d",
        epochs=1,
        batch_size=128,
        recipes=tuple(replace(r, sweep_values=r.sweep_values[:2]) for r in MNIST1D_RECIPES),
        views_samples=64,
        max_samples=600,
        description="test-sized: every method, 1 epoch, 600 samples",
    ),
    "quick-mnist": Preset(
        name="quick-mnist",
        data="mnist5k",
        backbone="small_conv2d",
        recipe_book="mnist",
        epochs=10,
        batch_size=256,
        recipes=MNIST_RECIPES,
        views_samples=500,
        arch_runs=(ArchRun("simclr", "mlp"),),
        transfer="digits",
        description=(
            "five methods on 5000 real MNIST digits (small 2-D CNN; SimCLR also on an MLP), "
            "progress and selection, LP also on scikit-learn's digits (about 25 min on 2 idle "
            "cores)"
        ),
    ),
    "full": Preset(
        name="full",
        data="npz:cifar10.npz",
        backbone="resnet18_cifar",
        epochs=200,
        batch_size=512,
        device="auto",
        sample_size=10000,
        views_samples=2000,
        recipes=(
            MethodRecipe(
                "simclr",
                "method_kwargs.temperature",
                (0.1, 0.2, 0.5),
                {"method_kwargs": {"temperature": 0.2}},
            ),
            MethodRecipe(
                "moco_v2",
                "method_kwargs.temperature",
                (0.1, 0.2, 0.5),
                {"method_kwargs": {"temperature": 0.2, "queue_size": 4096}},
            ),
            MethodRecipe(
                "simsiam",
                "weight_decay",
                (1e-5, 1e-4, 1e-3),
                {"optimizer": "sgd", "lr": 0.06, "weight_decay": 1e-4},
            ),
            MethodRecipe(
                "byol",
                "method_kwargs.momentum",
                (0.9, 0.99, 0.996),
                {"method_kwargs": {"momentum": 0.99}},
            ),
            MethodRecipe(
                "vicreg",
                "method_kwargs.sim_coeff",
                (10.0, 25.0, 50.0),
                {"method_kwargs": {"expander_dims": [2048, 2048, 2048]}},
            ),
        ),
        description="CIFAR-10 / ResNet-18 on a GPU; pass --data npz:PATH or folder:PATH",
    ),
}


@dataclass
class StudyResult:
    """Where a study wrote its outputs, and the rows of its tables."""

    out_dir: Path
    db: Path
    progress: dict[str, list[dict[str, Any]]]
    correlations: list[dict[str, Any]]
    selection: list[dict[str, Any]]
    files: list[Path]
    seconds: float
    claims: list[Claim] = field(default_factory=list)


EpochPrinter = Callable[[str, int, dict[str, float]], None]


def _train_inputs(data: Dataset) -> torch.Tensor:
    if data.split is not None:
        mask = np.asarray(data.split) == "train"
        if mask.any():
            return data.x[torch.as_tensor(mask)]
    return data.x


def load_study_data(preset: Preset, data_spec: str | None = None, seed: int = 0) -> Dataset:
    """The preset's data set (labelled), optionally capped at ``max_samples`` rows."""
    data = load_dataset(data_spec or preset.data)
    if data.y is None:
        raise ValueError(
            f"the reproduction study needs labels for its references; {data.name} has none"
        )
    if preset.max_samples is not None and len(data) > preset.max_samples:
        rng = np.random.default_rng(seed)
        data = data.subset(np.sort(rng.choice(len(data), preset.max_samples, replace=False)))
    return data


def digits_as_mnist() -> Dataset:
    """scikit-learn's 1797 ``digits`` laid out like MNIST: each 8x8 image (pixel / 16, in
    [0, 1] like ``mnist5k``'s pixel / 255) resized bilinearly to 20x20 and centred in a
    28x28 frame, as MNIST's digits are size-normalised to a 20x20 box and centred."""
    digits = load_dataset("digits")
    x = nn.functional.interpolate(digits.x, size=(20, 20), mode="bilinear", align_corners=False)
    x = nn.functional.pad(x.clamp(0.0, 1.0), (4, 4, 4, 4))
    meta = {**digits.meta, "layout": "8x8 bilinear to 20x20, centred in 28x28 (MNIST's)"}
    return Dataset("digits", x.contiguous(), digits.y, None, meta)


TRANSFER_DATA: dict[str, Callable[[], Dataset]] = {"digits": digits_as_mnist}
"""Related labelled data sets, at hand offline, that a preset's ``transfer`` names: the
last epoch's backbone is linear-probed on them too (Garrido et al.'s transfer claim)."""


def _config(preset: Preset, recipe: MethodRecipe, out_dir: Path, seed: int) -> TrainConfig:
    """The run's training configuration: the preset's base plus the recipe's overrides."""
    common: dict[str, Any] = {
        "epochs": preset.epochs,
        "seed": seed,
        "out_dir": str(out_dir),
        "progress": False,
        "device": preset.device,
    }
    overrides = copy.deepcopy(recipe.overrides)
    if preset.recipe_book is not None:
        return RECIPE_BOOKS[preset.recipe_book](recipe.method, **common, **overrides)
    method_kwargs = overrides.pop("method_kwargs", {})
    return TrainConfig(
        method=recipe.method,
        method_kwargs=method_kwargs,
        backbone=preset.backbone,
        backbone_kwargs=dict(preset.backbone_kwargs),
        batch_size=preset.batch_size,
        **common,
        **overrides,
    )


def checkpoint_embeddings(
    method: SSLMethod, data: Dataset, *, preset: Preset, config: TrainConfig, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Backbone and projector embeddings of every sample, and the two augmented views of
    the first ``preset.views_samples`` inputs (eval mode, seeded): what a study scores."""
    net = nn.Sequential(method.backbone, method.projector).eval()
    layers = {"backbone": "0", "projector": "1"}
    emb = extract_embeddings(net, data.x, layers=layers, batch_size=512, progress=False)
    views: dict[str, torch.Tensor] = {}
    if preset.views_samples:
        augment = build_augment(config.augment, tuple(data.x.shape[1:]), **config.augment_kwargs)
        vemb = extract_embeddings(
            net,
            data.x[: preset.views_samples],
            layers=layers,
            views=2,
            augment=lambda x: augment(x, None),
            seed=seed,
            progress=False,
        )
        views = {rep: vemb[rep + VIEWS_SUFFIX] for rep in layers}
    return {rep: emb[rep] for rep in layers}, views


def score_model(
    method: SSLMethod,
    data: Dataset,
    *,
    epoch: int,
    preset: Preset,
    config: TrainConfig,
    seed: int = 0,
    with_labels: bool = True,
    transfer: Dataset | None = None,
) -> dict[str, Evaluation]:
    """Score one checkpoint: backbone and projector, label-free metrics and references;
    with ``transfer``, also the backbone's linear probe on that data set (under the
    representation :func:`~sslwatch.study.claims.transfer_representation`)."""
    model = copy.deepcopy(method).eval()
    if epoch == 0:
        net = nn.Sequential(model.backbone, model.projector)
        recalibrate_batchnorm(net, _train_inputs(data), batches=8, batch_size=preset.batch_size)
    emb, views = checkpoint_embeddings(model, data, preset=preset, config=config, seed=seed)
    out = {}
    for rep in REPRESENTATIONS:
        # The references are read on the backbone (the representation users keep).
        labelled = with_labels and rep == "backbone"
        metrics = None
        if preset.metrics is not None:
            metrics = list(preset.metrics) + (list(LABEL_METRICS) if labelled else [])
        out[rep] = evaluate(
            emb[rep],
            views=views.get(rep),
            labels=data.y if labelled else None,
            metrics=metrics,
            sample_size=preset.sample_size,
            seed=seed,
            params={"linear_probe": {"l2": PROBE_L2}} if labelled else None,
            on_error="warn",
        )
    if transfer is not None and with_labels:
        z = extract_embeddings(model.backbone, transfer.x, batch_size=512, progress=False)
        out[transfer_representation(transfer.name)] = evaluate(
            z["output"],
            labels=transfer.y,
            metrics=["linear_probe"],
            seed=seed,
            params={"linear_probe": {"l2": PROBE_L2}},
            on_error="warn",
        )
    return out


def _store_scores(
    store: ResultStore,
    run_id: int,
    path: Path,
    epoch: int,
    scores: dict[str, Evaluation],
) -> None:
    point = store.ensure_point(run_id, source="checkpoint", path=str(path), epoch=epoch)
    rows = []
    errors = []
    for rep, res in scores.items():
        for rec in res.records.values():
            if rec.error:
                errors.append(f"{rep}/{rec.name}: {rec.error}")
            else:
                rows.append((rep, rec.definition, rec.value))
    store.record_results(point, rows)
    if errors:
        store.record_failure(point, "; ".join(errors))


def _scored_epochs(store: ResultStore, run: str) -> set[int]:
    return {
        int(r["epoch"])
        for r in store.tidy_rows(run=run, metric=REFERENCE, representation="backbone")
        if r["epoch"] is not None and r["status"] == "ok"
    }


def train_and_score(
    preset: Preset,
    recipe: MethodRecipe,
    data: Dataset,
    store: ResultStore,
    *,
    run: str,
    out_dir: Path,
    seed: int = 0,
    score_every_epoch: bool = True,
    printer: EpochPrinter | None = None,
    arch: ArchRun | None = None,
    transfer: Dataset | None = None,
) -> None:
    """Train one run (resuming from its checkpoints) and score the checkpoints it needs.

    Every epoch is scored as it completes when ``score_every_epoch``; otherwise only the
    last epoch. Scores already stored are skipped, so an interrupted study resumes.
    ``arch`` trains the recipe on that run's backbone instead of the preset's;
    ``transfer`` is linear-probed at the last epoch.
    """
    config = _config(preset, recipe, out_dir, seed)
    if arch is not None:
        config = replace(config, backbone=arch.backbone, backbone_kwargs=dict(arch.backbone_kwargs))
    run_id = store.ensure_run(
        run,
        method=recipe.method,
        architecture=config.backbone,
        meta={
            "train_config": config.to_dict(),
            "preset": preset.name,
            "bn_recalibrated_at_epoch_0": True,
        },
    )
    done = _scored_epochs(store, run)
    wanted = set(range(preset.epochs + 1)) if score_every_epoch else {preset.epochs}

    def on_epoch(epoch: int, method: SSLMethod, path: Path | None) -> None:
        if epoch in wanted and epoch not in done and path is not None:
            scores = score_model(
                method,
                data,
                epoch=epoch,
                preset=preset,
                config=config,
                seed=seed,
                transfer=transfer if epoch == preset.epochs else None,
            )
            _store_scores(store, run_id, path, epoch, scores)
            done.add(epoch)
            if printer is not None:
                printer(run, epoch, _summary(scores))

    train(config, _train_inputs(data), callbacks=[on_epoch])
    # Epochs trained in an earlier, interrupted call were not scored by the callback.
    for epoch, path in list_checkpoints(out_dir):
        if epoch in wanted and epoch not in done:
            on_epoch(epoch, load_checkpoint(path), path)


def _summary(scores: dict[str, Evaluation]) -> dict[str, float]:
    flat = {}
    for rep, res in scores.items():
        for name, value in res.items():
            flat[f"{rep}/{name}"] = value
    return flat


def run_study(
    preset: Preset,
    out_dir: str | Path,
    *,
    data_spec: str | None = None,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    printer: EpochPrinter | None = None,
    report: bool = True,
) -> StudyResult:
    """Run the progress study (and the selection study when the preset has one)."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_study_data(preset, data_spec, seed)
    recipes = [r for r in preset.recipes if methods is None or r.method in methods]
    if not recipes:
        raise ValueError(f"no method selected; the preset has {[r.method for r in preset.recipes]}")
    by_method = {r.method: r for r in recipes}
    arch_runs = [a for a in preset.arch_runs if a.method in by_method]
    transfer = TRANSFER_DATA[preset.transfer]() if preset.transfer is not None else None
    db = out / "results.db"
    with ResultStore(db) as store:
        for recipe in recipes:
            train_and_score(
                preset,
                recipe,
                data,
                store,
                run=progress_run(recipe),
                out_dir=out / "runs" / progress_run(recipe),
                seed=seed,
                printer=printer,
                transfer=transfer,
            )
        for arch in arch_runs:
            train_and_score(
                preset,
                by_method[arch.method],
                data,
                store,
                run=arch.run,
                out_dir=out / "runs" / arch.run,
                seed=seed,
                printer=printer,
                arch=arch,
            )
        if preset.selection:
            for recipe in recipes:
                own = swept_value(_config(preset, recipe, out, seed), recipe)
                for value in recipe.sweep_values:
                    if math.isclose(value, own):
                        continue
                    variant = recipe.with_value(value)
                    run = selection_run(recipe, value)
                    train_and_score(
                        preset,
                        variant,
                        data,
                        store,
                        run=run,
                        out_dir=out / "runs" / run,
                        seed=seed,
                        score_every_epoch=False,
                        printer=printer,
                        transfer=transfer,
                    )
        rows = store.tidy_rows()

    tracked = [progress_run(r) for r in recipes] + [a.run for a in arch_runs]
    progress = progress_tables(rows, tracked)
    corr = correlation_table(rows, preset.epochs)
    sel = selection_table(rows, recipes, preset.epochs) if preset.selection else []
    claims = claims_from_rows(rows, preset.epochs)
    files = write_tables(out, progress, corr, sel)
    files += write_claims(out, claims)
    if report:
        spectra = latest_spectra(data, out, tracked)
        files.extend(_write_report(db, out, spectra, claims))
    seconds = time.perf_counter() - start
    return StudyResult(out, db, progress, corr, sel, files, seconds, claims)


def _is_progress(run: str) -> bool:
    """A run scored at every epoch: a method's progress run or a second-backbone run."""
    return run.startswith(("progress/", "arch/"))


def progress_run(recipe: MethodRecipe) -> str:
    """Run name of a method's progress run."""
    return f"progress/{recipe.method}"


VARIANT_RUN_PREFIX: Final = "variants/"
"""Runs holding the metric variants of ``reproduce --variants`` (study.variants): kept
in the store, left out of the report, whose metrics they are not."""


def selection_run(recipe: MethodRecipe, value: float) -> str:
    """Run name of one selection-sweep variant (the progress run is the recipe's value)."""
    return f"select/{recipe.method}/{recipe.sweep_name}={value:g}"


TABLE_METRICS = (
    "rankme",
    "alpha_req",
    "silhouette",
    "cluster_agreement",
    "entropy",
    "entropy_gaussian",
    "lidar",
    "linear_probe",
    "knn_accuracy",
    "label_ami",
)


def progress_tables(rows: Sequence[dict[str, Any]], runs: Sequence[str]) -> dict[str, list[dict]]:
    """Per run: one row per epoch, columns ``representation/metric``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_epoch: dict[int, dict[str, Any]] = {}
        for r in rows:
            if r["run"] == run and r["epoch"] is not None:
                row = by_epoch.setdefault(int(r["epoch"]), {"epoch": int(r["epoch"])})
                row[f"{r['representation']}/{r['metric']}"] = r["value"]
        out[run] = [by_epoch[e] for e in sorted(by_epoch)]
    return out


def correlation_table(rows: Sequence[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """Spearman and Kendall of every label-free metric with backbone LP accuracy.

    Two windows: all trained epochs (1..E) and the later half (epochs > E/2), per
    progress run (one run per method, and the second-backbone runs; ``architecture``
    tells them apart).
    """
    progress_rows = [r for r in rows if _is_progress(str(r["run"]))]
    out = []
    for window, min_epoch in (("all", 1), ("later half", epochs // 2 + 1)):
        for c in correlations(
            progress_rows,
            reference=REFERENCE,
            reference_representation="backbone",
            scopes=("run",),
            min_epoch=min_epoch,
            n_boot=200,
            on_incomparable="split",
        ):
            if REGISTRY[c.metric].label_based:
                continue
            out.append(
                {
                    "method": _method_label(c.method or c.group, c.group, c.architecture),
                    "window": window,
                    "representation": c.representation,
                    "metric": c.metric,
                    "direction": c.direction,
                    "n": c.n,
                    "spearman": c.stats.spearman.value,
                    "spearman_lo": c.stats.spearman.low,
                    "spearman_hi": c.stats.spearman.high,
                    "kendall": c.stats.kendall.value,
                }
            )
    return out


def _method_label(method: str, run: str, architecture: str | None) -> str:
    """The method, with the backbone in brackets for a second-backbone run."""
    return f"{method} ({architecture})" if run.startswith("arch/") else method


def selection_table(
    rows: Sequence[dict[str, Any]], recipes: Sequence[MethodRecipe], epochs: int
) -> list[dict[str, Any]]:
    """Per method and label-free metric: the selected run, its LP accuracy and regret.

    ``random_regret`` is the baseline a metric has to beat: the expected regret of picking
    one of the method's candidate runs uniformly at random, ``oracle - mean(candidates)``.
    """
    study = [
        r
        for r in rows
        if (str(r["run"]).startswith("select/") or str(r["run"]).startswith("progress/"))
        and r["epoch"] == epochs
    ]
    out = []
    for spec in REGISTRY.values():
        if spec.label_based or spec.higher_is_better is None:
            continue
        if not any(r["metric"] == spec.name for r in study):
            continue
        for sel in select_runs(
            study, spec.name, representation="backbone", epoch=epochs, on_incomparable="split"
        ):
            out.append(
                {
                    "method": sel.group,
                    "metric": spec.name,
                    "selected_run": sel.selected_run,
                    "selected_lp": sel.reference_value,
                    "oracle_run": sel.oracle_run,
                    "oracle_lp": sel.oracle_value,
                    "regret": sel.regret,
                    "random_regret": sel.random_regret,
                    "candidates": len(sel.ranking),
                }
            )
    return out


def selection_summary(sel: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per label-free metric, over methods: mean and worst regret, and how often it beat
    or tied a random pick; with the ``random pick`` baseline (and the oracle, regret 0)
    as rows of their own. Sorted from the lowest mean regret."""
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for row in sel:
        if math.isfinite(row["regret"]):
            by_metric.setdefault(str(row["metric"]), []).append(row)
    if not by_metric:
        return []
    out = []
    for metric, rows in by_metric.items():
        regrets = [float(r["regret"]) for r in rows]
        out.append(
            {
                "metric": metric,
                "methods": len(rows),
                "mean_regret": float(np.mean(regrets)),
                "max_regret": float(np.max(regrets)),
                "picked_oracle": sum(r <= 0.0 for r in regrets),
                "beat_random": sum(float(r["regret"]) <= float(r["random_regret"]) for r in rows),
            }
        )
    first = next(iter(by_metric.values()))
    randoms = [float(r["random_regret"]) for r in first if math.isfinite(r["random_regret"])]
    if randoms:
        out.append(
            {
                "metric": "(random pick)",
                "methods": len(randoms),
                "mean_regret": float(np.mean(randoms)),
                "max_regret": float(np.max(randoms)),
                "picked_oracle": math.nan,
                "beat_random": math.nan,
            }
        )
    return sorted(out, key=lambda r: (r["mean_regret"], r["metric"]))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def _write(path: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    if not rows:
        return []
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    with path.with_suffix(".csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return [path.with_suffix(".csv"), path.with_suffix(".md")]


def write_tables(
    out: Path,
    progress: dict[str, list[dict[str, Any]]],
    corr: list[dict[str, Any]],
    sel: list[dict[str, Any]],
) -> list[Path]:
    """Write every table as CSV and Markdown into ``out``; return the files."""
    files = []
    for run, rows in progress.items():
        parts = run.split("/")
        name = "_".join([parts[-1], *parts[1:-1]]) if parts[0] == "arch" else parts[-1]
        files += _write(out / f"progress_{name}", rows)
    files += _write(out / "correlations", corr)
    files += _write(out / "selection", sel)
    files += _write(out / "selection_summary", selection_summary(sel))
    return files


def latest_spectra(data: Dataset, out: Path, runs: Sequence[str]) -> dict[SpectrumKey, np.ndarray]:
    """Singular values of each run's latest checkpoint, per representation (for the report)."""
    spectra: dict[SpectrumKey, np.ndarray] = {}
    for run in runs:
        checkpoints = list_checkpoints(out / "runs" / run)
        if not checkpoints:
            continue
        model = load_checkpoint(checkpoints[-1][1]).eval()
        net = nn.Sequential(model.backbone, model.projector)
        emb = extract_embeddings(
            net, data.x, layers={"backbone": "0", "projector": "1"}, progress=False
        )
        for rep in REPRESENTATIONS:
            spectra[(run, rep)] = singular_values(emb[rep])
    return spectra


def _write_report(
    db: Path, out: Path, spectra: dict[SpectrumKey, np.ndarray], claims: Sequence[Claim]
) -> list[Path]:
    """The study's HTML report, the judged claims at its top; none when the report extra
    (matplotlib, jinja2) is missing."""
    path = out / "report.html"
    try:
        write_report(
            db,
            path,
            spectra=spectra,
            title="sslwatch reproduction study",
            claims=claim_rows(claims),
            claims_rule=f"{VERDICT_RULE} {VARIANTS_NOTE}",
            exclude_runs=(VARIANT_RUN_PREFIX,),
        )
    except ImportError:
        return []
    return [path]
