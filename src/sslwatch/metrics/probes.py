"""Label-based reference metrics: the linear probe, the ridge probe and the weighted kNN
classifier.

These are what label-free metrics are judged against: the accuracy of a linear classifier
(linear evaluation protocol; Zhang, Isola & Efros 2016, Kolesnikov et al. 2019), of its
closed-form least-squares twin (ridge regression on one-hot targets, solvable from
streamed sufficient statistics; Rifkin & Klautau 2004) and of the
weighted k-nearest-neighbour classifier (Wu, Xiong, Yu & Lin, *Unsupervised Feature
Learning via Non-Parametric Instance Discrimination*, CVPR 2018; the protocol DINO, Caron
et al. 2021, reports) trained on frozen embeddings.

Both are pure functions: tensors (or numpy arrays) in, a Python float out. They compute on
the device of the training embeddings (GPU if given) and are deterministic given their
seed.

Label conventions shared by every function here: labels are any 1-D array of hashable
values (ints, strings, ...). Classes are the sorted distinct values of the *training*
labels (``np.unique``); "lowest class id" means the first of them in that order. A test
label that never occurs in training cannot be predicted and simply counts as an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.linalg
import torch

from sslwatch.metrics._lbfgs import LbfgsResult, SoftmaxObjective, minimise
from sslwatch.metrics._scaling import times_power_of_two, unit_rows, unit_scaled
from sslwatch.metrics._threads import torch_single_threaded
from sslwatch.metrics._validation import as_int, as_labels, as_matrix, is_int, is_real

__all__ = [
    "DEFAULT_L2_GRID",
    "DEFAULT_RIDGE_L2_GRID",
    "LinearProbeFit",
    "RidgeProbeFit",
    "RidgeStatistics",
    "fit_linear_probe",
    "fit_ridge_from_statistics",
    "fit_ridge_probe",
    "knn_accuracy",
    "linear_probe",
    "ridge_probe",
    "select_l2",
    "stratified_split",
]

#: L2 strengths searched when ``l2=None`` (strongest first): 1, 0.1, ..., 1e-6. The
#: objective is a *mean* cross-entropy, so these values do not depend on N; scikit-learn's
#: ``LogisticRegression(C=C)`` on N samples corresponds to ``l2 = 1 / (C * N)``.
DEFAULT_L2_GRID: tuple[float, ...] = tuple(10.0**-e for e in range(7))

# Held-out stopping rule of the selection fits (l2=None): held-out accuracy is measured
# every _CHECK_EVERY iterations and a fit stops after _FIT_PATIENCE checks without a new
# best; the walk down the grid stops after _PATH_PATIENCE value(s) scoring below the best.
_CHECK_EVERY = 3
_FIT_PATIENCE = 2
_PATH_PATIENCE = 1
# Gradient tolerance of the refit after selection (scikit-learn's default ``tol``).
_REFIT_TOL = 1e-3

# Upper bound on the (chunk x N_train) similarity block of knn_accuracy, in elements.
_KNN_BLOCK_ELEMENTS = 1 << 25


# ----------------------------------------------------------------------------- splitting


def stratified_split(
    labels: Any, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of sample indices into a train part and a test part.

    Each class ``c`` with ``n_c`` samples sends ``min(n_c - 1, floor(test_fraction * n_c
    + 0.5))`` of them (chosen uniformly at random) to the test part and the rest to the
    train part, so every class keeps at least one training sample and a class with a
    single sample goes entirely to train. The proportions are therefore stratified up to
    per-class rounding, and small classes may have no test sample at all.

    Args:
        labels: 1-D array-like (numpy, torch or list) of class labels, one per sample.
        test_fraction: fraction of each class sent to the test part, in (0, 1).
        seed: seed of the ``numpy.random.default_rng`` that shuffles each class.

    Returns:
        ``(train_idx, test_idx)``: sorted, disjoint int64 index arrays whose union is
        ``0..N-1``. The same ``labels`` and ``seed`` always give the same split.

    Raises:
        ValueError: if ``labels`` is not 1-D, is empty, or ``test_fraction`` is not in
            (0, 1).
    """
    if not is_real(test_fraction):
        raise ValueError(
            f"test_fraction must be a number in (0, 1); got {type(test_fraction).__name__}."
        )
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be strictly between 0 and 1 (e.g. 0.2); got {test_fraction}."
        )
    n = _label_count(labels, "labels")
    if n == 0:
        raise ValueError("labels is empty; a split needs at least one labelled sample.")
    codes = as_labels(labels, n, name="labels")
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    test_parts: list[np.ndarray] = []
    for start, n_c in zip(starts.tolist(), counts.tolist(), strict=True):
        n_test = 0 if n_c < 2 else min(n_c - 1, math.floor(test_fraction * n_c + 0.5))
        if n_test > 0:
            members = rng.permutation(order[start : start + n_c])
            test_parts.append(members[:n_test])
    is_test = np.zeros(n, dtype=bool)
    if test_parts:
        is_test[np.concatenate(test_parts)] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


# -------------------------------------------------------------------------- linear probe


