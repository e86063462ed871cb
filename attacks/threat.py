"""Threat models shared by attacks, adversarial training and NES: one place for the ε-ball.

Following foolbox's ``gradient_descent_base.py``, a threat model (:class:`LinfBall`, :class:`L2Ball`)
supplies ``normalize`` (the steepest-ascent direction), ``project`` (back into the ε-ball) and
``random_start``. Budgets are a float shared by the batch or one per example (:func:`per_example`),
and :func:`batch_view` shapes any per-example quantity to broadcast over an input batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

_TINY = 1e-12

Budget = float | Tensor
"""A budget shared by the batch, or per example shaped to broadcast (``(N, 1, ..., 1)``, see :func:`per_example`)."""


def batch_view(t: Tensor, like: Tensor) -> Tensor:
    """View an ``(N,)`` tensor as ``(N, 1, ..., 1)`` so it broadcasts over the trailing dims of ``like``."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def norms(t: Tensor) -> Tensor:
    """Per-example L2 norm shaped to broadcast against ``t``."""
    return batch_view(t.flatten(1).norm(dim=1), t)


def perturbation_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-example norm of ``delta`` (leading dim = examples) in ``linf``, ``l2``, ``l1`` or ``l0``."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ValueError(f"unknown norm '{norm}'; known: linf, l2, l1, l0")


class LinfBall:
    """L∞ threat model: sign of the gradient, element-wise clipping to ``[-eps, eps]``."""

    name = "linf"

    def normalize(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def project(self, delta: Tensor, eps: Budget) -> Tensor:
        if isinstance(eps, Tensor):
            return torch.minimum(torch.maximum(delta, -eps), eps)
        return delta.clamp(-eps, eps)

    def random_start(self, like: Tensor, eps: Budget) -> Tensor:
        return torch.empty_like(like).uniform_(-1.0, 1.0) * eps


class L2Ball:
    """L2 threat model: unit-norm gradient, rescaling onto the ball, uniform start inside it."""

    name = "l2"

    def normalize(self, grad: Tensor) -> Tensor:
        return grad / norms(grad).clamp_min(_TINY)

    def project(self, delta: Tensor, eps: Budget) -> Tensor:
        return delta * (eps / norms(delta).clamp_min(_TINY)).clamp(max=1.0)

    def random_start(self, like: Tensor, eps: Budget) -> Tensor:
        """Uniform in the L2 ball: Gaussian direction, radius ``eps · u^(1/d)``."""
        direction = torch.randn_like(like)
        dim = like[0].numel()
        u = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) ** (1.0 / dim)
        return direction / norms(direction).clamp_min(_TINY) * (batch_view(u, like) * eps)


def per_example(eps: float | Tensor, like: Tensor, idx: Tensor | None = None) -> Budget:
    """``eps`` unchanged if a float, else its entries ``idx`` (all by default) shaped to broadcast
    against ``like`` (one budget per example)."""
    if not isinstance(eps, Tensor):
        return eps
    return batch_view(eps if idx is None else eps[idx], like)


def project_l1(delta: Tensor, eps: Tensor) -> Tensor:
    """Euclidean projection of each example of ``delta`` onto the L1 ball of radius ``eps`` (``(N,)``),
    by sorting (Duchi, Shalev-Shwartz, Singer & Chandra 2008, "Efficient projections onto the l1-ball")."""
    flat = delta.flatten(1)
    radius = eps.to(flat.dtype).view(-1, 1)
    mu = flat.abs().sort(dim=1, descending=True).values
    cumsum = mu.cumsum(dim=1)
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    count = (mu * ranks > cumsum - radius).sum(dim=1, keepdim=True).clamp_min(1)  # the condition holds on a prefix
    theta = (cumsum.gather(1, count - 1) - radius) / count.to(flat.dtype)
    shrunk = flat.sign() * (flat.abs() - theta).clamp_min(0)
    inside = flat.abs().sum(dim=1, keepdim=True) <= radius
    return torch.where(inside, flat, shrunk).view_as(delta)


def project_l0(delta: Tensor, eps: Tensor) -> Tensor:
    """Keep each example's ``⌊eps⌋`` entries of largest magnitude (``eps``: ``(N,)``), zero the rest
    (ties at the threshold are kept)."""
    flat = delta.flatten(1)
    keep = eps.floor().to(torch.int64).clamp(0, flat.shape[1]).view(-1, 1)
    ranked = flat.abs().sort(dim=1, descending=True).values
    threshold = ranked.gather(1, (keep - 1).clamp_min(0))
    mask = (flat.abs() >= threshold) & (keep > 0)
    return (flat * mask).view_as(delta)


BALLS = {"linf": LinfBall(), "l2": L2Ball()}


def ball(norm: str) -> LinfBall | L2Ball:
    """The threat model named ``norm``; a one-line ValueError for anything else."""
    if norm not in BALLS:
        raise ValueError(f"unknown norm '{norm}' for a gradient attack; known: {', '.join(BALLS)}")
    return BALLS[norm]
