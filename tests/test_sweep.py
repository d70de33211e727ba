"""`sslwatch.offline.sweep`: checkpoints in, every metric per checkpoint and representation stored.

Real data (scikit-learn digits) and a tiny CNN whose checkpoints differ in quality: a
random initialisation and the same network trained briefly WITH labels. Oracles: the
linear-probe ranking (trained beats random), numpy's SVD for RankMe and the stable rank,
plain torch forward passes for the embeddings, BatchNorm statistics re-estimated by hand,
and the class counts of digits for the labelled-fraction sample sizes.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sslwatch.offline.sweep.checkpoint as sweep_checkpoint
import sweep_models as sm
from sslwatch.core.evaluate import evaluate
from sslwatch.core.registry import REGISTRY
from sslwatch.offline.store import ResultStore
from sslwatch.offline.sweep import (
    SweepConfig,
    SweepSetupError,
    exit_code,
    expected_definitions,
    find_checkpoints,
    parse_layers,
    parse_shard,
    run_sweep,
)

SAMPLE = sm.REFERENCE["sample_size"]
PARAMS = sm.REFERENCE["params"]
DEFAULT_WITH_LABELS = [s.name for s in REGISTRY.select(None, has_labels=True)]


def config(root: Path, db: Path, **kw: Any) -> SweepConfig:
    if "linear_probe" not in kw.get("metrics", ["linear_probe"]) or kw.get("labels") is False:
        kw.setdefault("params", {})
    cfg: SweepConfig = sm.reference_config(root, db, **kw)
    return cfg


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "sweep_checkpoints"
    sm.make_checkpoints(root)
    return root


@pytest.fixture(scope="module")
def reference(ckpt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("sweep_ref") / "ref.db"
    summary = run_sweep(config(ckpt_root, db))
    with ResultStore(db) as store:
        rows = store.tidy_rows()
    shared = ckpt_root / "reference.db"  # reused by test_sweep_cli.py in this process tree
    if not shared.exists():
        tmp = ckpt_root / f"reference-{os.getpid()}.db"
        shutil.copy(db, tmp)
        os.replace(tmp, shared)
    return {"db": db, "summary": summary, "rows": rows}


def plain_embeddings(path: Path) -> dict[str, np.ndarray]:
    """Embeddings by a plain eval-mode forward, independent of sslwatch.offline.embed."""
    model = sm.TinyCNN()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(raw)
    model.eval()
    x, _ = sm.digits_tensors()
    with torch.no_grad():
        b = model.backbone(x)
        p = model.projector(b)
    return {"backbone": b.double().numpy(), "projector": p.double().numpy()}


def numpy_rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def value_of(rows: list[dict[str, Any]], path: Path, rep: str, metric: str) -> float:
    hits = [
        r
        for r in rows
        if r["path"] == str(path) and r["representation"] == rep and r["metric"] == metric
    ]
    assert len(hits) == 1, (path, rep, metric, len(hits))
    return float(hits[0]["value"])


def key_values(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    out = {}
    for r in rows:
        key = (r["run"], r["path"], r["epoch"], r["step"], r["representation"], r["digest"])
        assert key not in out
        out[key] = r["value"]
    return out


def same_values(a: dict[tuple[Any, ...], float], b: dict[tuple[Any, ...], float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


# --------------------------------------------------------------------------- end to end


def test_sweep_stores_every_metric_and_the_trained_checkpoint_probes_better(
    reference: dict[str, Any], ckpt_root: Path
) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    summary, rows = reference["summary"], reference["rows"]
    assert (summary.n_checkpoints, summary.n_ok, summary.n_failed) == (4, 4, 0)
    assert summary.n_loaded == 4 and summary.exit_code == 0
    # Exactly one value per (checkpoint, representation, metric), every metric present.
    seen: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        seen.setdefault((r["path"], r["representation"]), []).append(r["metric"])
    assert set(seen) == {(str(p), rep) for p in paths.values() for rep in sm.LAYERS}
    for metrics in seen.values():
        assert sorted(metrics) == sorted(DEFAULT_WITH_LABELS)
    # run / epoch / step parsed from the paths (Lightning layout for beta's checkpoint).
    where = {(r["path"]): (r["run"], r["epoch"], r["step"]) for r in rows}
    assert where[str(paths["alpha0"])] == ("alpha", 0, None)
    assert where[str(paths["alpha1"])] == ("alpha", 1, None)
    assert where[str(paths["beta0"])] == ("beta", 0, None)
    assert where[str(paths["beta2"])] == ("beta", 2, 40)
    # Trained with labels beats random initialisation on the backbone probe.
    trained = value_of(rows, paths["alpha1"], "backbone", "linear_probe")
    random_init = value_of(rows, paths["alpha0"], "backbone", "linear_probe")
    assert trained > random_init + 0.05, (trained, random_init)
    assert value_of(rows, paths["alpha1"], "backbone", "knn_accuracy") > value_of(
        rows, paths["alpha0"], "backbone", "knn_accuracy"
    )


def test_stored_values_match_independent_oracles(
    reference: dict[str, Any], ckpt_root: Path
) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    rows = reference["rows"]
    for key in ("alpha0", "alpha1"):
        emb = plain_embeddings(paths[key])
        for rep, z in emb.items():
            assert value_of(rows, paths[key], rep, "rankme") == pytest.approx(
                numpy_rankme(z), rel=1e-5
            )
            s = np.linalg.svd(z, compute_uv=False)
            assert value_of(rows, paths[key], rep, "stable_rank") == pytest.approx(
                float(np.sum(s**2) / s[0] ** 2), rel=1e-5
            )
    # Definitions: N, D, sample size, k and the sweep's own settings.
    by = {(r["path"], r["representation"], r["metric"]): r for r in rows}
    import json

    r = by[(str(paths["alpha1"]), "backbone", "rankme")]
    assert (r["n"], r["d"]) == (1797, 32)
    defn = json.loads(r["definition"])
    assert defn["params"]["data"] == "digits" and defn["params"]["bn_recalibrated"] is False
    r = by[(str(paths["alpha1"]), "projector", "silhouette")]
    assert (r["n"], r["d"]) == (SAMPLE, 16)
    assert json.loads(r["definition"])["params"]["k"] == 10
    lp = json.loads(by[(str(paths["alpha1"]), "backbone", "linear_probe")]["definition"])
    assert lp["params"]["l2"] == 1e-3 and lp["params"]["labelled_fraction"] is None


STAGES = {"load", "recalibrate", "embed", "metrics", "store", "total"}


def test_every_value_and_checkpoint_keeps_its_seconds(reference: dict[str, Any]) -> None:
    rows, summary = reference["rows"], reference["summary"]
    assert rows and all(
        isinstance(r["seconds"], float) and 0.0 <= r["seconds"] < math.inf for r in rows
    )
    with ResultStore(reference["db"]) as store:
        timings = store.timings()
    per_point: dict[str, dict[str, dict[str, float]]] = {}
    for t in timings:
        per_point.setdefault(t["path"], {}).setdefault(t["representation"], {})[t["name"]] = t[
            "seconds"
        ]
    assert set(per_point) == {o.path for o in summary.outcomes}
    for outcome in summary.outcomes:
        point = per_point[outcome.path]
        stages = point[""]
        assert set(stages) == STAGES and all(v >= 0 for v in stages.values())
        # Stages are disjoint parts of the checkpoint's time.
        assert sum(v for k, v in stages.items() if k != "total") <= stages["total"] + 1e-9
        assert stages["embed"] > 0 and stages["metrics"] > 0
        # Every representation ran the spectrum route and k-means on its sample.
        assert set(point) == {"", *sm.LAYERS}
        for rep in sm.LAYERS:
            assert {"second_moments", "spectra", "kmeans[sample,seed=0]"} <= set(point[rep])
        # A metric's own seconds exclude the shared steps: together they fit in "metrics".
        mine = [r["seconds"] for r in rows if r["path"] == outcome.path]
        steps = [v for rep in sm.LAYERS for v in point[rep].values()]
        assert sum(mine) + sum(steps) <= stages["metrics"] + 1e-9
        # The outcome reports the same numbers as the store holds.
        for metric in DEFAULT_WITH_LABELS:
            stored = sum(
                r["seconds"] for r in rows if r["path"] == outcome.path and r["metric"] == metric
            )
            assert outcome.costs[metric] == pytest.approx(stored, rel=1e-12)
        top = outcome.top_costs(3)
        assert len(top) == 3 and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
        assert all("[" not in name and name not in ("metrics", "total") for name, _ in top)
        kmeans = sum(v for k, v in outcome.costs.items() if k.startswith("kmeans["))
        everything = dict(outcome.top_costs(100))
        assert everything["kmeans"] == pytest.approx(kmeans)
        assert everything["embed"] == stages["embed"]


def test_rerun_of_a_finished_sweep_does_no_model_work(
    reference: dict[str, Any], ckpt_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "copy.db"
    shutil.copy(reference["db"], db)
    calls = {"load": 0, "embed": 0}
    real_load, real_embed = sweep_checkpoint.load_model, sweep_checkpoint.extract_embeddings
    real_iter = sweep_checkpoint.iter_embeddings

    def counting_load(*a: Any, **k: Any) -> Any:
        calls["load"] += 1
        return real_load(*a, **k)

    def counting_embed(*a: Any, **k: Any) -> Any:
        calls["embed"] += 1
        return real_embed(*a, **k)

    def counting_iter(*a: Any, **k: Any) -> Any:
        calls["embed"] += 1
        return real_iter(*a, **k)

    monkeypatch.setattr(sweep_checkpoint, "load_model", counting_load)
    monkeypatch.setattr(sweep_checkpoint, "extract_embeddings", counting_embed)
    monkeypatch.setattr(sweep_checkpoint, "iter_embeddings", counting_iter)
    summary = run_sweep(config(ckpt_root, db))
    assert calls == {"load": 0, "embed": 0}
    assert (summary.n_skipped, summary.n_loaded, summary.n_values) == (4, 0, 0)
    with ResultStore(db) as store:
        assert store.tidy_rows() == reference["rows"]


def test_only_missing_definitions_are_computed(
    reference: dict[str, Any], ckpt_root: Path, tmp_path: Path
) -> None:
    db = tmp_path / "partial.db"
    first = run_sweep(config(ckpt_root, db, metrics=["rankme", "linear_probe"]))
    assert first.n_values == 4 * 2 * 2
    with ResultStore(db) as store:
        before = key_values(store.tidy_rows())
    full = run_sweep(config(ckpt_root, db))
    assert full.n_loaded == 4 and full.n_failed == 0
    assert full.n_values == 4 * 2 * (len(DEFAULT_WITH_LABELS) - 2)
    with ResultStore(db) as store:
        after = key_values(store.tidy_rows())
    assert {k: after[k] for k in before} == before
    assert same_values(after, key_values(reference["rows"]))


def test_metric_errors_keep_the_other_values_and_are_retried(
    ckpt_root: Path, tmp_path: Path
) -> None:
    db = tmp_path / "errors.db"
    ckpts = [str(ckpt_root / "runs/alpha/epoch_*.pt")]
    metrics = ["rankme", "silhouette", "linear_probe"]
    bad = config(
        ckpt_root, db, checkpoints=ckpts, metrics=metrics, params={"linear_probe": {"l2": -1.0}}
    )
    summary = run_sweep(bad)
    assert summary.n_failed == 2 and summary.exit_code == 2
    for o in summary.outcomes:
        assert o.status == "failed" and o.values_stored == 2 * 2
        assert "linear_probe" in (o.error or "") and o.path in (o.error or "")
    with ResultStore(db) as store:
        rows = store.tidy_rows()
        failures = store.failures()
    assert sorted({r["metric"] for r in rows}) == ["rankme", "silhouette"]
    assert len(failures) == 2 and all("l2" in f["error"] for f in failures)
    # With a valid l2 only the probe is computed; the point becomes ok.
    good = config(ckpt_root, db, checkpoints=ckpts, metrics=metrics)
    again = run_sweep(good)
    assert again.n_ok == 2 and again.n_values == 2 * 2 and again.exit_code == 0
    with ResultStore(db) as store:
        assert store.failures() == []
        assert len(store.tidy_rows(metric="linear_probe")) == 4


def test_labelled_fraction_probes_use_only_the_labelled_samples(
    ckpt_root: Path, tmp_path: Path
) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    db = tmp_path / "fraction.db"
    cfg = config(
        ckpt_root,
        db,
        checkpoints=[str(paths["alpha1"])],
        labelled_fraction=0.25,
        sample_size=1000,
    )
    summary = run_sweep(cfg)
    assert summary.n_ok == 1
    _, y = sm.digits_tensors()
    counts = np.bincount(y.numpy())
    n_lab = int(sum(max(1, round(0.25 * c)) for c in counts))  # stratified, per class
    with ResultStore(db) as store:
        rows = store.tidy_rows()
    import json

    for r in rows:
        spec = REGISTRY[r["metric"]]
        params = json.loads(r["definition"])["params"]
        if spec.label_based:
            assert r["n"] == min(1000, n_lab) and params["labelled_fraction"] == 0.25
        else:
            assert r["n"] == (1797 if spec.kind == "spectrum" else 1000)
            assert "labelled_fraction" not in params
    # The probe value is the one of the labelled rows alone.
    from sslwatch.offline.data import load_dataset

    rows_lab = np.flatnonzero(load_dataset("digits", labelled_fraction=0.25, seed=0).labelled_mask)
    assert rows_lab.size == n_lab
    z = plain_embeddings(paths["alpha1"])["backbone"].astype(np.float32)
    direct = evaluate(
        z[rows_lab],
        labels=y.numpy()[rows_lab],
        metrics=["linear_probe"],
        k=10,
        sample_size=1000,
        seed=0,
        params=PARAMS,
    )
    assert value_of(rows, paths["alpha1"], "backbone", "linear_probe") == pytest.approx(
        direct["linear_probe"], abs=1e-9
    )
    # The predicted definitions are exactly the stored ones.
    predicted = {
        (rep, d.digest()) for rep, d in expected_definitions(cfg, {"backbone": 32, "projector": 16})
    }
    assert predicted == {(r["representation"], r["digest"]) for r in rows}


def test_recalibrated_batchnorm_is_recorded_and_matches_a_hand_estimate(
    ckpt_root: Path, tmp_path: Path
) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    db = tmp_path / "bn.db"
    cfg = config(
        ckpt_root,
        db,
        checkpoints=[str(paths["alpha0"])],
        metrics=["rankme"],
        recalibrate_bn=True,
        bn_batches=3,
        batch_size=256,
    )
    assert run_sweep(cfg).n_ok == 1
    # Hand estimate: cumulative average of batch means / unbiased variances of the BN input
    # over 3 seeded batches of 256 (torch.randperm with the sweep seed 0).
    model = sm.TinyCNN()
    model.load_state_dict(torch.load(paths["alpha0"], weights_only=True))
    model.eval()
    x, _ = sm.digits_tensors()
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: 3 * 256]
    conv, bn = model.backbone[0], model.backbone[1]
    with torch.no_grad():
        stats = [conv(x[c]) for c in idx.split(256)]
        bn.running_mean.copy_(torch.stack([s.mean(dim=(0, 2, 3)) for s in stats]).mean(0))
        bn.running_var.copy_(
            torch.stack([s.transpose(0, 1).reshape(8, -1).var(dim=1) for s in stats]).mean(0)
        )
        b = model.backbone(x).double().numpy()
    with ResultStore(db) as store:
        rows = store.tidy_rows()
    import json

    assert all(json.loads(r["definition"])["params"]["bn_recalibrated"] is True for r in rows)
    assert all(json.loads(r["definition"])["params"]["bn_batches"] == 3 for r in rows)
    stored = value_of(rows, paths["alpha0"], "backbone", "rankme")
    assert stored == pytest.approx(numpy_rankme(b), rel=1e-4)
    plain = numpy_rankme(plain_embeddings(paths["alpha0"])["backbone"])
    assert abs(stored - plain) > 1e-3 * plain  # recalibration changed the embeddings


def test_views_metrics_record_views_and_augmentation(ckpt_root: Path, tmp_path: Path) -> None:
    paths = sm.make_checkpoints(ckpt_root)
    db = tmp_path / "views.db"
    cfg = config(
        ckpt_root,
        db,
        checkpoints=[str(paths["alpha1"])],
        views=2,
        augment=sm.JITTER,
        metrics=["rankme", "cluster_agreement", "alignment", "uniformity", "lidar"],
        labels=False,
    )
    summary = run_sweep(cfg)
    assert summary.n_ok == 1, summary.outcomes
    with ResultStore(db) as store:
        rows = store.tidy_rows()
    import json

    assert len(rows) == 2 * 5
    for r in rows:
        params = json.loads(r["definition"])["params"]
        if r["metric"] == "rankme":
            assert "views" not in params
        else:
            assert params["views"] == 2 and params["augment"] == sm.JITTER
            assert r["n"] == 1797
        if r["metric"] == "cluster_agreement":
            assert params["source"] == "views"
        if r["metric"] == "alignment":
            assert r["value"] > 0  # two different augmented views are not identical
    predicted = {
        (rep, d.digest()) for rep, d in expected_definitions(cfg, {"backbone": 32, "projector": 16})
    }
    assert predicted == {(r["representation"], r["digest"]) for r in rows}
    assert run_sweep(cfg).n_skipped == 1


# --------------------------------------------------------------------------- units


def test_find_checkpoints_natural_order_and_shards_partition(tmp_path: Path) -> None:
    for e in (10, 2, 1):
        (tmp_path / "r").mkdir(exist_ok=True)
        (tmp_path / "r" / f"epoch_{e}.pt").write_bytes(b"x")
    (tmp_path / "r" / "sub").mkdir()
    found = find_checkpoints([str(tmp_path / "r" / "*")])
    assert [Path(p).name for p in found] == ["epoch_1.pt", "epoch_2.pt", "epoch_10.pt"]
    shards = [find_checkpoints([str(tmp_path / "r/*.pt")], shard=(i, 2)) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(found) and not set(shards[0]) & set(shards[1])
    with pytest.raises(SweepSetupError, match="matched no file"):
        find_checkpoints([str(tmp_path / "nothing_*.pt")])


def test_parsers_and_exit_code() -> None:
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "1-2", "/2", "a/b"):
        with pytest.raises(SweepSetupError, match=r"I/N|0 <= I < N"):
            parse_shard(bad)
    assert parse_layers("backbone=backbone, projector=projector.net") == {
        "backbone": "backbone",
        "projector": "projector.net",
    }
    assert parse_layers("encoder") == {"encoder": "encoder"}
    assert parse_layers(None) is None
    with pytest.raises(SweepSetupError, match="twice"):
        parse_layers("a=x,a=y")
    assert [exit_code(n) for n in (0, 1, 7, 100, 250)] == [0, 1, 7, 100, 100]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("k", 1, "k must be an integer >= 2"),
        ("k", 2.5, "k must be an integer >= 2"),
        ("sample_size", 1, "sample_size must be an integer >= 2 or None"),
        ("workers", 0, "workers must be an integer >= 1"),
        ("batch_size", True, "batch_size must be an integer >= 1"),
        ("bn_batches", 1.0, "bn_batches must be an integer >= 1"),
        ("views", 1, "views must be 0"),
        ("views", 2.0, "views must be 0"),
        ("shard", (2, 2), "shard must be"),
        ("shard", (0.0, 2), "shard must be"),
    ],
)
def test_integer_settings_are_checked(
    ckpt_root: Path, tmp_path: Path, option: str, value: Any, message: str
) -> None:
    with pytest.raises(SweepSetupError, match=re.escape(message)):
        config(ckpt_root, tmp_path / "x.db", **{option: value})
    accepted = config(ckpt_root, tmp_path / "x.db", k=np.int64(3), workers=np.int32(2))
    assert accepted.k == 3 and accepted.workers == 2


def test_setup_errors_are_one_line_and_name_the_problem(ckpt_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "setup.db"
    missing = tmp_path / "no" / "such.npz"
    with pytest.raises(SweepSetupError) as info:
        run_sweep(config(ckpt_root, db, data=f"npz:{missing}"))
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SweepSetupError, match="unknown metric"):
        run_sweep(config(ckpt_root, db, metrics=["rankme", "nope"]))
    with pytest.raises(SweepSetupError, match="no_such_module"):
        run_sweep(config(ckpt_root, db, model="no_such_module:factory"))
    with pytest.raises(SweepSetupError, match="views"):
        config(ckpt_root, db, views=2)
    assert not db.exists()  # nothing was created or evaluated