@dataclass(frozen=True, eq=False)
class LinearProbeFit:
    """A fitted multinomial logistic-regression probe (see :func:`fit_linear_probe`).

    The model is ``softmax(((z - mean) * inv_std) @ weight + bias)``; ``inv_std`` is 0 for
    features that are constant in the training set (they are ignored).

    Attributes:
        weight: (D, K) weights on standardised features.
        bias: (K,) unpenalised intercepts.
        mean: (D,) training-set feature means.
        inv_std: (D,) reciprocal training-set standard deviations (population std), 0 for
            constant features.
        classes: (K,) the sorted distinct training labels; column ``j`` predicts
            ``classes[j]``.
        l2: the L2 strength of the final fit.
        objective: the final value of the training objective (see :func:`fit_linear_probe`).
        n_iter: L-BFGS iterations of the final fit.
        converged: whether the final fit stopped on a tolerance rather than ``max_iter``.
        val_accuracy: ``((l2, validation accuracy), ...)`` for every grid value tried
            when the strength was selected on a held-out split, else empty.
        n_passes: passes over the training rows (objective and gradient evaluations)
            of every fit, selection included.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    inv_std: torch.Tensor
    classes: np.ndarray
    l2: float
    objective: float
    n_iter: int
    converged: bool
    val_accuracy: tuple[tuple[float, float], ...] = ()
    n_passes: int = 0

    def decision_function(self, z: Any) -> torch.Tensor:
        """Logits (N, K) for embeddings ``z`` (computed on the probe's device and dtype)."""
        x = as_matrix(z, name="z", min_rows=1).to(device=self.weight.device)
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"z has {x.shape[1]} features but the probe was fitted on "
                f"{self.weight.shape[0]}; pass embeddings from the same representation."
            )
        x = x.to(self.weight.dtype)
        return torch.addmm(self.bias, (x - self.mean) * self.inv_std, self.weight)

    def predict_proba(self, z: Any) -> torch.Tensor:
        """Class probabilities (N, K), columns ordered as :attr:`classes`."""
        return torch.softmax(self.decision_function(z), dim=1)

    def predict(self, z: Any) -> np.ndarray:
        """Predicted labels (values from :attr:`classes`); ties go to the lowest class."""
        idx = self.decision_function(z).argmax(dim=1).cpu().numpy()
        return self.classes[idx]

    def score(self, z: Any, labels: Any) -> float:
        """Accuracy on ``(z, labels)``; labels absent from training count as errors."""
        x = as_matrix(z, name="z", min_rows=1)
        return _accuracy(self.predict(x), _raw_labels(labels, x.shape[0], "labels"))


def fit_linear_probe(
    train_z: Any,
    train_y: Any,
    *,
    l2: float | None = None,
    seed: int = 0,
    l2_grid: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    max_iter: int = 500,
    tol: float | None = None,
) -> LinearProbeFit:
    """Fit a multinomial logistic-regression probe on standardised frozen embeddings.

    Features are standardised with the training set's mean and population standard
    deviation; features that are constant in the training set are set to 0. With
    ``x_i`` the standardised rows, ``y_i`` in ``0..K-1`` and ``K`` the number of training
    classes, the probe minimises

        J(W, b) = (1/N) * sum_i -log softmax(x_i @ W + b)[y_i]  +  (l2 / 2) * ||W||_F^2

    (bias unpenalised; all ``K`` weight columns are kept and penalised, which is exactly
    scikit-learn's multinomial ``LogisticRegression(C=1 / (l2 * N))``; for ``K = 2``
    scikit-learn switches to a single binary weight vector ``w = W[:, 1] - W[:, 0]``;
    at the optimum ``W[:, 0] = -W[:, 1]``, so the penalty is ``(l2 / 4) ||w||^2`` and the
    match is ``C = 2 / (l2 * N)``). ``J`` is strictly convex for ``l2 > 0``. It is
    minimised full-batch by L-BFGS (history 20, backtracking Armijo line search, the
    analytic gradient; :mod:`sslwatch.metrics._lbfgs`) on the input's device, in float64
    for float64 input and float32 otherwise, starting from zero, until the largest
    absolute gradient entry is at most ``tol`` (or the loss stops changing: in float32
    that is its rounding floor) or ``max_iter`` iterations have run.

    With ``l2=None`` the strength is selected on a warm-started path: a seeded
    :func:`stratified_split` holds out ``val_fraction`` of the training set and the
    values of ``l2_grid`` are fitted on the rest, strongest first, each starting from the
    previous solution. A selection fit stops on the *held-out rule*: its held-out accuracy
    is measured every 3 iterations and the fit ends after 2 checks without a new best
    (or on the tolerance); the walk down the grid ends at the first value scoring below
    the best so far (held-out accuracy against log L2 has one peak in practice, and
    weaker values only cost more passes past it). The value with the best
    held-out accuracy wins (ties go to the stronger regularisation) and the probe is
    refitted on the full training set from the winner's solution until max |gradient|
    <= 1e-3 (``tol`` when given; a tighter refit costs several times the passes and moves
    the test accuracy by about one test row).
    ``val_accuracy`` lists the values tried and ``n_passes`` every pass over the data.
    The selection standardises with the full training set's statistics (label-free, so
    nothing about validation labels leaks). If the held-out part is empty (tiny
    classes), ``l2 = 1 / N`` (scikit-learn's default ``C = 1``) is used.

    Degenerate input: fully collapsed embeddings (every feature constant) standardise to
    zeros, so ``W`` stays 0 and the bias learns the class log-frequencies: the probe
    predicts the most frequent training class (the lowest class id among equally frequent
    ones, up to rounding). With ``l2 = 0`` and separable data the optimum is at infinity;
    the fit then stops at ``max_iter`` with ``converged=False`` (finite weights).

    Args:
        train_z: (N, D) training embeddings (torch or numpy, any float dtype).
        train_y: (N,) training labels; at least two distinct classes.
        l2: L2 strength (>= 0), or ``None`` to select it on a held-out split.
        seed: seed of the held-out split (the fit itself has no randomness).
        l2_grid: candidate strengths for ``l2=None`` (default :data:`DEFAULT_L2_GRID`).
        val_fraction: held-out fraction for ``l2=None``, in (0, 1).
        max_iter: maximum L-BFGS iterations per fit.
        tol: gradient tolerance (max-abs) of the stopping rule; default 1e-7 for float64
            and 1e-6 for float32 computation (float32 usually stops earlier, when the loss
            stops changing at its rounding floor).

    Returns:
        The fitted :class:`LinearProbeFit`.

    Raises:
        ValueError: on bad embeddings or labels, fewer than two training classes, or
            invalid hyper-parameters.
    """
    x = as_matrix(train_z, name="train_z", min_rows=2)
    y_raw = _raw_labels(train_y, x.shape[0], "train_y")
    classes, codes_np = _training_classes(y_raw)
    max_iter = as_int(max_iter, "max_iter", hint=" (a positive integer)")
    _check_val_fraction(val_fraction)
    grid = _check_l2_grid(l2_grid)
    if l2 is not None:
        l2 = _check_l2(l2, "l2")
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    tol_value = _check_tol(tol, work_dtype)
    x = x.to(work_dtype)
    n_classes = int(classes.shape[0])

    mean, inv_std = _standardisation(x)
    y = torch.from_numpy(codes_np).to(x.device)
    if l2 is None:
        tr_idx, va_idx = stratified_split(codes_np, test_fraction=val_fraction, seed=seed)
        if va_idx.size == 0:
            l2 = 1.0 / x.shape[0]
    if l2 is not None:
        final = _fit((x - mean) * inv_std, y, n_classes, l2, None, max_iter, tol_value)
        return _make_fit(final, mean, inv_std, classes, l2, (), final.n_evals)

    # Standardise once, in (sub-train, validation) row order, so both parts are views and
    # the full refit reuses the same matrix (the mean objective ignores row order).
    perm = torch.from_numpy(np.concatenate([tr_idx, va_idx])).to(x.device)
    xs = (x.index_select(0, perm) - mean) * inv_std
    y = y.index_select(0, perm)
    n_tr = int(tr_idx.size)
    path = _l2_path(xs, y, n_tr, n_classes, grid, max_iter, tol_value)
    refit_tol = tol_value if tol is not None else _REFIT_TOL
    final = _fit(xs, y, n_classes, path.l2, path.theta, max_iter, refit_tol)
    return _make_fit(
        final, mean, inv_std, classes, path.l2, path.val_accuracy, path.passes + final.n_evals
    )


