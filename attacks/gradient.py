"""FGSM, BIM-a, BIM-b, PGD and seed 000's PGDn: one optimisation loop, several step and stop rules.

The loop follows foolbox's ``gradient_descent_base.py``: a threat model (:mod:`attacks.threat`,
its balls) supplies ``normalize`` (steepest-ascent direction), ``project`` (back into the
ε-ball) and ``random_start``; an attack picks the step size, the number of steps, whether to start
at random and whether each example stops at its first success.

References:
    Goodfellow et al. 2015, "Explaining and harnessing adversarial examples" (FGSM).
    Kurakin et al. 2016, "Adversarial examples in the physical world" (BIM; seed 004 runs BIM-a,
    stopping at the first success, and BIM-b, a fixed number of iterations, with L2 budgets).
    Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks" (PGD).
    Seed 000 (Prinz et al., end-to-end waveform attacks): PGDn, Adam on the sign of the gradient.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from attacks.losses import attack_loss
from attacks.threat import Budget, ball, per_example
from victims.bounds import Bounds
from victims.victim import Domain

def reached(logits: Tensor, labels: Tensor, targets: Tensor | None, confidence: float | None) -> Tensor:
    """Per-example stop flag: adversarial, and (if set) the adversarial class's probability
    ``>= confidence`` (seed 004's BIM setting: 75 %)."""
    pred = logits.argmax(dim=-1)
    hit = pred == targets if targets is not None else pred != labels
    if confidence is None:
        return hit
    adv_class = targets if targets is not None else pred
    prob = logits.softmax(dim=-1).gather(1, adv_class[:, None]).squeeze(1)
    return hit & (prob >= confidence)


class GradientAttack(Attack):
    """The shared loop: ``delta ← project(delta + step · normalize(∇ loss))``, then clip to the bounds.

    Args:
        norm: ``"linf"`` or ``"l2"``, the ball the perturbation stays in.
        steps: maximum number of gradient steps.
        rel_stepsize: step size as a fraction of the budget ``eps``.
        abs_stepsize: step size in input units; overrides ``rel_stepsize``.
        random_start: start uniformly inside the ε-ball instead of at the clean input.
        early_stop: stop each example at its first success (BIM-a, PGDn).
        confidence: with ``early_stop``, stop only once the adversarial class has at least this
            probability.
        domain, targeted, eps: see :class:`~attacks.base.Attack`.
    """

    fixed_budget = True
    per_example_budgets = True

    def __init__(self, norm: str = "linf", steps: int = 10, rel_stepsize: float = 0.2,
                 abs_stepsize: float | None = None, random_start: bool = False, early_stop: bool = False,
                 confidence: float | None = None, domain: Domain = "representation",
                 targeted: bool = False, eps: float | None = None) -> None:
        super().__init__(domain=domain, targeted=targeted, eps=eps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if confidence is not None and not 0.0 < confidence <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {confidence}")
        self.ball = ball(norm)
        self.norm = norm
        self.steps = int(steps)
        self.rel_stepsize = float(rel_stepsize)
        self.abs_stepsize = abs_stepsize
        self.random_start = random_start
        self.early_stop = early_stop
        self.confidence = confidence

    def stepsize(self, eps: Budget) -> Budget:
        return float(self.abs_stepsize) if self.abs_stepsize is not None else self.rel_stepsize * eps

    def init_state(self, x: Tensor) -> dict[str, Tensor]:
        """Per-example optimiser state (none for plain steepest ascent)."""
        return {}

    def update(self, grad: Tensor, state: dict[str, Tensor], idx: Tensor, step: int, eps: Budget) -> Tensor:
        """The change of ``delta`` for the examples ``idx`` given the ascent gradient ``grad`` (``eps``:
        their budgets)."""
        return self.stepsize(eps) * self.ball.normalize(grad)

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | Tensor | None) -> RunOutput:
        assert eps is not None
        start = self.random_start and bool((torch.as_tensor(eps) > 0).any())
        delta = self.ball.random_start(x, per_example(eps, x)) if start else torch.zeros_like(x)
        delta = bounds.clip(x + delta) - x
        state = self.init_state(x)

        def move(step: int, idx: Tensor, grad: Tensor) -> Tensor:
            e = per_example(eps, x, idx)
            moved = self.ball.project(delta[idx] + self.update(grad, state, idx, step, e), e)
            return bounds.clip(x[idx] + moved) - x[idx]

        return ascend(model, x, labels, targets, delta, self.steps, move,
                      self.confidence if self.early_stop else False)


def ascend(model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None, delta: Tensor, steps: int,
           move: Callable[[int, Tensor, Tensor], Tensor], stop: float | None | bool) -> RunOutput:
    """The loop of every gradient-ascent attack: at each step the loss gradient at ``x + delta`` of the examples
    still running (``idx``), ``delta[idx] = move(step, idx, grad)``; with ``stop`` not ``False``, an example leaves
    at its first success (``stop``: the confidence :func:`reached` asks for, ``None`` for any)."""
    iterations = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    idx = torch.arange(len(x), device=x.device)
    for step in range(steps):
        x_adv = (x[idx] + delta[idx]).requires_grad_(True)
        logits = model(x_adv)
        tgt = targets[idx] if targets is not None else None
        grad, = torch.autograd.grad(attack_loss(logits, labels[idx], tgt), x_adv)
        if stop is not False:
            keep = ~reached(logits.detach(), labels[idx], tgt, stop)
            idx, grad = idx[keep], grad[keep]
            if len(idx) == 0:
                break
        delta[idx] = move(step, idx, grad)
        iterations[idx] += 1
    return RunOutput(adversarial=(x + delta).detach(), iterations=iterations)


@ATTACKS.register("fgsm")
class FGSM(GradientAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``eps``.

    With ``norm="l2"`` this is the fast gradient method (step along the unit-L2 gradient).
    """

    family = "single_step"

    def __init__(self, norm: str = "linf", domain: Domain = "representation", targeted: bool = False,
                 eps: float | None = None) -> None:
        super().__init__(norm=norm, steps=1, rel_stepsize=1.0, domain=domain, targeted=targeted, eps=eps)


@ATTACKS.register("bim_a")
class BIMa(GradientAttack):
    """Basic iterative method, variant a (Kurakin et al. 2016): stop at the first success.

    ``confidence`` (seed 004: 0.75) delays the stop until the adversarial class is that likely.
    """

    def __init__(self, norm: str = "linf", steps: int = 10, rel_stepsize: float = 0.2,
                 abs_stepsize: float | None = None, confidence: float | None = None,
                 domain: Domain = "representation", targeted: bool = False, eps: float | None = None) -> None:
        super().__init__(norm=norm, steps=steps, rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize,
                         early_stop=True, confidence=confidence, domain=domain, targeted=targeted, eps=eps)


@ATTACKS.register("bim_b")
class BIMb(GradientAttack):
    """Basic iterative method, variant b (Kurakin et al. 2016): a fixed number of iterations."""

    def __init__(self, norm: str = "linf", steps: int = 10, rel_stepsize: float = 0.2,
                 abs_stepsize: float | None = None, domain: Domain = "representation",
                 targeted: bool = False, eps: float | None = None) -> None:
        super().__init__(norm=norm, steps=steps, rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize,
                         domain=domain, targeted=targeted, eps=eps)


@ATTACKS.register("pgd")
class PGD(GradientAttack):
    """Projected gradient descent (Madry et al. 2018): random start, fixed iterations, L∞ or L2."""

    def __init__(self, norm: str = "linf", steps: int = 40, rel_stepsize: float = 0.01 / 0.3,
                 abs_stepsize: float | None = None, random_start: bool = True,
                 domain: Domain = "representation", targeted: bool = False, eps: float | None = None) -> None:
        super().__init__(norm=norm, steps=steps, rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize,
                         random_start=random_start, domain=domain, targeted=targeted, eps=eps)


@ATTACKS.register("pgdn")
class PGDn(GradientAttack):
    """Seed 000's PGDn: Adam on the sign of the gradient inside the L∞ ball, stop at first success.

    ``delta`` starts uniform in ``[-eps, eps]``, each step feeds ``sign(∇ loss)`` to Adam (learning
    rate ``lr``), clips ``delta`` to ``±eps`` and ``x + delta`` to the bounds. Seed 000's settings:
    ``eps 0.0005, lr 1e-5`` (≥ 150 of 200 found) and ``eps 0.01, lr 0.001`` (≥ 180), 500 steps.

    Args:
        lr: Adam learning rate.
        betas: Adam's moment decay rates.
    """

    def __init__(self, lr: float = 1e-5, steps: int = 500, betas: tuple[float, float] = (0.9, 0.999),
                 random_start: bool = True, domain: Domain = "waveform", targeted: bool = False,
                 eps: float | None = None) -> None:
        super().__init__(norm="linf", steps=steps, abs_stepsize=lr, random_start=random_start,
                         early_stop=True, domain=domain, targeted=targeted, eps=eps)
        self.betas = (float(betas[0]), float(betas[1]))

    def init_state(self, x: Tensor) -> dict[str, Tensor]:
        return {"m": torch.zeros_like(x), "v": torch.zeros_like(x)}

    def update(self, grad: Tensor, state: dict[str, Tensor], idx: Tensor, step: int, eps: Budget) -> Tensor:
        """One Adam ascent step on ``sign(grad)``; examples still running share the step count."""
        b1, b2 = self.betas
        sign = grad.sign()
        m = state["m"][idx] * b1 + (1 - b1) * sign
        v = state["v"][idx] * b2 + (1 - b2) * sign * sign
        state["m"][idx], state["v"][idx] = m, v
        m_hat, v_hat = m / (1 - b1 ** (step + 1)), v / (1 - b2 ** (step + 1))
        return self.stepsize(eps) * m_hat / (v_hat.sqrt() + 1e-8)
