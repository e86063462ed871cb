"""The defense registry and what every training-objective file shares: the settings check, the clean input of a
domain with its model and bounds, eval mode for the attack passes, and the logits of an objective's adversarial
examples. Objective files (:mod:`defense.objectives`, :mod:`defense.trades_mart`) register into :data:`OBJECTIVES`
from here; importing :mod:`defense.objectives` registers them all.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from training.step import CleanObjective
from victims.bounds import Bounds
from victims.registry import ConfigError, Registry
from victims.victim import DOMAINS, Victim

NORMS = ("linf", "l2")
OBJECTIVES: Registry = Registry("defense")
OBJECTIVES.register("clean")(CleanObjective)


def check_settings(eps: float, norm: str, domain: str) -> None:
    if not eps > 0:
        raise ConfigError(f"defense eps must be > 0, got {eps}")
    if norm not in NORMS:
        raise ConfigError(f"unknown defense norm '{norm}'; known: {', '.join(NORMS)}")
    if domain not in DOMAINS:
        raise ConfigError(f"unknown defense domain '{domain}'; known: {', '.join(DOMAINS)}")


def domain_inputs(victim: Victim, wave: Tensor, domain: str) -> tuple[Tensor, Callable[[Tensor], Tensor], Bounds]:
    """Clean input in ``domain`` (detached), the map from it to logits, and its bounds.

    In the representation domain the front-end and normaliser run once, without gradient.
    """
    if domain == "representation":
        with torch.no_grad():
            x = victim.represent(wave)
        return x.detach(), victim.classify, victim.bounds("representation")
    return wave.detach(), victim.forward, victim.bounds("waveform")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


Perturb = Callable[[Callable[[Tensor], Tensor], Tensor, Tensor, Bounds], Tensor]
"""An objective's inner attack: ``(model, x, labels, bounds) -> x_adv`` (detached)."""


def perturbed_logits(perturb: Perturb, victim: Victim, wave: Tensor, labels: Tensor, domain: str) -> Tensor:
    """Logits (detached, eval mode) of the adversarial inputs ``perturb`` makes for ``wave`` in ``domain``: the
    examples an adversarial-training objective trains on (its ``robust_logits``)."""
    with eval_mode(victim):
        x, model, bounds = domain_inputs(victim, wave, domain)
        x_adv = perturb(model, x, labels, bounds)
        with torch.no_grad():
            return model(x_adv)
