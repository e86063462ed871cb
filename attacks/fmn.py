"""Fast minimum-norm attack (Pintor, Roli, Brendel & Biggio 2021, "Fast minimum-norm adversarial attacks
through adaptive norm constraints", Algorithm 1), L∞, L2, L1 and L0, batched, minimum-norm.

Each step takes the logit difference ``ℓ = Z_y − max_{k≠y} Z_k`` (targeted: ``max_{k≠t} Z_k − Z_t``), adapts
a per-example norm constraint ``ε`` and moves ``δ`` inside it::

    ε ← min(ε(1 − γ), ‖δ*‖)          if x + δ is adversarial   (δ*: the smallest adversarial δ so far)
        ε(1 + γ)                     else, once one was found
        ‖δ‖ + |ℓ| / ‖∇ℓ‖_dual         else (the linearised distance to the boundary)
    δ ← clip(x + Π_ε(δ − α ∇ℓ / ‖∇ℓ‖₂)) − x

with ``α`` and ``γ`` annealed by a cosine from ``max_stepsize`` to ``min_stepsize`` and from ``gamma`` to
``gamma_final``, ``ε`` capped by the largest distance the box allows, and ``Π_ε`` the projection onto the
ε-ball (:mod:`attacks.threat`; L0: keep the ``⌊ε⌋`` largest entries, with ``ε`` moved by at least 1 per
step as in the authors' code). The result is each example's smallest adversarial perturbation found; an
example never made adversarial returns its last iterate (the base then reports it unsuccessful).
Deterministic: no random start (the paper's initialisation from a given adversarial point is not offered).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput, is_adversarial
from attacks.losses import class_margin
from attacks.threat import BALLS, batch_view, perturbation_norm, project_l0, project_l1
from victims.bounds import Bounds
from victims.victim import Domain

DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf}
NORMS = ("linf", "l2", "l1", "l0")


def project(delta: Tensor, eps: Tensor, norm: str) -> Tensor:
    """``delta`` projected onto each example's ε-ball (``eps``: ``(N,)``) of ``norm``."""
    if norm == "l1":
        return project_l1(delta, eps)
    if norm == "l0":
        return project_l0(delta, eps)
    return BALLS[norm].project(delta, batch_view(eps, delta))


def cosine(start: float, end: float, step: int, steps: int) -> float:
    """Cosine annealing from ``start`` (step 0) towards ``end`` (step ``steps``)."""
    return end + (start - end) * (1 + math.cos(math.pi * step / steps)) / 2


@ATTACKS.register("fmn")
class FMN(Attack):
    """Fast minimum-norm attack.

    Args:
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``.
        steps: iterations (one forward and backward pass each; Pintor et al.: 100 to 1,000).
        max_stepsize: initial step ``α₀`` along the L2-normalised gradient, in the domain's units.
        min_stepsize: final step (default ``max_stepsize / 100``).
        gamma: initial relative change of ``ε`` per step (0.05).
        gamma_final: final relative change of ``ε`` (0.001).
        domain, targeted: see :class:`~attacks.base.Attack`.
    """

    family = "minimum_norm"
    fixed_budget = False

    def __init__(self, norm: str = "l2", steps: int = 100, max_stepsize: float = 1.0,
                 min_stepsize: float | None = None, gamma: float = 0.05, gamma_final: float = 0.001,
                 domain: Domain = "representation", targeted: bool = False) -> None:
        super().__init__(domain=domain, targeted=targeted)
        if norm not in NORMS:
            raise ValueError(f"unknown norm '{norm}' for fmn; known: {', '.join(NORMS)}")
        min_stepsize = max_stepsize / 100 if min_stepsize is None else min_stepsize
        if steps < 1 or not 0 < min_stepsize <= max_stepsize or not 0 < gamma_final <= gamma < 1:
            raise ValueError(f"fmn needs steps >= 1, 0 < min_stepsize <= max_stepsize and 0 < gamma_final <= "
                             f"gamma < 1; got {steps}, {min_stepsize}, {max_stepsize}, {gamma_final}, {gamma}")
        self.norm = norm
        self.steps = int(steps)
        self.max_stepsize = float(max_stepsize)
        self.min_stepsize = float(min_stepsize)
        self.gamma = float(gamma)
        self.gamma_final = float(gamma_final)

    def _margin(self, logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        """``ℓ``: negative exactly where the top class is adversarial."""
        return class_margin(logits, labels) if targets is None else -class_margin(logits, targets)

    def _next_eps(self, eps: Tensor, hit: Tensor, found: Tensor, best: Tensor, size: Tensor, margin: Tensor,
                  grad: Tensor, gamma: float) -> Tensor:
        """The adapted norm constraint (module docstring); ``size`` is ``‖δ‖``."""
        if self.norm == "l0":
            shrink = torch.minimum(torch.minimum(eps - 1, (eps * (1 - gamma)).floor()), best)
            return torch.where(hit, shrink, torch.maximum(eps + 1, (eps * (1 + gamma)).floor())).clamp_min(1)
        dual = grad.flatten(1).norm(p=DUAL[self.norm], dim=1).clamp_min(1e-12)
        grow = torch.where(found, eps * (1 + gamma), size + margin.abs() / dual)
        return torch.where(hit, torch.minimum(eps * (1 - gamma), best), grow)

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | None) -> RunOutput:
        n = len(x)
        hi, lo = bounds.clip(torch.full_like(x, math.inf)), bounds.clip(torch.full_like(x, -math.inf))
        reach = torch.maximum(x - lo, hi - x)
        worst = perturbation_norm(reach, self.norm) if self.norm != "l0" else torch.full(
            (n,), float(x[0].numel()), dtype=x.dtype, device=x.device)
        delta = torch.zeros_like(x)
        best_delta = torch.zeros_like(x)
        best = worst.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        eps_k = torch.ones_like(best) if self.norm == "l0" else torch.full_like(best, math.inf)
        for i in range(self.steps):
            alpha = cosine(self.max_stepsize, self.min_stepsize, i, self.steps)
            gamma = cosine(self.gamma, self.gamma_final, i, self.steps)
            x_adv = (x + delta).requires_grad_(True)
            logits = model(x_adv)
            margin = self._margin(logits, labels, targets)
            grad, = torch.autograd.grad(-margin.sum(), x_adv)
            with torch.no_grad():
                size = perturbation_norm(delta, self.norm)
                hit = is_adversarial(logits, labels, targets)
                smaller = hit & (size <= best)
                best = torch.where(smaller, size, best)
                best_delta = torch.where(batch_view(smaller, x), delta, best_delta)
                found |= hit
                eps_k = torch.minimum(self._next_eps(eps_k, hit, found, best, size, margin, grad, gamma), worst)
                step = delta + alpha * BALLS["l2"].normalize(grad)
                delta = bounds.clip(x + project(step, eps_k, self.norm)) - x
        out = torch.where(batch_view(found, x), x + best_delta, x + delta)
        iterations = torch.full((n,), self.steps, dtype=torch.int64, device=x.device)
        return RunOutput(out.detach(), iterations)
