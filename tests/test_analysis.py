"""sslwatch.analysis against scipy/numpy oracles, on stores built with ResultStore."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sslwatch.analysis import (
    IncomparableError,
    analyze,
    correlate,
    correlations,
    diagnose,
    observations,
    resampled_correlations,
    select_checkpoints,
    select_runs,
)
from sslwatch.core.definitions import MetricDefinition
from sslwatch.offline.store import ResultStore

D = 128
EPOCHS = (0, 5, 10, 15, 20, 25, 30)


def definition(metric: str, n: int = 2000, d: int = D, **params: Any) -> MetricDefinition:
    return MetricDefinition(metric=metric, params=params, n=n, d=d)


def add_run(
    store: ResultStore,
    name: str,
    values: dict[str, Sequence[float]],
    *,
    method: str = "simclr",
    architecture: str = "cnn1d",
    epochs: Sequence[int] = EPOCHS,
    n: dict[str, int] | None = None,
    representation: str = "backbone",
) -> None:
    """Store ``values[metric][i]`` at checkpoint ``epochs[i]`` of run ``name``."""
    run = store.ensure_run(name, method=method, architecture=architecture)
    for i, epoch in enumerate(epochs):
        point = store.ensure_point(run, path=f"/ckpt/{name}/epoch={epoch}.pt", epoch=epoch)
        rows = [
            (representation, definition(m, n=(n or {}).get(m, 2000)), v[i])
            for m, v in values.items()
        ]
        store.record_results(point, rows)


def curves(quality: float, seed: int, epochs: Sequence[int] = EPOCHS) -> dict[str, list[float]]:
    """Fake but realistic training curves: accuracy rises, RankMe follows it, entropy falls."""
    rng = np.random.default_rng(seed)
    e = np.asarray(epochs, dtype=float)
    acc = 0.79 + 0.14 * quality * (1 - np.exp(-e / 12)) + rng.normal(0, 0.004, e.size)
    rankme = 60 + 400 * (acc - 0.79) + rng.normal(0, 1.5, e.size)
    rankme[e == 0] = 110.0  # random features have a high rank
    return {
        "linear_probe": acc.tolist(),
        "rankme": rankme.tolist(),
        "silhouette": (0.05 + 0.8 * (acc - 0.79) + rng.normal(0, 0.01, e.size)).tolist(),
        "alignment": (1.2 - 4.0 * (acc - 0.79) + rng.normal(0, 0.02, e.size)).tolist(),
        "entropy": (50 - 0.3 * e + rng.normal(0, 0.5, e.size)).tolist(),
        "collapse_std": (0.08 + rng.normal(0, 0.001, e.size)).tolist(),
    }


@pytest.fixture()
def sweep(tmp_path: Path) -> list[dict[str, Any]]:
    with ResultStore(tmp_path / "r.db") as store:
        for i, (name, q) in enumerate([("simclr-a", 0.6), ("simclr-b", 1.0), ("simclr-c", 0.8)]):
            add_run(store, name, curves(q, seed=i))
        add_run(store, "simsiam-a", curves(0.9, seed=10), method="simsiam")
        return store.tidy_rows()


def series_of(rows: list[dict[str, Any]], run: str, metric: str, min_epoch: int = 1) -> np.ndarray:
    """Plain extraction from the tidy rows (independent of the analysis module)."""
    pts = sorted(
        (r["epoch"], r["value"])
        for r in rows
        if r["run"] == run and r["metric"] == metric and r["epoch"] >= min_epoch
    )
    return np.array([v for _, v in pts])


# --------------------------------------------------------------------------- statistics


def test_correlate_equals_scipy_with_ties(rng: np.random.Generator) -> None:
    x = np.round(rng.normal(size=30), 1)  # ties
    y = 0.5 * x + rng.normal(size=30)
    est = correlate(x, y, n_boot=200, seed=0)
    for name, fn in (
        ("spearman", stats.spearmanr),
        ("kendall", stats.kendalltau),
        ("pearson", stats.pearsonr),
    ):
        ref = fn(x, y)
        assert est.get(name).value == pytest.approx(ref.statistic, abs=1e-12)
        assert est.get(name).p_value == pytest.approx(ref.pvalue, rel=1e-9)
        e = est.get(name)
        assert e.low <= e.value <= e.high
    assert est.n == 30


def test_resampled_correlations_equal_scipy_on_the_repeated_data(
    rng: np.random.Generator,
) -> None:
    x = np.round(rng.normal(size=15), 1)  # ties in x
    y = x + rng.normal(size=15)
    idx = rng.integers(0, 15, size=(40, 15))  # bootstrap resamples: repeated pairs
    idx[3] = 7  # a resample of one point is undefined
    counts = np.stack([np.bincount(row, minlength=15) for row in idx])
    counts = np.vstack([counts, rng.integers(0, 4, size=(5, 15))])  # any multiplicities
    got = resampled_correlations(x, y, counts)
    for b, c in enumerate(counts):
        xb, yb = np.repeat(x, c), np.repeat(y, c)
        for name, fn in (
            ("spearman", stats.spearmanr),
            ("kendall", stats.kendalltau),
            ("pearson", stats.pearsonr),
        ):
            if b == 3:
                assert math.isnan(got[name][b])
                continue
            assert got[name][b] == pytest.approx(fn(xb, yb).statistic, abs=1e-10), (name, b)
    with pytest.raises(ValueError, match="non-negative"):
        resampled_correlations(x, y, -counts)


def test_bootstrap_interval_covers_at_nominal_rate() -> None:
    """Seeded simulation: 90% intervals for bivariate normal rho=0.6, n=40."""
    rho, n, reps = 0.6, 40, 200
    truth = {
        "pearson": rho,
        "spearman": 6 / math.pi * math.asin(rho / 2),  # population Spearman of a normal
        "kendall": 2 / math.pi * math.asin(rho),  # population Kendall of a normal
    }
    rng = np.random.default_rng(2024)
    chol = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
    hits = dict.fromkeys(truth, 0)
    widths = []
    for r in range(reps):
        xy = rng.normal(size=(n, 2)) @ chol.T
        est = correlate(xy[:, 0], xy[:, 1], n_boot=400, confidence=0.9, seed=r)
        for name, t in truth.items():
            e = est.get(name)
            hits[name] += e.low <= t <= e.high
        widths.append(est.pearson.high - est.pearson.low)
    for name in truth:
        coverage = hits[name] / reps
        # binomial sd at 0.9 with 200 replications is 0.021; allow about 3 sd
        assert abs(coverage - 0.9) < 0.065, (name, coverage)
    # the width matches the normal-theory width of a 90% Fisher-z interval
    se = 1 / math.sqrt(n - 3)
    z = stats.norm.ppf(0.95)
    fisher = math.tanh(math.atanh(rho) + z * se) - math.tanh(math.atanh(rho) - z * se)
    assert np.median(widths) == pytest.approx(fisher, rel=0.25)


def test_correlate_is_seeded_and_handles_degenerate_input(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=20), rng.normal(size=20)
    a = correlate(x, y, n_boot=100, seed=7)
    b = correlate(x, y, n_boot=100, seed=7)
    c = correlate(x, y, n_boot=100, seed=8)
    assert a == b
    assert a.spearman.low != c.spearman.low
    two = correlate([1.0, 2.0], [2.0, 1.0])
    assert math.isnan(two.spearman.value) and "need 3" in two.note
    flat = correlate([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert math.isnan(flat.pearson.value) and "constant metric" in flat.note
    with pytest.raises(ValueError, match="finite"):
        correlate([1.0, math.nan, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="confidence"):
        correlate(x, y, confidence=1.5)


# --------------------------------------------------------------------------- correlations


def test_run_correlations_equal_scipy_and_are_sign_aware(sweep: list[dict[str, Any]]) -> None:
    result = correlations(sweep, scopes=("run",), n_boot=50)
    by = {(c.group, c.metric): c for c in result}
    for run in ("simclr-a", "simclr-b", "simsiam-a"):
        acc = series_of(sweep, run, "linear_probe")
        for metric, sign in (("rankme", 1), ("alignment", -1), ("entropy", 1)):
            c = by[(run, metric)]
            x = series_of(sweep, run, metric)
            assert c.n == len(EPOCHS) - 1  # epoch 0 left out
            assert c.stats.spearman.value == pytest.approx(
                sign * stats.spearmanr(x, acc).statistic, abs=1e-12
            )
            assert c.stats.kendall.value == pytest.approx(
                sign * stats.kendalltau(x, acc).statistic, abs=1e-12
            )
            assert c.stats.pearson.value == pytest.approx(
                sign * stats.pearsonr(x, acc).statistic, abs=1e-12
            )
    assert by[("simclr-b", "alignment")].direction == "lower"
    assert by[("simclr-b", "alignment")].stats.spearman.value > 0.5  # flipped: trust > 0
    assert by[("simclr-b", "entropy")].direction == "none"
    assert not by[("simclr-b", "entropy")].oriented
    assert "linear_probe" not in {c.metric for c in result}


def test_epoch_zero_included_on_request(sweep: list[dict[str, Any]]) -> None:
    c = correlations(sweep, scopes=("run",), metrics=["rankme"], n_boot=0, min_epoch=None)
    first = next(x for x in c if x.group == "simclr-a")
    assert first.n == len(EPOCHS)
    x = series_of(sweep, "simclr-a", "rankme", min_epoch=0)
    y = series_of(sweep, "simclr-a", "linear_probe", min_epoch=0)
    assert first.stats.spearman.value == pytest.approx(stats.spearmanr(x, y).statistic)
    assert math.isnan(first.stats.spearman.low)  # n_boot=0: no interval


def test_pooled_and_final_correlations(sweep: list[dict[str, Any]]) -> None:
    result = correlations(sweep, metrics=["rankme"], scopes=("pooled", "final"), n_boot=100)
    pooled = next(c for c in result if c.scope == "pooled" and c.group == "simclr")
    runs = ("simclr-a", "simclr-b", "simclr-c")
    x = np.concatenate([series_of(sweep, r, "rankme") for r in runs])
    y = np.concatenate([series_of(sweep, r, "linear_probe") for r in runs])
    assert pooled.runs == runs
    assert pooled.n == x.size
    assert pooled.stats.spearman.value == pytest.approx(stats.spearmanr(x, y).statistic)
    assert pooled.stats.pearson.value == pytest.approx(stats.pearsonr(x, y).statistic)
    final = next(c for c in result if c.scope == "final" and c.group == "simclr")
    assert final.epoch == EPOCHS[-1]
    xf = [series_of(sweep, r, "rankme")[-1] for r in runs]
    yf = [series_of(sweep, r, "linear_probe")[-1] for r in runs]
    assert final.n == 3
    assert final.stats.kendall.value == pytest.approx(stats.kendalltau(xf, yf).statistic)


def test_missing_reference_is_explained(sweep: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="knn_accuracy"):
        correlations(sweep, reference="knn_accuracy")
    with pytest.raises(ValueError, match="no direction"):
        correlations(sweep, reference="entropy")


# --------------------------------------------------------------------------- comparability


def test_mixed_definitions_are_refused(tmp_path: Path) -> None:
    """RankMe at N=2,000 in one run and N=25,600 in another must not be compared."""
    with ResultStore(tmp_path / "mixed.db") as store:
        add_run(store, "lr-0.1", curves(0.7, 1))
        add_run(store, "lr-0.3", curves(0.9, 2), n={"rankme": 25600})
        rows = store.tidy_rows()
    with pytest.raises(IncomparableError, match="n: 2000 vs 25600"):
        select_runs(rows, "rankme")
    with pytest.raises(IncomparableError, match="n: 2000 vs 25600"):
        correlations(rows, metrics=["rankme"], scopes=("pooled",), n_boot=0)
    assert issubclass(IncomparableError, ValueError)
    # the same two runs under other metrics share definitions: fine
    assert len(select_runs(rows, "silhouette")) == 1
    # split: each definition analysed on its own, and a warning says why
    warns: list[Any] = []
    chosen = select_runs(rows, "rankme", on_incomparable="split", warnings_out=warns)
    assert sorted(s.selected_run for s in chosen) == ["lr-0.1", "lr-0.3"]
    assert len({s.digest for s in chosen}) == 2
    assert len(warns) == 1 and "n: 2000 vs 25600" in warns[0].message
    # within one run: two definitions at every checkpoint are two series, not one
    with ResultStore(tmp_path / "mixed.db") as store:
        run = store.ensure_run("lr-0.1")
        point = store.ensure_point(run, path="/ckpt/lr-0.1/epoch=30.pt")
        store.record_results(point, [("backbone", definition("rankme", n=25600), 70.0)])
        rows = store.tidy_rows()
    with pytest.raises(IncomparableError, match=r"run lr-0\.1"):
        select_checkpoints(rows, "rankme")


def test_clustering_metrics_compare_within_one_architecture(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "arch.db") as store:
        add_run(store, "cnn-a", curves(0.7, 1), architecture="cnn1d")
        add_run(store, "cnn-b", curves(0.9, 2), architecture="cnn1d")
        add_run(store, "mlp-a", curves(1.0, 3), architecture="mlp")
        rows = store.tidy_rows()
    with pytest.raises(IncomparableError, match=r"architecture-bound.*cnn1d.*vs mlp"):
        select_runs(rows, "silhouette")
    with pytest.raises(IncomparableError, match="architecture"):
        correlations(rows, metrics=["silhouette"], scopes=("pooled",), n_boot=0)
    # RankMe may be compared across architectures (same definition)
    (best,) = select_runs(rows, "rankme")
    assert best.architecture is None and len(best.ranking) == 3
    warns: list[Any] = []
    split = select_runs(rows, "silhouette", on_incomparable="split", warnings_out=warns)
    assert {(s.architecture, len(s.ranking)) for s in split} == {("cnn1d", 2), ("mlp", 1)}
    assert warns and "mlp" in warns[0].message
    by_arch = select_runs(rows, "silhouette", group_by="architecture")
    assert {s.group for s in by_arch} == {"cnn1d", "mlp"}


# --------------------------------------------------------------------------- selection


def test_regret_is_zero_when_metric_ranks_like_the_oracle(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with ResultStore(tmp_path / "oracle.db") as store:
        for name in ("r1", "r2", "r3", "r4"):
            acc = rng.uniform(0.7, 0.95, len(EPOCHS))
            add_run(store, name, {"linear_probe": acc, "rankme": 10 + 100 * acc**3})
        rows = store.tidy_rows()
    for sel in select_checkpoints(rows, "rankme"):
        assert sel.regret == 0.0
        assert sel.epoch == sel.oracle_epoch
    (run_sel,) = select_runs(rows, "rankme")
    assert run_sel.regret == 0.0 and run_sel.selected_run == run_sel.oracle_run
    # the oracle itself: selecting by the labels has no regret either
    assert all(s.regret == 0.0 for s in select_checkpoints(rows, "linear_probe"))


def test_regret_equals_numpy_oracle_for_a_misleading_metric(sweep: list[dict[str, Any]]) -> None:
    # entropy has no direction; use alignment (lower is better) and rankme
    for metric, better in (("rankme", np.argmax), ("alignment", np.argmin)):
        for sel in select_checkpoints(sweep, metric):
            x = series_of(sweep, sel.run, metric)
            acc = series_of(sweep, sel.run, "linear_probe")
            i = int(better(x))
            assert sel.epoch == EPOCHS[1:][i]
            assert sel.value == x[i]
            assert sel.regret == pytest.approx(acc.max() - acc[i], abs=1e-15)
            assert sel.regret >= 0
            assert sel.n_candidates == len(EPOCHS) - 1
    (sel,) = [s for s in select_runs(sweep, "rankme") if s.group == "simclr"]
    finals = {r: series_of(sweep, r, "rankme")[-1] for r in ("simclr-a", "simclr-b", "simclr-c")}
    accs = {r: series_of(sweep, r, "linear_probe")[-1] for r in finals}
    chosen = max(finals, key=finals.__getitem__)
    assert sel.selected_run == chosen and sel.epoch == EPOCHS[-1]
    assert sel.regret == pytest.approx(max(accs.values()) - accs[chosen])
    assert [r for r, _, _ in sel.ranking] == sorted(finals, key=lambda r: -finals[r])


def test_ties_go_to_earliest_checkpoint_and_smallest_run_name(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "ties.db") as store:
        flat = [5.0, 7.0, 9.0, 9.0, 8.0, 9.0, 1.0]
        add_run(store, "zeta", {"rankme": flat, "linear_probe": [0.5] * 7})
        add_run(store, "alpha", {"rankme": flat, "linear_probe": [0.5] * 7})
        rows = store.tidy_rows()
    for sel in select_checkpoints(rows, "rankme"):
        assert sel.epoch == EPOCHS[2]
    (best,) = select_runs(rows, "rankme", epoch=EPOCHS[3])
    assert best.selected_run == "alpha" and best.oracle_run == "alpha"


def test_selection_refuses_directionless_metric_and_unequal_budgets(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "budget.db") as store:
        add_run(store, "short", curves(0.7, 1, (5, 10, 15)), epochs=(5, 10, 15))
        add_run(store, "long", curves(0.9, 2, (20, 25, 30)), epochs=(20, 25, 30))
        add_run(store, "mid", curves(0.8, 3, (10, 15, 20)), epochs=(10, 15, 20))
        rows = store.tidy_rows()
    with pytest.raises(ValueError, match="no direction"):
        select_runs(rows, "entropy")
    with pytest.raises(ValueError, match="no direction"):
        select_checkpoints(rows, "entropy")
    with pytest.raises(IncomparableError, match="share no epoch"):
        select_runs(rows, "rankme")
    (at15,) = select_runs(rows, "rankme", epoch=15)
    assert at15.excluded == ("long",)
    assert {r for r, _, _ in at15.ranking} == {"short", "mid"}


# --------------------------------------------------------------------------- diagnosis


def test_diagnose_flags_falling_rankme_and_collapse(tmp_path: Path) -> None:
    n = len(EPOCHS)
    with ResultStore(tmp_path / "diag.db") as store:
        healthy = curves(0.9, 1)
        add_run(store, "healthy", healthy)
        falling = dict(healthy)
        falling["rankme"] = [110, 80, 85, 84, 70, 55, 30]
        add_run(store, "falling", falling)
        collapsed = dict(healthy)
        collapsed["collapse_std"] = [0.08, 0.05, 0.02, 0.01, 0.004, 0.002, 0.001]
        collapsed["rankme"] = [110, 40, 20, 5, 2, 1.2, 1.05]
        add_run(store, "collapsed", collapsed)
        add_run(store, "small-n", {"rankme": [50.0] * n}, n={"rankme": 64})
        rows = store.tidy_rows()
    found = {(f.run, f.code): f for f in diagnose(rows)}
    assert not [f for f in found if f[0] == "healthy"]
    fall = found[("falling", "falling")]
    assert fall.severity == "critical"  # 30 is below half of the best (85)
    assert "(epoch 15 to epoch 30)" in fall.message and fall.epoch == 30
    assert found[("collapsed", "collapse")].severity == "critical"
    assert found[("collapsed", "rank_collapse")].severity == "critical"
    assert found[("small-n", "n_below_d")].severity == "warning"
    mild = diagnose(rows, window=3, min_drop=0.9)
    assert ("falling", "falling") not in {(f.run, f.code) for f in mild}


# --------------------------------------------------------------------------- all together


def test_analyze_splits_and_warns_instead_of_raising(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "all.db") as store:
        add_run(store, "a", curves(0.7, 1))
        add_run(store, "b", curves(0.9, 2), n={"rankme": 25600})
        add_run(store, "c", curves(0.8, 3), architecture="mlp")
        rows = store.tidy_rows()
    result = analyze(rows, n_boot=50)
    assert result.reference == "linear_probe"
    assert any("n: 2000 vs 25600" in w.message for w in result.warnings)
    assert any("architecture-bound" in w.message for w in result.warnings)
    assert len({(w.metric, w.message) for w in result.warnings}) == len(result.warnings)
    assert {c.scope for c in result.correlations} == {"run", "pooled", "final"}
    assert {s.metric for s in result.run_selections} == {
        "alignment",
        "collapse_std",
        "rankme",
        "silhouette",
    }
    assert "entropy" not in {s.metric for s in result.checkpoint_selections}
    assert {d.metric for d in result.definitions} >= {"rankme", "linear_probe"}
    assert len([d for d in result.definitions if d.metric == "rankme"]) == 2
    no_labels = analyze([r for r in rows if r["metric"] != "linear_probe"], n_boot=0)
    assert no_labels.reference is None and no_labels.correlations == ()
    assert no_labels.notes and all(math.isnan(s.regret) for s in no_labels.run_selections)


def test_trust_rows_pair_each_pooled_correlation_with_its_final_and_runs(
    sweep: list[dict[str, Any]],
) -> None:
    """The trust table both front ends show, against the correlations it summarises."""
    from sslwatch.analysis import several_definitions, trust_rows

    a = analyze(sweep, n_boot=50)
    rows = trust_rows(a)
    pooled = [c for c in a.correlations if c.scope == "pooled"]
    assert [r.pooled for r in rows] == pooled
    methods = {name: method for name, method, _ in a.runs}
    for r in rows:
        c = r.pooled
        finals = [
            f for f in a.correlations
            if f.scope == "final" and (f.group, f.representation, f.metric, f.digest)
            == (c.group, c.representation, c.metric, c.digest)
        ]  # fmt: skip
        assert r.final is (finals[0] if finals else None)
        assert (r.final is None) == (c.group == "simsiam")  # one run: no final scope
        within = [
            w.stats.spearman.value for w in a.correlations
            if w.scope == "run" and methods[w.group] == c.group and w.metric == c.metric
            and w.representation == c.representation and math.isfinite(w.stats.spearman.value)
        ]  # fmt: skip
        assert r.run_spearman == tuple(within)
    assert {r.pooled.group for r in rows} == {"simclr", "simsiam"}
    assert all(len(r.run_spearman) == 3 for r in rows if r.pooled.group == "simclr")
    assert several_definitions(a) == set()


def test_observations_accept_a_dataframe(sweep: list[dict[str, Any]]) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(sweep)
    from_frame = observations(frame)
    assert from_frame == observations(sweep)
    with pytest.raises(ValueError, match="definition"):
        observations([{k: v for k, v in sweep[0].items() if k != "definition"}])


# --------------------------------------------------------------------------- verdict


def _verdict_store(path: Path, *, labels: bool = True) -> list[dict[str, Any]]:
    """Three runs whose metrics are built to track, oppose or ignore accuracy."""
    rng = np.random.default_rng(7)
    with ResultStore(path) as store:
        for name, quality in [("r-a", 0.5), ("r-b", 1.0), ("r-c", 0.75)]:
            e = np.asarray(EPOCHS, dtype=float)
            acc = 0.7 + 0.2 * quality * (1 - np.exp(-e / 10)) + rng.normal(0, 0.003, e.size)
            values = {
                "rankme": (100 + 500 * acc + rng.normal(0, 1, e.size)).tolist(),  # tracks
                "silhouette": (0.9 - acc + rng.normal(0, 0.005, e.size)).tolist(),  # opposes
                "stable_rank": rng.normal(5, 1, e.size).tolist(),  # noise
            }
            if labels:
                values["linear_probe"] = acc.tolist()
            add_run(store, name, values, epochs=EPOCHS)
        return store.tidy_rows()


def test_verdict_trusts_tracking_flags_opposing_and_doubts_noise(tmp_path: Path) -> None:
    a = analyze(_verdict_store(tmp_path / "v.db"))
    assert a.verdict is not None
    status = {t.metric: t.status for t in a.verdict.trust}
    assert status == {"rankme": "trusted", "silhouette": "against", "stable_rank": "inconclusive"}
    for t in a.verdict.trust:  # the status is the pooled interval's, as documented
        pooled = next(c for c in a.correlations if c.scope == "pooled" and c.metric == t.metric)
        assert (t.low, t.high, t.n) == (
            pooled.stats.spearman.low,
            pooled.stats.spearman.high,
            pooled.n,
        )
    (keep,) = a.verdict.keep
    assert keep.metric == "rankme" and keep.run == "r-b"  # the best run, by construction
    assert keep.run_regret == 0.0
    text = "\n".join(a.verdict.lines)
    assert "trust rankme" in text and "moves against linear_probe: silhouette" in text
    assert "inconclusive: stable_rank" in text and "keep run r-b" in text
    as_json = json.dumps(a.verdict.to_dict())  # strict JSON: no NaN
    assert "NaN" not in as_json


def test_verdict_without_labels_says_trust_cannot_be_judged(tmp_path: Path) -> None:
    a = analyze(_verdict_store(tmp_path / "v.db", labels=False))
    assert a.verdict is not None and a.verdict.trust == () and a.verdict.keep == ()
    assert "cannot be judged" in a.verdict.lines[0]


def test_verdict_marks_too_few_checkpoints_inconclusive(tmp_path: Path) -> None:
    rows = _verdict_store(tmp_path / "v.db")
    few = [r for r in rows if r["run"] == "r-a" and r["epoch"] in (0, 5, 10, 15)]
    a = analyze(few)
    assert a.verdict is not None
    assert {t.status for t in a.verdict.trust} == {"inconclusive"}
    assert all("only 3 checkpoints" in t.reason for t in a.verdict.trust)
    assert any("fewer than 5 checkpoints" in c for c in a.verdict.caveats)


def test_online_and_checkpoint_values_are_never_pooled(tmp_path: Path) -> None:
    """A store with both sources: the default analysis is the checkpoints', the online
    values are analysed apart, and no correlation or selection mixes them."""
    path = tmp_path / "both.db"
    _verdict_store(path)
    with ResultStore(path) as store:
        run = store.ensure_run("r-a")
        for step in range(1, 8):  # online rankme only, far off the checkpoint values
            point = store.ensure_point(run, source="online", step=step * 100, epoch=step)
            store.record_results(point, [("backbone", definition("rankme"), 1000.0 + step)])
        rows = store.tidy_rows()
    a = analyze(rows)
    checkpoint_only = analyze([r for r in rows if r["source"] == "checkpoint"])
    assert a.online is not None and a.online.online is None
    assert [c.stats for c in a.correlations] == [c.stats for c in checkpoint_only.correlations]
    assert a.n_values == len([r for r in rows if r["source"] == "checkpoint"])
    assert a.online.n_values == 7 and a.online.reference is None
    assert any("online values" in n and "apart" in n for n in a.notes)
    assert all(max(c.values) < 1000 for c in a.correlations if c.metric == "rankme")


def test_representation_without_reference_is_judged_against_the_one_with_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "proj.db"
    rows = _verdict_store(path)
    projector = [
        {**r, "representation": "projector"}
        for r in rows
        if r["metric"] == "rankme"  # projector metrics, no projector accuracy
    ]
    a = analyze(rows + projector)
    proj = [c for c in a.correlations if c.representation == "projector"]
    assert proj and {c.reference_representation for c in proj} == {"backbone"}
    backbone = {
        c.scope + c.group: c.stats.spearman.value
        for c in a.correlations
        if c.representation == "backbone" and c.metric == "rankme"
    }
    for c in proj:  # the same values against the same accuracy: the same correlation
        assert c.stats.spearman.value == pytest.approx(backbone[c.scope + c.group])
    assert a.verdict is not None
    assert any(
        "projector (judged against backbone linear_probe)" in line for line in a.verdict.lines
    )


def test_single_run_groups_are_a_note_not_a_selection(tmp_path: Path) -> None:
    rows = _verdict_store(tmp_path / "one.db")
    one_run = [r for r in rows if r["run"] == "r-b"]
    a = analyze(one_run)
    assert a.run_selections == ()
    assert any(n.startswith("one run only, so no run selection") for n in a.notes)
    assert a.verdict is not None
    (keep,) = a.verdict.keep
    assert keep.run == "r-b" and keep.n_runs == 1 and keep.checkpoint_epoch is not None
