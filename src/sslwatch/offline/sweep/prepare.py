"""Everything a sweep process sets up before its first checkpoint (:func:`_prepare`: data,
model factory, augmentation, metrics, passes), the definitions it will store
(:func:`expected_definitions`) and the rule that skips a finished checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from sslwatch.core.context import MetricContext, resolve_k
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.evaluate import definition_for
from sslwatch.core.registry import REGISTRY, MetricSpec, check_params
from sslwatch.offline.checkpoints import import_factory
from sslwatch.offline.data import Dataset, load_dataset
from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep.config import (
    EMBEDDING_DTYPE,
    OUTPUT_REPRESENTATION,
    SweepConfig,
    SweepSetupError,
)
from sslwatch.offline.sweep.outcomes import _one_line


@dataclass(frozen=True)
class _Pass:
    """One call of ``evaluate`` per representation: which metrics, on which rows."""

    specs: tuple[MetricSpec, ...]
    rows: np.ndarray | None  # None = every row
    labels: np.ndarray | None  # aligned with the rows, or None
    n_total: int
    use_views: bool


@dataclass
class _Prepared:
    """Per-process state of a sweep: data, factory, passes, definition extras."""

    config: SweepConfig
    dataset: Dataset
    factory: Callable[..., Any]
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    representations: tuple[str, ...]
    passes: tuple[_Pass, ...]
    k: int | None
    overrides: dict[str, dict[str, Any]]
    base_extras: dict[str, Any]
    view_extras: dict[str, Any]
    label_extras: dict[str, Any]
    run_meta: dict[str, Any]
    # torch threads of every forward pass (BN re-estimation, embedding) on the CPU: the
    # sweep process's count, in worker processes too, because the float32 rounding of a
    # forward pass depends on it, and stored values must not depend on --workers (the
    # metrics themselves do not depend on the thread count).
    model_threads: int = field(default_factory=torch.get_num_threads)
    _expected: dict[int, dict[str, tuple[MetricDefinition, str]]] = field(default_factory=dict)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(s.name for p in self.passes for s in p.specs)

    def expected(self, d: int) -> dict[str, tuple[MetricDefinition, str]]:
        """Metric name -> (decorated definition, digest) for a representation of dim ``d``."""
        if d not in self._expected:
            out = {}
            for p in self.passes:
                for spec, defn in _predict_pass(self, p, d):
                    decorated = self.decorate(spec, defn)
                    out[spec.name] = (decorated, decorated.digest())
            self._expected[d] = out
        return self._expected[d]

    def decorate(self, spec: MetricSpec, defn: MetricDefinition) -> MetricDefinition:
        """Add the sweep's own settings to a definition (metric parameters win)."""
        extras = dict(self.base_extras)
        if self.view_extras and (spec.kind == "views" or defn.params.get("source") == "views"):
            extras.update(self.view_extras)
        if spec.needs == "labels":
            extras.update(self.label_extras)
        return replace(defn, params={**extras, **dict(defn.params)})


def _load_data(config: SweepConfig) -> Dataset:
    if isinstance(config.data, Dataset):
        ds = config.data
        if config.labelled_fraction is not None:
            ds = ds.with_labelled_fraction(config.labelled_fraction, seed=config.seed)
        return ds
    try:
        return load_dataset(
            config.data, labelled_fraction=config.labelled_fraction, seed=config.seed
        )
    except FileNotFoundError as exc:
        raise SweepSetupError(
            _one_line(f"data {config.data!r}: {exc} (no such file or folder)")
        ) from exc
    except ValueError as exc:
        raise SweepSetupError(_one_line(f"data {config.data!r}: {exc}")) from exc


def _resolve_augment(
    config: SweepConfig, dataset: Dataset
) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str | None]:
    aug = config.augment
    if config.views == 0 or aug is None:
        return None, None
    if callable(aug):
        return aug, getattr(aug, "__qualname__", type(aug).__name__)
    spec = str(aug)
    if ":" in spec:
        try:
            return import_factory(spec), spec
        except (ValueError, FileNotFoundError) as exc:
            raise SweepSetupError(_one_line(f"augment: {exc}")) from exc
    try:
        from sslwatch.train.augment import build_augment

        built = build_augment(spec, tuple(int(s) for s in dataset.x.shape[1:]))
    except (ImportError, ValueError) as exc:
        raise SweepSetupError(_one_line(f"augment {spec!r}: {exc}")) from exc

    def augment(x: torch.Tensor) -> torch.Tensor:
        return built(x, None)

    return augment, spec


