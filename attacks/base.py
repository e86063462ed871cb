"""Attack base class, typed result and registry (foolbox's ``base.py`` pattern).

The base owns ``__call__``: it puts the victim in eval mode, maps the waveform into the attack's
domain, takes the bounds from the victim, runs the attack once per budget, measures success and
perturbation norms, and restores the victim's mode. A subclass implements :meth:`Attack.run` only.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Literal, Sequence, final

import torch
from torch import Tensor

from attacks.threat import perturbation_norm
from victims.bounds import Bounds
from victims.registry import Registry
from victims.victim import DOMAINS, Domain, Victim

ATTACKS: Registry = Registry("attack")
Norm = Literal["linf", "l2", "l0"]
FAMILIES = ("single_step", "iterative", "minimum_norm", "black_box", "baseline")
"""What an attack is, for sanity checks and tables: a one-step gradient attack (FGSM), an iterative
gradient attack (BIM, PGD), a minimum-norm attack (DeepFool, C&W, L-BFGS, JSMA), a black-box attack
(NES; queries only) or a baseline that is not an attack (white noise)."""
ModelFn = Callable[[Tensor], Tensor]


@dataclass
class RunOutput:
    """What :meth:`Attack.run` returns for one budget.

    Attributes:
        adversarial: ``(N, ...)`` adversarial inputs in the attack's domain, inside the bounds.
        iterations: ``(N,)`` int64 iterations each example took (where it stopped early).
        queries: ``(N,)`` int64 model evaluations spent per example (forward passes); ``None``
            lets the base report ``iterations`` (one gradient query per iteration).
    """

    adversarial: Tensor
    iterations: Tensor
    queries: Tensor | None = None


@dataclass
class AttackResult:
    """Outcome of an attack on ``N`` examples for ``K`` budgets (``K = 1`` without budgets).

    Attributes:
        adversarial: ``(K, N, ...)`` adversarial inputs in ``domain``.
        clean: ``(N, ...)`` the clean inputs in ``domain``.
        success: ``(K, N)`` bool; a minimum-norm attack counts as successful at budget ``k``
            only where its perturbation norm is ``<= epsilons[k]``.
        norms: ``(K, N)`` perturbation norm ``‖x' − x‖`` in the attack's norm.
        iterations: ``(K, N)`` int64.
        queries: ``(K, N)`` int64.
        adv_logits: ``(K, N, C)`` logits of the adversarial inputs.
        epsilons: ``(K,)`` budgets, or ``None``.
        domain: ``"waveform"`` or ``"representation"``.
        norm: ``"linf"``, ``"l2"`` or ``"l0"``.
    """

    adversarial: Tensor
    clean: Tensor
    success: Tensor
    norms: Tensor
    iterations: Tensor
    queries: Tensor
    adv_logits: Tensor
    epsilons: Tensor | None
    domain: str
    norm: str


def is_adversarial(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
    """Untargeted: the prediction differs from ``labels``; targeted: it equals ``targets``."""
    pred = logits.argmax(dim=-1)
    return pred == targets if targets is not None else pred != labels


class Attack(ABC):
    """Base of every attack.

    Class attributes set by subclasses:
        norm: distance the attack measures (``"linf"``, ``"l2"`` or ``"l0"``).
        fixed_budget: ``True`` when the attack takes a budget ``eps`` (FGSM, BIM, PGD, NES,
            noise); ``False`` for minimum-norm attacks (DeepFool, C&W, L-BFGS, JSMA).
        family: one of :data:`FAMILIES`; tables put baselines and single-step attacks in their own
            rows and the sanity checks compare families (iterative ≥ single-step, white ≥ black ≥ noise).
        per_example_budgets: :meth:`run` accepts ``eps`` as an ``(N,)`` tensor, one budget per example
            (the evaluation harness then refines every example's ε* in one call per step).
        domains: the domains the attack works in (a spectral distance needs waveforms).
        targetable: the attack can aim at target classes (noise cannot).

    Args:
        domain: ``"representation"`` (perturb the backbone's input, seed 004) or
            ``"waveform"`` (end to end through the front-end, seed 000).
        targeted: aim at ``targets`` instead of away from ``labels``.
        eps: default budget of a fixed-budget attack (ignored by minimum-norm attacks).
    """

    norm: ClassVar[str] = "l2"
    fixed_budget: ClassVar[bool] = True
    family: ClassVar[str] = "iterative"
    per_example_budgets: ClassVar[bool] = False
    domains: ClassVar[tuple[str, ...]] = DOMAINS
    targetable: ClassVar[bool] = True

    def __init__(self, domain: Domain = "representation", targeted: bool = False,
                 eps: float | None = None) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain '{domain}'; known: {', '.join(DOMAINS)}")
        if domain not in self.domains:
            raise ValueError(f"{type(self).__name__} works in the {' or '.join(self.domains)} domain only, "
                             f"not '{domain}'")
        if targeted and not self.targetable:
            raise ValueError(f"{type(self).__name__} cannot be targeted")
        if eps is not None and eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.domain: Domain = domain
        self.targeted = targeted
        self.eps = eps

    @abstractmethod
    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | None) -> RunOutput:
        """Craft adversarial inputs for the clean batch ``x``.

        Args:
            model: differentiable map from the domain's input to logits (eval mode).
            x: ``(N, ...)`` clean inputs in the attack's domain, detached.
            labels: ``(N,)`` true labels.
            targets: ``(N,)`` target labels when targeted, else ``None``.
            bounds: box the adversarial input must stay in.
            eps: the budget for a fixed-budget attack (a float, or an ``(N,)`` tensor when the class sets
                ``per_example_budgets``), ``None`` for minimum-norm attacks.
        """

    @final
    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, *, targets: Tensor | None = None,
                 epsilons: Sequence[float] | Tensor | None = None) -> AttackResult:
        """Attack waveforms ``(N, 1, T)`` of ``victim`` with each budget in ``epsilons``.

        ``epsilons`` is a list of ``K`` budgets shared by the examples, or, for a fixed-budget attack with
        ``per_example_budgets``, a ``(K, N)`` tensor of one budget per example and row.

        Raises:
            ValueError: if a targeted attack gets no targets, or a fixed-budget attack no budget.
        """
        if self.targeted and targets is None:
            raise ValueError(f"{type(self).__name__} is targeted but no targets were given")
        eps_list = self._budgets(epsilons)
        was_training = victim.training
        victim.eval()
        try:
            x = victim.to_domain(wave, self.domain)
            bounds = victim.bounds(self.domain)
            model = victim.logits_fn(self.domain)
            if self.fixed_budget:
                outs = [self.run(model, x, labels, targets, bounds,
                                 e.to(x.device, x.dtype) if isinstance(e, Tensor) else float(e)) for e in eps_list]
            else:
                outs = [self.run(model, x, labels, targets, bounds, None)]
            adv = torch.stack([o.adversarial.detach() for o in outs])
            with torch.no_grad():
                logits = torch.stack([model(a) for a in adv])
            success = torch.stack([is_adversarial(lg, labels, targets) for lg in logits])
            norms = torch.stack([perturbation_norm(a - x, self.norm) for a in adv])
            iters = torch.stack([o.iterations.to(torch.int64) for o in outs])
            queries = torch.stack([(o.queries if o.queries is not None else o.iterations).to(torch.int64)
                                   for o in outs])
            eps_t = None if epsilons is None else torch.stack(
                [torch.as_tensor(e, dtype=norms.dtype, device=norms.device) for e in eps_list])
            if not self.fixed_budget and eps_t is not None:
                success = success & (norms <= eps_t[:, None])
                adv, norms, iters, queries, logits = (t.expand(len(eps_list), *t.shape[1:])
                                                      for t in (adv, norms, iters, queries, logits))
            return AttackResult(adv, x, success, norms, iters, queries, logits, eps_t, self.domain, self.norm)
        finally:
            victim.train(was_training)

    def _budgets(self, epsilons: Sequence[float] | Tensor | None) -> list[float] | list[Tensor]:
        if isinstance(epsilons, Tensor) and epsilons.dim() == 2:
            if not (self.fixed_budget and self.per_example_budgets):
                raise ValueError(f"{type(self).__name__} takes no per-example budgets")
            if epsilons.numel() == 0 or bool((epsilons < 0).any()):
                raise ValueError("per-example budgets must be a non-empty (K, N) tensor of non-negative numbers")
            return list(epsilons.double())
        if epsilons is not None:
            eps = [float(e) for e in (epsilons.tolist() if isinstance(epsilons, Tensor) else epsilons)]
            if not eps or min(eps) < 0:
                raise ValueError(f"budgets must be a non-empty list of non-negative numbers, got {eps}")
            return eps
        if self.fixed_budget and self.eps is None:
            raise ValueError(f"{type(self).__name__} needs a budget: set eps or pass epsilons")
        return [self.eps] if self.fixed_budget else [float("inf")]


def create_attack(name: str, **config: object) -> Attack:
    """Build the attack registered as ``name`` from its config (``configs/attack/<name>.yaml``)."""
    return ATTACKS.create(name, **config)
