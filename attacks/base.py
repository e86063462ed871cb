"""Attack base class, typed result and registry (foolbox's ``base.py`` pattern).

The base owns ``__call__``: it puts the victim in eval mode, maps the waveform into the attack's
domain, takes the bounds from the victim, runs the attack once per budget, measures success and
perturbation norms, and restores the victim's mode. A subclass implements :meth:`Attack.run` only.

Every attack also takes the adaptive-attack options of Athalye, Carlini & Wagner (2018), "Obfuscated
gradients give a false sense of security", as config keys that :data:`ATTACKS` handles for all of them
(no attack's constructor names them): ``bpda`` (``null``, ``"identity"`` or ``"approx"``: the backward
pass through an input-transform defense) and ``eot_samples`` (draws of a random transform averaged per
gradient). They reach the victim's ``logits_fn``; an undefended victim ignores them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Sequence, final

import torch
from torch import Tensor

from attacks.threat import perturbation_norm
from victims.bounds import Bounds
from victims.registry import ConfigError, Registry
from victims.victim import DOMAINS, Domain, Victim

Norm = Literal["linf", "l2", "l1", "l0"]
FAMILIES = ("single_step", "iterative", "minimum_norm", "black_box", "baseline")
"""What an attack is, for sanity checks and tables: a one-step gradient attack (FGSM), an iterative
gradient attack (BIM, PGD), a minimum-norm attack (DeepFool, C&W, L-BFGS, JSMA), a black-box attack
(NES; queries only) or a baseline that is not an attack (white noise)."""
ModelFn = Callable[[Tensor], Tensor]
QueryHook = Callable[[Tensor, Tensor], None]
"""Called with the inputs and logits (both detached) of every evaluation of the attacked function."""
BPDA_MODES = ("identity", "approx")
"""BPDA's backward pass (Athalye et al. 2018 Sec. 4.1): the identity (straight-through) or the
transform's differentiable approximation."""
ADAPTIVE_KEYS = ("bpda", "eot_samples")
"""Config keys every attack accepts (:meth:`AttackRegistry.create`)."""
GRADIENT_FREE = ("black_box", "baseline")
"""Families that never differentiate the model: BPDA and EoT do not apply (they query the deployed model)."""


