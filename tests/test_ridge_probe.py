"""ridge_probe: the closed-form ridge classifier against scikit-learn's RidgeClassifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import RidgeClassifier

import sslwatch
from sslwatch.core.evaluate import evaluate
from sslwatch.core.registry import REGISTRY
from sslwatch.metrics.probes import (
    DEFAULT_RIDGE_L2_GRID,
    RidgeStatistics,
    fit_ridge_from_statistics,
    fit_ridge_probe,
    ridge_probe,
    stratified_split,
)


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Population-std standardisation by the training rows; constant columns -> 0."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    return [(a - mean) * inv for a in (train, *others)]


def sklearn_ridge(xtr: np.ndarray, ytr: np.ndarray, l2: float) -> RidgeClassifier:
    """scikit-learn's ridge on our standardisation: alpha = l2 * N (sum vs mean loss)."""
    return RidgeClassifier(alpha=l2 * xtr.shape[0], solver="svd").fit(xtr, ytr)


@pytest.fixture(scope="module")
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x[:1300], y[:1300], x[1300:], y[1300:]


def random_problem(seed: int, n: int = 400, d: int = 12, k: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.5, (k, d))
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(0.0, 1.0, (n, d)) * rng.uniform(0.1, 5.0, d) + 3.0
    return x[:300], y[:300], x[300:], y[300:]


