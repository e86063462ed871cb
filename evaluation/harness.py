"""Evaluation harness: ε* per example, the fooling-rate curve and the summary metrics of one attack.

The definitions are those of :mod:`evaluation.metrics` (SPEC "Evaluation", seed 004):

- Base set: evaluation examples the victim classifies correctly on clean input (report its size).
- Minimal perturbation ε*ᵢ: for a minimum-norm attack (DeepFool, C&W, L-BFGS, JSMA;
  ``Attack.fixed_budget`` False) the norm of what it found; for a fixed-budget attack (FGSM, BIM,
  PGD, NES) the smallest budget at which it succeeds, found by a budget sweep refined by bisection;
  ∞ where it never succeeds up to ε_max.

How ε* is found for a fixed-budget attack (a cascade over still-unbroken examples, auto-attack style):

1. Budget grid up to ε_max (:func:`budget_grid`): geometric by default, ε_k = ε_max·2^(k−K+1) for
   k = 0…K−1 (neighbours a factor 2 apart, so the bisection tolerance is relative), or linear,
   ε_k = ε_max·(k+1)/K.
2. Sweep: the grid is cut into chunks of ``sweep_chunk`` budgets; each chunk is one attack call with
   that batch of budgets on the examples not yet broken. An example broken at budget k is not attacked
   again at larger budgets. ``sweep_chunk = 1`` is the cheapest pure cascade; larger chunks cost more
   but fill more of the raw ``(K, n)`` success matrix that the monotonicity sanity check reads.
3. Bisection: ``n_bisect`` halvings of each broken example's interval (last failing budget, first
   succeeding budget]; examples sharing a midpoint share one call. ε* is the upper end, so
   ``eps_star − eps_lower ≤ (ε_k − ε_{k−1})/2^n_bisect`` (a relative ``2^−(n_bisect+1)`` on the
   geometric grid).

A minimum-norm attack runs once per mini-batch; its success on the grid is ``norm ≤ ε_k``.
Stochastic attacks (NES, noise, PGD's random start) draw fresh noise in every call, so their ε* is the
smallest budget at which one draw succeeded; pass ``seed`` to make a run reproducible.
Per-example ``resolved`` flags let an interrupted evaluation be resumed (``resume=``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attacks.base import Attack, AttackResult
from evaluation import metrics as M
from victims.victim import Victim

log = logging.getLogger(__name__)
GRIDS = ("geometric", "linear")


@dataclass
class AttackEvaluation:
    """Everything one attack evaluation produced; per-example fields cover the base set (``n``).

    Attributes:
        attack: name of the attack.
        domain, norm, targeted, fixed_budget: the attack's settings.
        eps_max: largest budget searched for ε*.
        auc_eps: right end of the fooling AUC and of FR(ε_max) (seed 004's ‖ε‖₂ ≤ 3); ``None`` = eps_max.
        epsilons: ``(K,)`` the sweep grid.
        num_classes: the victim's number of classes.
        labels, clean_pred: ``(N,)`` labels and clean predictions of every evaluated example.
        base: ``(N,)`` bool, the base set (clean prediction correct).
        targets: ``(n,)`` target labels of a targeted attack, else ``None``.
        eps_star: ``(n,)`` float64 minimal perturbation, ``inf`` if never broken up to ε_max.
        eps_lower: ``(n,)`` largest budget known to fail (ε* ∈ (eps_lower, eps_star]); equals ε*
            for minimum-norm attacks.
        resolved: ``(n,)`` bool, the example's search is finished.
        sweep_success: ``(K, n)`` int8 raw success of the sweep: 1, 0, or −1 where the cascade did
            not attack (already broken at a smaller budget).
        adversarial: ``(n, ...)`` adversarial input in ``domain`` at ε* (or at ε_max if never broken).
        adv_logits: ``(n, C)`` logits of ``adversarial``.
        norms: ``(n,)`` actual perturbation norm of ``adversarial`` in ``norm``.
        iterations, queries: ``(n,)`` int64 of the run that produced ``adversarial``.
        total_queries: ``(n,)`` int64 model evaluations spent on the example over all calls.
        snr_db: ``(n,)`` SNR of ``adversarial`` (waveform domain; ``nan`` in the representation domain).
        attack_calls: number of attack calls made.
        summary: metrics ready to log (see :func:`summarize`).
    """

    attack: str
    domain: str
    norm: str
    targeted: bool
    fixed_budget: bool
    eps_max: float
    epsilons: Tensor
    num_classes: int
    labels: Tensor
    clean_pred: Tensor
    base: Tensor
    targets: Tensor | None
    eps_star: Tensor
    eps_lower: Tensor
    resolved: Tensor
    sweep_success: Tensor
    total_queries: Tensor
    adversarial: Tensor | None = None
    adv_logits: Tensor | None = None
    norms: Tensor | None = None
    iterations: Tensor | None = None
    queries: Tensor | None = None
    snr_db: Tensor | None = None
    attack_calls: int = 0
    auc_eps: float | None = None
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def base_index(self) -> Tensor:
        """``(n,)`` indices of the base set among the evaluated examples."""
        return self.base.nonzero().flatten()

    @property
    def success(self) -> Tensor:
        """``(n,)`` bool: broken within ε_max."""
        return torch.isfinite(self.eps_star)

    def fooling_curve(self, eps: Tensor | float) -> Tensor:
        """FR(ε) of the base set at the budget(s) ``eps``."""
        return M.fooling_rate(self.eps_star, eps)

    def confusion(self, adversarial: bool) -> Tensor:
        """``(C, C)`` confusion matrix on clean input, or on the adversarial inputs (examples outside
        the base set keep their clean prediction)."""
        pred = self.clean_pred.clone()
        if adversarial and self.adv_logits is not None:
            pred[self.base_index] = self.adv_logits.argmax(dim=1)
        return M.confusion_matrix(self.labels, pred, self.num_classes)


def budget_grid(eps_max: float, n_budgets: int, kind: str = "geometric") -> Tensor:
    """The sweep's budgets ``(K,)`` float64, increasing, ending at ``eps_max`` (see module docstring)."""
    if not eps_max > 0 or not math.isfinite(eps_max):
        raise ValueError(f"eps_max must be a finite number > 0, got {eps_max}")
    if n_budgets < 1:
        raise ValueError(f"n_budgets must be >= 1, got {n_budgets}")
    k = torch.arange(n_budgets, dtype=torch.float64)
    if kind == "geometric":
        return eps_max * 2.0 ** (k - (n_budgets - 1))
    if kind == "linear":
        return eps_max * (k + 1) / n_budgets
    raise ValueError(f"unknown budget grid '{kind}'; known: {', '.join(GRIDS)}")


def evaluate_attack(victim: Victim, attack: Attack, waves: Tensor, labels: Tensor, *, eps_max: float,
                    n_budgets: int = 8, n_bisect: int = 4, batch_size: int = 64, targets: Tensor | None = None,
                    grid: str = "geometric", sweep_chunk: int = 2, snr_trim: int = 0, name: str | None = None,
                    seed: int | None = None, resume: AttackEvaluation | None = None,
                    auc_eps: float | None = None) -> AttackEvaluation:
    """Attack the base set of ``waves`` and measure ε*, the fooling-rate curve and the summary metrics.

    Args:
        victim: the model under attack (its mode is restored afterwards).
        attack: a fixed-budget or minimum-norm attack.
        waves: ``(N, 1, T)`` evaluation waveforms (any device; batches go to the victim's device).
        labels: ``(N,)`` true labels.
        eps_max: largest budget, in the attack's norm and domain (seed 004: 3, L2, representation).
        n_budgets: size of the sweep grid.
        n_bisect: bisection steps per broken example (fixed-budget attacks).
        batch_size: examples per attack call.
        targets: ``(N,)`` target labels for a targeted attack.
        grid: ``"geometric"`` or ``"linear"``.
        sweep_chunk: budgets per attack call in the sweep (1 = pure cascade).
        snr_trim: samples trimmed at each end for the SNR (seed 000: 2048).
        name: attack name for the record (defaults to the class name).
        seed: seed for the attack's randomness (the caller's RNG state is left untouched).
        resume: a previous evaluation of the same inputs; its resolved examples are kept.
        auc_eps: integrate the fooling AUC (and read FR) up to this budget instead of ``eps_max``, so ε*
            can be searched further than the AUC's interval (seed 004: AUC under ‖ε‖₂ ≤ 3, ε_r from the
            budget where FR reaches 0.9, without that limit).

    Raises:
        ValueError: on mismatched shapes, a target equal to the label, or bad settings.
    """
    if waves.dim() != 3 or waves.shape[0] != labels.shape[0]:
        raise ValueError(f"waves must be (N, 1, T) matching labels (N,), got {tuple(waves.shape)} "
                         f"and {tuple(labels.shape)}")
    if batch_size < 1 or sweep_chunk < 1 or n_bisect < 0:
        raise ValueError(f"batch_size and sweep_chunk must be >= 1 and n_bisect >= 0, "
                         f"got {batch_size}, {sweep_chunk}, {n_bisect}")
    if attack.targeted != (targets is not None):
        given = "given" if targets is not None else "missing"
        raise ValueError(f"attack targeted={attack.targeted} but targets {given}")
    device = victim_device(victim)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        clean_pred = _predict(victim, waves, batch_size, device)
        labels = labels.cpu().long()
        ev = _start(victim, attack, labels, clean_pred, targets, eps_max, budget_grid(eps_max, n_budgets, grid), name)
        ev.auc_eps = auc_eps
        if resume is not None:
            _take_over(ev, resume)
        runner = _Runner(victim, attack, ev, waves[ev.base_index.to(waves.device)], device, sweep_chunk, n_bisect)
        todo = (~ev.resolved).nonzero().flatten()
        for start in range(0, todo.numel(), batch_size):
            runner.run(todo[start:start + batch_size])
    if ev.domain == "waveform" and ev.adversarial is not None:
        ev.snr_db = M.snr_db(waves[ev.base_index.to(waves.device)].cpu(), ev.adversarial.to(waves.dtype), snr_trim)
    ev.summary = summarize(ev)
    log.info("%s: base %d, fooling AUC %.3f, FR(eps_max) %.3f, %d calls", ev.attack, ev.summary["base_size"],
             ev.summary["fooling_auc"], ev.summary["fr_at_eps_max"], ev.attack_calls)
    return ev


def summarize(ev: AttackEvaluation) -> dict[str, float]:
    """Summary metrics of an evaluation, as floats with MLflow-ready names.

    Means and medians of ``snr_db``, ``median_iterations``, ``median_queries`` and the confidences run
    over the examples broken within the search range. ``fooling_auc`` and ``fr_at_eps_max`` cover
    ``[0, eps_max]`` with ``eps_max`` = ``auc_eps`` (default: the search range, ``search_eps_max``).
    ``eps_090`` is ``inf`` when FR never reaches 0.9 within the search range (``eps090_reached`` = 0);
    MLflow's SQL store saves ``inf`` as the largest float64.
    """
    n, broken = int(ev.base.sum()), ev.success
    auc_eps = float(ev.auc_eps if ev.auc_eps is not None else ev.eps_max)
    eps090 = M.eps_at_rate(ev.eps_star, 0.9)
    adv_correct = 0.0
    conf_new = conf_true = torch.zeros(0, dtype=torch.float64)
    if ev.adv_logits is not None and n:
        adv_correct = float((ev.adv_logits.argmax(dim=1) == ev.labels[ev.base_index]).sum())
        conf_new, conf_true = M.label_confidences(ev.adv_logits, ev.labels[ev.base_index])
    total = max(int(ev.labels.numel()), 1)
    gap = (ev.eps_star - ev.eps_lower)[broken]
    return {
        "num_examples": float(ev.labels.numel()),
        "base_size": float(n),
        "clean_accuracy": n / total,
        "adv_accuracy": adv_correct / total,
        "eps_max": auc_eps,
        "search_eps_max": float(ev.eps_max),
        "fooling_auc": M.fooling_auc(ev.eps_star, auc_eps),
        "fr_at_eps_max": float(M.fooling_rate(ev.eps_star, auc_eps)),
        "eps_090": eps090,
        "eps090_reached": float(math.isfinite(eps090)),
        "mean_eps_star": M.mean_eps_within(ev.eps_star, math.inf),
        "mean_eps_star_within_eps090": M.mean_eps_within(ev.eps_star, eps090),
        "max_eps_gap": float(gap.max()) if gap.numel() else math.nan,
        "snr_db": float(ev.snr_db[broken].mean()) if ev.snr_db is not None and broken.any() else math.nan,
        "median_iterations": M.median(ev.iterations[broken]) if ev.iterations is not None else math.nan,
        "median_queries": M.median(ev.queries[broken]) if ev.queries is not None else math.nan,
        "mean_total_queries": float(ev.total_queries.double().mean()) if n else math.nan,
        "conf_adv_label": float(conf_new[broken].mean()) if broken.any() and conf_new.numel() else math.nan,
        "conf_true_label": float(conf_true[broken].mean()) if broken.any() and conf_true.numel() else math.nan,
        "attack_calls": float(ev.attack_calls),
    }


def epsilon_ratio(defended: AttackEvaluation | dict[str, float],
                  original: AttackEvaluation | dict[str, float]) -> dict[str, float]:
    """ε_r (seed 004 Eq. 15) and the ε₀.₉ ratio from two evaluations or their summaries.

    Both must come from the same attack, representation and architecture; a summary needs the keys
    ``mean_eps_star_within_eps090`` and ``eps_090``. Where ε₀.₉ is ∞ the mean runs over every example
    broken within ε_max and ``eps_r_partial`` is 1 (see :func:`evaluation.metrics.epsilon_ratio`).
    A summary read back from MLflow holds ∞ as the largest float64; ``eps090_reached = 0`` restores it.
    """
    d, o = (x.summary if isinstance(x, AttackEvaluation) else x for x in (defended, original))
    try:
        return M.ratio_from_summaries(d["mean_eps_star_within_eps090"], _eps090(d),
                                      o["mean_eps_star_within_eps090"], _eps090(o))
    except KeyError as err:
        raise ValueError(f"summary lacks {err.args[0]!r} needed for eps_r") from None


def _eps090(summary: dict[str, float]) -> float:
    return math.inf if summary.get("eps090_reached", 1.0) == 0 else float(summary["eps_090"])


def victim_device(victim: Victim) -> torch.device:
    """Device of the victim's first parameter or buffer (CPU if it has none)."""
    for t in (*victim.parameters(), *victim.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def _predict(victim: Victim, waves: Tensor, batch_size: int, device: torch.device) -> Tensor:
    was_training = victim.training
    victim.eval()
    try:
        return torch.cat([victim(waves[i:i + batch_size].to(device)).argmax(dim=1).cpu()
                          for i in range(0, waves.shape[0], batch_size)]).long()
    finally:
        victim.train(was_training)


def _start(victim: Victim, attack: Attack, labels: Tensor, clean_pred: Tensor, targets: Tensor | None,
           eps_max: float, epsilons: Tensor, name: str | None) -> AttackEvaluation:
    base = clean_pred == labels
    n = int(base.sum())
    tgt = None
    if targets is not None:
        tgt = targets.cpu().long()[base]
        if (tgt == labels[base]).any():
            raise ValueError("a target equals the true label of a correctly classified example")
    return AttackEvaluation(
        attack=name or type(attack).__name__, domain=attack.domain, norm=attack.norm, targeted=attack.targeted,
        fixed_budget=attack.fixed_budget, eps_max=float(eps_max), epsilons=epsilons,
        num_classes=victim.num_classes, labels=labels, clean_pred=clean_pred, base=base, targets=tgt,
        eps_star=torch.full((n,), math.inf, dtype=torch.float64), eps_lower=torch.zeros(n, dtype=torch.float64),
        resolved=torch.zeros(n, dtype=torch.bool),
        sweep_success=torch.full((epsilons.numel(), n), -1, dtype=torch.int8),
        total_queries=torch.zeros(n, dtype=torch.int64))


def _take_over(ev: AttackEvaluation, old: AttackEvaluation) -> None:
    """Copy the resolved examples of ``old`` into ``ev`` (same inputs, attack and grid)."""
    if not (torch.equal(old.base, ev.base) and torch.equal(old.epsilons, ev.epsilons) and old.attack == ev.attack):
        raise ValueError("resume: the previous evaluation has another base set, budget grid or attack")
    ev.attack_calls = old.attack_calls
    for name in ("eps_star", "eps_lower", "resolved", "sweep_success", "total_queries"):
        setattr(ev, name, getattr(old, name).clone())
    for name in ("adversarial", "adv_logits", "norms", "iterations", "queries"):
        value = getattr(old, name)
        setattr(ev, name, None if value is None else value.clone())


class _Runner:
    """Runs the sweep and the bisection on mini-batches of base-set indices, writing into ``ev``."""

    def __init__(self, victim: Victim, attack: Attack, ev: AttackEvaluation, waves: Tensor,
                 device: torch.device, sweep_chunk: int, n_bisect: int) -> None:
        self.victim, self.attack, self.ev, self.waves = victim, attack, ev, waves
        self.device, self.sweep_chunk, self.n_bisect = device, sweep_chunk, n_bisect

    def run(self, idx: Tensor) -> None:
        if self.attack.fixed_budget:
            self._sweep(idx)
            self._bisect(idx)
        else:
            self._min_norm(idx)
        self.ev.resolved[idx] = True

    def _call(self, idx: Tensor, epsilons: list[float]) -> AttackResult:
        ev = self.ev
        wave = self.waves[idx.to(self.waves.device)].to(self.device)
        targets = ev.targets[idx].to(self.device) if ev.targets is not None else None
        res = self.attack(self.victim, wave, ev.labels[ev.base_index[idx]].to(self.device),
                          targets=targets, epsilons=epsilons)
        ev.attack_calls += 1
        ev.total_queries[idx] += res.queries.sum(dim=0).cpu()
        return res

    def _store(self, idx: Tensor, res: AttackResult, k: Tensor) -> None:
        """Keep, for each example ``idx[j]``, the attack's output at budget index ``k[j]``."""
        ev, cols = self.ev, torch.arange(idx.numel(), device=res.success.device)
        kd = k.to(res.success.device)
        adv = res.adversarial[kd, cols].detach().cpu()
        if ev.adversarial is None:
            n = ev.eps_star.numel()
            ev.adversarial = torch.zeros((n, *adv.shape[1:]), dtype=adv.dtype)
            ev.adv_logits = torch.zeros((n, res.adv_logits.shape[-1]), dtype=torch.float32)
            ev.norms = torch.zeros(n, dtype=torch.float64)
            ev.iterations = torch.zeros(n, dtype=torch.int64)
            ev.queries = torch.zeros(n, dtype=torch.int64)
        ev.adversarial[idx] = adv
        ev.adv_logits[idx] = res.adv_logits[kd, cols].detach().float().cpu()
        ev.norms[idx] = res.norms[kd, cols].detach().double().cpu()
        ev.iterations[idx] = res.iterations[kd, cols].cpu()
        ev.queries[idx] = res.queries[kd, cols].cpu()

    def _min_norm(self, idx: Tensor) -> None:
        ev = self.ev
        res = self._call(idx, ev.epsilons.tolist())
        ok = res.success[-1].cpu()
        ev.sweep_success[:, idx] = res.success.cpu().to(torch.int8)
        norm = res.norms[0].detach().double().cpu()
        ev.eps_star[idx] = torch.where(ok, norm, torch.full_like(norm, math.inf))
        ev.eps_lower[idx] = torch.where(ok, norm, torch.full_like(norm, ev.eps_max))
        self._store(idx, res, torch.zeros(idx.numel(), dtype=torch.long))

    def _sweep(self, idx: Tensor) -> None:
        ev, grid = self.ev, self.ev.epsilons
        alive = torch.ones(idx.numel(), dtype=torch.bool)
        for k0 in range(0, grid.numel(), self.sweep_chunk):
            if not alive.any():
                break
            k1 = min(k0 + self.sweep_chunk, grid.numel())
            sub = idx[alive]
            res = self._call(sub, grid[k0:k1].tolist())
            succ = res.success.cpu()
            ev.sweep_success[k0:k1, sub] = succ.to(torch.int8)
            hit = succ.any(dim=0)
            first = succ.to(torch.int8).argmax(dim=0)
            k = torch.where(hit, first, torch.full_like(first, k1 - k0 - 1))
            self._store(sub, res, k)
            kg = k0 + first[hit]
            ev.eps_star[sub[hit]] = grid[kg]
            ev.eps_lower[sub[hit]] = torch.where(kg > 0, grid[(kg - 1).clamp_min(0)], torch.zeros_like(grid[kg]))
            ev.eps_lower[sub[~hit]] = grid[k1 - 1]
            alive[alive.clone()] = ~hit

    def _bisect(self, idx: Tensor) -> None:
        ev = self.ev
        todo = idx[torch.isfinite(ev.eps_star[idx])]
        for _ in range(self.n_bisect):
            if todo.numel() == 0:
                break
            mids = (ev.eps_lower[todo] + ev.eps_star[todo]) / 2
            for mid in mids.unique().tolist():
                sub = todo[mids == mid]
                res = self._call(sub, [mid])
                hit = res.success[0].cpu()
                keep = torch.zeros(int(hit.sum()), dtype=torch.long)
                self._store(sub[hit], _select(res, hit.to(res.success.device)), keep)
                ev.eps_star[sub[hit]] = mid
                ev.eps_lower[sub[~hit]] = mid


def _select(res: AttackResult, mask: Tensor) -> AttackResult:
    """The columns (examples) ``mask`` of a result."""
    return AttackResult(res.adversarial[:, mask], res.clean[mask], res.success[:, mask], res.norms[:, mask],
                        res.iterations[:, mask], res.queries[:, mask], res.adv_logits[:, mask],
                        res.epsilons, res.domain, res.norm)
