"""Known-answer models for the attack tests: an affine classifier whose distance to its boundary is known.

Logits are ``[m(x), 0, −50, −60]`` with ``m(x) = w·x + b``: classes 2 and 3 never win, so the decision
is the sign of ``m`` and the smallest perturbation that flips it (the box ``[−100, 100]`` never binds
here) has norm ``|m| / ‖w‖_q``, ``q`` the dual norm: ``‖w‖₂`` for L2, ``‖w‖₁`` for L∞, ``max|w_i|``
for L1. Four classes keep the DLR losses (three or four sorted logits) defined.

Also the paired one-sided bound used to compare our attacks' robust accuracy with a peer library's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor, nn

from victims.bounds import Bounds

BOUNDS = Bounds(-100.0, 100.0)
DUAL = {"l2": 2.0, "linf": 1.0, "l1": float("inf")}


class Affine(nn.Module):
    """``(N, 1, D) → (N, 4)`` logits ``[w·x + b, 0, −50, −60]``."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: Tensor) -> Tensor:
        m = x.flatten(1) @ self.w + self.b
        const = torch.tensor([0.0, -50.0, -60.0], dtype=x.dtype).expand(len(x), 3)
        return torch.cat([m[:, None], const], dim=1)


@dataclass
class AffineCase:
    model: Affine
    x: Tensor
    labels: Tensor

    def distance(self, norm: str) -> Tensor:
        """``(N,)`` exact smallest ``norm`` perturbation that changes the decision."""
        m = self.model(self.x)[:, 0]
        return m.abs() / self.model.w.norm(p=DUAL[norm])


def affine_case(n: int = 8, dim: int = 16, seed: int = 0) -> AffineCase:
    """``n`` float64 inputs of ``dim`` features with labels the model's own predictions (class 0 or 1)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=gen, dtype=torch.float64)
    x = torch.randn(n, 1, dim, generator=gen, dtype=torch.float64)
    model = Affine(w, 0.3)
    return AffineCase(model, x, model(x).argmax(dim=1))


def paired_margin(ours_broken: Tensor, theirs_broken: Tensor, alpha: float = 0.01) -> float:
    """How much higher our robust accuracy may be than a peer's on the same clips before it counts as weaker.

    Of the ``d`` clips exactly one attack broke, ``b`` only the peer broke. If the two attacks were equally
    strong, each of those clips would go either way with probability 1/2, so ``b ~ Binomial(d, 1/2)``; we
    allow the smallest excess ``b − (d − b)`` whose one-sided probability is at most ``alpha``, divided by the
    number of clips ``n``: robust accuracy ours ≤ theirs + margin. ``d ≤ n``, so with few clips the bound is
    loose and with many discordant clips it tightens as ``~ sqrt(d)/n``.
    """
    d = int((ours_broken ^ theirs_broken).sum())
    b_max = int(stats.binom.ppf(1 - alpha, d, 0.5)) if d else 0  # P(b > b_max) <= alpha
    return (2 * b_max - d) / len(ours_broken)