@pytest.mark.parametrize("l2", [1e-4, 1e-2, 1.0])
def test_coefficients_and_predictions_match_sklearn_on_digits(digits_split, l2: float) -> None:  # type: ignore[no-untyped-def]
    xtr, ytr, xte, yte = digits_split
    fit = fit_ridge_probe(xtr, ytr, l2=l2)
    str_, ste = standardise(xtr, xte)
    ref = sklearn_ridge(str_, ytr, l2)
    # sklearn's {-1, +1} targets double the one-hot weights
    np.testing.assert_allclose(2 * fit.weight.numpy().T, ref.coef_, rtol=1e-6, atol=1e-9)
    pred = fit.predict(xte)
    scores = ref.decision_function(ste)
    top2 = np.sort(scores, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-9  # predictions agree except at exact ties
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(pred[clear], ref.predict(ste)[clear])
    assert ridge_probe(xtr, ytr, xte, yte, l2=l2) == pytest.approx(
        float((ref.predict(ste) == yte).mean()), abs=(~clear).sum() / len(yte) + 1e-12
    )


def test_binary_and_random_problem_match_sklearn() -> None:
    xtr, ytr, xte, _ = random_problem(1)
    for labels_tr in (ytr, ytr % 2):
        fit = fit_ridge_probe(torch.from_numpy(xtr), labels_tr, l2=0.05)
        str_, ste = standardise(xtr, xte)
        ref = sklearn_ridge(str_, labels_tr, 0.05)
        coef = 2 * fit.weight.numpy().T
        if np.unique(labels_tr).size == 2:  # binary: sklearn keeps the +1-vs-rest column
            coef = coef[1].reshape(ref.coef_.shape)
            np.testing.assert_allclose(fit.weight[:, 0], -fit.weight[:, 1], rtol=1e-12)
        np.testing.assert_allclose(coef, ref.coef_, rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(fit.predict(xte), ref.predict(ste))


def test_selection_follows_the_linear_probe_convention(digits_split) -> None:  # type: ignore[no-untyped-def]
    """l2=None: stratified 20% split (seeded), fit on the rest with the full std, best
    held-out accuracy (ties: stronger), refit on everything; oracle written with sklearn."""
    xtr, ytr, xte, yte = digits_split
    tr, va = stratified_split(ytr, test_fraction=0.2, seed=3)
    std = xtr.std(axis=0)
    inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    scores = []
    for l2 in sorted(DEFAULT_RIDGE_L2_GRID, reverse=True):
        ref = RidgeClassifier(alpha=l2 * len(tr), solver="svd").fit(xtr[tr] * inv, ytr[tr])
        scores.append((l2, float((ref.predict(xtr[va] * inv) == ytr[va]).mean())))
    best = max(scores, key=lambda s: s[1])[1]
    chosen = next(l2 for l2, acc in scores if acc == best)  # strongest among the best
    fit = fit_ridge_probe(xtr, ytr, seed=3)
    assert fit.l2 == chosen
    for (l2, acc), (ref_l2, ref_acc) in zip(fit.val_accuracy, scores, strict=True):
        assert l2 == ref_l2 and acc == pytest.approx(ref_acc, abs=1.5 / len(va))
    final = sklearn_ridge(*standardise(xtr)[:1], ytr, chosen)
    expected = float((final.predict(standardise(xtr, xte)[1]) == yte).mean())
    assert ridge_probe(xtr, ytr, xte, yte, seed=3) == pytest.approx(expected, abs=2 / len(yte))


def test_statistics_add_over_batches_and_solve_the_same_probe() -> None:
    xtr, ytr, _, _ = random_problem(2)
    whole = RidgeStatistics.of(xtr, ytr)
    parts = RidgeStatistics.of(xtr[:100], ytr[:100]) + RidgeStatistics.of(xtr[100:], ytr[100:])
    assert parts.n == whole.n and np.array_equal(parts.classes, whole.classes)
    torch.testing.assert_close(parts.outer, whole.outer, rtol=1e-12, atol=1e-9)
    a = fit_ridge_from_statistics(parts, l2=0.01)
    b = fit_ridge_probe(xtr, ytr, l2=0.01)
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-9, atol=1e-12)
    # a class seen in only one part: the union of classes, zero rows elsewhere
    odd = RidgeStatistics.of(xtr[:5], np.full(5, 9)) + whole
    assert odd.classes.tolist() == [0, 1, 2, 3, 9] and int(odd.class_counts[-1]) == 5


def test_string_labels_and_unseen_test_labels() -> None:
    xtr, ytr, xte, yte = random_problem(3)
    names = np.array(["a", "b", "c", "d"])
    base = ridge_probe(xtr, ytr, xte, yte, l2=0.1)
    assert ridge_probe(xtr, names[ytr], xte, names[yte], l2=0.1) == base
    assert ridge_probe(xtr, ytr, xte, np.full_like(yte, 7), l2=0.1) == 0.0


def test_collapsed_embeddings_predict_the_majority_class() -> None:
    x = np.ones((10, 3))
    y = np.array([0, 1, 1, 1, 0, 1, 2, 2, 1, 1])
    assert ridge_probe(x, y, x, y, l2=0.0) == pytest.approx(0.6)


def test_bad_input_raises_clear_errors() -> None:
    xtr, ytr, xte, yte = random_problem(4)
    with pytest.raises(ValueError, match="same representation"):
        ridge_probe(xtr, ytr, xte[:, :5], yte)
    with pytest.raises(ValueError, match="single class"):
        ridge_probe(xtr, np.zeros_like(ytr), xte, yte)
    bad = xtr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ridge_probe(bad, ytr, xte, yte)
    with pytest.raises(ValueError, match="length"):
        ridge_probe(xtr, ytr[:-1], xte, yte)
    with pytest.raises(ValueError, match="non-negative"):
        ridge_probe(xtr, ytr, xte, yte, l2=-1.0)
    with pytest.raises(ValueError, match="held-out"):
        fit_ridge_from_statistics(RidgeStatistics.of(xtr, ytr))


def test_registered_with_its_chosen_l2_in_the_definition() -> None:
    spec = REGISTRY["ridge_probe"]
    assert spec.kind == "labels" and spec.function is sslwatch.ridge_probe
    x, y = load_digits(return_X_y=True)
    res = evaluate(x[:600], labels=y[:600], metrics=["ridge_probe"], seed=1)
    definition = res.definitions["ridge_probe"]
    assert definition.params["l2_grid"] == DEFAULT_RIDGE_L2_GRID
    assert definition.outcome["l2"] in DEFAULT_RIDGE_L2_GRID
    tr, te = stratified_split(y[:600], test_fraction=0.2, seed=1)
    assert res["ridge_probe"] == ridge_probe(x[tr], y[tr], x[te], y[te], seed=1)
