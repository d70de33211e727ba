"""Tests for the label-based reference metrics (linear probe, weighted kNN, splits).

Oracles: scikit-learn's LogisticRegression / KNeighborsClassifier / StandardScaler, and
plain numpy / scipy written here; never the code's own earlier output.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sslwatch.metrics._lbfgs import SoftmaxObjective, minimise
from sslwatch.metrics.probes import (
    DEFAULT_L2_GRID,
    fit_linear_probe,
    knn_accuracy,
    linear_probe,
    stratified_split,
)

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Run these tests (ours and the sklearn oracles) on one thread.

    On a busy 2-core machine, OpenMP/BLAS thread pools that spin-wait make small fits
    50x slower; a single thread keeps every test within seconds.
    """
    previous = torch.get_num_threads()
    with threadpool_limits(1):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def _split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Split:
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    return xtr, xte, ytr, yte


def _objective(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """mean cross-entropy + (l2/2)||W||_F^2, written plainly in numpy (float64)."""
    logits = x @ w + b
    return float(
        np.mean(logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]) + 0.5 * l2 * np.sum(w * w)
    )


def _sk_logreg(x: np.ndarray, y: np.ndarray, **kw: float) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(**kw).fit(x, y)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def digits_split(digits: tuple[np.ndarray, np.ndarray]) -> Split:
    return _split(*digits)


@pytest.fixture(scope="module")
def mnist1d_split(mnist1d: tuple[np.ndarray, np.ndarray]) -> Split:
    return _split(*mnist1d)


# ------------------------------------------------------------------ linear probe vs sklearn


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_linear_probe_matches_sklearn_accuracy_digits(digits_split: Split, c: float) -> None:
    xtr, xte, ytr, yte = digits_split
    sc = StandardScaler().fit(xtr)
    ref = _sk_logreg(sc.transform(xtr), ytr, C=c, max_iter=5000, tol=1e-8)
    ref_acc = ref.score(sc.transform(xte), yte)
    ours = linear_probe(xtr, ytr, xte, yte, l2=1.0 / (c * len(ytr)))
    assert abs(ours - ref_acc) <= 0.01


