"""The claims table: its verdict rule, its intervals against scipy, and its files."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sslwatch.core.definitions import MetricDefinition
from sslwatch.offline.store import ResultStore
from sslwatch.study.claims import (
    CONFIDENCE,
    MIN_N,
    VERDICTS,
    Claim,
    claim_rows,
    claims_from_rows,
    claims_markdown,
    claims_text,
    judge,
    transfer_representation,
    write_claims,
)

EPOCHS = 20
KEYS = {"claim", "paper", "statistic", "value", "ci", "n", "verdict", "method"}


def add_points(
    store: ResultStore,
    run: str,
    method: str,
    values: Mapping[str, Sequence[float]],
    epochs: Sequence[int],
    *,
    architecture: str = "conv1d",
    representation: str = "backbone",
) -> None:
    """Store ``values[metric][i]`` on ``representation`` at checkpoint ``epochs[i]`` of
    ``run``."""
    run_id = store.ensure_run(run, method=method, architecture=architecture)
    for i, epoch in enumerate(epochs):
        point = store.ensure_point(run_id, path=f"/ckpt/{run}/epoch={epoch}.pt", epoch=epoch)
        rows = [
            (representation, MetricDefinition(metric=m, params={}, n=600, d=64), v[i])
            for m, v in values.items()
        ]
        store.record_results(point, rows)


def progress_values(
    seed: int, metric_of_lp: Mapping[str, Any], epochs: int = EPOCHS
) -> dict[str, list[float]]:
    """A progress run over epochs 0..E: LP rises with noise; each metric is a function of
    (lp, epoch, rng) given in ``metric_of_lp``."""
    rng = np.random.default_rng(seed)
    e = np.arange(epochs + 1, dtype=float)
    lp = 0.5 + 0.4 * (1 - np.exp(-e / 6)) + rng.normal(0, 0.01, e.size)
    out = {"linear_probe": lp.tolist()}
    for metric, fn in metric_of_lp.items():
        out[metric] = np.asarray(fn(lp, e, rng), dtype=float).tolist()
    return out


def tracking(lp: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Monotone in LP plus small noise."""
    return 2.0 * lp + rng.normal(0, 0.005, lp.size)