@dataclass(frozen=True, eq=False)
class _L2Path:
    """The outcome of :func:`_l2_path`: the selected strength and its solution."""

    l2: float
    theta: torch.Tensor | None
    val_accuracy: tuple[tuple[float, float], ...]
    passes: int


def _l2_path(
    xs: torch.Tensor,
    y: torch.Tensor,
    n_tr: int,
    n_classes: int,
    grid: tuple[float, ...],
    max_iter: int,
    tol: float,
) -> _L2Path:
    """Walk ``grid`` from the strongest value down, each fit on the first ``n_tr`` rows
    warm-started from the previous one and stopped by the held-out rule on the rest;
    the walk ends ``_PATH_PATIENCE`` values past the best held-out accuracy."""
    val_scores: list[tuple[float, float]] = []
    best_l2, best_acc, init = 0.0, -1.0, None
    best_theta: torch.Tensor | None = None
    passes, worse = 0, 0
    for value in sorted(grid, reverse=True):  # strongest first; warm-start the next
        rule = _HeldOutRule(
            SoftmaxObjective(xs[:n_tr], y[:n_tr], n_classes, value), xs[n_tr:], y[n_tr:]
        )
        res = _fit(xs[:n_tr], y[:n_tr], n_classes, value, init, max_iter, tol, rule)
        passes += res.n_evals
        init = res.theta
        acc = rule.accuracy(res.theta)
        val_scores.append((value, acc))
        if acc > best_acc:  # strict: ties keep the stronger regularisation
            best_l2, best_acc, best_theta, worse = value, acc, res.theta, 0
        elif acc < best_acc:
            worse += 1
            if worse >= _PATH_PATIENCE:  # past the peak: weaker values only cost more
                break
    return _L2Path(best_l2, best_theta, tuple(val_scores), passes)


def linear_probe(
    train_z: Any,
    train_y: Any,
    test_z: Any,
    test_y: Any,
    *,
    l2: float | None = None,
    seed: int = 0,
    l2_grid: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    max_iter: int = 500,
    tol: float | None = None,
) -> float:
    """Linear-probe accuracy: multinomial logistic regression on frozen embeddings.

    Fits the probe of :func:`fit_linear_probe` on ``(train_z, train_y)`` (objective
    ``mean cross-entropy + (l2/2) * ||W||_F^2`` on features standardised with the
    training statistics, bias unpenalised, L-BFGS on the input's device; ``l2=None``
    selects the strength by validation accuracy on a seeded stratified 20% split of the
    training set) and returns its accuracy on ``(test_z, test_y)``. This is the linear
    evaluation protocol of self-supervised learning (e.g. Kolesnikov, Zhai & Beyer,
    CVPR 2019; Chen et al., SimCLR, ICML 2020).

    Args:
        train_z: (N, D) training embeddings (torch or numpy, any float dtype).
        train_y: (N,) training labels; at least two distinct classes.
        test_z: (M, D) test embeddings; moved to ``train_z``'s device.
        test_y: (M,) test labels; labels absent from training count as errors.
        l2: L2 strength (>= 0), or ``None`` to select it (see :func:`fit_linear_probe`).
        seed: seed of the held-out split used when ``l2=None``.
        l2_grid, val_fraction, max_iter, tol: see :func:`fit_linear_probe`.

    Returns:
        The fraction of test samples whose label is predicted correctly, in [0, 1].

    Raises:
        ValueError: on bad embeddings or labels, a feature-count mismatch between train
            and test, fewer than two training classes, or invalid hyper-parameters.
    """
    x_tr, x_te = _train_test(train_z, test_z, test_y)
    fit = fit_linear_probe(
        x_tr,
        train_y,
        l2=l2,
        seed=seed,
        l2_grid=l2_grid,
        val_fraction=val_fraction,
        max_iter=max_iter,
        tol=tol,
    )
    return fit.score(x_te, test_y)


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    l2: float,
    init: torch.Tensor | None,
    max_iter: int,
    tol: float,
    check: Callable[[torch.Tensor], bool] | None = None,
) -> LbfgsResult:
    """Minimise mean CE + (l2/2)||W||^2 over theta = [W; b] with full-batch L-BFGS."""
    objective = SoftmaxObjective(x, y, n_classes, l2)
    theta = torch.zeros(objective.size, dtype=x.dtype, device=x.device) if init is None else init
    change_tol = 1e-12 if x.dtype == torch.float64 else 1e-9
    # On the CPU the products run in numpy's BLAS; torch's team would spin beside it.
    with torch_single_threaded() if x.device.type == "cpu" else nullcontext():
        return minimise(
            objective,
            theta,
            max_iter=max_iter,
            tol=tol,
            change_tol=change_tol,
            check=check,
            check_every=_CHECK_EVERY,
        )