def test_linear_probe_matches_sklearn_default_digits(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    sc = StandardScaler().fit(xtr)
    ref_acc = _sk_logreg(sc.transform(xtr), ytr).score(sc.transform(xte), yte)  # C=1
    assert abs(linear_probe(xtr, ytr, xte, yte, l2=1.0 / len(ytr)) - ref_acc) <= 0.01
    # The tuned probe (l2=None) must not be worse than sklearn's untuned default.
    assert linear_probe(xtr, ytr, xte, yte) >= ref_acc - 0.01


def test_linear_probe_matches_sklearn_mnist1d(mnist1d_split: Split) -> None:
    xtr, xte, ytr, yte = mnist1d_split
    sc = StandardScaler().fit(xtr)
    ref_acc = _sk_logreg(sc.transform(xtr), ytr, C=1.0, max_iter=5000, tol=1e-8).score(
        sc.transform(xte), yte
    )
    ours = linear_probe(xtr, ytr, xte, yte, l2=1.0 / len(ytr))
    assert abs(ours - ref_acc) <= 0.01
    tuned = linear_probe(xtr.astype(np.float32), ytr, xte.astype(np.float32), yte)
    assert tuned >= ref_acc - 0.01
    assert 0.2 < tuned < 0.6  # raw MNIST-1D is hard for a linear model (about 0.33)


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_fit_reaches_sklearn_objective(digits_split: Split, c: float) -> None:
    """Optimisation-quality oracle: our optimum is at least as low as sklearn's."""
    xtr, xte, ytr, _ = digits_split
    n = len(ytr)
    l2 = 1.0 / (c * n)
    sc = StandardScaler().fit(xtr)
    s_tr = sc.transform(xtr)
    tight = _sk_logreg(s_tr, ytr, C=c, max_iter=10000, tol=1e-10)
    default_tol = _sk_logreg(s_tr, ytr, C=c, max_iter=10000)
    fit = fit_linear_probe(xtr, ytr, l2=l2)
    w, b = fit.weight.numpy(), fit.bias.numpy()
    ours = _objective(w, b, s_tr, ytr, l2)
    assert ours == pytest.approx(fit.objective, abs=1e-12, rel=1e-10)
    assert ours <= _objective(tight.coef_.T, tight.intercept_, s_tr, ytr, l2) + 1e-9
    assert ours <= _objective(default_tol.coef_.T, default_tol.intercept_, s_tr, ytr, l2)
    proba = fit.predict_proba(xte).numpy()
    np.testing.assert_allclose(proba, tight.predict_proba(sc.transform(xte)), atol=2e-3)
    assert fit.converged
    assert fit.weight.dtype == torch.float64


def test_binary_objective_matches_sklearn_binary_parametrisation(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """For K=2 sklearn fits one weight vector w; ours penalises (l2/4)||w||^2, so
    sklearn's (1/(2 C N))||w||^2 matches at l2 = 2 / (C N)."""
    x, y = digits
    keep = (y == 3) | (y == 8)
    xtr, xte, ytr, _ = _split(x[keep], y[keep])
    c = 0.5
    sc = StandardScaler().fit(xtr)
    ref = _sk_logreg(sc.transform(xtr), ytr, C=c, max_iter=10000, tol=1e-10)
    fit = fit_linear_probe(xtr, ytr, l2=2.0 / (c * len(ytr)))
    np.testing.assert_allclose(
        fit.predict_proba(xte).numpy(), ref.predict_proba(sc.transform(xte)), atol=1e-4
    )


def test_float32_input_agrees_with_float64(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    l2 = 1e-3
    fit32 = fit_linear_probe(xtr.astype(np.float32), ytr, l2=l2)
    fit64 = fit_linear_probe(xtr, ytr, l2=l2)
    assert fit32.weight.dtype == torch.float32
    assert fit32.objective == pytest.approx(fit64.objective, rel=1e-5)
    acc32 = linear_probe(xtr.astype(np.float32), ytr, xte.astype(np.float32), yte, l2=l2)
    acc64 = linear_probe(xtr, ytr, xte, yte, l2=l2)
    assert abs(acc32 - acc64) <= 2 / len(yte)


def test_torch_and_half_inputs(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    ref = linear_probe(xtr.astype(np.float32), ytr, xte.astype(np.float32), yte, l2=1e-3)
    t = linear_probe(
        torch.from_numpy(xtr).float(), torch.from_numpy(ytr), torch.from_numpy(xte).float(),
        torch.from_numpy(yte), l2=1e-3,
    )  # fmt: skip
    assert t == ref
    # bf16 is upcast to float32; the rounding of the input moves a few predictions only.
    h = linear_probe(torch.from_numpy(xtr).bfloat16(), ytr, torch.from_numpy(xte), yte, l2=1e-3)
    assert abs(h - ref) <= 0.03


# ------------------------------------------------------------------ linear probe semantics


def test_constant_features_are_ignored(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    varying = xtr.std(axis=0) > 0
    base = linear_probe(xtr[:, varying], ytr, xte[:, varying], yte, l2=1e-3)
    # Add constant columns (one large, one zero); their standardised value is exactly 0.
    pad_tr = np.hstack([xtr[:, varying], np.full((len(xtr), 1), 1e6), np.zeros((len(xtr), 1))])
    pad_te = np.hstack([xte[:, varying], np.full((len(xte), 1), 3.0), np.ones((len(xte), 1))])
    fit = fit_linear_probe(pad_tr, ytr, l2=1e-3)
    assert torch.isfinite(fit.weight).all()
    assert torch.all(fit.weight[-2:] == 0)
    assert np.mean(fit.predict(pad_te) == yte) == base


def test_standardisation_matches_sklearn_scaler(digits_split: Split) -> None:
    xtr = digits_split[0]
    fit = fit_linear_probe(xtr, digits_split[2], l2=1e-2)
    sc = StandardScaler().fit(xtr)
    np.testing.assert_allclose(fit.mean.numpy(), sc.mean_, rtol=1e-12)
    expected_inv = np.where(sc.var_ > 0, 1.0 / np.sqrt(np.where(sc.var_ > 0, sc.var_, 1)), 0)
    np.testing.assert_allclose(fit.inv_std.numpy(), expected_inv, rtol=1e-10)


def test_unseen_test_labels_count_as_errors(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    fit = fit_linear_probe(xtr, ytr, l2=1e-3)
    hits = fit.predict(xte) == yte
    yte_new = yte.copy()
    yte_new[::3] = 99  # a class never seen in training
    expected = float(np.mean(hits & (yte_new != 99)))
    assert linear_probe(xtr, ytr, xte, yte_new, l2=1e-3) == pytest.approx(expected)


def test_string_labels_and_renaming(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    names = np.array([f"class-{c}" for c in range(10)])
    # Relabelling (a permutation of class names) must not change the accuracy.
    perm = np.random.default_rng(1).permutation(10)
    a = linear_probe(xtr, ytr, xte, yte, l2=1e-3)
    b = linear_probe(xtr, names[perm[ytr]], xte, names[perm[yte]], l2=1e-3)
    assert a == pytest.approx(b, abs=1 / len(yte))


def test_l2_selection_rule_and_determinism(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    fit = fit_linear_probe(xtr, ytr, seed=3)
    grid_vals = [v for v, _ in fit.val_accuracy]
    # The walk is strongest-first over a prefix of the grid (see test_l2_path_stopping).
    assert grid_vals == sorted(DEFAULT_L2_GRID, reverse=True)[: len(grid_vals)]
    best = max(acc for _, acc in fit.val_accuracy)
    # Ties go to the strongest regularisation among the best validation accuracies.
    assert fit.l2 == max(v for v, acc in fit.val_accuracy if acc == best)
    # Validation accuracy is measured on a 20% stratified hold-out of ytr.
    _, va = stratified_split(ytr, 0.2, seed=3)
    for _, acc in fit.val_accuracy:
        assert acc * len(va) == pytest.approx(round(acc * len(va)))
    # Deterministic given the seed: linear_probe refits exactly the same probe.
    a = linear_probe(xtr, ytr, xte, yte, seed=3)
    assert a == float(np.mean(fit.predict(xte) == yte))
    # The selected strength then behaves exactly like passing it explicitly (up to the
    # warm start of the refit, which only moves the optimum within the tolerance).
    assert abs(a - linear_probe(xtr, ytr, xte, yte, l2=fit.l2)) <= 2 / len(yte)


def _accuracy_vs_best_sklearn_c(split: Split, dtype: type) -> tuple[float, float]:
    """(ours with l2=None, scikit-learn's best test accuracy over C in {0.01, 0.1, 1})."""
    xtr, xte, ytr, yte = split
    sc = StandardScaler().fit(xtr)
    best = max(
        _sk_logreg(sc.transform(xtr), ytr, C=c, max_iter=1000).score(sc.transform(xte), yte)
        for c in (0.01, 0.1, 1.0)
    )
    return linear_probe(xtr.astype(dtype), ytr, xte.astype(dtype), yte), best


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_selected_probe_within_half_a_point_of_sklearn_best_c_digits(
    digits: tuple[np.ndarray, np.ndarray], seed: int, dtype: type
) -> None:
    """The L2 search (held-out rule, early-stopped path) costs at most 0.5 points against
    scikit-learn's best C, which is picked on the test set itself (an optimistic oracle)."""
    ours, best = _accuracy_vs_best_sklearn_c(_split(*digits, seed=seed), dtype)
    assert ours >= best - 0.005


def test_selected_probe_against_sklearn_best_c_mnist1d(mnist1d_split: Split) -> None:
    """MNIST-1D's raw signals give a linear model ~33% accuracy, where choosing C on the
    800 test rows (sklearn's best) is worth ~1-2 points of luck that no held-out
    selection can match: the exhaustive converged search we replaced scored 1.9 points
    below it here. The bound is that noise, not a tolerance on our solver."""
    ours, best = _accuracy_vs_best_sklearn_c(mnist1d_split, np.float32)
    assert ours >= best - 0.025


def test_l2_path_stopping(digits_split: Split, mnist1d_split: Split) -> None:
    """The walk down the grid ends once _PATH_PATIENCE values score below the best, no
    earlier."""
    from sslwatch.metrics.probes import _PATH_PATIENCE

    for xtr, _, ytr, _ in (digits_split, mnist1d_split):
        fit = fit_linear_probe(xtr, ytr)
        scores = [acc for _, acc in fit.val_accuracy]
        best_at = max(range(len(scores)), key=lambda i: (scores[i], -i))
        below_after_best = sum(acc < scores[best_at] for acc in scores[best_at + 1 :])
        if len(scores) < len(DEFAULT_L2_GRID):
            assert below_after_best == _PATH_PATIENCE and scores[-1] < scores[best_at]
        else:
            assert below_after_best <= _PATH_PATIENCE
        assert fit.l2 == fit.val_accuracy[best_at][0]
        assert fit.n_passes > fit.n_iter > 0


def test_softmax_objective_matches_autograd_oracle(rng: np.random.Generator) -> None:
    """Value against numpy's logsumexp, gradient against torch autograd of cross_entropy."""
    x = torch.from_numpy(rng.normal(size=(50, 7)))
    y = torch.from_numpy(rng.integers(0, 4, size=50))
    objective = SoftmaxObjective(x, y, 4, l2=0.3)
    theta = torch.from_numpy(rng.normal(size=objective.size))
    value, grad = objective(theta)
    w, b = theta[:28].view(4, 7).numpy(), theta[28:].numpy()
    assert value == pytest.approx(_objective(w.T, b, x.numpy(), y.numpy(), 0.3), rel=1e-12)
    t = theta.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ t[:28].view(4, 7).T + t[28:], y)
    (loss + 0.15 * (t[:28] ** 2).sum()).backward()
    assert t.grad is not None
    np.testing.assert_allclose(grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_minimise_reaches_the_minimiser_of_a_quadratic(rng: np.random.Generator) -> None:
    m = rng.normal(size=(30, 30))
    a = m @ m.T + 0.1 * np.eye(30)  # condition number ~ 1e4
    b = rng.normal(size=30)
    a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)

    def quadratic(v: torch.Tensor) -> tuple[float, torch.Tensor]:
        av = a_t @ v
        return float(0.5 * v @ av - b_t @ v), av - b_t

    res = minimise(quadratic, torch.zeros(30, dtype=torch.float64), max_iter=2000, tol=1e-7,
                   change_tol=0.0)  # fmt: skip
    assert res.converged and not res.stopped_early
    assert float(quadratic(res.theta)[1].abs().max()) <= 1e-7
    np.testing.assert_allclose(res.theta.numpy(), np.linalg.solve(a, b), rtol=1e-4, atol=1e-6)
    # The check callback ends a run early, and says so.
    early = minimise(quadratic, torch.zeros(30, dtype=torch.float64), max_iter=2000, tol=1e-7,
                     change_tol=0.0, check=lambda _: True, check_every=4)  # fmt: skip
    assert early.stopped_early and early.n_iter == 4 and not early.converged


def test_l2_ties_go_to_strongest_regularisation(rng: np.random.Generator) -> None:
    # Far-apart blobs: every grid value classifies the hold-out perfectly (a tie).
    x = np.vstack([rng.normal(-10, 1, size=(40, 3)), rng.normal(10, 1, size=(40, 3))])
    y = np.repeat([0, 1], 40)
    fit = fit_linear_probe(x, y, l2_grid=[1e-4, 1e-1, 1e-2])
    assert [acc for _, acc in fit.val_accuracy] == [1.0, 1.0, 1.0]
    assert fit.l2 == 1e-1


def test_custom_grid_with_single_value(digits_split: Split) -> None:
    xtr, _, ytr, _ = digits_split
    fit = fit_linear_probe(xtr, ytr, l2_grid=[1e-2])
    assert fit.l2 == 1e-2
    assert len(fit.val_accuracy) == 1


def test_tiny_training_set_without_validation_falls_back(rng: np.random.Generator) -> None:
    x = rng.normal(size=(4, 3))
    y = np.array([0, 0, 1, 1])  # 20% of 2 rounds to 0: no validation sample
    fit = fit_linear_probe(x, y)
    assert fit.l2 == pytest.approx(1 / 4)
    assert fit.val_accuracy == ()
    assert linear_probe(x, y, x, y) == 1.0


def test_separable_data_without_penalty_stays_finite(rng: np.random.Generator) -> None:
    x = np.vstack([rng.normal(-3, 1, size=(30, 2)), rng.normal(3, 1, size=(30, 2))])
    y = np.repeat([0, 1], 30)
    fit = fit_linear_probe(x, y, l2=0.0, max_iter=50)
    assert torch.isfinite(fit.weight).all()
    assert np.mean(fit.predict(x) == y) == 1.0


def test_collapsed_embeddings_predict_majority_class(rng: np.random.Generator) -> None:
    ytr = np.array([2] * 30 + [0] * 20 + [1] * 10)
    yte = rng.integers(0, 3, size=50)
    xtr = np.full((60, 5), 0.7)
    xte = rng.normal(size=(50, 5))
    expected = float(np.mean(yte == 2))
    assert linear_probe(xtr, ytr, xte, yte, l2=1e-3) == pytest.approx(expected)
    assert linear_probe(xtr, ytr, xte, yte) == pytest.approx(expected)
    assert knn_accuracy(xtr, ytr, xte, yte, k=60) == pytest.approx(expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_linear_probe_and_knn_on_gpu(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    cpu = linear_probe(xtr, ytr, xte, yte, l2=1e-3)
    g = torch.from_numpy(xtr).cuda()
    fit = fit_linear_probe(g, ytr, l2=1e-3)
    assert fit.weight.is_cuda
    assert abs(linear_probe(g, ytr, torch.from_numpy(xte).cuda(), yte, l2=1e-3) - cpu) <= 1e-9
    noisy = xtr + np.random.default_rng(0).normal(0, 0.01, xtr.shape)
    knn_cpu = knn_accuracy(noisy, ytr, xte, yte, k=10)
    assert knn_accuracy(torch.from_numpy(noisy).cuda(), ytr, xte, yte, k=10) == knn_cpu


# -------------------------------------------------------------------- linear probe errors


def test_linear_probe_bad_input(digits_split: Split) -> None:
    xtr, xte, ytr, yte = digits_split
    with pytest.raises(ValueError, match="train_y has length"):
        linear_probe(xtr, ytr[:-1], xte, yte)
    with pytest.raises(ValueError, match="test_y has length"):
        linear_probe(xtr, ytr, xte, yte[:-1])
    with pytest.raises(ValueError, match="single class"):
        linear_probe(xtr, np.zeros(len(xtr), dtype=int), xte, yte)
    with pytest.raises(ValueError, match="same D"):
        linear_probe(xtr, ytr, xte[:, :10], yte)
    bad = xtr.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(bad, ytr, xte, yte)
    with pytest.raises(ValueError, match="l2"):
        linear_probe(xtr, ytr, xte, yte, l2=-1.0)
    with pytest.raises(ValueError, match="val_fraction"):
        linear_probe(xtr, ytr, xte, yte, val_fraction=1.5)
    with pytest.raises(ValueError, match="l2_grid"):
        linear_probe(xtr, ytr, xte, yte, l2_grid=[])
    with pytest.raises(ValueError, match="max_iter"):
        linear_probe(xtr, ytr, xte, yte, max_iter=0)
    with pytest.raises(ValueError, match="1-D"):
        linear_probe(xtr, np.eye(10)[ytr], xte, yte)
    with pytest.raises(ValueError, match="same representation"):
        fit_linear_probe(xtr, ytr, l2=1e-2).predict(xte[:, :5])


# ------------------------------------------------------------------------------------ kNN


def _knn_numpy(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, k: int, t: float
) -> float:
    """Weighted cosine kNN, plainly: scores in log-space, ties -> lowest class."""
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    q = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    classes = np.unique(ytr)
    correct = 0
    for row, label in zip(q, yte, strict=True):
        sims = a @ row
        nn = np.argsort(-sims, kind="stable")[:k]
        log_scores = np.full(len(classes), -np.inf)
        for j in nn:
            c = np.searchsorted(classes, ytr[j])
            log_scores[c] = np.logaddexp(log_scores[c], sims[j] / t)
        correct += classes[int(np.argmax(log_scores))] == label
    return correct / len(yte)


@pytest.fixture(scope="module")
def noisy_digits(digits: tuple[np.ndarray, np.ndarray]) -> Split:
    """Digits plus a little noise, so cosine similarities are continuous (no exact ties)."""
    x, y = digits
    x = x + np.random.default_rng(0).normal(0, 0.05, x.shape)
    return _split(x, y, seed=1)


@pytest.mark.parametrize(("k", "t"), [(1, 0.07), (5, 0.07), (20, 0.07), (20, 0.5), (50, 1.0)])
def test_knn_matches_sklearn(noisy_digits: Split, k: int, t: float) -> None:
    xtr, xte, ytr, yte = noisy_digits
    ref = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", weights=lambda d: np.exp((1 - d) / t), algorithm="brute"
    ).fit(xtr, ytr)
    assert knn_accuracy(xtr, ytr, xte, yte, k=k, temperature=t) == pytest.approx(
        ref.score(xte, yte), abs=1e-12
    )


def test_knn_matches_sklearn_mnist1d(mnist1d_split: Split) -> None:
    xtr, xte, ytr, yte = mnist1d_split
    ref = KNeighborsClassifier(
        n_neighbors=20, metric="cosine", weights=lambda d: np.exp((1 - d) / 0.07), algorithm="brute"
    ).fit(xtr, ytr)
    assert knn_accuracy(xtr, ytr, xte, yte) == pytest.approx(ref.score(xte, yte), abs=1e-12)


@pytest.mark.parametrize(("k", "t"), [(3, 0.07), (20, 0.1), (10, 1e-3)])
def test_knn_matches_numpy_oracle(noisy_digits: Split, k: int, t: float) -> None:
    xtr, xte, ytr, yte = noisy_digits
    xte, yte = xte[:120], yte[:120]
    expected = _knn_numpy(xtr, ytr, xte, yte, k, t)
    assert knn_accuracy(xtr, ytr, xte, yte, k=k, temperature=t) == pytest.approx(expected)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_knn_chunking_is_invisible(noisy_digits: Split, chunk: int) -> None:
    xtr, xte, ytr, yte = noisy_digits
    whole = knn_accuracy(xtr, ytr, xte, yte, k=15)
    assert knn_accuracy(xtr, ytr, xte, yte, k=15, chunk_size=chunk) == whole


def test_knn_tie_goes_to_lowest_class() -> None:
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    test = np.array([[1.0, 1.0]])  # equally similar to both training rows
    assert knn_accuracy(train, [5, 2], test, [2], k=2) == 1.0
    assert knn_accuracy(train, [5, 2], test, [5], k=2) == 0.0
    assert knn_accuracy(train, ["b", "a"], test, ["a"], k=2) == 1.0


def test_knn_unseen_labels_and_float32(noisy_digits: Split) -> None:
    xtr, xte, ytr, yte = noisy_digits
    ref = knn_accuracy(xtr, ytr, xte, yte, k=10)
    f32 = knn_accuracy(xtr.astype(np.float32), ytr, xte.astype(np.float32), yte, k=10)
    assert abs(f32 - ref) <= 2 / len(yte)
    yte_new = np.where(yte == 4, 42, yte)
    hits_4 = _knn_numpy(xtr, ytr, xte[yte == 4], yte[yte == 4], 10, 0.07) * np.sum(yte == 4)
    assert knn_accuracy(xtr, ytr, xte, yte_new, k=10) == pytest.approx(
        ref - hits_4 / len(yte), abs=1e-12
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 12),
    scale_lo=st.floats(0.1, 10.0),
)
def test_knn_invariances(seed: int, k: int, scale_lo: float) -> None:
    """Accuracy is invariant to positive row scaling, rotations and class renaming."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 6))
    ytr, yte = rng.integers(0, 4, 60), rng.integers(0, 4, 25)
    xtr = centers[ytr] + rng.normal(0, 0.8, (60, 6))
    xte = centers[yte] + rng.normal(0, 0.8, (25, 6))
    base = knn_accuracy(xtr, ytr, xte, yte, k=k, temperature=0.2)
    assert base == pytest.approx(_knn_numpy(xtr, ytr, xte, yte, k, 0.2))
    scales = rng.uniform(scale_lo, 2 * scale_lo, size=(60, 1))
    assert knn_accuracy(xtr * scales, ytr, xte, yte, k=k, temperature=0.2) == base
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rotated = knn_accuracy(xtr @ q, ytr, xte @ q, yte, k=k, temperature=0.2)
    assert rotated == pytest.approx(base, abs=1 / 25 + 1e-12)
    names = np.array([30, 10, 20, 40])  # order-preserving renaming keeps the tie rule
    assert knn_accuracy(xtr, names[ytr], xte, names[yte], k=k, temperature=0.2) == base


def test_knn_bad_input(noisy_digits: Split) -> None:
    xtr, xte, ytr, yte = noisy_digits
    with pytest.raises(ValueError, match="exceeds the number of training samples"):
        knn_accuracy(xtr[:10], ytr[:10], xte, yte, k=11)
    with pytest.raises(ValueError, match="at least 1"):
        knn_accuracy(xtr, ytr, xte, yte, k=0)
    with pytest.raises(ValueError, match="positive integer"):
        knn_accuracy(xtr, ytr, xte, yte, k=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        knn_accuracy(xtr, ytr, xte, yte, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        knn_accuracy(xtr, ytr, xte, yte, chunk_size=0)
    with pytest.raises(ValueError, match="same D"):
        knn_accuracy(xtr, ytr, xte[:, :3], yte)
    with pytest.raises(ValueError, match="train_y has length"):
        knn_accuracy(xtr, ytr[:5], xte, yte)
    with pytest.raises(ValueError, match="Inf"):
        knn_accuracy(xtr, ytr, np.full_like(xte, np.inf), yte)


# ------------------------------------------------------------------------ stratified split


def test_stratified_split_partitions_and_stratifies(digits: tuple[np.ndarray, np.ndarray]) -> None:
    _, y = digits
    tr, te = stratified_split(y, test_fraction=0.25, seed=4)
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
    assert np.all(np.diff(tr) > 0)
    assert np.all(np.diff(te) > 0)
    for c in np.unique(y):
        n_c = int(np.sum(y == c))
        n_te = int(np.sum(y[te] == c))
        assert n_te == min(n_c - 1, int(np.floor(0.25 * n_c + 0.5)))
        assert abs(n_te / n_c - 0.25) <= 1 / n_c


def test_stratified_split_deterministic_per_seed(digits: tuple[np.ndarray, np.ndarray]) -> None:
    _, y = digits
    a = stratified_split(y, seed=7)
    b = stratified_split(torch.from_numpy(y), seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = stratified_split(y, seed=8)
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_small_classes_and_strings() -> None:
    labels = ["a"] * 10 + ["b"] + ["c"] * 2
    tr, te = stratified_split(labels, test_fraction=0.3, seed=0)
    arr = np.array(labels)
    assert 10 in tr  # the single "b" goes to train
    assert np.sum(arr[te] == "a") == 3
    assert np.sum(arr[te] == "c") == 1  # min(n_c - 1, round(0.6)) = 1
    assert len(tr) + len(te) == len(labels)


def test_stratified_split_bad_input() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split([0, 1, 0, 1], test_fraction=1.0)
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split([0, 1, 0, 1], test_fraction=0)
    with pytest.raises(ValueError, match="1-D"):
        stratified_split(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="empty"):
        stratified_split([])


def test_minimise_does_not_call_a_failed_line_search_converged() -> None:
    """An objective that is not finite anywhere but at the start leaves the search stuck
    far above the rounding floor: that is no convergence."""

    def cliff(v: torch.Tensor) -> tuple[float, torch.Tensor]:
        value = 1.0 if float(v.abs().max()) == 0.0 else math.inf
        return value, torch.ones_like(v)

    res = minimise(cliff, torch.zeros(3, dtype=torch.float64), max_iter=10, tol=1e-9,
                   change_tol=0.0)  # fmt: skip
    assert not res.converged and res.n_iter == 0