def anti_tracking(lp: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return -tracking(lp, e, rng)


def noise(lp: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 1, lp.size)


def rising(lp: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 0.1 + 0.02 * e + rng.normal(0, 0.005, e.size)


def falling(lp: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 5.0 - 0.1 * e + rng.normal(0, 0.02, e.size)


def by_key(claims: Sequence[Claim]) -> dict[tuple[str, str], Claim]:
    """Claims by (method, statistic's metric part), e.g. ("simclr", "Spearman(silhouette, LP)")."""
    return {(c.method, c.statistic.split(" ")[0]): c for c in claims}


def find(claims: Sequence[Claim], method: str, start: str) -> Claim:
    (hit,) = [c for c in claims if c.method == method and c.statistic.startswith(start)]
    return hit


# --------------------------------------------------------------------------- the rule


def scipy_interval(data: tuple[Any, ...], statistic: Any, *, paired: bool) -> Any:
    """scipy's percentile-bootstrap interval at the claims' confidence, 2,000 seeded
    resamples: the oracle of the claims' intervals."""
    return stats.bootstrap(
        data,
        statistic,
        paired=paired,
        vectorized=False,
        n_resamples=2000,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(1),
    ).confidence_interval


@pytest.mark.parametrize(
    ("ci", "n", "side", "bound", "expected"),
    [
        ((0.2, 0.8), 20, ">", 0.0, "holds"),
        ((-0.8, -0.2), 20, ">", 0.0, "does not hold"),
        ((-0.2, 0.4), 20, ">", 0.0, "inconclusive"),
        ((-0.8, -0.2), 20, "<", 0.0, "holds"),
        ((0.2, 0.8), 20, "<", 0.0, "does not hold"),
        ((0.1, 0.25), 20, "<", 0.3, "holds"),  # weakly positive: "does not track" holds
        ((-0.9, -0.5), 20, "<", 0.3, "holds"),  # anti-tracking also "does not track"
        ((0.2, 0.6), 20, "<", 0.3, "inconclusive"),
        ((0.0, 0.4), 20, ">", 0.0, "inconclusive"),  # touching the bound is not clear of it
        ((0.0, 0.0), 5, ">", 0.0, "inconclusive"),
        ((0.0, 0.0), 5, "<", 0.005, "holds"),
        ((0.2, 0.8), MIN_N - 1, ">", 0.0, "inconclusive"),
        ((math.nan, 0.8), 20, ">", 0.0, "inconclusive"),
        ((math.nan, math.nan), 0, ">", 0.0, "inconclusive"),
    ],
)
def test_verdict_rule(
    ci: tuple[float, float], n: int, side: Any, bound: float, expected: str
) -> None:
    assert judge(ci, n, side, bound) == expected


# --------------------------------------------------------------------------- synthetic stores


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """SimCLR: every metric built to support the paper; MoCo-v2: built against it;
    SimSiam: noise. Selection runs at epoch E where RankMe ranks runs like LP."""
    path = tmp_path_factory.mktemp("claims") / "results.db"
    epochs = list(range(EPOCHS + 1))
    with ResultStore(path) as store:
        add_points(
            store,
            "progress/simclr",
            "simclr",
            progress_values(
                0,
                {
                    "silhouette": tracking,
                    "cluster_agreement": tracking,
                    "label_ami": rising,
                    "entropy": falling,
                },
            ),
            epochs,
        )
        add_points(
            store,
            "progress/moco_v2",
            "moco_v2",
            progress_values(
                1,
                {
                    "silhouette": anti_tracking,
                    "cluster_agreement": anti_tracking,
                    "label_ami": falling,
                    "entropy": rising,
                },
            ),
            epochs,
        )
        add_points(
            store,
            "progress/simsiam",
            "simsiam",
            progress_values(
                2,
                {
                    "silhouette": noise,
                    "cluster_agreement": noise,
                    "label_ami": noise,
                    "entropy": noise,
                },
            ),
            epochs,
        )
        # selection: five methods, three runs each at epoch E; RankMe ranks like LP
        for k, method in enumerate(("simclr", "moco_v2", "simsiam", "byol", "vicreg")):
            for j, lp in enumerate((0.70, 0.80, 0.90)):
                lp = lp + 0.01 * k
                add_points(
                    store,
                    f"select/{method}/x={j}",
                    method,
                    {"linear_probe": [lp], "rankme": [100 * lp]},
                    [EPOCHS],
                )
        return store.tidy_rows()


def test_tracking_holds_anti_tracking_does_not_noise_is_inconclusive(
    tracking_store: list[dict[str, Any]],
) -> None:
    claims = claims_from_rows(tracking_store, EPOCHS)
    for metric in ("silhouette", "cluster_agreement"):
        assert find(claims, "simclr", f"Spearman({metric}, LP) >").verdict == "holds"
        assert find(claims, "moco_v2", f"Spearman({metric}, LP) >").verdict == "does not hold"
        noisy = find(claims, "simsiam", f"Spearman({metric}, LP) <")
        assert noisy.verdict == "inconclusive" and abs(noisy.value) < 0.3
        assert noisy.ci[0] < 0.3 < noisy.ci[1]
    assert find(claims, "simclr", "Spearman(label_ami, epoch)").verdict == "holds"
    assert find(claims, "moco_v2", "Spearman(label_ami, epoch)").verdict == "does not hold"
    assert find(claims, "simsiam", "Spearman(label_ami, epoch)").verdict == "inconclusive"
    assert find(claims, "simclr", "Spearman(entropy, epoch) <").verdict == "holds"
    assert find(claims, "moco_v2", "Spearman(entropy, epoch) <").verdict == "does not hold"
    # every verdict follows from the claim's own interval by the one rule
    for c in claims:
        assert c.verdict == judge(c.ci, c.n, c.side, c.bound)
        assert c.verdict in VERDICTS


def test_spearman_claim_against_scipy(tracking_store: list[dict[str, Any]]) -> None:
    claim = find(claims_from_rows(tracking_store, EPOCHS), "simsiam", "Spearman(silhouette, LP)")
    rows = [r for r in tracking_store if r["run"] == "progress/simsiam" and r["epoch"] >= 1]
    x = np.array([r["value"] for r in rows if r["metric"] == "silhouette"])
    y = np.array([r["value"] for r in rows if r["metric"] == "linear_probe"])
    assert claim.n == EPOCHS == x.size
    assert claim.value == pytest.approx(stats.spearmanr(x, y).statistic)
    ref = scipy_interval(
        (x, y),
        lambda a, b: stats.spearmanr(a, b).statistic,
        paired=True,
    )
    # two seeded Monte-Carlo estimates of the same percentile interval
    assert claim.ci[0] == pytest.approx(ref.low, abs=0.06)
    assert claim.ci[1] == pytest.approx(ref.high, abs=0.06)


def test_entropy_gets_stronger_late_claim_against_scipy(tmp_path: Path) -> None:
    half = EPOCHS // 2

    def early_noise_late_tracking(
        lp: np.ndarray, e: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return np.where(e <= half, rng.normal(0, 1, e.size), -5 * lp + rng.normal(0, 0.01, e.size))

    with ResultStore(tmp_path / "r.db") as store:
        values = progress_values(3, {"entropy": early_noise_late_tracking})
        add_points(store, "progress/simclr", "simclr", values, range(EPOCHS + 1))
        rows = store.tidy_rows()
    claim = find(claims_from_rows(rows, EPOCHS), "simclr", "|Spearman(entropy, LP)|")
    ent, lp = np.array(values["entropy"]), np.array(values["linear_probe"])
    early, late = slice(1, half + 1), slice(half + 1, EPOCHS + 1)
    rho_late = stats.spearmanr(ent[late], lp[late]).statistic
    rho_early = stats.spearmanr(ent[early], lp[early]).statistic
    assert claim.value == pytest.approx(abs(rho_late) - abs(rho_early))
    assert claim.n == EPOCHS and claim.verdict == "holds"
    ref = scipy_interval(
        (np.arange(half), np.arange(half, EPOCHS)),  # indices of each half, resampled apart
        lambda i, j: (
            abs(stats.spearmanr(ent[1:][j], lp[1:][j]).statistic)
            - abs(stats.spearmanr(ent[1:][i], lp[1:][i]).statistic)
        ),
        paired=False,
    )
    assert claim.ci[0] == pytest.approx(ref.low, abs=0.08)
    assert claim.ci[1] == pytest.approx(ref.high, abs=0.08)


def exact_percentile_interval(values: Sequence[float]) -> tuple[float, float]:
    """The bootstrap distribution of the mean enumerated exactly (all n^n resamples)."""
    v = np.asarray(values)
    means = np.array([v[list(i)].mean() for i in itertools.product(range(v.size), repeat=v.size)])
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def test_selection_claims_against_exact_bootstrap(tmp_path: Path) -> None:
    regrets = [0.0, 0.02, 0.015, 0.05, 0.03]
    with ResultStore(tmp_path / "r.db") as store:
        for k, regret in enumerate(regrets):
            method = f"m{k}"
            lps = [0.80, 0.80 - regret, 0.70]
            rankme = [10.0, 30.0, 20.0]  # RankMe picks the run of LP 0.80 - regret
            for j in range(3):
                add_points(
                    store,
                    f"select/{method}/x={j}",
                    method,
                    {"linear_probe": [lps[j]], "rankme": [rankme[j]]},
                    [EPOCHS],
                )
        rows = store.tidy_rows()
    within, beats, correlates = selection_claims(claims_from_rows(rows, EPOCHS))
    assert within.n == beats.n == correlates.n == 5
    assert within.value == pytest.approx(np.mean(regrets))
    lo, hi = exact_percentile_interval(regrets)
    assert within.ci[0] == pytest.approx(lo, abs=0.003) and within.ci[1] == pytest.approx(
        hi, abs=0.003
    )
    assert within.verdict == "does not hold"  # mean regret 2.3 points, interval above 0.5
    # a random pick loses 0.8 - mean(lps) per method
    gains = [0.80 - np.mean([0.80, 0.80 - r, 0.70]) - r for r in regrets]
    assert beats.value == pytest.approx(np.mean(gains))
    lo, hi = exact_percentile_interval(gains)
    assert beats.ci[0] == pytest.approx(lo, abs=0.003) and beats.ci[1] == pytest.approx(
        hi, abs=0.003
    )
    rhos = [stats.spearmanr(rankme, [0.80, 0.80 - r, 0.70]).statistic for r in regrets]
    rhos = [r for r in rhos if math.isfinite(r)]
    assert correlates.n == len(rhos) and correlates.value == pytest.approx(np.mean(rhos))


def selection_claims(claims: Sequence[Claim]) -> list[Claim]:
    """The three claims on RankMe's selection (regret, against random, correlation)."""
    return [c for c in claims if c.paper == "Garrido et al. 2023" and "LP on" not in c.statistic]


def test_selection_that_ranks_like_the_oracle_holds(tracking_store: list[dict[str, Any]]) -> None:
    within, beats, correlates = selection_claims(claims_from_rows(tracking_store, EPOCHS))
    assert within.statistic.startswith("mean over methods of the LP regret")
    assert (within.value, within.ci, within.n, within.verdict) == (0.0, (0.0, 0.0), 5, "holds")
    assert beats.verdict == "holds" and beats.value == pytest.approx(0.1)
    assert correlates.value == 1.0 and correlates.verdict == "holds"


def test_absent_data_are_inconclusive_with_n_zero(tracking_store: list[dict[str, Any]]) -> None:
    empty = claims_from_rows([], EPOCHS)
    assert empty and all(c.n == 0 and c.verdict == "inconclusive" for c in empty)
    assert all(math.isnan(c.value) for c in empty)
    assert {c.method for c in empty} == {"simclr", "moco_v2", "simsiam", "all"}
    # progress runs only (no selection sweep): a single candidate per method is no choice
    progress_only = [r for r in tracking_store if r["run"].startswith("progress/")]
    garrido = selection_claims(claims_from_rows(progress_only, EPOCHS))
    assert len(garrido) == 3 and all(c.n == 0 for c in garrido)
    # a method the study did not train keeps its rows
    simclr_only = [r for r in tracking_store if r["run"] == "progress/simclr"]
    moco = find(claims_from_rows(simclr_only, EPOCHS), "moco_v2", "Spearman(silhouette, LP)")
    assert moco.n == 0 and moco.verdict == "inconclusive"


def test_claims_are_reproducible(tracking_store: list[dict[str, Any]]) -> None:
    assert claims_from_rows(tracking_store, EPOCHS) == claims_from_rows(tracking_store, EPOCHS)


# --------------------------------------------------------------------------- architectures


def two_architectures(
    store: ResultStore, metric: str, conv: Any, mlp: Any, *, mlp_lp_shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SimCLR's progress run (conv1d) and ``arch/mlp/simclr`` (mlp), ``metric`` built by
    ``conv`` and ``mlp`` from each run's LP; returns (metric, LP) of both over epochs 1..E."""
    out = []
    for k, (run, arch, fn, shift) in enumerate(
        (
            ("progress/simclr", "conv1d", conv, 0.0),
            ("arch/mlp/simclr", "mlp", mlp, mlp_lp_shift),
        )
    ):
        values = progress_values(10 + k, {metric: fn})
        values["linear_probe"] = [v + shift for v in values["linear_probe"]]
        add_points(store, run, "simclr", values, range(EPOCHS + 1), architecture=arch)
        out += [np.array(values[metric][1:]), np.array(values["linear_probe"][1:])]
    return out[0], out[1], out[2], out[3]


def pooling_claim(rows: list[dict[str, Any]], metric: str) -> Claim:
    (hit,) = [
        c
        for c in claims_from_rows(rows, EPOCHS)
        if c.method == "simclr"
        and c.statistic.startswith(f"mean over architectures of |Spearman({metric}")
    ]
    return hit


def offset(shift: float) -> Any:
    def fn(lp: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return tracking(lp, e, rng) + shift

    return fn


def test_pooling_loss_against_scipy(tmp_path: Path) -> None:
    """A metric that tracks LP on each backbone on shifted scales: pooling loses it."""
    with ResultStore(tmp_path / "r.db") as store:
        x1, y1, x2, y2 = two_architectures(store, "silhouette", tracking, offset(0.3))
        rows = store.tidy_rows()
    claim = pooling_claim(rows, "silhouette")

    def loss(i: np.ndarray, j: np.ndarray) -> float:
        within = (
            abs(stats.spearmanr(x1[i], y1[i]).statistic)
            + abs(stats.spearmanr(x2[j], y2[j]).statistic)
        ) / 2
        pooled = stats.spearmanr(
            np.concatenate([x1[i], x2[j]]), np.concatenate([y1[i], y2[j]])
        ).statistic
        return float(within - abs(pooled))

    every = np.arange(EPOCHS)
    assert claim.n == 2 * EPOCHS
    assert claim.value == pytest.approx(loss(every, every))
    assert claim.value > 0.2
    ref = scipy_interval(
        (every, every),  # each architecture's checkpoints resampled on their own
        loss,
        paired=False,
    )
    assert claim.ci[0] == pytest.approx(ref.low, abs=0.06)
    assert claim.ci[1] == pytest.approx(ref.high, abs=0.06)
    assert claim.verdict == "holds"  # comparable only within one architecture


def test_cross_architecture_verdicts(tmp_path: Path) -> None:
    def scenario(name: str, metric: str, conv: Any, mlp: Any, shift: float = 0.0) -> Claim:
        with ResultStore(tmp_path / f"{name}.db") as store:
            two_architectures(store, metric, conv, mlp, mlp_lp_shift=shift)
            rows = store.tidy_rows()
        return pooling_claim(rows, metric)

    def noise_above(lp: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return noise(lp, e, rng) + 10.0

    # one scale on both backbones: pooling keeps the association
    entropy = scenario("same", "entropy", anti_tracking, anti_tracking)
    assert entropy.verdict == "holds" and abs(entropy.value) < 0.05
    assert entropy.side == "<" and entropy.bound == 0.3
    assert "mlp" in entropy.statistic and "conv1d" in entropy.statistic
    # noise within each backbone, but the better backbone sits higher: pooling *gains*
    # an association, so "only within one architecture" does not hold
    gaining = scenario("gain", "silhouette", noise, noise_above, shift=1.0)
    assert gaining.verdict == "does not hold" and gaining.ci[1] < 0
    # noise on both: nothing to lose or gain, the interval straddles 0
    noisy = scenario("noise", "cluster_agreement", noise, noise)
    assert noisy.verdict == "inconclusive" and noisy.ci[0] < 0 < noisy.ci[1]


def test_entropy_on_shifted_scales_is_not_comparable(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.db") as store:
        # the better backbone sits lower: pooled, the metric hardly ranks LP at all
        two_architectures(store, "entropy", tracking, offset(-0.4), mlp_lp_shift=0.2)
        rows = store.tidy_rows()
    claim = pooling_claim(rows, "entropy")
    assert claim.ci[0] > 0.3 and claim.verdict == "does not hold"


def test_one_architecture_gives_no_cross_architecture_verdict(
    tracking_store: list[dict[str, Any]],
) -> None:
    claims = [
        c
        for c in claims_from_rows(tracking_store, EPOCHS)
        if c.statistic.startswith("mean over architectures")
    ]
    assert [c.method for c in claims] == ["all", "all", "all"]
    assert all(c.n == 0 and c.verdict == "inconclusive" for c in claims)
    assert all("no method was trained on two backbones" in c.statistic for c in claims)


# --------------------------------------------------------------------------- transfer


def transfer_store(path: Path, digits_lp: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Five methods, three selection runs each at epoch E: RankMe 10, 20, 30 on the
    training data; LP on ``digits`` given per method (``backbone@digits``)."""
    with ResultStore(path) as store:
        for k, lps in enumerate(digits_lp):
            for j, lp in enumerate(lps):
                run = f"select/m{k}/x={j}"
                add_points(
                    store,
                    run,
                    f"m{k}",
                    {"rankme": [10.0 * (j + 1)], "linear_probe": [0.9]},
                    [EPOCHS],
                )
                add_points(
                    store,
                    run,
                    f"m{k}",
                    {"linear_probe": [lp]},
                    [EPOCHS],
                    representation=transfer_representation("digits"),
                )
        return store.tidy_rows()


def transfer_claim(rows: list[dict[str, Any]]) -> Claim:
    (hit,) = [c for c in claims_from_rows(rows, EPOCHS) if "LP on" in c.statistic]
    return hit


def test_transfer_claim_holds_does_not_hold_inconclusive(tmp_path: Path) -> None:
    assert transfer_representation("digits") == "backbone@digits"
    rising_lp = [[0.7, 0.8, 0.9]] * 5
    claim = transfer_claim(transfer_store(tmp_path / "a.db", rising_lp))
    assert (claim.value, claim.ci, claim.n, claim.verdict) == (1.0, (1.0, 1.0), 5, "holds")
    assert "LP on digits" in claim.statistic and claim.method == "all"
    falling_lp = [[0.9, 0.8, 0.7]] * 5
    claim = transfer_claim(transfer_store(tmp_path / "b.db", falling_lp))
    assert claim.value == -1.0 and claim.verdict == "does not hold"
    mixed = [[0.7, 0.8, 0.9], [0.9, 0.8, 0.7], [0.7, 0.9, 0.8], [0.8, 0.7, 0.9], [0.9, 0.7, 0.8]]
    claim = transfer_claim(transfer_store(tmp_path / "c.db", mixed))
    rhos = [stats.spearmanr([10, 20, 30], lps).statistic for lps in mixed]
    assert claim.value == pytest.approx(np.mean(rhos)) and claim.n == 5
    lo, hi = exact_percentile_interval(rhos)
    # the bootstrap means take steps of 0.1 here: a Monte-Carlo quantile may land one off
    assert claim.ci[0] == pytest.approx(lo, abs=0.1 + 1e-9)
    assert claim.ci[1] == pytest.approx(hi, abs=0.1 + 1e-9)
    assert claim.verdict == "inconclusive"


def test_transfer_claim_without_a_second_data_set(tracking_store: list[dict[str, Any]]) -> None:
    claim = transfer_claim(tracking_store)
    assert claim.n == 0 and claim.verdict == "inconclusive" and math.isnan(claim.value)
    assert "none related to its data is at hand offline" in claim.statistic


# --------------------------------------------------------------------------- output


def check_claims_json(path: Path) -> list[dict[str, Any]]:
    """claims.json is strict JSON with exactly the issue's keys and sane values."""
    data = json.loads(
        path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")
    )
    assert isinstance(data, list) and data
    for row in data:
        assert set(row) == KEYS
        assert row["verdict"] in VERDICTS
        assert row["paper"] in ("Xu et al. 2024", "Garrido et al. 2023")
        assert isinstance(row["n"], int) and row["n"] >= 0
        assert row["value"] is None or isinstance(row["value"], float)
        low, high = row["ci"]
        assert (low is None or high is None) or low <= high
        if row["verdict"] != "inconclusive":
            assert low is not None and high is not None and row["n"] >= MIN_N
    return data


def test_files_and_renderings(tmp_path: Path, tracking_store: list[dict[str, Any]]) -> None:
    claims = claims_from_rows(tracking_store, EPOCHS) + claims_from_rows([], EPOCHS)[:1]
    files = write_claims(tmp_path / "out", claims)
    assert [p.name for p in files] == ["claims.json", "claims.md"]
    data = check_claims_json(files[0])
    assert data == claim_rows(claims)
    assert data[-1]["value"] is None and data[-1]["ci"] == [None, None]
    md = files[1].read_text()
    assert md == claims_markdown(claims)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == len(claims) + 2 and all(
        len(re.findall(r"(?<!\\)\|", line)) == 9 for line in table
    )
    text = claims_text(claims, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    verdict_lines = [line for line in text.splitlines() if line.startswith(VERDICTS)]
    assert [line.split("  ")[0] for line in verdict_lines] == [c.verdict for c in claims]


# --------------------------------------------------------------------------- smoke study


@pytest.mark.slow
def test_smoke_study_gives_well_formed_claims(tmp_path: Path) -> None:
    from sslwatch.study.reproduce import PRESETS, run_study

    preset = replace(PRESETS["smoke"], max_samples=300, views_samples=32)
    result = run_study(preset, tmp_path, report=False)
    names = {p.name for p in result.files}
    assert {"claims.json", "claims.md"} <= names
    with ResultStore(result.db) as store:
        rows = store.tidy_rows()
    claims = result.claims
    assert claim_rows(claims) == claim_rows(claims_from_rows(rows, preset.epochs))
    data = check_claims_json(tmp_path / "claims.json")
    assert {row["method"] for row in data} >= {"simclr", "simsiam", "all"}
    # one trained epoch: no correlation over checkpoints rests on MIN_N points
    assert all(c.verdict == "inconclusive" for c in claims if c.method != "all")
    # two candidate runs for each of the five methods at epoch 1: real regrets, and no
    # correlation across runs (it needs three)
    within, beats, correlates = selection_claims(claims)
    assert within.statistic.startswith("mean over methods of the LP regret")
    assert within.n == beats.n == 5 and within.value >= 0.0 and math.isfinite(beats.value)
    assert correlates.n == 0
