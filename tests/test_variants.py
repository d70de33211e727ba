"""The metric-variant grid: declared, computed against independent oracles, judged, run."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import cdist
from scipy.special import digamma, gammaln
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, silhouette_score

from sslwatch import evaluate, kmeans
from sslwatch.core.registry import REGISTRY
from sslwatch.study.claims import judge
from sslwatch.study.variants import (
    GRID,
    VARIANT_VERDICTS,
    Variant,
    variant_rows,
    variant_values,
    write_variants,
)

# --------------------------------------------------------------------------- the grid


def test_the_grid_is_fixed_and_holds_the_declared_variants() -> None:
    reps = ("backbone", "projector")
    ks = ("C", "2C", "100")
    expected = (
        [
            f"silhouette/{d}/k={k}/{r}"
            for r, d, k in itertools.product(reps, ("euclidean", "cosine", "l2-euclidean"), ks)
        ]
        + [f"cluster_agreement/ami/k={k}/{r}" for r, k in itertools.product(reps, ks)]
        + [f"entropy/{e}/{r}" for r, e in itertools.product(reps, ("knn3", "knn10", "gaussian"))]
    )
    assert isinstance(GRID, tuple) and [v.name for v in GRID] == expected
    assert {v.name for v in GRID if v.default} == {
        "silhouette/euclidean/k=C/backbone",
        "cluster_agreement/ami/k=C/backbone",
        "entropy/knn3/backbone",
    }
    # stored apart from the registry's metrics, the representation in its own column
    for v in GRID:
        assert v.metric.startswith("variant/") and v.metric not in REGISTRY
        assert v.representation in v.name and v.representation not in v.metric
        assert v.how
    assert len({(v.metric, v.representation) for v in GRID}) == len(GRID)
    with pytest.raises(dataclasses.FrozenInstanceError):
        GRID[0].default = True  # type: ignore[misc]
    sil = next(v for v in GRID if v.name == "silhouette/cosine/k=2C/backbone")
    assert (sil.resolved_k(10), GRID[2].resolved_k(10)) == (20, 100)


# --------------------------------------------------------------------------- the values


def _blobs(n: int, d: int, classes: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * 6.0 + 2.0  # off the origin: cosine != l2
    x = centres[y] + rng.normal(size=(n, d))
    return torch.as_tensor(x, dtype=torch.float32), y


def _knn_entropy(x: np.ndarray, k: int) -> float:
    """Kozachenko-Leonenko (Kraskov et al. 2004, eq. 20) by brute force."""
    n, d = x.shape
    dist = cdist(x, x)
    np.fill_diagonal(dist, np.inf)
    r = np.sort(dist, axis=1)[:, k - 1]
    log_ball = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1.0)
    return float(digamma(n) - digamma(k) + log_ball + d * np.mean(np.log(r)))


def _by_name(values: dict[str, Any], name: str) -> float:
    return float(values[name].value)


def test_every_variant_against_an_independent_oracle() -> None:
    classes = 4
    zb, y = _blobs(240, 10, classes, seed=0)
    zp, _ = _blobs(240, 12, classes, seed=1)
    gen = torch.Generator().manual_seed(2)
    views = {
        rep: torch.stack(
            [z[:60] + 0.3 * torch.randn(60, z.shape[1], generator=gen) for _ in "ab"], 1
        )
        for rep, z in (("backbone", zb), ("projector", zp))
    }
    values = variant_values({"backbone": zb, "projector": zp}, labels=y, views=views, seed=0)
    assert set(values) == {v.name for v in GRID}

    for rep, z in (("backbone", zb), ("projector", zp)):
        x = z.double().numpy()
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        for k_rule, k in (("C", classes), ("2C", 2 * classes), ("100", 100)):
            raw = kmeans(z, k, n_init=3, seed=0).labels
            unit = kmeans(torch.as_tensor(xn, dtype=torch.float32), k, n_init=3, seed=0).labels
            assert len(np.unique(raw)) == k
            for setting, points, labels, metric in (
                ("euclidean", x, raw, "euclidean"),
                ("cosine", x, raw, "cosine"),
                ("l2-euclidean", xn, unit, "euclidean"),
            ):
                got = values[f"silhouette/{setting}/k={k_rule}/{rep}"]
                # the embeddings are float32, and so are their normalised rows
                tol = 1e-6 if setting == "l2-euclidean" else 1e-9
                assert got.value == pytest.approx(
                    silhouette_score(points, labels, metric=metric), abs=tol
                )
                assert got.definition.params["k"] == k
                assert got.definition.params["k_rule"] == k_rule
            v0, v1 = views[rep][:, 0], views[rep][:, 1]
            agree = values[f"cluster_agreement/ami/k={k_rule}/{rep}"]
            if k < 60:
                oracle = adjusted_mutual_info_score(
                    kmeans(v0, k, n_init=3, seed=0).labels, kmeans(v1, k, n_init=3, seed=0).labels
                )
                assert agree.value == pytest.approx(oracle, abs=1e-12) and agree.error is None
            else:  # 100 clusters of 60 views: undefined, not a trivial 1
                assert math.isnan(agree.value) and "k=100" in str(agree.error)
        # well separated blobs: scikit-learn's own k-means finds the same C clusters
        sk = KMeans(classes, n_init=3, random_state=0).fit_predict(x)
        assert adjusted_mutual_info_score(sk, kmeans(z, classes, n_init=3, seed=0).labels) == 1.0
        for k in (3, 10):
            got = _by_name(values, f"entropy/knn{k}/{rep}")
            assert got == pytest.approx(_knn_entropy(x, k), rel=1e-9, abs=1e-9)
        cov = np.cov(x, rowvar=False, ddof=1)
        gaussian = 0.5 * (x.shape[1] * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1])
        assert _by_name(values, f"entropy/gaussian/{rep}") == pytest.approx(gaussian, rel=1e-9)
    # the three distances are three different numbers
    trio = [_by_name(values, f"silhouette/{s}/k=2C/backbone") for s in ("euclidean", "cosine")]
    trio.append(_by_name(values, "silhouette/l2-euclidean/k=2C/backbone"))
    assert len({round(t, 6) for t in trio}) == 3


def test_default_variants_are_the_registry_metrics_on_the_same_sample() -> None:
    """What the study stores: evaluate() on a seeded sample of the rows, k = classes."""
    z, y = _blobs(300, 9, 5, seed=3)
    views = torch.stack([z[:80], z[:80] + 0.5 * torch.randn(80, 9)], 1)
    ref = evaluate(z, views=views, labels=y, sample_size=200, seed=7)
    values = variant_values(
        {"backbone": z},
        labels=y,
        views={"backbone": views},
        sample_size=200,
        seed=7,
        variants=[v for v in GRID if v.representation == "backbone"],
    )
    for metric, name in (
        ("silhouette", "silhouette/euclidean/k=C/backbone"),
        ("cluster_agreement", "cluster_agreement/ami/k=C/backbone"),
        ("entropy", "entropy/knn3/backbone"),
        ("entropy_gaussian", "entropy/gaussian/backbone"),
    ):
        assert values[name].value == pytest.approx(ref[metric], rel=1e-12, abs=1e-12), metric
        assert values[name].definition.n == ref.definitions[metric].n
    assert values["silhouette/euclidean/k=C/backbone"].definition.params["sample_size"] == 200
    assert set(values) == {v.name for v in GRID if v.representation == "backbone"}


# --------------------------------------------------------------------------- the verdicts


def _rows(run: str, metric: str, rep: str, values: np.ndarray) -> list[dict[str, Any]]:
    return [
        {
            "run": run,
            "metric": metric,
            "representation": rep,
            "epoch": e,
            "value": float(v),
            "digest": metric,
        }
        for e, v in enumerate(values, start=1)
    ]


def test_variant_rows_judge_each_variant_like_the_claims() -> None:
    epochs = 12
    lp = np.linspace(0.5, 0.9, epochs) + np.random.default_rng(0).normal(0, 0.01, epochs)
    noise = np.random.default_rng(1).normal(size=epochs)
    rows = _rows("progress/m", "linear_probe", "backbone", lp)
    rows += _rows("progress/m", "linear_probe", "projector", -lp)  # never the reference
    rows += _rows("variants/m", "variant/silhouette/euclidean/k=C", "backbone", lp**2)
    rows += _rows("variants/m", "variant/silhouette/euclidean/k=C", "projector", -lp)
    rows += _rows("variants/m", "variant/entropy/knn3", "backbone", noise)
    # epoch 0 (random initialisation) and later epochs stay out
    rows += _rows("variants/m", "variant/entropy/knn3", "projector", np.r_[lp, 5.0])
    rows.append({**rows[-1], "epoch": 0, "value": 99.0})
    table = {r["variant"]: r for r in variant_rows(rows, ["m"], epochs)}
    assert list(table) == [v.name for v in GRID]

    tracks = table["silhouette/euclidean/k=C/backbone"]
    assert tracks["verdict"] == "tracks" and tracks["spearman"] == pytest.approx(1.0)
    assert tracks["n"] == epochs and tracks["default"] and tracks["ci"][0] > 0
    against = table["silhouette/euclidean/k=C/projector"]
    assert against["verdict"] == "moves against" and against["spearman"] == pytest.approx(-1.0)
    noisy = table["entropy/knn3/backbone"]
    assert noisy["spearman"] == pytest.approx(stats.spearmanr(noise, lp).statistic)
    assert noisy["verdict"] == VARIANT_VERDICTS[judge(noisy["ci"], epochs, ">", 0.0)]
    assert noisy["ci"][0] < noisy["spearman"] < noisy["ci"][1]
    assert table["entropy/knn3/projector"]["n"] == epochs
    assert table["entropy/knn3/projector"]["spearman"] == pytest.approx(1.0)
    absent = table["silhouette/cosine/k=C/backbone"]
    assert absent["n"] == 0 and absent["verdict"] == "inconclusive"


def test_variant_rows_read_only_the_point_sample_asked_for() -> None:
    """A store holding the variants of two seeds: each table reads its own seed's values."""
    epochs = 8
    lp = np.linspace(0.5, 0.9, epochs)
    rows = _rows("progress/m", "linear_probe", "backbone", lp)
    for seed, values in ((0, lp), (1, -lp)):
        params = {"sample_size": 500, "seed": seed}
        for r in _rows("variants/m", "variant/silhouette/euclidean/k=C", "backbone", values):
            rows.append({**r, "digest": f"s{seed}", "definition": json.dumps({"params": params})})
    name = "silhouette/euclidean/k=C/backbone"
    for seed, verdict in ((0, "tracks"), (1, "moves against")):
        table = {r["variant"]: r for r in variant_rows(rows, ["m"], epochs, sample=(500, seed))}
        assert table[name]["verdict"] == verdict and table[name]["n"] == epochs
    other = {r["variant"]: r for r in variant_rows(rows, ["m"], epochs, sample=(None, 0))}
    assert other[name]["n"] == 0


