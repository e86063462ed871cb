"""Box-constrained L-BFGS attack (Szegedy et al., "Intriguing properties of neural networks", 2014).

Seed 001 (Subramanian et al., adversarial attacks on sound event classification) runs it targeted
with 2 binary-search steps over ``c``, 200-1000 iterations and initial ``c`` 0.1, in the form of its
published code (cleverhans): minimise ``‖x' − x‖₂² + c·ℓ(x')`` with ``ℓ`` the cross-entropy to
the target — Szegedy's ``c·|r| + loss`` with the weight moved onto the loss, so a larger ``c``
means a stronger push and the binary search is the one of C&W. Untargeted, ``ℓ = −log(1 − p_y)``:
it maximises the true class's loss through a surrogate that is bounded below (plain ``−CE(y)`` is
not) and vanishes as ``p_y → 0``.

The box is kept by the change of variables ``x' = mid + half·tanh(w)`` (C&W 2017) instead of
L-BFGS-B's projection. The optimiser is L-BFGS (Nocedal & Wright, Alg. 7.4) run as one batch of
independent problems: each example has its own curvature pairs, two-loop recursion, backtracking
(Armijo) line search and convergence test, so its result does not depend on the rest of the batch
— a joint ``torch.optim.LBFGS`` on the summed loss would share the line search and the curvature
scalars across examples.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput, is_adversarial
from attacks.cw import tanh_box, to_tanh_space, update_consts
from attacks.losses import class_loss, log_complement
from attacks.threat import batch_view
from victims.bounds import Bounds
from victims.victim import Domain


Objective = Callable[[Tensor], tuple[Tensor, Tensor]]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=1)


def batched_lbfgs(fun: Objective, w0: Tensor, max_iter: int, history: int, max_backtracks: int = 20,
                  tol_grad: float = 1e-7, tol_change: float = 1e-9) -> tuple[Tensor, Tensor, Tensor]:
    """Minimise ``N`` independent objectives with L-BFGS and a per-example Armijo backtracking search.

    Args:
        fun: ``w (N, ...) ↦ (loss (N,), grad (N, ...))``, example ``i``'s loss depending on ``w[i]`` only.
        w0: starting point.
        max_iter: L-BFGS iterations.
        history: curvature pairs kept per example.
        max_backtracks: halvings of the step before an example gives up.
        tol_grad: stop an example when its largest gradient entry is below this.
        tol_change: stop an example when its loss or step changes by less than this.

    Returns:
        ``(w, iterations, evaluations)``: the minimisers and, per example, the iterations taken
        and the objective evaluations spent while it was running.
    """
    n = w0.shape[0]
    w = w0.flatten(1).clone()
    loss, grad = fun(w.view_as(w0))
    grad = grad.flatten(1)
    iterations = torch.zeros(n, dtype=torch.int64, device=w0.device)
    evaluations = torch.ones_like(iterations)
    active = grad.abs().amax(dim=1) > tol_grad
    pairs: list[tuple[Tensor, Tensor, Tensor]] = []
    for it in range(max_iter):
        if not active.any():
            break
        q, alphas = grad.clone(), []
        for s, y, rho in reversed(pairs):
            a = rho * _dot(s, q)
            q -= a[:, None] * y
            alphas.append(a)
        if pairs:
            s, y, _ = pairs[-1]
            yy = _dot(y, y)
            q *= torch.where(yy > 0, _dot(s, y) / yy.clamp_min(1e-30), 1.0)[:, None]
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            q += s * (a - rho * _dot(y, q))[:, None]
        direction = torch.where((_dot(grad, -q) < 0)[:, None], -q, -grad)
        slope = _dot(grad, direction)
        step = torch.ones_like(loss) if it else (1 / grad.abs().sum(dim=1)).clamp(max=1.0)
        pending = active.clone()
        new_w, new_loss, new_grad = w.clone(), loss.clone(), grad.clone()
        for _ in range(max_backtracks):
            trial = w + step[:, None] * direction
            t_loss, t_grad = fun(trial.view_as(w0))
            evaluations += pending.to(torch.int64)
            ok = pending & (t_loss <= loss + 1e-4 * step * slope)
            new_w = torch.where(ok[:, None], trial, new_w)
            new_loss = torch.where(ok, t_loss, new_loss)
            new_grad = torch.where(ok[:, None], t_grad.flatten(1), new_grad)
            pending &= ~ok
            if not pending.any():
                break
            step = torch.where(pending, step / 2, step)
        moved = active & ~pending
        iterations += active.to(torch.int64)
        s, y = new_w - w, new_grad - grad
        sy = _dot(s, y)
        keep = moved & (sy > 1e-10)
        rho = torch.where(keep, 1 / sy.clamp_min(1e-10), 0.0)
        pairs = (pairs + [(s * keep[:, None], y * keep[:, None], rho)])[-history:]
        change = (loss - new_loss).abs()
        w, loss, grad = new_w, new_loss, new_grad
        progress = (change > tol_change) & (s.abs().amax(dim=1) > tol_change)
        active = moved & progress & (grad.abs().amax(dim=1) > tol_grad)
    return w.view_as(w0), iterations, evaluations


@ATTACKS.register("lbfgs")
class LBFGSAttack(Attack):
    """Szegedy et al.'s L-BFGS attack, box-constrained through tanh, binary search over ``c``.

    Args:
        domain: ``"representation"`` or ``"waveform"``.
        targeted: aim at ``targets`` (seed 001's use); untargeted uses ``−log(1 − p_y)``.
        initial_const: starting weight ``c`` of the classification loss.
        binary_search_steps: L-BFGS runs, each from the clean input with a new ``c`` per example.
        max_iterations: L-BFGS iterations per run.
        history_size: curvature pairs L-BFGS keeps.
    """

    family = "minimum_norm"
    norm = "l2"
    fixed_budget = False

    def __init__(self, domain: Domain = "representation", targeted: bool = False, initial_const: float = 0.1,
                 binary_search_steps: int = 2, max_iterations: int = 200, history_size: int = 10) -> None:
        super().__init__(domain, targeted)
        if initial_const <= 0:
            raise ValueError(f"lbfgs needs initial_const > 0, got {initial_const}")
        if binary_search_steps < 1 or max_iterations < 1 or history_size < 1:
            raise ValueError(f"lbfgs needs binary_search_steps, max_iterations and history_size >= 1, got "
                             f"{binary_search_steps}, {max_iterations}, {history_size}")
        self.initial_const = initial_const
        self.binary_search_steps = binary_search_steps
        self.max_iterations = max_iterations
        self.history_size = history_size

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | None) -> RunOutput:
        n = x.shape[0]
        mid, half = tanh_box(bounds, x)
        w_clean = to_tanh_space(x, mid, half)
        const = torch.full((n,), self.initial_const, dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, float("inf"))
        best_l2 = torch.full_like(const, float("inf"))
        best_adv = x.clone()
        iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
        queries = torch.zeros_like(iterations)
        for _ in range(self.binary_search_steps):

            def objective(w: Tensor, const: Tensor = const) -> tuple[Tensor, Tensor]:
                with torch.enable_grad():
                    w = w.detach().requires_grad_(True)
                    adv = mid + half * torch.tanh(w)
                    l2 = (adv - x).flatten(1).pow(2).sum(dim=1)
                    aim = targets if self.targeted else None
                    loss = l2 + const * class_loss(model(adv), labels, aim, log_complement)
                    grad, = torch.autograd.grad(loss.sum(), w)
                return loss.detach(), grad

            w, iters, evals = batched_lbfgs(objective, w_clean, self.max_iterations, self.history_size)
            iterations += iters
            queries += evals + 1
            with torch.no_grad():
                adv = mid + half * torch.tanh(w)
                found = is_adversarial(model(adv), labels, targets)
                l2 = (adv - x).flatten(1).pow(2).sum(dim=1)
                better = found & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best_adv = torch.where(batch_view(better, x), adv, best_adv)
            const, lower, upper = update_consts(const, lower, upper, found)
        return RunOutput(best_adv, iterations, queries)
