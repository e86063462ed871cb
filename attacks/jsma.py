"""Jacobian-based saliency map attack (Papernot et al. 2016, "The limitations of deep learning in
adversarial settings"), L0, batched, memory O(batch × features).

Per iteration: ``α = ∂z_t/∂x`` and ``β = ∂(Σ_{j≠t} z_j)/∂x`` (two backward passes over the batch),
with ``s = sign(θ)``. Papernot's pair saliency picks the pair ``(p, q)`` with ``s·(α_p+α_q) > 0``
and ``s·(β_p+β_q) < 0`` that maximises ``|α_p+α_q| · |β_p+β_q|``. The full ``features × features``
pair matrix does not fit for spectrograms, so pairs are searched only among the ``candidates``
features with the largest ``s·(α − β)`` (an ``(N, k, k)`` matrix); if no candidate pair meets the
sign conditions, the pair with the largest ``s·(α_p+α_q)`` is taken (ART's top-two rule). Both
features move by ``θ`` × the width of their bounds and are clipped; a feature leaves the search
domain once it sits on the bound it is pushed towards. An example stops when it reaches its
target, when more than ``gamma`` of its features have changed, or after ``steps`` iterations.

JSMA is targeted by nature; untargeted, the target is the most likely wrong class at the clean
input (the nearest class by the model's own ranking; deterministic).
"""
from __future__ import annotations

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from victims.bounds import Bounds
from victims.victim import Domain


@ATTACKS.register("jsma")
class JSMA(Attack):
    """Batched JSMA with the pair search restricted to the top candidates.

    Args:
        theta: change of a chosen feature per iteration, as a fraction of its bound width (signed:
            ``> 0`` increases features, ``< 0`` decreases them; Papernot: ``+1``).
        gamma: maximum fraction of features changed, in ``(0, 1]`` (Papernot: 0.145).
        steps: maximum iterations (seed 004: 1,000).
        candidates: features considered for the pair search per example and iteration.
        domain, targeted: see :class:`~attacks.base.Attack`.
    """

    family = "minimum_norm"
    norm = "l0"
    fixed_budget = False

    def __init__(self, theta: float = 1.0, gamma: float = 0.145, steps: int = 1000, candidates: int = 32,
                 domain: Domain = "representation", targeted: bool = False) -> None:
        super().__init__(domain=domain, targeted=targeted)
        if theta == 0 or not 0 < gamma <= 1 or steps < 1 or candidates < 2:
            raise ValueError(f"jsma needs theta != 0, 0 < gamma <= 1, steps >= 1, candidates >= 2; got "
                             f"{theta}, {gamma}, {steps}, {candidates}")
        self.theta = float(theta)
        self.gamma = float(gamma)
        self.steps = int(steps)
        self.candidates = int(candidates)

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | None) -> RunOutput:
        n, shape = len(x), x.shape[1:]
        flat = x.flatten(1)
        lo = torch.as_tensor(bounds.lower, dtype=x.dtype, device=x.device).expand_as(x).flatten(1)
        hi = torch.as_tensor(bounds.upper, dtype=x.dtype, device=x.device).expand_as(x).flatten(1)
        goal = hi if self.theta > 0 else lo
        if targets is None:
            with torch.no_grad():
                targets = model(x).scatter(1, labels[:, None], float("-inf")).argmax(dim=1)
        adv = flat.clone()
        domain = adv != goal
        max_changed = self.gamma * flat.shape[1]
        iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
        idx = torch.arange(n, device=x.device)
        for _ in range(self.steps):
            x_cur = adv[idx].view(-1, *shape).requires_grad_(True)
            logits = model(x_cur)
            changed = (adv[idx] != flat[idx]).sum(dim=1)
            keep = (logits.detach().argmax(dim=1) != targets[idx]) & (changed < max_changed) & domain[idx].any(1)
            if not keep.any():
                break
            alpha, beta = self._saliency_grads(logits, x_cur, targets[idx])
            idx = idx[keep]
            p, q = self._pick(alpha[keep], beta[keep], domain[idx])
            rows = torch.arange(len(idx), device=x.device)
            sub, g = adv[idx], goal[idx]
            step = self.theta * (hi[idx] - lo[idx])
            for j in (p, q):
                moved = sub[rows, j] + step[rows, j]
                sub[rows, j] = torch.minimum(moved, g[rows, j]) if self.theta > 0 else torch.maximum(moved, g[rows, j])
            adv[idx] = sub
            domain[idx] = sub != g
            iterations[idx] += 1
        return RunOutput(adversarial=bounds.clip(adv.view_as(x)).detach(), iterations=iterations)

    @staticmethod
    def _saliency_grads(logits: Tensor, x_cur: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``α = ∂z_t/∂x`` and ``β = ∂(Σ_j z_j)/∂x − α``, flattened to ``(n, D)``."""
        z_t = logits.gather(1, targets[:, None]).sum()
        alpha, = torch.autograd.grad(z_t, x_cur, retain_graph=True)
        total, = torch.autograd.grad(logits.sum(), x_cur)
        return alpha.flatten(1), (total - alpha).flatten(1)

    def _pick(self, alpha: Tensor, beta: Tensor, domain: Tensor) -> tuple[Tensor, Tensor]:
        """The two feature indices per example (see module docstring); ``(n,)`` each."""
        s = 1.0 if self.theta > 0 else -1.0
        a, b = s * alpha, s * beta
        k = min(self.candidates, a.shape[1])
        rank = (a - b).masked_fill(~domain, float("-inf"))
        cand = rank.topk(k, dim=1).indices
        ok = domain.gather(1, cand)
        a_c, b_c = a.gather(1, cand), b.gather(1, cand)
        a_pq = a_c[:, :, None] + a_c[:, None, :]
        b_pq = b_c[:, :, None] + b_c[:, None, :]
        pair_ok = ok[:, :, None] & ok[:, None, :]
        single = (domain.sum(1) <= 1)[:, None, None]
        pair_ok = pair_ok & (~torch.eye(k, dtype=torch.bool, device=a.device) | single)
        valid = pair_ok & (a_pq > 0) & (b_pq < 0)
        score = torch.where(valid, a_pq * b_pq.abs(), torch.full_like(a_pq, float("-inf")))
        fallback = a_pq.masked_fill(~pair_ok, float("-inf"))
        score = torch.where(valid.flatten(1).any(1)[:, None, None], score, fallback)
        best = score.flatten(1).argmax(dim=1)
        rows = torch.arange(len(best), device=a.device)
        return cand[rows, best // k], cand[rows, best % k]