def _prepare(config: SweepConfig, dataset: Dataset | None = None) -> _Prepared:
    """Everything a process needs before its first checkpoint; raises only
    :class:`SweepSetupError`."""
    ds = _load_data(config) if dataset is None else dataset
    n = len(ds)
    if n < 2:
        raise SweepSetupError(f"data set {ds.name!r} has {n} sample(s); need at least 2.")
    factory, model_name = _resolve_factory(config)
    augment, augment_name = _resolve_augment(config, ds)

    has_labels = ds.y is not None and bool(ds.labelled_mask.any())
    if config.labels is True and not has_labels:
        raise SweepSetupError(f"labels requested but data set {ds.name!r} has no labels.")
    use_labels = has_labels and config.labels is not False
    mask = ds.labelled_mask if use_labels else np.zeros(n, dtype=bool)
    y_all = ds.y if use_labels else None

    specs = _select_metrics(config, use_labels)
    try:
        overrides = check_params(config.params or {}, specs)
    except ValueError as exc:
        raise SweepSetupError(str(exc)) from None
    k = config.k
    if k is None and y_all is not None:  # the class count, the same for every checkpoint
        k = resolve_k(None, n, y_all[mask])
    passes = _plan_passes(config, specs, y_all, mask)
    for p in passes:
        _check_k_fits(config, p, k)

    layers = dict(config.layers) if config.layers is not None else None
    base_extras: dict[str, Any] = {
        "data": ds.name,
        "bn_recalibrated": bool(config.recalibrate_bn),
    }
    if config.recalibrate_bn:
        base_extras["bn_batches"] = int(config.bn_batches)
    view_extras = {"views": int(config.views), "augment": augment_name} if config.views else {}
    run_meta = {
        "sweep": {
            "model": model_name,
            "data": ds.name,
            "layers": layers,
            "views": int(config.views),
            "augment": augment_name,
            "labelled_fraction": config.labelled_fraction,
            "bn_recalibrated": bool(config.recalibrate_bn),
            "state_key": config.state_key,
        }
    }
    return _Prepared(
        config=config,
        dataset=ds,
        factory=factory,
        augment=augment,
        representations=tuple(layers) if layers is not None else (OUTPUT_REPRESENTATION,),
        passes=tuple(passes),
        k=k,
        overrides=overrides,
        base_extras=base_extras,
        view_extras=view_extras,
        label_extras={"labelled_fraction": config.labelled_fraction},
        run_meta=run_meta,
    )


def _resolve_factory(config: SweepConfig) -> tuple[Callable[..., Any], str]:
    """The model factory and the name recorded for it."""
    if isinstance(config.model, str):
        try:
            return import_factory(config.model), config.model
        except (ValueError, FileNotFoundError) as exc:
            raise SweepSetupError(_one_line(f"model: {exc}")) from exc
    if callable(config.model):
        return config.model, getattr(config.model, "__qualname__", type(config.model).__name__)
    raise SweepSetupError(
        f"model must be a factory spec 'module:function' or a callable; got "
        f"{type(config.model).__name__}."
    )


def _select_metrics(config: SweepConfig, use_labels: bool) -> list[MetricSpec]:
    """The registry's metrics for ``config.metrics`` (``None``: the default set)."""
    try:
        specs = REGISTRY.select(
            list(config.metrics) if config.metrics is not None else None,
            has_views=config.views > 0,
            has_labels=use_labels,
        )
    except ValueError as exc:
        raise SweepSetupError(_one_line(f"metrics: {exc}")) from exc
    if not specs:
        raise SweepSetupError("no metric selected; check --metrics.")
    return list(specs)


