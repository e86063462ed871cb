"""NES black-box attack (Ilyas, Engstrom, Athalye & Lin, "Black-box adversarial attacks with
limited queries and information", ICML 2018), query-limited and partial-information settings.

The attacker sees output probabilities only, never a gradient: every model call runs under
``torch.no_grad()``. The gradient of a loss on those probabilities is estimated with antithetic
Gaussian sampling (NES), ``g = 1/(nσ) Σ_i [L(x + σu_i) − L(x − σu_i)] u_i``, and followed by
projected steps in L∞ (sign) or L2 (normalised) with momentum. Probes are clipped to the victim's
bounds (a black box takes valid inputs only). Every example draws its samples from its own generator
(seeded from the global RNG and the example's content), so its trajectory does not depend on the other
examples of its batch or on when they stop. Seed 004 runs NES as its black-box "partial information
attack" (ε ≥ 0.001, 500 iterations, learning rate in [0.001, 0.6]).

Two ways to run it:

- **Fixed budget** (default): steps of size ``learning_rate`` (Ilyas et al.'s plateau schedule divides
  it when the loss stalls) projected onto the ε-ball of the given budget; an example stops at its first
  success. The evaluation harness then finds ε* by a budget sweep refined by bisection, which repeats a
  whole run at every budget and bisection step.
- **ε search** (``search: true``): one run per example finds its smallest perturbation, with Ilyas et
  al.'s ε schedule (their partial-information attack shrinks ε while the example stays adversarial).
  Each iteration moves to the point of the current radius's ball that maximises the loss linearised
  with the momentum-averaged estimate (``r·sign(g)`` in L∞, ``r·g/‖g‖`` in L2; a long memory,
  ``momentum`` ≈ 0.99, averages the noisy estimates along the way). The radius starts at ``eps_start``
  and grows by ``eps_growth`` after every iteration that fails, up to ``eps`` (no cap when ``null``);
  from the first success on, it is the norm of the best adversarial example found divided by
  ``eps_shrink``: one query checks that example's projection onto it, and NES iterations at that
  radius follow while it is not adversarial. An example stops after ``patience`` consecutive failing
  NES iterations at a shrunk radius, or when its queries or iterations run out. The run returns each
  example's smallest successful input, so ε* = ‖x_adv − x‖ of that input: an upper bound of the
  minimal perturbation, attained by the returned example. The attack then counts as minimum-norm
  (``fixed_budget`` False): the harness calls it once per batch. Its resolution: the run failed
  ``patience`` NES iterations at ε*/``eps_shrink``.

Partial information (``top_k``): the model reveals only its ``k`` largest probabilities. Ilyas et
al. start a targeted attack from an input of the target class and shrink ε around the clean
input; this API gives an attack the clean batch only, so the partial-information setting here is
the top-k *loss* variant instead: a hidden class's probability is estimated from what is visible,
as ``min(p_(k), (1 − Σ top-k) / (C − k))`` (it is at most the k-th largest and shares the unseen
mass), so the loss, the gradient estimate and the stopping rule use the top-k values alone.
Untargeted, the loss is the log-odds ``log max_{i≠y} p_i − log p_y``; targeted, ``log p_t``.

Queries are counted exactly per example: one per input evaluated — ``n_samples`` per gradient
estimate plus one to read the new point's output, one per check of a shrunk projection, and one for
the clean input — and an example stops before an evaluation that would exceed ``max_queries``.
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from attacks.threat import BALLS, Budget, batch_view, per_example, perturbation_norm
from victims.bounds import Bounds
from victims.victim import Domain


def visible_probabilities(probs: Tensor, top_k: int | None) -> Tensor:
    """What a partial-information attacker sees: the top-k probabilities, ``NaN`` elsewhere."""
    if top_k is None or top_k >= probs.shape[1]:
        return probs
    vals, idx = probs.topk(top_k, dim=1)
    return torch.full_like(probs, float("nan")).scatter(1, idx, vals)


def fill_hidden(visible: Tensor) -> Tensor:
    """Probabilities with each hidden (``NaN``) entry estimated as ``min(p_(k), (1 − Σ visible) / #hidden)``."""
    shown = ~visible.isnan()
    vals = visible.nan_to_num(0.0)
    hidden = (~shown).sum(dim=1, keepdim=True).clamp_min(1).to(visible.dtype)
    smallest = vals.masked_fill(~shown, float("inf")).amin(dim=1, keepdim=True)
    estimate = torch.minimum(smallest, (1 - vals.sum(dim=1, keepdim=True)).clamp_min(0) / hidden)
    return torch.where(shown, vals, estimate)


def example_generators(x: Tensor) -> list[torch.Generator]:
    """One generator per example of ``x``, seeded from one draw of the global RNG and the example's
    content: an example gets the same samples whatever batch it runs in."""
    base = int(torch.randint(0, 2**62, (1,)))
    flat = x.detach().flatten(1).cpu().contiguous()
    gens = []
    for row in flat:
        digest = hashlib.blake2b(row.numpy().tobytes(), key=base.to_bytes(8, "little"), digest_size=8).digest()
        gens.append(torch.Generator(device=x.device).manual_seed(int.from_bytes(digest, "little") >> 1))
    return gens


@ATTACKS.register("nes")
class NES(Attack):
    """NES gradient estimation + projected steps (Ilyas et al. 2018), query budget per example; at a
    fixed budget, or searching each example's smallest perturbation (``search``, module docstring).

    Args:
        domain: ``"representation"`` or ``"waveform"``.
        targeted: maximise ``log p_target``; untargeted maximises ``log max_{i≠y} p_i − log p_y``.
        eps: default budget (L∞ or L2 radius, see ``norm``); with ``search`` the largest radius the
            search grows to (``None``: no cap).
        norm: ``"linf"`` (sign steps, Ilyas et al.) or ``"l2"`` (normalised steps).
        sigma: standard deviation of the search distribution.
        n_samples: queries per gradient estimate (even: antithetic pairs).
        learning_rate: initial step size (Ilyas et al.'s max_lr; fixed budget only).
        min_learning_rate: floor of the plateau schedule (Ilyas et al.'s min_lr; fixed budget only).
        plateau_length: iterations without a better loss before the step size is divided (fixed budget only).
        plateau_drop: divisor of the step size on a plateau (fixed budget only).
        momentum: weight of the previous gradient estimate.
        max_iterations: iterations per example (with ``search``, a check of a shrunk radius counts as one).
        max_queries: model evaluations allowed per example.
        top_k: reveal only the ``k`` largest probabilities (partial information); ``None`` = all.
        batch_size: most inputs per forward pass.
        search: find each example's smallest perturbation in one run (Ilyas et al.'s ε schedule); the
            attack is then minimum-norm (``fixed_budget`` False).
        eps_start: first radius of the search.
        eps_growth: factor the radius grows by after each failing iteration before the first success.
        eps_shrink: factor the radius shrinks by below each success (the search's resolution).
        patience: consecutive failing iterations at a shrunk radius before an example stops.
    """

    family = "black_box"
    fixed_budget = True
    per_example_budgets = True

    def __init__(self, domain: Domain = "representation", targeted: bool = False, eps: float | None = None,
                 norm: str = "linf", sigma: float = 0.001, n_samples: int = 50, learning_rate: float = 0.01,
                 min_learning_rate: float = 5e-5, plateau_length: int = 5, plateau_drop: float = 2.0,
                 momentum: float = 0.9, max_iterations: int = 500, max_queries: int = 10_000,
                 top_k: int | None = None, batch_size: int = 1024, search: bool = False, eps_start: float = 0.01,
                 eps_growth: float = 1.25, eps_shrink: float = 1.05, patience: int = 5) -> None:
        super().__init__(domain, targeted, eps)
        if norm not in ("linf", "l2"):
            raise ValueError(f"nes norm must be 'linf' or 'l2', got '{norm}'")
        if n_samples < 2 or n_samples % 2:
            raise ValueError(f"nes n_samples must be an even number >= 2 (antithetic pairs), got {n_samples}")
        if sigma <= 0 or learning_rate <= 0 or not 0 < min_learning_rate <= learning_rate:
            raise ValueError(f"nes needs sigma > 0 and 0 < min_learning_rate <= learning_rate, got "
                             f"{sigma}, {min_learning_rate}, {learning_rate}")
        if not 0 <= momentum < 1 or plateau_drop < 1 or plateau_length < 1 or max_iterations < 1:
            raise ValueError(f"nes needs 0 <= momentum < 1, plateau_drop >= 1, plateau_length >= 1 and "
                             f"max_iterations >= 1, got {momentum}, {plateau_drop}, {plateau_length}, "
                             f"{max_iterations}")
        if max_queries < n_samples + 2:
            raise ValueError(f"nes max_queries must allow one iteration ({n_samples + 2}), got {max_queries}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"nes top_k must be >= 1 or null, got {top_k}")
        if batch_size < 1:
            raise ValueError(f"nes batch_size must be >= 1, got {batch_size}")
        if not (eps_start > 0 and eps_growth > 1 and eps_shrink > 1 and patience >= 1):
            raise ValueError(f"nes search needs eps_start > 0, eps_growth > 1, eps_shrink > 1 and patience >= 1, "
                             f"got {eps_start}, {eps_growth}, {eps_shrink}, {patience}")
        self.norm = norm
        self.sigma = sigma
        self.n_samples = n_samples
        self.learning_rate = learning_rate
        self.min_learning_rate = min_learning_rate
        self.plateau_length = plateau_length
        self.plateau_drop = plateau_drop
        self.momentum = momentum
        self.max_iterations = max_iterations
        self.max_queries = max_queries
        self.top_k = top_k
        self.batch_size = batch_size
        self.search = search
        self.fixed_budget = not search  # type: ignore[misc]  # a search returns its smallest perturbation
        self.eps_start = eps_start
        self.eps_growth = eps_growth
        self.eps_shrink = eps_shrink
        self.patience = patience

    def _query(self, model: ModelFn, inputs: Tensor) -> Tensor:
        """Visible probabilities for ``inputs``, at most ``batch_size`` per forward pass."""
        probs = [torch.softmax(model(chunk), dim=1) for chunk in inputs.split(self.batch_size)]
        return visible_probabilities(torch.cat(probs), self.top_k)

    def _loss(self, visible: Tensor, cls: Tensor) -> Tensor:
        """Loss to ascend: ``log p_t`` (targeted) or ``log max_{i≠y} p_i − log p_y`` (untargeted).

        The untargeted loss is a log-odds rather than ``−log p_y``, which is flat wherever ``p_y``
        rounds to 1.
        """
        logp = torch.log(fill_hidden(visible).clamp_min(1e-30))
        own = logp.gather(1, cls[:, None]).squeeze(1)
        if self.targeted:
            return own
        return logp.scatter(1, cls[:, None], float("-inf")).amax(dim=1) - own

    def _succeeded(self, visible: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        top1 = visible.nan_to_num(-1.0).argmax(dim=1)
        return top1 == targets if self.targeted else top1 != labels

    def _estimate(self, model: ModelFn, point: Tensor, cls: Tensor, bounds: Bounds,
                  gens: list[torch.Generator]) -> Tensor:
        """Antithetic NES estimate of the loss gradient at each row of ``point`` (``n_samples`` queries each,
        all rows' probes in one batch); row ``i`` draws its samples from ``gens[i]``."""
        half = self.n_samples // 2
        noise = torch.stack([torch.randn(half, *point.shape[1:], dtype=point.dtype, device=point.device,
                                         generator=gen) for gen in gens])
        probes = torch.cat([point[:, None] + self.sigma * noise, point[:, None] - self.sigma * noise], dim=1)
        probes = bounds.clip(probes.flatten(0, 1))
        losses = self._loss(self._query(model, probes), cls.repeat_interleave(self.n_samples))
        losses = losses.view(point.shape[0], 2, half)
        diff = (losses[:, 0] - losses[:, 1]).view(point.shape[0], half, *([1] * (point.dim() - 1)))
        return (diff * noise).sum(dim=1) / (self.n_samples * self.sigma)

    def _step(self, delta: Tensor, grad: Tensor, lr: Tensor, eps: Budget) -> Tensor:
        """Ascent step of size ``lr`` (per example) projected onto the ``eps`` ball (a float, or one
        budget per example shaped to broadcast)."""
        ball = BALLS[self.norm]
        return ball.project(delta + batch_view(lr, delta) * ball.normalize(grad), eps)

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | Tensor | None) -> RunOutput:
        with torch.no_grad():
            gens = example_generators(x)
            if self.search:
                cap = self.eps if eps is None else eps
                return self._search(model, x, labels, targets, bounds, math.inf if cap is None else cap, gens)
            assert eps is not None
            return self._run(model, x, labels, targets, bounds, eps, gens)

    def _run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None, bounds: Bounds,
             eps: float | Tensor, gens: list[torch.Generator]) -> RunOutput:
        n = x.shape[0]
        cls = targets if self.targeted else labels
        adv = x.clone()
        visible = self._query(model, adv)
        queries = torch.ones(n, dtype=torch.int64, device=x.device)
        iterations = torch.zeros_like(queries)
        done = self._succeeded(visible, labels, targets)
        best = self._loss(visible, cls)
        stall = torch.zeros_like(queries)
        lr = torch.full((n,), self.learning_rate, dtype=x.dtype, device=x.device)
        grad = torch.zeros_like(x)
        cost = self.n_samples + 1
        for _ in range(self.max_iterations):
            idx = (~done & (queries + cost <= self.max_queries)).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            g = self._estimate(model, adv[idx], cls[idx], bounds, [gens[i] for i in idx.tolist()])
            g = self.momentum * grad[idx] + (1 - self.momentum) * g
            grad[idx] = g
            delta = self._step(adv[idx] - x[idx], g, lr[idx], per_example(eps, x, idx))
            adv[idx] = bounds.clip(x[idx] + delta)
            vis = self._query(model, adv[idx])
            queries[idx] += cost
            iterations[idx] += 1
            done[idx] = self._succeeded(vis, labels[idx], None if targets is None else targets[idx])
            loss = self._loss(vis, cls[idx])
            improved = loss > best[idx]
            best[idx] = torch.where(improved, loss, best[idx])
            stall[idx] = torch.where(improved, 0, stall[idx] + 1)
            drop = stall[idx] >= self.plateau_length
            lr[idx] = torch.where(drop, (lr[idx] / self.plateau_drop).clamp_min(self.min_learning_rate), lr[idx])
            stall[idx] = torch.where(drop, 0, stall[idx])
        return RunOutput(adv, iterations, queries)

    def _search(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None, bounds: Bounds,
                cap: float | Tensor, gens: list[torch.Generator]) -> RunOutput:
        """Ilyas et al.'s ε schedule (module docstring): grow the radius until the first success, then
        shrink it below each success; returns each example's smallest successful input (or its last
        iterate, within ``cap``, where none succeeded)."""
        n, ball = x.shape[0], BALLS[self.norm]
        cls = targets if self.targeted else labels
        limit = torch.as_tensor(cap, dtype=x.dtype, device=x.device).expand(n)
        queries = torch.ones(n, dtype=torch.int64, device=x.device)
        found = self._succeeded(self._query(model, x), labels, targets)  # misclassified clean input: ε* = 0
        done, probe = found.clone(), torch.zeros_like(found)
        iterations, fails = torch.zeros_like(queries), torch.zeros_like(queries)
        radius = limit.clamp(max=self.eps_start).clone()
        best, delta, grad = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
        while True:
            need = torch.where(probe, 1, self.n_samples + 1)
            idx = (~done & (queries + need <= self.max_queries) & (iterations < self.max_iterations)).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            was_probe = probe[idx]
            step = idx[~was_probe]
            if step.numel():
                g = self._estimate(model, x[step] + delta[step], cls[step], bounds, [gens[i] for i in step.tolist()])
                grad[step] = self.momentum * grad[step] + (1 - self.momentum) * g
                delta[step] = batch_view(radius[step], x) * ball.normalize(grad[step])
            adv = bounds.clip(x[idx] + ball.project(delta[idx], per_example(radius, x, idx)))
            delta[idx] = adv - x[idx]
            queries[idx] += need[idx]
            iterations[idx] += 1
            ok = self._succeeded(self._query(model, adv), labels[idx], None if targets is None else targets[idx])
            win, lose = idx[ok], idx[~ok]
            best[win], found[win], fails[win] = adv[ok], True, 0
            radius[win] = perturbation_norm(delta[win], self.norm) / self.eps_shrink
            probe[idx] = ok
            growing = lose[~found[lose]]
            radius[growing] = torch.minimum(radius[growing] * self.eps_growth, limit[growing])
            stuck = lose[found[lose] & ~was_probe[~ok]]
            fails[stuck] += 1
            done[stuck[fails[stuck] >= self.patience]] = True
        return RunOutput(torch.where(batch_view(found, x), best, x + delta), iterations, queries)