def test_variants_files_are_strict_json_and_markdown(tmp_path: Path) -> None:
    rows = variant_rows([], ["a|b"], 5)
    files = write_variants(tmp_path, rows)
    assert [p.name for p in files] == ["variants.json", "variants.md"]
    text = files[0].read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert [g["name"] for g in doc["grid"]] == [v.name for v in GRID]
    assert {g["name"] for g in doc["grid"] if g["default"]} == {v.name for v in GRID if v.default}
    assert "number of classes" in doc["defaults"] and "90%" in doc["rule"]
    assert len(doc["results"]) == len(GRID)
    first = doc["results"][0]
    assert first["spearman"] is None and first["ci"] == [None, None] and first["n"] == 0
    md = files[1].read_text()
    table = [line for line in md.splitlines() if line.startswith("| silhouette/")]
    assert len(table) == 2 * 18  # the method's rows and the grid's
    assert md.count(" * |") >= 3 and "Defaults (*)" in md


# --------------------------------------------------------------------------- the study


@pytest.mark.slow
def test_reproduce_variants_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sslwatch reproduce --variants`` on a smoke study of one method (one study, shared
    by every check: training dominates the time)."""
    from typer.testing import CliRunner

    from sslwatch.cli import app
    from sslwatch.offline.store import ResultStore
    from sslwatch.study import variants
    from sslwatch.study.reproduce import PRESETS

    out = tmp_path / "study"
    args = ["reproduce", "--preset", "smoke", "--methods", "simclr", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--variants"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    text = result.output

    # the table comes before "done in"; the claims block stays last
    table = text.index("Metric variants: rank correlation with backbone LP accuracy")
    claims = text.index("The papers' claims, judged")
    assert table < text.index("done in") < claims
    assert "wrote " + str(out / "variants.json") in text
    block = text[table:claims]
    assert "silhouette/euclidean/k=C/backbone *" in block
    assert "entropy/gaussian/projector" in block and "[nan, nan]" in block  # markup off
    doc = json.loads((out / "variants.json").read_text())
    assert {r["method"] for r in doc["results"]} == {"simclr"}
    assert len(doc["results"]) == len(GRID)
    # one trained epoch: n is 1 (or 0 where undefined), so every verdict is inconclusive
    assert all(r["verdict"] == "inconclusive" and r["n"] <= 1 for r in doc["results"])

    # the defaults are the study's own values at the same checkpoint
    with ResultStore(out / "results.db") as store:
        rows = store.tidy_rows()
    stored = {(r["run"], r["representation"], r["metric"], r["epoch"]): r["value"] for r in rows}
    for metric, variant in (
        ("silhouette", "variant/silhouette/euclidean/k=C"),
        ("cluster_agreement", "variant/cluster_agreement/ami/k=C"),
        ("entropy", "variant/entropy/knn3"),
    ):
        assert stored[("variants/simclr", "backbone", variant, 1)] == pytest.approx(
            stored[("progress/simclr", "backbone", metric, 1)], rel=1e-12
        )
    # every variant once, at the trained epoch only (epoch 0 is never correlated)
    assert sorted(r["epoch"] for r in rows if r["run"] == "variants/simclr") == [1] * len(GRID)

    # a second call loads no checkpoint and stores nothing
    def embed_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored checkpoint was embedded again")

    monkeypatch.setattr(variants, "checkpoint_embeddings", embed_again)
    again = variants.run_variants(out, preset=PRESETS["smoke"], methods=["simclr"])
    assert again.computed == 0
    with ResultStore(out / "results.db") as store:
        assert len(store.tidy_rows()) == len(rows)
    assert [r["variant"] for r in again.rows] == [v.name for v in GRID]

    with pytest.raises(FileNotFoundError, match="run the study first"):
        variants.run_variants(out / "nowhere", preset=PRESETS["smoke"])
    with pytest.raises(ValueError, match="no method selected"):
        variants.run_variants(out, preset=PRESETS["smoke"], methods=["nope"])


def test_variant_is_a_frozen_declaration() -> None:
    v = Variant(
        name="entropy/knn3/backbone",
        family="entropy",
        representation="backbone",
        how="kNN",
        estimator="knn",
        k_neighbors=3,
    )
    assert v.metric == "variant/entropy/knn3" and v.to_dict()["default"] is False
    with pytest.raises(ValueError, match="does not cluster"):
        v.resolved_k(10)