class _HeldOutRule:
    """The selection fits' stopping rule: held-out accuracy stopped improving.

    Asked every ``_CHECK_EVERY`` iterations; says stop once the accuracy on the held-out
    rows has not exceeded its best for ``_FIT_PATIENCE`` consecutive checks.
    """

    def __init__(self, objective: SoftmaxObjective, x_val: torch.Tensor, y_val: torch.Tensor):
        self.objective, self.x_val, self.y_val = objective, x_val, y_val
        self.best, self.stale = -1.0, 0

    def accuracy(self, theta: torch.Tensor) -> float:
        pred = self.objective.logits(self.x_val, theta).argmax(dim=1)
        return float((pred == self.y_val).double().mean())

    def __call__(self, theta: torch.Tensor) -> bool:
        acc = self.accuracy(theta)
        if acc > self.best:
            self.best, self.stale = acc, 0
        else:
            self.stale += 1
        return self.stale >= _FIT_PATIENCE


def _make_fit(
    res: LbfgsResult,
    mean: torch.Tensor,
    inv_std: torch.Tensor,
    classes: np.ndarray,
    l2: float,
    val_scores: tuple[tuple[float, float], ...],
    n_passes: int,
) -> LinearProbeFit:
    k, d = int(classes.shape[0]), int(mean.shape[0])
    return LinearProbeFit(
        weight=res.theta[: k * d].view(k, d).T.contiguous(),
        bias=res.theta[k * d :].clone(),
        mean=mean,
        inv_std=inv_std,
        classes=classes,
        l2=float(l2),
        objective=res.objective,
        n_iter=res.n_iter,
        converged=res.converged,
        val_accuracy=val_scores,
        n_passes=n_passes,
    )


def _standardisation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and reciprocal population std per column; 0 for constant columns.

    The std is taken of x * 2^-e (max |entry| in [0.5, 1), exact) and scaled back, so its
    squares neither overflow nor underflow at any scale of x.
    """
    mean = x.mean(dim=0)
    scaled, exponent = unit_scaled(x)
    std = torch.ldexp(scaled.std(dim=0, correction=0), torch.tensor(exponent))
    constant = x.amax(dim=0) == x.amin(dim=0)
    inv_std = torch.where(constant | (std <= 0), torch.zeros_like(std), 1.0 / std.clamp_min(1e-300))
    inv_std = torch.where(torch.isfinite(inv_std), inv_std, torch.zeros_like(inv_std))
    return mean, inv_std


# --------------------------------------------------------------------------- ridge probe

#: L2 strengths searched by the ridge probe when ``l2=None`` (strongest first): 100, 10,
#: 1, ..., 1e-6. The objective is a *mean* squared error on standardised features, so the
#: values do not depend on N; scikit-learn's ``RidgeClassifier(alpha=a)`` on N training
#: rows corresponds to ``l2 = a / N``.
DEFAULT_RIDGE_L2_GRID: tuple[float, ...] = tuple(10.0**-e for e in range(-2, 7))

# Relative eigenvalue floor of the minimum-norm solution at l2 = 0 (singular covariance).
_RIDGE_PINV_RTOL = 1e-12


@dataclass(frozen=True, eq=False)
class RidgeStatistics:
    """Sufficient statistics of labelled rows for the ridge probe (all float64).

    With rows ``x_i`` (D,) and class indices ``y_i``: ``n`` rows, ``total = sum_i x_i``,
    ``outer = sum_i x_i x_i^T`` (D, D), ``class_sums[c] = sum_{y_i = c} x_i`` (C, D) and
    ``class_counts[c] = #{i: y_i = c}``; row ``c`` belongs to the label ``classes[c]``.
    They are sums, so statistics of disjoint row sets add (``a + b``), in any order and
    across processes; :func:`fit_ridge_from_statistics` solves the probe from them.

    Attributes:
        n: number of rows.
        total: (D,) sum of the rows.
        outer: (D, D) sum of outer products (symmetric).
        class_sums: (C, D) per-class sums of the rows.
        class_counts: (C,) int64 rows per class (0 for a class that has none).
        classes: (C,) sorted distinct labels the class rows stand for.
    """

    n: int
    total: torch.Tensor
    outer: torch.Tensor
    class_sums: torch.Tensor
    class_counts: torch.Tensor
    classes: np.ndarray

    @classmethod
    def of(cls, z: Any, labels: Any) -> RidgeStatistics:
        """The statistics of the rows ``z`` (N, D) with labels ``labels`` (N,)."""
        x = as_matrix(z, name="z", min_rows=1).to(torch.float64)
        raw = _raw_labels(labels, x.shape[0], "labels")
        classes, codes = np.unique(raw, return_inverse=True)
        index = torch.from_numpy(codes.reshape(-1).astype(np.int64)).to(x.device)
        n_classes = int(classes.shape[0])
        sums = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, device=x.device)
        sums.index_add_(0, index, x)
        return cls(
            n=int(x.shape[0]),
            total=x.sum(dim=0),
            outer=x.T @ x,
            class_sums=sums,
            class_counts=torch.bincount(index, minlength=n_classes),
            classes=classes,
        )

    @property
    def dim(self) -> int:
        """The feature dimension D."""
        return int(self.total.shape[0])

    def __add__(self, other: RidgeStatistics) -> RidgeStatistics:
        if not isinstance(other, RidgeStatistics):
            return NotImplemented
        if other.dim != self.dim:
            raise ValueError(
                f"cannot add ridge statistics of {self.dim} and {other.dim} features; both "
                "must come from the same representation."
            )
        classes = np.union1d(self.classes, other.classes)
        device = self.total.device
        sums = torch.zeros(classes.shape[0], self.dim, dtype=torch.float64, device=device)
        counts = torch.zeros(classes.shape[0], dtype=torch.int64, device=device)
        for part in (self, other):
            where = torch.from_numpy(np.searchsorted(classes, part.classes)).to(device)
            sums.index_add_(0, where, part.class_sums.to(device))
            counts.index_add_(0, where, part.class_counts.to(device))
        return RidgeStatistics(
            n=self.n + other.n,
            total=self.total + other.total.to(device),
            outer=self.outer + other.outer.to(device),
            class_sums=sums,
            class_counts=counts,
            classes=classes,
        )

    def standardisation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and reciprocal population std per feature (0 for constant features).

        From the moments: ``var_j = outer_jj / n - mean_j^2`` (float64; a variance below
        1e-12 of the feature's mean square counts as constant, rounding of that sum).
        """
        if self.n < 1:
            raise ValueError("ridge statistics of no rows have no mean or std.")
        mean = self.total / self.n
        square = torch.diagonal(self.outer) / self.n
        var = square - mean * mean
        constant = var <= 1e-12 * square.clamp_min(torch.finfo(torch.float64).tiny)
        inv_std = torch.where(constant, torch.zeros_like(var), var.clamp_min(1e-300).rsqrt())
        return mean, inv_std


