"""A victim and attacks whose ε* is known exactly, for the harness and the checks built on it: the line victim
classifies a constant wave by the sign of its mean, and :class:`Threshold` / :class:`MinNorm` move along −1, so a
wave's ε* is the threshold it was built with (:func:`waves_with_thresholds`)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attacks.base import Attack, RunOutput
from victims.frontends.waveform import Waveform
from victims.victim import Victim

T = 16


class MeanSign(nn.Module):
    """Class 0 iff the mean of the input is > 0 (logits ``[m, −m]``)."""

    def forward(self, x: Tensor) -> Tensor:
        m = x.flatten(1).mean(dim=1)
        return torch.stack([m, -m], dim=1)


def line_victim() -> Victim:
    return Victim(Waveform(100), MeanSign(), ["pos", "neg"], T)


def waves_with_thresholds(thresholds: list[float]) -> Tensor:
    """Constant waves whose ε* under :class:`Threshold` (L2 step along −1) is ``thresholds[i]``:
    the mean m = thr/√T reaches 0 exactly at ‖δ‖₂ = thr."""
    return torch.tensor(thresholds, dtype=torch.float32).view(-1, 1, 1).expand(-1, 1, T) / math.sqrt(T)


class Threshold(Attack):
    """Moves every example by ``scale``·ε along −1/√T: succeeds iff scale·ε > m·√T. Logs its calls.

    Its iterations encode the budget (round(1000·ε)) so tests can tell which run a stored output came from.
    """

    norm = "l2"
    fixed_budget = True

    def __init__(self, scale: float = 1.0, domain: str = "waveform") -> None:
        super().__init__(domain=domain)
        self.scale = scale
        self.calls: list[tuple[list[float], float]] = []

    def run(self, model, x, labels, targets, bounds, eps) -> RunOutput:  # type: ignore[no-untyped-def]
        self.calls.append((x.flatten(1).mean(dim=1).mul(math.sqrt(T)).tolist(), eps))
        adv = bounds.clip(x - self.scale * eps * torch.ones_like(x) / math.sqrt(x[0].numel()))
        return RunOutput(adv, torch.full((x.shape[0],), round(1000 * eps)))


class MinNorm(Threshold):
    """A minimum-norm attack that returns a perturbation of norm 1.01·threshold."""

    fixed_budget = False

    def run(self, model, x, labels, targets, bounds, eps) -> RunOutput:  # type: ignore[no-untyped-def]
        thr = x.flatten(1).mean(dim=1) * math.sqrt(T)
        self.calls.append((thr.tolist(), eps))
        adv = x - 1.01 * thr.view(-1, 1, 1) * torch.ones_like(x) / math.sqrt(T)
        return RunOutput(adv, torch.ones(x.shape[0], dtype=torch.long))
