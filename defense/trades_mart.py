"""TRADES and MART: adversarial training with a KL term between clean and adversarial predictions.

- ``trades``: Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019, "Theoretically principled trade-off between
  robustness and accuracy": L = CE(f(x), y) + β · Σᵢ KL(f(xᵢ) ‖ f(x'ᵢ)) / B, with x' found by PGD maximising
  that KL.
- ``mart``: Wang, Zou, Yi, Bailey, Ma & Gu 2020, "Improving adversarial robustness requires revisiting
  misclassified examples": L = BCE(f(x'), y) + λ · Σᵢ KL(f(xᵢ) ‖ f(x'ᵢ)) · (1 − p_y(xᵢ)) / B, with the boosted
  cross-entropy BCE = −log p_y(x') − log(1 − max_{k≠y} p_k(x')) and x' found by PGD on CE(f(x'), y).

f(·) is the softmax of the logits. As in both reference implementations (yaodongyu/TRADES ``trades.py``,
YisenWang/MART ``mart.py``) the inner attack starts from x + 0.001·N(0, I) and runs in eval mode, the loss's
clean and adversarial forwards run in training mode, and no term is detached: the parameter gradient flows
through f(x) inside the KL and, for MART, through the weight 1 − p_y(x). Unlike those implementations, the
clean forward runs once (TRADES' code runs it twice, for the CE and for the KL target), the logarithms are
computed from log-softmax instead of ``log(p + 1e-12)`` and ``log(1.0001 − p)``, and a zero input gradient
(the KL's at x' = x, or one underflowing in half precision) is replaced by a Gaussian direction, as TRADES'
L2 attack does. Inputs, bounds, norms and domains are those of :mod:`defense.objective_base`.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.threat import ball, batch_view
from defense.objective_base import OBJECTIVES, check_settings, domain_inputs, eval_mode, perturbed_logits
from training.step import Backward, StepOutput
from victims.bounds import Bounds
from victims.registry import ConfigError
from victims.victim import Victim

START_STD = 0.001
"""Standard deviation of the inner attack's Gaussian start around x (both reference implementations)."""


def kl_rows(clean_logits: Tensor, adv_logits: Tensor) -> Tensor:
    """Per-example KL(f(x) ‖ f(x')) = Σ_k p_k (log p_k − log q_k) of the two softmaxes, shape ``(B,)``."""
    log_p, log_q = F.log_softmax(clean_logits, dim=1), F.log_softmax(adv_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def boosted_ce(adv_logits: Tensor, labels: Tensor) -> Tensor:
    """MART's per-example boosted cross-entropy −log p_y − log(1 − max_{k≠y} p_k), shape ``(B,)``; the
    second log is the log-sum of the other probabilities (exact where 1 − p_k rounds to 0)."""
    log_p = F.log_softmax(adv_logits, dim=1)

    def without(index: Tensor) -> Tensor:
        return log_p.masked_fill(F.one_hot(index, log_p.shape[1]).bool(), -math.inf)

    top = without(labels).argmax(dim=1)
    return -log_p.gather(1, labels[:, None]).squeeze(1) - without(top).logsumexp(dim=1)


class KLRegularised(ABC):
    """What both objectives share: the inner attack (``steps`` projected ascent steps on a loss of the logits
    from x + 0.001·N(0, I), in the ε-ball of ``norm`` and inside the bounds, in eval mode) and the training
    step (one training-mode forward each on x and x', one backward on the loss).

    Args:
        eps: radius of the ε-ball in the domain's units.
        steps: ascent steps.
        step_size: step length; default 2.5·ε/steps (ε/4 at 10 steps: 2/255 at TRADES' and MART's 8/255).
        norm: ``"linf"`` or ``"l2"``.
        domain: ``"representation"`` or ``"waveform"``.
    """

    name = ""

    def __init__(self, eps: float, steps: int, step_size: float | None, norm: str, domain: str) -> None:
        check_settings(eps, norm, domain)
        if steps < 1:
            raise ConfigError(f"{self.name} steps must be >= 1, got {steps}")
        if step_size is not None and not step_size > 0:
            raise ConfigError(f"{self.name} step_size must be > 0, got {step_size}")
        self.eps, self.steps, self.norm, self.domain = float(eps), int(steps), norm, domain
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps

    def ascend(self, model: Callable[[Tensor], Tensor], x: Tensor, bounds: Bounds,
               gain: Callable[[Tensor], Tensor]) -> Tensor:
        """The input (detached) after ``steps`` projected steps up the summed ``gain(logits)`` from the
        Gaussian start; the caller chooses the mode (eval, see :mod:`defense.objectives`)."""
        threat = ball(self.norm)
        x_adv = bounds.clip(x + threat.project(START_STD * torch.randn_like(x), self.eps))
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(gain(model(x_adv)), x_adv)
            dead = batch_view(grad.flatten(1).abs().amax(dim=1) == 0, grad)
            grad = torch.where(dead, torch.randn_like(grad), grad)
            step = x_adv.detach() + self.step_size * threat.normalize(grad)
            x_adv = bounds.clip(x + threat.project(step - x, self.eps))
        return x_adv.detach()

    @abstractmethod
    def perturb(self, model: Callable[[Tensor], Tensor], x: Tensor, labels: Tensor, bounds: Bounds) -> Tensor:
        """The objective's adversarial input for ``x`` (detached)."""

    @abstractmethod
    def loss(self, logits: Tensor, adv_logits: Tensor, labels: Tensor) -> Tensor:
        """The objective's batch loss from the clean and the adversarial logits."""

    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, backward: Backward) -> StepOutput:
        x, model, bounds = domain_inputs(victim, wave, self.domain)
        with eval_mode(victim):
            x_adv = self.perturb(model, x, labels, bounds)
        logits = model(x)
        loss = self.loss(logits, model(x_adv), labels)
        backward(loss)
        return StepOutput(loss.detach(), logits.detach())

    def robust_logits(self, victim: Victim, wave: Tensor, labels: Tensor) -> Tensor:
        """Logits (detached, eval mode) of the examples this objective trains on."""
        return perturbed_logits(self.perturb, victim, wave, labels, self.domain)


