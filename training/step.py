"""One training step's contract: how an objective turns one batch into parameter gradients.

The trainer zeroes gradients, calls the objective, and steps the optimiser; the objective runs
the forward pass(es) and calls ``backward`` itself. That lets an adversarial objective reuse the
clean backward pass for the input gradient. This module holds only what the trainer calls: the
protocols and the default clean objective; the defenses and their registry live in
``defense/objectives.py`` ("defense" configs name them). An adversarial objective also crafts its
own attack on validation batches (:class:`AdversarialObjective`), so the trainer can select epochs
on robust validation accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch.nn.functional as F
from torch import Tensor

from victims.victim import Victim

Backward = Callable[[Tensor], None]


@dataclass
class StepOutput:
    """Result of one objective step.

    Attributes:
        loss: detached scalar, the objective that was minimised.
        logits: detached ``(B, C)`` logits of the clean batch (for training accuracy).
    """

    loss: Tensor
    logits: Tensor


class Objective(Protocol):
    """Computes the loss of one batch and calls ``backward`` on it (possibly in parts)."""

    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, backward: Backward) -> StepOutput:
        ...


@runtime_checkable
class AdversarialObjective(Objective, Protocol):
    """An objective that trains on adversarial examples and can craft them for evaluation."""

    def robust_logits(self, victim: Victim, wave: Tensor, labels: Tensor) -> Tensor:
        """Detached logits of the objective's adversarial examples for ``wave``, crafted in eval mode
        with gradients w.r.t. the input only (no parameter gradients, no BatchNorm update)."""
        ...


class CleanObjective:
    """Standard empirical risk: cross-entropy on clean inputs."""

    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, backward: Backward) -> StepOutput:
        logits = victim(wave)
        loss = F.cross_entropy(logits, labels)
        backward(loss)
        return StepOutput(loss.detach(), logits.detach())