@dataclass(frozen=True, eq=False)
class RidgeProbeFit:
    """A fitted ridge classifier (see :func:`fit_ridge_probe`).

    The scores are ``((z - mean) * inv_std) @ weight + bias``; the prediction is the
    class of the largest score (ties go to the lowest class).

    Attributes:
        weight: (D, K) float64 weights on standardised features.
        bias: (K,) unpenalised intercepts (the training class frequencies).
        mean: (D,) mean of the rows the probe was fitted on.
        inv_std: (D,) reciprocal feature std the features were standardised with
            (0 for constant features).
        classes: (K,) the training classes; column ``j`` predicts ``classes[j]``.
        l2: the L2 strength of the fit.
        val_accuracy: ``((l2, held-out accuracy), ...)`` for every grid value scored
            when the strength was selected on held-out rows, else empty.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    inv_std: torch.Tensor
    classes: np.ndarray
    l2: float
    val_accuracy: tuple[tuple[float, float], ...] = ()

    def decision_function(self, z: Any) -> torch.Tensor:
        """Scores (N, K) for embeddings ``z`` (float64, on the probe's device)."""
        x = _ridge_rows(z, self.weight)
        return torch.addmm(self.bias, (x - self.mean) * self.inv_std, self.weight)

    def predict(self, z: Any) -> np.ndarray:
        """Predicted labels (values from :attr:`classes`); ties go to the lowest class."""
        return self.classes[self.decision_function(z).argmax(dim=1).cpu().numpy()]

    def score(self, z: Any, labels: Any) -> float:
        """Accuracy on ``(z, labels)``; labels absent from training count as errors."""
        x = as_matrix(z, name="z", min_rows=1)
        return _accuracy(self.predict(x), _raw_labels(labels, x.shape[0], "labels"))


def _ridge_rows(z: Any, like: torch.Tensor) -> torch.Tensor:
    x = as_matrix(z, name="z", min_rows=1)
    if x.shape[1] != like.shape[0]:
        raise ValueError(
            f"z has {x.shape[1]} features but the probe was fitted on {like.shape[0]}; "
            "pass embeddings from the same representation."
        )
    return x.to(device=like.device, dtype=torch.float64)


class _RidgePath:
    """The ridge solution for any L2 from one eigendecomposition.

    With ``m``, ``p`` the fit rows' mean and class frequencies, ``s`` the standardising
    reciprocal stds, ``S = diag(s) (outer / n - m m^T) diag(s) = V diag(e) V^T`` and
    ``B = diag(s) (class_sums^T / n - m p^T)``, the weights are
    ``W(l2) = V diag(1 / (e + l2)) V^T B``: every L2 costs one (D, K) product.
    """

    def __init__(self, stats: RidgeStatistics, inv_std: torch.Tensor) -> None:
        present = (stats.class_counts > 0).cpu().numpy()
        if stats.n < 1 or int(present.sum()) < 2:
            found = stats.classes[present]
            raise ValueError(
                f"the ridge probe's training rows hold {int(present.sum())} class(es) "
                f"({', '.join(repr(c) for c in found[:5])}); a classifier needs at least "
                "two distinct classes in the training labels."
            )
        keep = torch.from_numpy(np.flatnonzero(present)).to(stats.total.device)
        n = float(stats.n)
        self.classes = stats.classes[present]
        self.mean = stats.total / n
        self.freq = stats.class_counts.index_select(0, keep).to(torch.float64) / n
        self.inv_std = inv_std.to(torch.float64)
        cov = stats.outer / n - torch.outer(self.mean, self.mean)
        cov = (cov + cov.T) / 2 * self.inv_std[:, None] * self.inv_std[None, :]
        cross = stats.class_sums.index_select(0, keep).T / n - torch.outer(self.mean, self.freq)
        self.eigenvalues, self.eigenvectors = _eigh(cov)
        self.projected = self.eigenvectors.T @ (cross * self.inv_std[:, None])  # V^T B

    def _filter(self, l2: float) -> torch.Tensor:
        """``1 / (e + l2)``; at ``l2 = 0`` the pseudo-inverse (tiny eigenvalues dropped)."""
        e = self.eigenvalues.clamp_min(0.0)
        shifted = e + l2
        floor = _RIDGE_PINV_RTOL * float(e.max().clamp_min(torch.finfo(torch.float64).tiny))
        return torch.where(shifted > floor, 1.0 / shifted.clamp_min(floor), torch.zeros_like(e))

    def fit(self, l2: float, val: tuple[tuple[float, float], ...] = ()) -> RidgeProbeFit:
        weight = self.eigenvectors @ (self._filter(l2)[:, None] * self.projected)
        return RidgeProbeFit(
            weight=weight,
            bias=self.freq.clone(),
            mean=self.mean,
            inv_std=self.inv_std,
            classes=self.classes,
            l2=float(l2),
            val_accuracy=val,
        )

    def accuracies(self, z: Any, labels: Any, grid: Sequence[float]) -> list[float]:
        """Accuracy on ``(z, labels)`` of the fit at each L2 of ``grid``."""
        x = _ridge_rows(z, self.mean)
        truth = _raw_labels(labels, x.shape[0], "labels")
        rotated = ((x - self.mean) * self.inv_std) @ self.eigenvectors
        out = []
        for value in grid:
            scores = torch.addmm(self.freq, rotated, self._filter(value)[:, None] * self.projected)
            out.append(_accuracy(self.classes[scores.argmax(dim=1).cpu().numpy()], truth))
        return out


def _eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of symmetric ``a``: on the CPU LAPACK's
    divide-and-conquer ``syevd`` through scipy (about 2x faster than torch's at D = 784
    here), elsewhere ``torch.linalg.eigh``."""
    if a.device.type != "cpu":
        return torch.linalg.eigh(a)
    w, v = scipy.linalg.eigh(a.numpy(), driver="evd", check_finite=False)
    return torch.from_numpy(w), torch.from_numpy(v)


def fit_ridge_from_statistics(
    stats: RidgeStatistics,
    *,
    l2: float | None = None,
    val_z: Any = None,
    val_y: Any = None,
    l2_grid: Sequence[float] | None = None,
    inv_std: torch.Tensor | None = None,
) -> RidgeProbeFit:
    """Solve the ridge probe of :func:`fit_ridge_probe` from sufficient statistics.

    Args:
        stats: the :class:`RidgeStatistics` of the fit rows.
        l2: L2 strength (>= 0), or ``None`` to pick it by accuracy on ``(val_z, val_y)``
            over ``l2_grid`` (ties go to the stronger value).
        val_z, val_y: held-out rows and labels for ``l2=None``.
        l2_grid: candidates for ``l2=None`` (default :data:`DEFAULT_RIDGE_L2_GRID`).
        inv_std: reciprocal feature stds to standardise with (default: ``stats``' own).

    Returns:
        The :class:`RidgeProbeFit`; with ``l2=None`` its ``val_accuracy`` lists every
        grid value's held-out accuracy.

    Raises:
        ValueError: fewer than two classes with rows, bad strengths, no held-out rows
            for ``l2=None``.
    """
    grid = _check_l2_grid(l2_grid if l2_grid is not None else DEFAULT_RIDGE_L2_GRID)
    if inv_std is None:
        inv_std = stats.standardisation()[1]
    path = _RidgePath(stats, inv_std)
    if l2 is not None:
        return path.fit(_check_l2(l2, "l2"))
    if val_z is None or val_y is None:
        raise ValueError("l2=None picks the strength on held-out rows; pass val_z and val_y.")
    chosen, scores = select_l2(grid, path.accuracies(val_z, val_y, grid))
    return path.fit(chosen, scores)


def select_l2(
    grid: Sequence[float], accuracies: Sequence[float]
) -> tuple[float, tuple[tuple[float, float], ...]]:
    """The strength with the best held-out accuracy, strongest first on ties.

    Returns ``(l2, ((l2, accuracy), ...))`` with the pairs ordered strongest first.
    """
    pairs = sorted(zip(grid, accuracies, strict=True), key=lambda pair: -pair[0])
    best_l2, best_acc = pairs[0]
    for value, acc in pairs[1:]:
        if acc > best_acc:  # strict: ties keep the stronger regularisation
            best_l2, best_acc = value, acc
    return float(best_l2), tuple((float(v), float(a)) for v, a in pairs)


def fit_ridge_probe(
    train_z: Any,
    train_y: Any,
    *,
    l2: float | None = None,
    seed: int = 0,
    l2_grid: Sequence[float] | None = None,
    val_fraction: float = 0.2,
) -> RidgeProbeFit:
    """Fit a closed-form ridge classifier on one-hot targets (regularised least squares).

    Features are standardised with the training rows' population std (constant features
    are ignored), as in :func:`fit_linear_probe`, so the L2 grid is scale-free. With
    ``x_i`` the standardised rows, ``Y`` the (N, K) one-hot targets of the ``K`` training
    classes, the probe minimises

        J(W, b) = (1/N) * sum_i ||Y_i - b - W^T x_i||^2  +  l2 * ||W||_F^2

    (intercept ``b`` unpenalised), whose solution is ``b = `` the class frequencies (on
    centred features) and ``W = (Sigma + l2 I)^{-1} Sigma_xy`` with ``Sigma`` the
    covariance of the standardised features and ``Sigma_xy`` their cross-covariance with
    ``Y``. The prediction is ``argmax_k (x W + b)_k`` (ties go to the lowest class). This
    is regularised least-squares classification (Rifkin & Klautau, *In Defense of
    One-Vs-All Classification*, JMLR 2004; ridge regression: Hastie, Tibshirani &
    Friedman, *The Elements of Statistical Learning*, 2nd ed., sections 3.4.1 and 4.2).
    It equals scikit-learn's ``RidgeClassifier(alpha=l2 * N)`` on standardised features,
    whose ``{-1, +1}`` targets double ``W`` (same predictions). At ``l2 = 0`` the
    minimum-norm least-squares solution is used.

    Everything is computed in float64 from the :class:`RidgeStatistics` of the rows
    (count, sums, D x D second moment, per-class sums and counts), which add across
    batches and processes, and one eigendecomposition of ``Sigma`` serves every L2.

    With ``l2=None`` the strength is selected by the convention of
    :func:`fit_linear_probe`: a seeded :func:`stratified_split` holds out
    ``val_fraction`` of the training rows, the probe is fitted on the rest (standardised
    with the *full* training set's std, label-free) for every value of ``l2_grid``, the
    value with the best held-out accuracy wins (ties go to the stronger regularisation),
    and the probe is refitted on all training rows with it. ``fit_linear_probe`` stops
    its walk down the grid one value past the peak to save L-BFGS passes; here every
    value costs one small product, so the whole grid is scored. If the held-out part is
    empty (tiny classes), ``l2 = 1 / N`` (scikit-learn's default ``alpha = 1``).

    Args:
        train_z: (N, D) training embeddings (torch or numpy, any float dtype).
        train_y: (N,) training labels; at least two distinct classes.
        l2: L2 strength (>= 0), or ``None`` to select it on a held-out split.
        seed: seed of the held-out split.
        l2_grid: candidates for ``l2=None`` (default :data:`DEFAULT_RIDGE_L2_GRID`).
        val_fraction: held-out fraction for ``l2=None``, in (0, 1).

    Returns:
        The fitted :class:`RidgeProbeFit` (``l2`` is the strength used).

    Raises:
        ValueError: on bad embeddings or labels (NaN/Inf, wrong length), fewer than two
            training classes, or invalid hyper-parameters.
    """
    raw = as_matrix(train_z, name="train_z", min_rows=2)
    y_raw = _raw_labels(train_y, raw.shape[0], "train_y")
    _check_val_fraction(val_fraction)
    grid = _check_l2_grid(l2_grid if l2_grid is not None else DEFAULT_RIDGE_L2_GRID)
    # The probe is scale-free (standardised features), but the second moments of z at
    # scales like 2^+-900 over- or underflow float64: fit on z * 2^-e (exact), then
    # express the standardisation in z's own scale.
    x, exponent = unit_scaled(raw)
    fit = _fit_ridge_probe_unit(x, y_raw, l2=l2, seed=seed, grid=grid, val_fraction=val_fraction)
    return replace(
        fit,
        mean=times_power_of_two(fit.mean, exponent),
        inv_std=times_power_of_two(fit.inv_std, -exponent),
    )


def _fit_ridge_probe_unit(
    x: torch.Tensor,
    y_raw: np.ndarray,
    *,
    l2: float | None,
    seed: int,
    grid: tuple[float, ...],
    val_fraction: float,
) -> RidgeProbeFit:
    """:func:`fit_ridge_probe` on checked rows ``x`` whose largest |entry| is about 1."""
    _, codes = _training_classes(y_raw)
    tr_idx, va_idx = np.arange(x.shape[0]), np.zeros(0, dtype=np.int64)
    if l2 is None:
        tr_idx, va_idx = stratified_split(codes, test_fraction=val_fraction, seed=seed)
    tr = torch.from_numpy(tr_idx).to(x.device)
    fit_stats = RidgeStatistics.of(x.index_select(0, tr), y_raw[tr_idx])
    full = fit_stats
    if va_idx.size:
        va = torch.from_numpy(va_idx).to(x.device)
        full = fit_stats + RidgeStatistics.of(x.index_select(0, va), y_raw[va_idx])
    inv_std = full.standardisation()[1]
    if l2 is not None:
        return fit_ridge_from_statistics(full, l2=l2, inv_std=inv_std)
    if va_idx.size == 0:
        return fit_ridge_from_statistics(full, l2=1.0 / x.shape[0], inv_std=inv_std)
    sub = fit_ridge_from_statistics(
        fit_stats,
        val_z=x.index_select(0, va),
        val_y=y_raw[va_idx],
        l2_grid=grid,
        inv_std=inv_std,
    )
    final = fit_ridge_from_statistics(full, l2=sub.l2, inv_std=inv_std)
    return replace(final, val_accuracy=sub.val_accuracy)


def ridge_probe(
    train_z: Any,
    train_y: Any,
    test_z: Any,
    test_y: Any,
    l2: float | None = None,
    *,
    seed: int = 0,
    l2_grid: Sequence[float] | None = None,
    val_fraction: float = 0.2,
) -> float:
    """Ridge-probe accuracy: a closed-form ridge classifier on one-hot targets.

    Fits the probe of :func:`fit_ridge_probe` on ``(train_z, train_y)`` (objective
    ``(1/N) ||Y - 1 b^T - X W||^2 + l2 ||W||_F^2`` on features standardised with the
    training std, intercept unpenalised; ``l2=None`` selects the strength from
    :data:`DEFAULT_RIDGE_L2_GRID` by accuracy on a seeded stratified 20% split of the
    training set, as :func:`linear_probe` does) and returns its accuracy on
    ``(test_z, test_y)``. Regularised least-squares classification: Rifkin & Klautau,
    JMLR 2004; ridge: Hastie, Tibshirani & Friedman, ESL, sections 3.4.1 and 4.2.

    Args:
        train_z: (N, D) training embeddings (torch or numpy, any float dtype).
        train_y: (N,) training labels; at least two distinct classes.
        test_z: (M, D) test embeddings.
        test_y: (M,) test labels; labels absent from training count as errors.
        l2: L2 strength (>= 0), or ``None`` to select it (see :func:`fit_ridge_probe`).
        seed, l2_grid, val_fraction: see :func:`fit_ridge_probe`.

    Returns:
        The fraction of test rows whose label is predicted correctly, in [0, 1].

    Raises:
        ValueError: on bad embeddings or labels, a feature-count mismatch between train
            and test, fewer than two training classes, or invalid hyper-parameters.
    """
    x_tr, x_te = _train_test(train_z, test_z, test_y)
    fit = fit_ridge_probe(
        x_tr, train_y, l2=l2, seed=seed, l2_grid=l2_grid, val_fraction=val_fraction
    )
    return fit.score(x_te, test_y)


# ----------------------------------------------------------------------------------- kNN


def knn_accuracy(
    train_z: Any,
    train_y: Any,
    test_z: Any,
    test_y: Any,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> float:
    """Weighted cosine k-nearest-neighbour accuracy (Wu et al., CVPR 2018; DINO's kNN).

    Rows are L2-normalised (an all-zero row stays zero: similarity 0 to everything). For
    each test row ``q`` take the ``k`` training rows with the largest cosine similarity
    ``s_j = <q, x_j>``; the score of class ``c`` is ``sum_{j in top-k, y_j = c}
    exp(s_j / T)``, and the prediction is the class with the largest score (exact ties go
    to the lowest class id; neighbours tied in similarity at the k-th place are chosen by
    ``torch.topk``). Weights are computed as ``exp((s_j - s_max) / T)``, which rescales
    every class score of a row by the same factor, so the prediction is unchanged and
    small temperatures cannot overflow.

    Test rows are processed in chunks so memory stays O(chunk_size * N_train). Collapsed
    embeddings (all rows parallel) make every similarity equal: which ``k`` neighbours are
    used is then arbitrary, except with ``k = N`` where the vote is the class counts and
    the prediction the most frequent training class.

    Args:
        train_z: (N, D) training embeddings (torch or numpy, any float dtype).
        train_y: (N,) training labels.
        test_z: (M, D) test embeddings; moved to ``train_z``'s device and dtype.
        test_y: (M,) test labels; labels absent from training count as errors.
        k: number of neighbours, 1 <= k <= N.
        temperature: the temperature ``T > 0`` of the vote weights.
        chunk_size: test rows per chunk; default keeps a chunk's similarity block at
            about 2**25 elements.

    Returns:
        The fraction of correctly classified test rows, in [0, 1].

    Raises:
        ValueError: on bad embeddings or labels, a feature-count mismatch, ``k`` outside
            ``1..N``, a non-positive temperature or chunk size.
    """
    x_tr = as_matrix(train_z, name="train_z", min_rows=1)
    x_te = as_matrix(test_z, name="test_z", min_rows=1)
    _check_same_dim(x_tr, x_te)
    n_train = x_tr.shape[0]
    train_raw = _raw_labels(train_y, n_train, "train_y")
    test_raw = _raw_labels(test_y, x_te.shape[0], "test_y")
    if not is_int(k):
        raise ValueError(f"k must be a positive integer; got {type(k).__name__}.")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}.")
    if k > n_train:
        raise ValueError(
            f"k={k} exceeds the number of training samples ({n_train}); pass k <= {n_train}."
        )
    temp = float(temperature)
    if not math.isfinite(temp) or temp <= 0:
        raise ValueError(f"temperature must be a finite positive number; got {temperature}.")
    if chunk_size is None:
        chunk = max(1, _KNN_BLOCK_ELEMENTS // n_train)
    else:
        chunk = as_int(chunk_size, "chunk_size", hint=" (a positive integer)")

    classes, codes = np.unique(train_raw, return_inverse=True)
    n_classes = int(classes.shape[0])
    device, dtype = x_tr.device, x_tr.dtype
    train_n = unit_rows(x_tr)
    test_n = unit_rows(x_te.to(device=device, dtype=dtype))
    y_tr = torch.from_numpy(codes.reshape(-1).astype(np.int64)).to(device)
    preds: list[torch.Tensor] = []
    for start in range(0, test_n.shape[0], chunk):
        sims = test_n[start : start + chunk] @ train_n.T
        top_s, top_i = torch.topk(sims, k, dim=1)
        weights = torch.exp((top_s - top_s[:, :1]) / temp)
        scores = torch.zeros(sims.shape[0], n_classes, dtype=dtype, device=device)
        scores.scatter_add_(1, y_tr[top_i], weights)
        preds.append(scores.argmax(dim=1))
    pred_idx = torch.cat(preds).cpu().numpy()
    return _accuracy(classes[pred_idx], test_raw)


# ------------------------------------------------------------------------------- helpers


def _label_count(labels: Any, name: str) -> int:
    shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else np.shape(labels)
    if len(shape) != 1:
        raise ValueError(
            f"{name} must be 1-D with one label per sample; got shape {shape}. Flatten it "
            "or pass class indices, not one-hot rows."
        )
    return int(shape[0])


def _raw_labels(labels: Any, n: int, name: str) -> np.ndarray:
    """Validate labels (1-D, length ``n``, finite) and return them as a numpy array."""
    as_labels(labels, n, name=name)
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    return np.asarray(labels)


def _accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    try:
        hits = np.asarray(pred == truth, dtype=bool)
    except (TypeError, ValueError) as exc:  # pragma: no cover - exotic label types
        raise ValueError(f"test labels cannot be compared with training labels: {exc}") from exc
    if hits.shape != truth.shape:
        raise ValueError(
            "test labels cannot be compared with training labels (incompatible types, e.g. "
            "strings vs numbers); use the same label type for train and test."
        )
    return float(hits.mean())


def _train_test(train_z: Any, test_z: Any, test_y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A probe's train and test matrices, checked (two train rows, one test row, the same
    D, test labels of the right length)."""
    x_tr = as_matrix(train_z, name="train_z", min_rows=2)
    x_te = as_matrix(test_z, name="test_z", min_rows=1)
    _check_same_dim(x_tr, x_te)
    _raw_labels(test_y, x_te.shape[0], "test_y")
    return x_tr, x_te


def _check_same_dim(x_tr: torch.Tensor, x_te: torch.Tensor) -> None:
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(
            f"train_z has {x_tr.shape[1]} features but test_z has {x_te.shape[1]}; both "
            "must come from the same representation (same D)."
        )


def _check_l2(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a non-negative number; got {value!r}.") from exc
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite non-negative number; got {value!r}.")
    return out


def _training_classes(y_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct training labels and each row's int64 index into them; a
    ValueError when there is a single class."""
    classes, codes = np.unique(y_raw, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError(
            f"train_y has a single class ({classes[0]!r}); a classifier needs at least two "
            "distinct classes in the training labels."
        )
    return classes, codes.reshape(-1).astype(np.int64)


def _check_val_fraction(value: Any) -> None:
    if not is_real(value) or not 0.0 < float(value) < 1.0:
        raise ValueError(
            f"val_fraction must be strictly between 0 and 1 (e.g. 0.2); got {value!r}."
        )


def _check_l2_grid(grid: Sequence[float] | None) -> tuple[float, ...]:
    if grid is None:
        return DEFAULT_L2_GRID
    values = tuple(_check_l2(v, "l2_grid entries") for v in grid)
    if not values:
        raise ValueError("l2_grid is empty; pass at least one L2 strength (e.g. [1e-4]).")
    return values


def _check_tol(tol: float | None, dtype: torch.dtype) -> float:
    if tol is None:
        return 1e-7 if dtype == torch.float64 else 1e-6
    out = float(tol)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"tol must be a finite positive number; got {tol!r}.")
    return out
