"""DeepFool (Moosavi-Dezfooli et al. 2016, "DeepFool: a simple and accurate method to fool deep
neural networks"), L2 and L∞, batched over examples and candidate classes.

Each iteration linearises the classifier around the current point: for every candidate class
``k`` it takes ``f_k = z_k − z_src`` and ``w_k = ∇f_k`` (one backward pass per candidate over the
whole batch), picks the closest linearised boundary ``k* = argmin |f_k| / ‖w_k‖_q`` (q the dual
norm: 2 for L2, 1 for L∞), and steps just onto it. The accumulated step is scaled by
``1 + overshoot`` (seed 001: 0.02) and the result clipped to the bounds; each example stops as
soon as it is adversarial. Minimum-norm: the found perturbation's norm is the result.

Untargeted (the paper): ``src`` is the true class and the candidates are the ``candidates`` most
likely other classes at the clean input. Targeted (an extension): the only candidate is the target
and ``src`` is the currently most likely other class.

Contract. Every quantity is computed per example (row-wise norms, argmin and steps; the summed
backward only adds independent rows), so given the same model outputs and gradients for an example
the batched result equals the per-example one bit for bit. The model's own round-off may depend on
the batch size (BLAS sums a 6-row ``nn.Linear`` in another order than a 1-row one: an ulp in
float64), and the iteration amplifies it geometrically while an example is far from converging
(4e-15 → 1e-3 over 29 steps on the tests' tiny victim): a long or unconverged path is reproducible
only up to that amplified round-off. An example still not adversarial after ``steps`` iterations
returns its last iterate with ``iterations == steps``; the base then reports it unsuccessful.
"""
from __future__ import annotations

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from attacks.threat import batch_view
from victims.bounds import Bounds
from victims.victim import Domain


@ATTACKS.register("deepfool")
class DeepFool(Attack):
    """Batched DeepFool.

    Args:
        norm: ``"l2"`` or ``"linf"``.
        steps: maximum iterations (seed 004: 100 to 600; seed 001: 200).
        overshoot: relative overshoot of the accumulated step (seed 001: 0.02).
        candidates: number of most likely other classes considered (untargeted).
        domain, targeted: see :class:`~attacks.base.Attack`.
    """

    family = "minimum_norm"
    fixed_budget = False

    def __init__(self, norm: str = "l2", steps: int = 100, overshoot: float = 0.02, candidates: int = 10,
                 domain: Domain = "representation", targeted: bool = False) -> None:
        super().__init__(domain=domain, targeted=targeted)
        if norm not in ("l2", "linf"):
            raise ValueError(f"unknown norm '{norm}' for deepfool; known: l2, linf")
        if steps < 1 or candidates < 1 or overshoot < 0:
            raise ValueError(f"deepfool needs steps >= 1, candidates >= 1, overshoot >= 0; got "
                             f"{steps}, {candidates}, {overshoot}")
        self.norm = norm
        self.steps = int(steps)
        self.overshoot = float(overshoot)
        self.candidates = int(candidates)

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | None) -> RunOutput:
        with torch.no_grad():
            clean_logits = model(x)
        n_classes = clean_logits.shape[1]
        if targets is None:
            others = clean_logits.scatter(1, labels[:, None], float("-inf"))
            classes = others.topk(min(self.candidates, n_classes - 1), dim=1).indices
        else:
            classes = targets[:, None]
        total = torch.zeros_like(x)
        adversarial = x.clone()
        iterations = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        idx = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            x_cur = adversarial[idx].requires_grad_(True)
            logits = model(x_cur)
            pred = logits.detach().argmax(dim=1)
            if targets is None:
                src, keep = labels[idx], pred == labels[idx]
            else:
                src = logits.detach().scatter(1, targets[idx, None], float("-inf")).argmax(dim=1)
                keep = pred != targets[idx]
            if not keep.any():
                break
            f, w = self._linearise(logits, x_cur, src, classes[idx])
            idx = idx[keep]
            total[idx] += self._step(f[keep], w[keep])
            adversarial[idx] = bounds.clip(x[idx] + (1 + self.overshoot) * total[idx])
            iterations[idx] += 1
        return RunOutput(adversarial=adversarial.detach(), iterations=iterations)

    @staticmethod
    def _linearise(logits: Tensor, x_cur: Tensor, src: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
        """``f_k = z_k − z_src`` ``(n, k)`` and their input gradients ``(n, k, ...)``, one backward
        pass per candidate over the whole batch (examples are independent in eval mode)."""
        z_src = logits.gather(1, src[:, None]).squeeze(1)
        k = classes.shape[1]
        diffs, grads = [], []
        for j in range(k):
            f = logits.gather(1, classes[:, j, None]).squeeze(1) - z_src
            grad, = torch.autograd.grad(f.sum(), x_cur, retain_graph=j < k - 1)
            diffs.append(f.detach())
            grads.append(grad)
        return torch.stack(diffs, dim=1), torch.stack(grads, dim=1)

    def _step(self, f: Tensor, w: Tensor) -> Tensor:
        """Minimal step onto the closest linearised boundary: L2 ``(|f|+1e-4)/‖w‖₂² · w``, L∞
        ``(|f|+1e-4)/‖w‖₁ · sign(w)``."""
        dual = w.flatten(2).norm(p=2 if self.norm == "l2" else 1, dim=2).clamp_min(1e-12)
        best = (f.abs() / dual).argmin(dim=1)
        rows = torch.arange(len(best), device=best.device)
        f_best, w_best, d_best = f[rows, best], w[rows, best], dual[rows, best]
        size = (f_best.abs() + 1e-4) / d_best
        if self.norm == "l2":
            return batch_view(size / d_best, w_best) * w_best
        return batch_view(size, w_best) * w_best.sign()
