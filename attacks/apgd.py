"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Algorithm 1), L∞ and L2, cross-entropy or DLR loss, targeted variants.

APGD replaces PGD's tuned step size with a schedule driven by the optimisation's progress. Starting at
``η = 2ε``, every step is a momentum step in the ε-ball (:mod:`attacks.threat`) and the box (the victim's
:class:`~victims.bounds.Bounds`)::

    z     = P(x_k + η ∇f(x_k) normalised)
    x_k+1 = P(x_k + α (z − x_k) + (1 − α)(x_k − x_k−1))        α = 0.75 (1 at the first step)

At the checkpoints ``w_j = ⌈p_j N⌉`` (``p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j − p_j−1 − 0.03, 0.06)``)
an example halves its step size and restarts from its best point so far when

1. the loss rose in fewer than ``ρ = 0.75`` of the steps since the last checkpoint, or
2. its step size was not halved at the last checkpoint and its best loss has not risen since.

The losses ascend: "ce" is minus the true class's log-odds (``attacks.losses.log_odds``; a monotone
function of the cross-entropy, so the schedule's comparisons and the sign/normalised steps are the
cross-entropy's, but it keeps a gradient where the softmax saturates), or the target's log-odds when
targeted; "dlr" is the difference of logits ratio (targeted: Croce & Hein's targeted DLR with the given
targets). Differences from the reference code (``auto-attack``, whose copy torchattacks ships): the random
start is uniform in the ball (:meth:`attacks.threat.LinfBall.random_start`) rather than on its surface,
condition 1 is the paper's strict ``<``, condition 2 applies from the first checkpoint (the code skips
it there), and, with ``early_stop`` (default), an example stops at its first adversarial point instead
of running on.
"""
from __future__ import annotations

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput, is_adversarial
from attacks.losses import dlr, dlr_targeted, log_odds
from attacks.threat import Budget, ball, batch_view, per_example
from victims.bounds import Bounds
from victims.victim import Domain

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """Croce & Hein's checkpoints ``w_j = ⌈p_j · steps⌉`` in ``(0, steps]``, each once.

    The ``p_j`` are kept in hundredths (exact integers: 22, 41, 57, 70, 80, 87, 93, 99).
    """
    p = [0, 22]
    while p[-1] + max(p[-1] - p[-2] - 3, 6) < 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return sorted({-(-q * steps // 100) for q in p[1:]} - {0})


@ATTACKS.register("apgd")
class APGD(Attack):
    """Auto-PGD with the cross-entropy or the DLR loss; fixed budget, one ε per example allowed.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR; targeted: APGD-T's loss); DLR needs ≥ 3 classes.
        steps: iterations per restart (Croce & Hein: 100).
        restarts: runs from new random starts for the examples not yet fooled.
        momentum: ``α`` of the update (0.75).
        rho: ``ρ`` of condition 1 (0.75).
        random_start: start uniformly in the ε-ball (else at the clean input; then ``restarts`` must be 1).
        early_stop: stop each example at its first adversarial point.
        domain, targeted, eps: see :class:`~attacks.base.Attack`.
    """

    fixed_budget = True
    per_example_budgets = True

    def __init__(self, norm: str = "linf", loss: str = "ce", steps: int = 100, restarts: int = 1,
                 momentum: float = 0.75, rho: float = 0.75, random_start: bool = True, early_stop: bool = True,
                 domain: Domain = "representation", targeted: bool = False, eps: float | None = None) -> None:
        super().__init__(domain=domain, targeted=targeted, eps=eps)
        if loss not in LOSSES:
            raise ValueError(f"unknown apgd loss '{loss}'; known: {', '.join(LOSSES)}")
        if steps < 1 or restarts < 1 or not 0 < momentum <= 1 or not 0 < rho <= 1:
            raise ValueError(f"apgd needs steps >= 1, restarts >= 1, momentum and rho in (0, 1]; got {steps}, "
                             f"{restarts}, {momentum}, {rho}")
        if restarts > 1 and not random_start:
            raise ValueError("apgd restarts > 1 need random_start: from the clean input every run is the same")
        self.ball = ball(norm)
        self.norm = norm
        self.loss = loss
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.momentum = float(momentum)
        self.rho = float(rho)
        self.random_start = random_start
        self.early_stop = early_stop

    def objective(self, logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        """Per-example loss APGD ascends (see the module docstring)."""
        if self.loss == "ce":
            return -log_odds(logits, labels) if targets is None else log_odds(logits, targets)
        return dlr(logits, labels) if targets is None else dlr_targeted(logits, labels, targets)

    def _evaluate(self, model: ModelFn, x_adv: Tensor, labels: Tensor,
                  targets: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, gradient, logits)`` at ``x_adv``: one forward and one backward pass."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        loss = self.objective(logits, labels, targets)
        grad, = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad, logits.detach()

    def _project(self, x: Tensor, point: Tensor, eps: Budget, bounds: Bounds) -> Tensor:
        """``point`` projected into the ε-ball around ``x``, then into the box."""
        return bounds.clip(x + self.ball.project(point - x, eps))

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | Tensor | None) -> RunOutput:
        assert eps is not None
        n = len(x)
        eps_t = eps if isinstance(eps, Tensor) else torch.full((n,), float(eps), dtype=x.dtype, device=x.device)
        adversarial = x.clone()
        best_loss = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
        queries = torch.zeros_like(iterations)
        for _ in range(self.restarts):
            idx = (~found).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            tgt = None if targets is None else targets[idx]
            adv, loss, hit, its = self._single_run(model, x[idx], labels[idx], tgt, bounds, eps_t[idx])
            iterations[idx] += its
            queries[idx] += its + 1
            keep = hit | (loss > best_loss[idx])
            adversarial[idx[keep]] = adv[keep]
            best_loss[idx] = torch.maximum(loss, best_loss[idx])
            found[idx] = hit
        return RunOutput(adversarial.detach(), iterations, queries)

    def _single_run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None, bounds: Bounds,
                    eps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One run of Algorithm 1: ``(adversarial or best point, best loss, fooled, iterations)`` per example."""
        n = len(x)
        e_all = batch_view(eps, x)
        start = self.ball.random_start(x, e_all) if self.random_start else torch.zeros_like(x)
        x_adv = bounds.clip(x + start)
        loss, grad, logits = self._evaluate(model, x_adv, labels, targets)
        found = is_adversarial(logits, labels, targets)
        adv_out = torch.where(batch_view(found, x), x_adv, x)
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        x_prev, loss_cur = x_adv.clone(), loss.clone()
        eta = 2 * eps.clone()
        increases = torch.zeros(n, dtype=torch.int64, device=x.device)
        loss_at_check, halved_last = loss_best.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        iterations = torch.zeros_like(increases)
        marks, last_mark = set(checkpoints(self.steps)), 0
        for k in range(self.steps):
            idx = (~found).nonzero().squeeze(1) if self.early_stop else torch.arange(n, device=x.device)
            if idx.numel() == 0:
                break
            xi, xa, e = x[idx], x_adv[idx], per_example(eps, x, idx)
            z = self._project(xi, xa + batch_view(eta[idx], xa) * self.ball.normalize(grad[idx]), e, bounds)
            a = 1.0 if k == 0 else self.momentum
            new = self._project(xi, xa + a * (z - xa) + (1 - a) * (xa - x_prev[idx]), e, bounds)
            x_prev[idx], x_adv[idx] = xa, new
            tgt = None if targets is None else targets[idx]
            loss_i, grad[idx], logits_i = self._evaluate(model, new, labels[idx], tgt)
            iterations[idx] += 1
            increases[idx] += (loss_i > loss_cur[idx]).to(torch.int64)
            loss_cur[idx] = loss_i
            better = idx[loss_i > loss_best[idx]]
            x_best[better], loss_best[better], grad_best[better] = x_adv[better], loss_cur[better], grad[better]
            hit = idx[is_adversarial(logits_i, labels[idx], tgt)]
            adv_out[hit] = x_adv[hit]
            found[hit] = True
            if k + 1 in marks:
                active = torch.zeros_like(found)
                active[idx] = True
                stalled = increases < self.rho * (k + 1 - last_mark)
                flat = ~halved_last & (loss_best <= loss_at_check)
                halve = active & (stalled | flat)
                eta = torch.where(halve, eta / 2, eta)
                x_adv[halve], grad[halve], loss_cur[halve] = x_best[halve], grad_best[halve], loss_best[halve]
                halved_last, loss_at_check, last_mark = halve, loss_best.clone(), k + 1
                increases.zero_()
        return torch.where(batch_view(found, x), adv_out, x_best), loss_best, found, iterations