@OBJECTIVES.register("trades")
class TRADES(KLRegularised):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β·Σᵢ KL(f(xᵢ) ‖ f(x'ᵢ))/B, x' maximising the KL to the eval-mode
    f(x) (no label used). Reference settings (CIFAR-10, L∞): β 6, ε 8/255, 10 steps of 0.007.

    Args:
        beta: weight β > 0 of the KL term.
        eps, steps, step_size, norm, domain: the inner attack (:class:`KLRegularised`).
    """

    name = "trades"

    def __init__(self, beta: float = 6.0, eps: float = 1.5, steps: int = 10, step_size: float | None = None,
                 norm: str = "l2", domain: str = "representation") -> None:
        if not (beta > 0 and math.isfinite(beta)):
            raise ConfigError(f"trades beta must be a finite number > 0, got {beta}")
        super().__init__(eps, steps, step_size, norm, domain)
        self.beta = float(beta)

    def perturb(self, model: Callable[[Tensor], Tensor], x: Tensor, labels: Tensor, bounds: Bounds) -> Tensor:
        with torch.no_grad():
            clean = model(x)
        return self.ascend(model, x, bounds, lambda logits: kl_rows(clean, logits).sum())

    def loss(self, logits: Tensor, adv_logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels) + self.beta * kl_rows(logits, adv_logits).mean()


@OBJECTIVES.register("mart")
class MART(KLRegularised):
    """MART (Wang et al. 2020): BCE(f(x'), y) + λ·Σᵢ KL(f(xᵢ) ‖ f(x'ᵢ))·(1 − p_y(xᵢ))/B, x' by PGD on CE.
    Reference settings (CIFAR-10, L∞): λ 5 (ResNet-18) or 6 (WideResNet), ε 8/255, 10 steps of 0.007.

    Args:
        lam: weight λ ≥ 0 of the misclassification-weighted KL term (λ = 0: boosted CE alone).
        eps, steps, step_size, norm, domain: the inner attack (:class:`KLRegularised`).
    """

    name = "mart"

    def __init__(self, lam: float = 6.0, eps: float = 1.5, steps: int = 10, step_size: float | None = None,
                 norm: str = "l2", domain: str = "representation") -> None:
        if not (lam >= 0 and math.isfinite(lam)):
            raise ConfigError(f"mart lam must be a finite number >= 0, got {lam}")
        super().__init__(eps, steps, step_size, norm, domain)
        self.lam = float(lam)

    def perturb(self, model: Callable[[Tensor], Tensor], x: Tensor, labels: Tensor, bounds: Bounds) -> Tensor:
        return self.ascend(model, x, bounds, lambda logits: F.cross_entropy(logits, labels, reduction="sum"))

    def loss(self, logits: Tensor, adv_logits: Tensor, labels: Tensor) -> Tensor:
        p_true = F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
        weighted = kl_rows(logits, adv_logits) * (1 - p_true)
        return boosted_ce(adv_logits, labels).mean() + self.lam * weighted.mean()