def check_adaptive(bpda: object, eot_samples: object) -> None:
    """Raise a one-line :class:`ConfigError` unless ``bpda`` is ``None`` or one of :data:`BPDA_MODES` and
    ``eot_samples`` an integer >= 1."""
    if bpda is not None and bpda not in BPDA_MODES:
        raise ConfigError(f"unknown bpda '{bpda}'; known: null, {', '.join(BPDA_MODES)}")
    if not isinstance(eot_samples, int) or isinstance(eot_samples, bool) or eot_samples < 1:
        raise ConfigError(f"eot_samples must be an integer >= 1, got {eot_samples!r}")


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
        norm: distance the attack measures (``"linf"``, ``"l2"``, ``"l1"``, ``"l0"``, or ``"perceptual"``:
            :mod:`attacks.perceptual`).
        fixed_budget: ``True`` when the attack takes a budget ``eps`` (FGSM, BIM, PGD, NES,
            noise); ``False`` for minimum-norm attacks (DeepFool, C&W, L-BFGS, JSMA).
        family: one of :data:`FAMILIES`; tables put baselines and single-step attacks in their own
            rows and the sanity checks compare families (iterative ≥ single-step, white ≥ black ≥ noise).
        per_example_budgets: :meth:`run` accepts ``eps`` as an ``(N,)`` tensor, one budget per example
            (the evaluation harness then refines every example's ε* in one call per step).
        domains: the domains the attack works in (a spectral distance needs waveforms).
        targetable: the attack can aim at target classes (noise cannot).
        bpda, eot_samples: the adaptive-attack options (see the module docstring; set by
            :meth:`adapt`, which :data:`ATTACKS` calls from the config keys of the same names).

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
    bpda: str | None = None
    eot_samples: int = 1

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

    def adapt(self, bpda: str | None = None, eot_samples: int = 1) -> "Attack":
        """Set the adaptive-attack options and return the attack.

        Raises:
            ConfigError: for a bad value, or either option on an attack that uses no gradient
                (NES and noise query the deployed model; they need neither).
        """
        check_adaptive(bpda, eot_samples)
        if self.family in GRADIENT_FREE and (bpda is not None or eot_samples != 1):
            raise ConfigError(f"{type(self).__name__} uses no gradient (family {self.family}): bpda and "
                              "eot_samples do not apply; it queries the deployed model as it is")
        self.bpda, self.eot_samples = bpda, eot_samples
        return self

    def bind(self, victim: Victim) -> None:
        """Read what the attack needs of the victim beyond its domain's input, before :meth:`run` (default:
        nothing; the perceptual norm needs the sample rate)."""

    def measure(self, adversarial: Tensor, clean: Tensor) -> Tensor:
        """``(K, N)`` sizes of the perturbations ``adversarial − clean`` (``(K, N, ...)`` against ``(N, ...)``) in
        the attack's norm; a norm that depends on the clean input (the perceptual one) overrides it."""
        return torch.stack([perturbation_norm(a - clean, self.norm) for a in adversarial])

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
                 epsilons: Sequence[float] | Tensor | None = None, on_query: QueryHook | None = None) -> AttackResult:
        """Attack waveforms ``(N, 1, T)`` of ``victim`` with each budget in ``epsilons``.

        ``epsilons`` is a list of ``K`` budgets shared by the examples, or, for a fixed-budget attack with
        ``per_example_budgets``, a ``(K, N)`` tensor of one budget per example and row.

        :meth:`run` differentiates ``victim.logits_fn(domain, bpda=..., eot_samples=...)``, but success
        and ``adv_logits`` come from the deployed model ``victim.logits_fn(domain)`` (one draw of a
        random transform): BPDA and EoT are the attacker's tools for finding an input, while the
        defense is judged by what it outputs when deployed. ``queries`` count evaluations of the
        attacked function; with ``eot_samples = k`` on a random transform each is ``k`` forward passes.
        ``on_query`` sees every evaluation of the attacked function as it happens (progress, a time limit: an
        exception it raises ends the attack and propagates).

        Raises:
            ValueError: if a targeted attack gets no targets, or a fixed-budget attack no budget.
        """
        if self.targeted and targets is None:
            raise ValueError(f"{type(self).__name__} is targeted but no targets were given")
        eps_list = self._budgets(epsilons)
        self.bind(victim)
        was_training = victim.training
        victim.eval()
        try:
            x = victim.to_domain(wave, self.domain)
            bounds = victim.bounds(self.domain)
            model = victim.logits_fn(self.domain, bpda=self.bpda, eot_samples=self.eot_samples)
            if on_query is not None:
                model = watched(model, on_query)
            deployed = victim.logits_fn(self.domain)
            if self.fixed_budget:
                outs = [self.run(model, x, labels, targets, bounds,
                                 e.to(x.device, x.dtype) if isinstance(e, Tensor) else float(e)) for e in eps_list]
            else:
                outs = [self.run(model, x, labels, targets, bounds, None)]
            adv = torch.stack([o.adversarial.detach() for o in outs])
            with torch.no_grad():
                logits = torch.stack([deployed(a) for a in adv])
            success = torch.stack([is_adversarial(lg, labels, targets) for lg in logits])
            norms = self.measure(adv, x)
            iters = torch.stack([o.iterations.to(x.device, torch.int64) for o in outs])  # any device a run counted on
            queries = torch.stack([(o.queries if o.queries is not None else o.iterations).to(x.device, torch.int64)
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


def watched(model: ModelFn, on_query: QueryHook) -> ModelFn:
    """``model``, calling ``on_query(inputs, logits)`` (detached) after each evaluation."""

    def evaluate(inputs: Tensor) -> Tensor:
        logits = model(inputs)
        on_query(inputs.detach(), logits.detach())
        return logits

    return evaluate


class AttackRegistry(Registry):
    """The attack registry: :meth:`create` also takes the keys ``bpda`` and ``eot_samples`` for every
    attack and sets them with :meth:`Attack.adapt`."""

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build attack ``name`` from its config, adaptive-attack options included.

        Raises:
            ConfigError: as :meth:`Registry.create`, and for a bad ``bpda`` or ``eot_samples``.
        """
        options = {key: kwargs.pop(key) for key in ADAPTIVE_KEYS if key in kwargs}
        attack = super().create(name, **kwargs)
        try:
            return attack.adapt(**options)
        except ConfigError as err:
            raise ConfigError(f"attack '{name}': {err}") from None


ATTACKS: AttackRegistry = AttackRegistry("attack")


def create_attack(name: str, **config: object) -> Attack:
    """Build the attack registered as ``name`` from its config (``configs/attack/<name>.yaml``),
    including the adaptive-attack keys ``bpda`` and ``eot_samples``."""
    return ATTACKS.create(name, **config)