def _plan_passes(
    config: SweepConfig,
    specs: Sequence[MetricSpec],
    y_all: np.ndarray | None,
    mask: np.ndarray,
) -> list[_Pass]:
    """The ``evaluate`` calls per representation: one when every sample is labelled (the
    k-means shared by all metrics), else the label-free metrics on every sample and the
    label-based ones on the labelled samples."""
    n, n_lab = len(mask), int(mask.sum())
    use_views = config.views > 0
    free = tuple(s for s in specs if not s.label_based)
    labelled = tuple(s for s in specs if s.label_based)
    if labelled and n_lab == n:
        return [_Pass(tuple(specs), None, y_all, n, use_views)]
    passes = []
    if free:
        passes.append(_Pass(free, None, None, n, use_views))
    if labelled:
        rows = np.flatnonzero(mask)
        passes.append(_Pass(labelled, rows, y_all[rows], n_lab, False))  # type: ignore[index]
    return passes


def _check_k_fits(config: SweepConfig, p: _Pass, k: int | None) -> None:
    """Refuse k-means clusters that the pass's sample is too small for."""
    if not any(s.kind in ("sample", "labels") for s in p.specs):
        return
    n_points = p.n_total if config.sample_size is None else min(config.sample_size, p.n_total)
    kk = resolve_k(k, n_points)
    if n_points < 2 or kk >= n_points:
        which = "labelled samples" if p.rows is not None else "samples"
        raise SweepSetupError(
            f"k={kk} k-means clusters need more than {n_points} {which}; lower k or use "
            "more (labelled) data."
        )


def _predict_pass(prep: _Prepared, p: _Pass, d: int) -> list[tuple[MetricSpec, MetricDefinition]]:
    """The definitions ``evaluate`` will give for pass ``p`` on embeddings of dimension d.

    Builds a :class:`MetricContext` of the right shape from zero-size "meta" tensors (no
    data, no memory) and asks :func:`sslwatch.core.evaluate.definition_for`, so the prediction
    follows the suite's own rules.
    """
    cfg = prep.config
    point_based = any(s.kind in ("sample", "labels") for s in p.specs)
    sample = None
    if point_based:
        n_points = p.n_total if cfg.sample_size is None else min(cfg.sample_size, p.n_total)
        sample = torch.empty((n_points, 0), device="meta")
    n_sample = 0 if sample is None else int(sample.shape[0])
    views = None
    if p.use_views:
        views = torch.empty((p.n_total, cfg.views, 0), device="meta")
    kk = resolve_k(prep.k, n_sample)
    ctx = MetricContext(
        n_total=p.n_total,
        d=int(d),
        dtype=EMBEDDING_DTYPE,
        sample=sample,
        views=views,
        labels=None,
        k=kk,
        seed=cfg.seed,
        sample_size=cfg.sample_size,
    )
    return [
        (s, definition_for(s, ctx, {**s.params, **prep.overrides.get(s.name, {})})) for s in p.specs
    ]


def expected_definitions(
    config: SweepConfig, dims: Mapping[str, int], dataset: Dataset | None = None
) -> list[tuple[str, MetricDefinition]]:
    """The ``(representation, definition)`` pairs a sweep stores for one checkpoint.

    Computed without any model work from the data set's size, the embedding dimension of
    each representation (``dims``), the metric selection and the sweep's settings.

    Raises:
        SweepSetupError: as :func:`~sslwatch.offline.sweep.run_sweep` for bad settings.
    """
    prep = _prepare(config, dataset)
    return [(rep, defn) for rep in dims for defn, _ in prep.expected(int(dims[rep])).values()]


# --------------------------------------------------------------------------- skipping


def _stored_state(
    store: ResultStore,
) -> dict[tuple[str, str], dict[str, tuple[set[str], set[int]]]]:
    """(run, path) -> representation -> (stored digests, embedding dimensions seen)."""
    state: dict[tuple[str, str], dict[str, tuple[set[str], set[int]]]] = {}
    for row in store.tidy_rows(source="checkpoint"):
        if row["path"] is None:
            continue
        reps = state.setdefault((row["run"], row["path"]), {})
        digests, dims = reps.setdefault(row["representation"], (set(), set()))
        digests.add(row["digest"])
        dims.add(int(row["d"]))
    return state


def _is_complete(prep: _Prepared, reps: Mapping[str, tuple[set[str], set[int]]] | None) -> bool:
    if not reps:
        return False
    for rep in prep.representations:
        if rep not in reps:
            return False
        digests, dims = reps[rep]
        if not any(all(dg in digests for _, dg in prep.expected(d).values()) for d in dims):
            return False
    return True
