"""Limited-memory BFGS for the linear probe: no autograd, any device, a per-round hook.

The probe's objective comes with an analytic gradient (see ``SoftmaxObjective``), so the
optimiser only needs vectors: the two-loop recursion (Nocedal & Wright, *Numerical
Optimization*, 2nd ed., Algorithm 7.4) with the initial scaling s^T y / y^T y, and a
backtracking Armijo line search (unit step first, then safeguarded quadratic
interpolation). A curvature pair is kept only when s^T y > 1e-10 * y^T y, which keeps the
inverse-Hessian approximation positive definite without a Wolfe search. Every
``check_every`` iterations an optional ``check`` callback may end the run early (the
probe's held-out stopping rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LbfgsResult", "SoftmaxObjective", "minimise"]

# Armijo sufficient-decrease constant and the largest number of step reductions.
_ARMIJO_C1 = 1e-4
_MAX_BACKTRACKS = 30


@dataclass(frozen=True, eq=False)
class LbfgsResult:
    """Where a run stopped.

    Attributes:
        theta: the final iterate.
        objective: the objective there.
        n_iter: iterations run (line searches completed).
        n_evals: objective/gradient evaluations (passes over the data).
        converged: stopped on a tolerance (gradient, or a loss change at the rounding
            floor) rather than on ``max_iter`` or the ``check`` callback.
        stopped_early: the ``check`` callback ended the run.
    """

    theta: torch.Tensor
    objective: float
    n_iter: int
    n_evals: int
    converged: bool
    stopped_early: bool


class SoftmaxObjective:
    """J(W, b) = (1/N) sum_i -log softmax(x_i W^T + b)[y_i] + (l2/2) ||W||_F^2.

    The parameters are one flat vector theta = [W (K x D, row-major); b (K)], so the
    logits are ``addmm(b, x, W^T)`` and the weight gradient ``R^T x`` with R = (softmax -
    onehot) / N: both products read x in its stored row-major layout. Per-row losses are
    summed in float64; everything else runs in x's dtype on x's device.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> None:
        self.x = x
        self.y = y
        self.n_classes = n_classes
        self.l2 = float(l2)
        self._rows = torch.arange(x.shape[0], device=x.device)

    @property
    def size(self) -> int:
        """Length of theta: K * (D + 1)."""
        return self.n_classes * (self.x.shape[1] + 1)

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (W (K, D), b (K,)) of a flat theta."""
        k, d = self.n_classes, self.x.shape[1]
        return theta[: k * d].view(k, d), theta[k * d :]

    def logits(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """(M, K) logits of rows x."""
        w, b = self.split(theta)
        return _matmul(x, w.T).add_(b)

    def __call__(self, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Objective value (float) and its gradient (flat, x's dtype)."""
        n = self.x.shape[0]
        w, _ = self.split(theta)
        z = self.logits(self.x, theta)
        z -= z.amax(dim=1, keepdim=True)
        e = torch.exp(z)
        s = e.sum(dim=1)
        picked = z[self._rows, self.y]
        loss = float(torch.sum(torch.log(s) - picked, dtype=torch.float64)) / n
        if self.l2 > 0:
            loss += 0.5 * self.l2 * float(torch.sum(w * w, dtype=torch.float64))
        e /= s.unsqueeze(1)
        e[self._rows, self.y] -= 1.0
        e *= 1.0 / n
        grad_w = _matmul(e.T, self.x)
        if self.l2 > 0:
            grad_w.add_(w, alpha=self.l2)
        return loss, torch.cat([grad_w.reshape(-1), e.sum(dim=0)])


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b; on the CPU through numpy's BLAS, which runs these skinny float32 products
    (N x D by D x classes, and its transpose) faster than torch's."""
    if a.device.type == "cpu":
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return a @ b


def minimise(
    fun: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    theta0: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    change_tol: float,
    history: int = 20,
    check: Callable[[torch.Tensor], bool] | None = None,
    check_every: int = 5,
) -> LbfgsResult:
    """Minimise a smooth convex ``fun`` from ``theta0`` with L-BFGS.

    Stops when max |gradient| <= ``tol``, when an iteration changes the objective by less
    than ``change_tol`` or the line search cannot decrease it (the rounding floor), after
    ``max_iter`` iterations, or when ``check(theta)`` returns True (asked every
    ``check_every`` iterations).
    """
    theta = theta0.clone()
    f, g = fun(theta)
    n_evals = 1
    if not math.isfinite(f):
        raise ValueError("the probe objective is not finite at its starting point")
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    n_iter = 0
    converged = float(g.abs().max()) <= tol
    stopped = False
    while not converged and n_iter < max_iter:
        direction = _two_loop(g, pairs)
        slope = float(torch.dot(g, direction))
        if not slope < 0.0:  # lost descent (round-off in the history): restart
            pairs.clear()
            direction = -g
            slope = float(torch.dot(g, direction))
        step = 1.0 if pairs else min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
        accepted = floor = False
        for _ in range(_MAX_BACKTRACKS):
            candidate = theta + step * direction
            f_new, g_new = fun(candidate)
            n_evals += 1
            if math.isfinite(f_new) and f_new <= f + _ARMIJO_C1 * step * slope:
                accepted = True
                break
            step = _backtrack(step, f, slope, f_new)
            if step * float(direction.abs().max()) <= change_tol:
                floor = True
                break
        if not accepted:  # converged only when the step reached the rounding floor
            converged = floor
            break
        n_iter += 1
        s = candidate - theta
        y = g_new - g
        sy = float(torch.dot(s, y))
        yy = float(torch.dot(y, y))
        if sy > 1e-10 * yy:
            pairs.append((s, y, 1.0 / sy))
            if len(pairs) > history:
                pairs.pop(0)
        change = abs(f - f_new)
        theta, f, g = candidate, f_new, g_new
        if float(g.abs().max()) <= tol or change < change_tol:
            converged = True
        elif check is not None and n_iter % check_every == 0 and check(theta):
            stopped = True
            break
    return LbfgsResult(theta, f, n_iter, n_evals, converged, stopped)


def _two_loop(
    g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]
) -> torch.Tensor:
    """-H g for the L-BFGS inverse-Hessian approximation H of the stored pairs."""
    q = -g
    if not pairs:
        return q
    alphas = np.empty(len(pairs))
    for i in range(len(pairs) - 1, -1, -1):
        s, y, rho = pairs[i]
        alphas[i] = rho * float(torch.dot(s, q))
        q = q - alphas[i] * y
    s, y, rho = pairs[-1]
    q = q * (1.0 / (rho * float(torch.dot(y, y))))
    for i, (s, y, rho) in enumerate(pairs):
        beta = rho * float(torch.dot(y, q))
        q = q + (alphas[i] - beta) * s
    return q


def _backtrack(step: float, f: float, slope: float, f_new: float) -> float:
    """Minimiser of the quadratic through f, slope and f_new, kept in [0.1, 0.5] * step."""
    if not math.isfinite(f_new):
        return 0.1 * step
    curvature = f_new - f - slope * step
    trial = -slope * step * step / (2.0 * curvature) if curvature > 0 else 0.5 * step
    return min(max(trial, 0.1 * step), 0.5 * step)
