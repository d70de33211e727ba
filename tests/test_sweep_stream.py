"""The sweep's streamed route: second moments over every row, a seeded sample for points.

Oracle: :func:`sslwatch.evaluate` on the whole embedding matrix of the same checkpoint
(embedded by :func:`sslwatch.offline.embed.extract_embeddings`, the in-memory route). Spectrum
metrics must agree to 1e-9 relative (the moments are summed batch by batch instead of in one
go); point metrics see the very same sample rows, so they must be identical.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sweep_models as sm
from sslwatch.core.evaluate import evaluate, sample_indices
from sslwatch.core.registry import REGISTRY
from sslwatch.metrics._threads import torch_threads
from sslwatch.offline.checkpoints import load_model
from sslwatch.offline.data import Dataset
from sslwatch.offline.embed import extract_embeddings
from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep import run_sweep
from sslwatch.offline.sweep.checkpoint import _stream_forward
from sslwatch.offline.sweep.prepare import _prepare

SPECTRUM = {s.name for s in REGISTRY.select(None, has_labels=True) if s.kind == "spectrum"}


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "sweep_checkpoints"
    sm.make_checkpoints(root)
    return root


def in_memory_values(
    path: Path, data: Dataset, rep: str, rows: np.ndarray | None, **kw: Any
) -> dict[str, float]:
    model = load_model(sm.tiny_cnn, str(path))
    z = extract_embeddings(model, data, layers=sm.LAYERS, batch_size=256)[rep]
    labels = None if data.y is None else data.y
    if rows is not None:
        z, labels = z[torch.from_numpy(rows)], None if labels is None else labels[rows]
    return dict(evaluate(z, labels=labels, **kw))


def assert_matches(stored: dict[str, float], oracle: dict[str, float]) -> None:
    assert stored.keys() == oracle.keys()
    for name, want in oracle.items():
        got = stored[name]
        if name in SPECTRUM and math.isfinite(want):
            assert got == pytest.approx(want, rel=1e-9, abs=0), name
        else:  # the same rows in, the same code: identical
            assert got == want or (math.isnan(got) and math.isnan(want)), name


def test_streamed_values_equal_evaluate_on_the_whole_matrix(
    ckpt_root: Path, tmp_path: Path
) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    db = tmp_path / "s.db"
    # 1797 rows in batches of 100 (the last one short), sample of 300; labels on a 40%
    # stratified fraction: label-free metrics stream every row, the probes sample the
    # labelled rows only (a second pass over a subset of the rows).
    with torch_threads(1):
        cfg = sm.reference_config(
            ckpt_root,
            db,
            checkpoints=[str(paths["alpha1"])],
            sample_size=300,
            batch_size=100,
            labelled_fraction=0.4,
        )
        summary = run_sweep(cfg)
        assert summary.n_ok == 1, summary.failures
        prep = _prepare(cfg)
        data = prep.dataset
        mask = data.labelled_mask
        with ResultStore(db) as store:
            rows = store.tidy_rows()
        for rep in sm.LAYERS:
            stored = {r["metric"]: r["value"] for r in rows if r["representation"] == rep}
            free = in_memory_values(
                paths["alpha1"],
                Dataset("digits", data.x),
                rep,
                None,
                metrics=[s.name for s in prep.passes[0].specs],
                sample_size=300,
                seed=0,
                k=prep.k,
            )
            labelled = in_memory_values(
                paths["alpha1"],
                data,
                rep,
                np.flatnonzero(mask),
                metrics=[s.name for s in prep.passes[1].specs],
                sample_size=300,
                seed=0,
                k=prep.k,
                params={"linear_probe": {"l2": 1e-3}},
            )
            assert_matches(stored, {**free, **labelled})


def test_the_stream_keeps_moments_and_the_sample_never_every_row(ckpt_root: Path) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    cfg = sm.reference_config(ckpt_root, ckpt_root / "unused.db", sample_size=300, batch_size=64)
    prep = _prepare(cfg)
    model = load_model(sm.tiny_cnn, str(paths["alpha1"]))
    timings: dict[str, float] = {}
    streamed = _stream_forward(model, prep, torch.device("cpu"), timings, set())
    n = len(prep.dataset)
    want_rows = sample_indices(n, 300, 0)
    assert want_rows is not None
    z = extract_embeddings(model, prep.dataset, layers=sm.LAYERS, batch_size=64)
    for rep, (ps,) in streamed.streams.items():
        assert not ps.keep_all and ps.moments is not None
        assert ps.moments.n == n  # every row in the moments...
        assert not ps.parts and ps.sample is not None and ps.filled == 300
        kept = ps.sample
        assert kept.shape == (300, streamed.dim(rep))  # ...only the sample held
        assert torch.equal(kept, z[rep][torch.from_numpy(want_rows)])
        zz = z[rep].double()
        assert torch.allclose(ps.moments.outer, zz.T @ zz, rtol=1e-12, atol=1e-9)
    assert timings["embed"] > 0


@pytest.mark.filterwarnings("ignore:rankme on N=20:UserWarning")
def test_fewer_rows_than_dimensions_keep_every_row_and_equal_evaluate(
    ckpt_root: Path, tmp_path: Path
) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    x, y = sm.digits_tensors()
    small = Dataset("digits20", x[:20], y[:20].numpy())  # N = 20 < D = 32: the Gram route
    with torch_threads(1):
        cfg = sm.reference_config(
            ckpt_root,
            tmp_path / "small.db",
            checkpoints=[str(paths["alpha0"])],
            data=small,
            labels=False,
            metrics=["rankme", "stable_rank", "silhouette"],
            params={},
            sample_size=10,
            k=3,
            batch_size=7,
        )
        assert run_sweep(cfg).n_ok == 1
        prep = _prepare(cfg)
        model = load_model(sm.tiny_cnn, str(paths["alpha0"]))
        streamed = _stream_forward(model, prep, torch.device("cpu"), {}, set())
        with ResultStore(cfg.db) as store:
            rows = store.tidy_rows()
        for rep in sm.LAYERS:
            (ps,) = streamed.streams[rep]
            assert ps.keep_all == (streamed.dim(rep) > 20)
            stored = {r["metric"]: r["value"] for r in rows if r["representation"] == rep}
            want = in_memory_values(
                paths["alpha0"],
                Dataset("digits20", small.x),
                rep,
                None,
                metrics=["rankme", "stable_rank", "silhouette"],
                sample_size=10,
                k=3,
            )
            assert_matches(stored, want)


class _NanProjector(sm.TinyCNN):
    """TinyCNN whose output is NaN for inputs with a dark pixel (0, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        blank = x[:, 0, 0, 3] < 0.2
        return torch.where(blank[:, None], torch.full_like(out, math.nan), out)


def nan_projector() -> torch.nn.Module:
    return _NanProjector()


def test_non_finite_rows_fail_only_their_representation(ckpt_root: Path, tmp_path: Path) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    x, _ = sm.digits_tensors()
    bad = int((x[:, 0, 0, 3] < 0.2).sum())
    assert 0 < bad < len(x)
    cfg = sm.reference_config(
        ckpt_root,
        tmp_path / "nan.db",
        model=nan_projector,
        checkpoints=[str(paths["alpha1"])],
        layers={"backbone": "backbone", "output": ""},
        labels=False,
        params={},
        batch_size=128,
    )
    summary = run_sweep(cfg)
    (o,) = summary.outcomes
    assert o.status == "failed"
    assert f"output: ValueError: z contains NaN or Inf in {bad} of {len(x)} rows" in (o.error or "")
    with ResultStore(cfg.db) as store:
        reps = {r["representation"] for r in store.tidy_rows()}
    assert reps == {"backbone"}  # the finite representation is stored
