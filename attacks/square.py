"""Square attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square attack: a query-efficient
black-box adversarial attack via random search"), L∞ and L2, score-based, fixed budget.

A random search on the boundary of the ε-ball: each iteration changes the perturbation inside one
random window (a square on an image) and keeps the change if the loss falls; the window's side shrinks
with the schedule of the paper's ``p`` (fraction of the input a window covers: halved after 10, 50, 200,
500, 1,000, 2,000, 4,000, 6,000 and 8,000 of 10,000 iterations, rescaled to ``max_queries``). L∞
(Algorithm 2): start from ±ε stripes, set a window to ±ε with one random sign per channel. L2 (Algorithm
3): start from a grid of the paper's centred ±"rings" patterns, move perturbation mass from a second
window into the first, and rescale the whole perturbation to norm ε. The loss is the margin
``Z_y − max_{k≠y} Z_k`` (targeted: the target's cross-entropy, as in the paper); an example stops once its
top class is adversarial.

Audio inputs have one or two trailing ("spatial") dims after the channel dim: the windows are
hyper-rectangles of side ``round((p · n / c)^(1/d))`` (``d`` trailing dims, clipped to each dim's size),
segments on a waveform and rectangles on a spectrogram; L∞'s stripes run along the last dim (a ±ε per
sample on a waveform). Window positions are drawn per example. Like :mod:`attacks.nes`, the attack sees
the model's outputs only (no gradient; ``torch.no_grad()``), stays inside the victim's bounds, and counts
queries exactly per example: one for the initial perturbation and one per iteration, at most
``max_queries``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from attacks.losses import class_margin
from attacks.threat import batch_view, norms, per_example
from victims.bounds import Bounds
from victims.victim import Domain

P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Iterations (out of 10,000) after which the paper halves ``p``."""


def p_schedule(p_init: float, iteration: int, n_iterations: int) -> float:
    """The paper's ``p`` at ``iteration`` of ``n_iterations`` (the schedule rescaled to 10,000)."""
    it = int(iteration / n_iterations * 10_000)
    return p_init / 2 ** sum(it > mark for mark in P_HALVINGS)


def rings(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Nested centred boxes weighted ``1/(k+1)²`` (the paper's ``M(r, s)``), unit L2 norm.

    An entry at Chebyshev distance ``r`` from the centre holds ``Σ_{k=r}^{K−1} 1/(k+1)²``,
    ``K = max_j (n_j // 2 + 1)``.
    """
    grids = torch.meshgrid(*[(torch.arange(n, device=like.device) - n // 2).abs() for n in shape], indexing="ij")
    dist = torch.stack(grids).amax(dim=0)
    k = torch.arange(max(n // 2 + 1 for n in shape), device=like.device, dtype=like.dtype)
    tail = (1 / (k + 1) ** 2).flip(0).cumsum(0).flip(0)
    out = tail[dist]
    return out / out.norm()


def eta(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """The L2 window pattern: :func:`rings` on one half (split along a random axis), minus them on the
    other, unit L2 norm."""
    axes = [j for j, n in enumerate(shape) if n >= 2]
    if not axes:
        return torch.ones(shape, dtype=like.dtype, device=like.device)
    axis = axes[int(torch.randint(len(axes), (1,)))]
    first = list(shape)
    first[axis] = shape[axis] // 2
    second = list(shape)
    second[axis] = shape[axis] - first[axis]
    out = torch.cat([rings(tuple(first), like), -rings(tuple(second), like)], dim=axis)
    return out / out.norm()


def place(pattern: Tensor, pos: Tensor, spatial: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``pattern`` (window shape) put at each example's corner ``pos`` (``(N, d)``) of an input with
    trailing dims ``spatial``: ``(values, mask)``, each ``(N, 1, *spatial)``, zero/False outside."""
    n, d = pos.shape
    inside = torch.ones((n, *spatial), dtype=torch.bool, device=pos.device)
    flat = torch.zeros((n, *spatial), dtype=torch.int64, device=pos.device)
    stride = 1
    for j in reversed(range(d)):
        view = [1] * (d + 1)
        view[j + 1] = spatial[j]
        rel = torch.arange(spatial[j], device=pos.device).view(view) - pos[:, j].view(-1, *([1] * d))
        inside &= (rel >= 0) & (rel < pattern.shape[j])
        flat = flat + rel.clamp(0, pattern.shape[j] - 1) * stride
        stride *= pattern.shape[j]
    values = pattern.flatten()[flat] * inside
    return values.unsqueeze(1), inside.unsqueeze(1)


def random_corners(n: int, spatial: tuple[int, ...], sides: tuple[int, ...], device: torch.device) -> Tensor:
    """``(n, d)`` window corners, uniform over the positions where the window fits."""
    return torch.stack([torch.randint(s - w + 1, (n,), device=device) for s, w in zip(spatial, sides)], dim=1)


def random_signs(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Independent ±1 of ``shape``."""
    return torch.randint(2, shape, device=like.device).to(like.dtype) * 2 - 1


@ATTACKS.register("square")
class Square(Attack):
    """Square attack, query budget per example.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        max_queries: model evaluations allowed per example (the paper: 10,000).
        p_init: initial fraction of the input a window covers (AutoAttack: 0.8; the paper's L∞
            ImageNet setting: 0.05).
        domain, targeted, eps: see :class:`~attacks.base.Attack`.
    """

    family = "black_box"
    fixed_budget = True
    per_example_budgets = True

    def __init__(self, norm: str = "linf", max_queries: int = 5000, p_init: float = 0.8,
                 domain: Domain = "representation", targeted: bool = False, eps: float | None = None) -> None:
        super().__init__(domain=domain, targeted=targeted, eps=eps)
        if norm not in ("linf", "l2"):
            raise ValueError(f"square norm must be 'linf' or 'l2', got '{norm}'")
        if max_queries < 2 or not 0 < p_init <= 1:
            raise ValueError(f"square needs max_queries >= 2 and p_init in (0, 1], got {max_queries}, {p_init}")
        self.norm = norm
        self.max_queries = int(max_queries)
        self.p_init = float(p_init)

    def _scores(self, model: ModelFn, x_adv: Tensor, labels: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(margin, loss)``: the margin is ≤ 0 exactly where the input is adversarial; the loss is minimised."""
        logits = model(x_adv)
        if targets is None:
            margin = class_margin(logits, labels)
            return margin, margin
        return -class_margin(logits, targets), torch.nn.functional.cross_entropy(logits, targets, reduction="none")

    def _side(self, p: float, x: Tensor, minimum: int) -> tuple[int, ...]:
        """Window sides for the fraction ``p`` (L2: at least 3 and odd, as in the paper's code)."""
        spatial = x.shape[2:]
        side = max(int(round((p * math.prod(spatial)) ** (1 / len(spatial)))), minimum)
        if minimum > 1 and side % 2 == 0:
            side += 1
        return tuple(min(side, s) for s in spatial)

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | Tensor | None) -> RunOutput:
        assert eps is not None
        if x.dim() < 3:
            raise ValueError(f"square needs inputs (N, C, ...) with a dim after the channel, got {tuple(x.shape)}")
        with torch.no_grad():
            return self._run(model, x, labels, targets, bounds, eps)

    def _init(self, x: Tensor, e: Tensor | float) -> Tensor:
        """The paper's initial perturbation: ±ε stripes (L∞) or a grid of ±:func:`eta` tiles scaled to ε (L2)."""
        n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
        if self.norm == "linf":
            return e * random_signs((n, c, *([1] * (len(spatial) - 1)), spatial[-1]), x)
        sides = tuple(max(s // 5, 1) for s in spatial)
        counts = [min(5, s // w) for s, w in zip(spatial, sides)]
        starts = [(s - k * w) // 2 for s, w, k in zip(spatial, sides, counts)]
        delta = torch.zeros_like(x)
        pattern = eta(sides, x)
        for tile in torch.cartesian_prod(*[torch.arange(k) for k in counts]).view(-1, len(spatial)):
            corner = torch.tensor([st + int(t) * w for st, t, w in zip(starts, tile, sides)], device=x.device)
            values, _ = place(pattern, corner.expand(n, -1), spatial)
            delta = delta + values * random_signs((n, c, *([1] * len(spatial))), x)
        return e * delta / norms(delta).clamp_min(1e-12)

    def _propose(self, x: Tensor, delta: Tensor, e: Tensor | float, p: float) -> Tensor:
        """One random-search proposal for the perturbations ``delta`` of the clean inputs ``x``."""
        n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
        signs = random_signs((n, c, *([1] * len(spatial))), x)
        if self.norm == "linf":
            sides = self._side(p, x, 1)
            _, mask = place(torch.ones(sides, dtype=x.dtype, device=x.device),
                            random_corners(n, spatial, sides, x.device), spatial)
            return torch.where(mask, e * signs, delta)
        sides = self._side(p, x, 3)
        values, mask = place(eta(sides, x), random_corners(n, spatial, sides, x.device), spatial)
        _, mask2 = place(torch.ones(sides, dtype=x.dtype, device=x.device),
                         random_corners(n, spatial, sides, x.device), spatial)
        channel_sum = tuple(range(2, x.dim()))
        old = delta * mask
        old = old / old.pow(2).sum(dim=channel_sum, keepdim=True).sqrt().clamp_min(1e-12)
        new = values * signs + old
        room = ((e ** 2 - norms(delta) ** 2).clamp_min(0) / c + norms(delta * (mask | mask2)) ** 2).sqrt()
        new = new / new.pow(2).sum(dim=channel_sum, keepdim=True).sqrt().clamp_min(1e-12) * room
        delta = torch.where(mask, new, delta.masked_fill(mask2, 0.0))
        return e * delta / norms(delta).clamp_min(1e-12)

    def _run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None, bounds: Bounds,
             eps: float | Tensor) -> RunOutput:
        n = x.shape[0]
        adv = bounds.clip(x + self._init(x, per_example(eps, x)))
        margin, loss = self._scores(model, adv, labels, targets)
        queries = torch.ones(n, dtype=torch.int64, device=x.device)
        iterations = torch.zeros_like(queries)
        n_iterations = self.max_queries - 1
        for it in range(n_iterations):
            idx = (margin > 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xi = x[idx]
            e = per_example(eps, x, idx)
            proposal = bounds.clip(xi + self._propose(xi, adv[idx] - xi, e, p_schedule(self.p_init, it, n_iterations)))
            tgt = None if targets is None else targets[idx]
            m_new, l_new = self._scores(model, proposal, labels[idx], tgt)
            queries[idx] += 1
            iterations[idx] += 1
            accept = (l_new < loss[idx]) | (m_new <= 0)
            adv[idx] = torch.where(batch_view(accept, xi), proposal, adv[idx])
            loss[idx] = torch.where(accept, l_new, loss[idx])
            margin[idx] = torch.where(accept, m_new, margin[idx])
        return RunOutput(adv, iterations, queries)
