"""Sanity checks run on every evaluation; each returns a :class:`SanityRecord` (pass or warn).

A check never skips silently: when it cannot compare anything it warns and says why. The checks are
the usual signs of a broken evaluation or of gradient masking (Carlini et al. 2019, "On evaluating
adversarial robustness"; the warnings of Croce & Hein's AutoAttack, 2020):

- success never falls as ε grows (read from the sweep's raw success matrix, not the CDF);
- an unbounded iterative attack (huge budget, many steps) reaches ~100 %;
- iterative ≥ single-step at the same budget;
- white-box ≥ black-box ≥ noise at matched budget (on waveforms an equal L2 budget is an equal SNR);
- gradients of the loss w.r.t. the input are finite and non-zero, and the victim is deterministic;
- an input-transform defense's naive ε* does not exceed its adaptive (BPDA/EoT) ε* beyond the interval
  (Athalye, Carlini & Wagner 2018).

The runner decides which to call; ``record.as_dict()`` is ready to log.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.base import Attack
from attacks.losses import class_margin
from evaluation import metrics as M
from evaluation import stats
from evaluation.harness import AttackEvaluation, victim_device
from victims.victim import Domain, Victim

Status = Literal["pass", "warn"]


@dataclass(frozen=True)
class SanityRecord:
    """Outcome of one check: ``name``, ``status`` (``"pass"`` or ``"warn"``) and a one-line ``detail``."""

    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _record(name: str, ok: bool, detail: str) -> SanityRecord:
    return SanityRecord(name, "pass" if ok else "warn", detail)


def check_monotone(evaluation: AttackEvaluation | Tensor) -> SanityRecord:
    """Success never falls as ε grows: no example succeeds at a budget and fails at a larger one.

    Only examples attacked at some budget above one they succeeded at can show a fall; the detail
    counts them (a pure cascade, ``sweep_chunk = 1``, leaves none and the check warns). A
    minimum-norm attack passes by construction.

    Args:
        evaluation: an evaluation, or its ``(K, n)`` raw success matrix (1 success, 0 failure,
            −1 not attacked; budgets increasing along the first axis).
    """
    if isinstance(evaluation, AttackEvaluation) and not evaluation.fixed_budget:
        return _record("monotone_success", True,
                       "minimum-norm attack: success (norm <= eps) is monotone by construction")
    m = evaluation.sweep_success if isinstance(evaluation, AttackEvaluation) else evaluation
    m = m.to(torch.int8)
    seen = (m == 1).to(torch.int8).cummax(dim=0).values
    earlier = torch.cat([torch.zeros_like(seen[:1]), seen[:-1]]) == 1
    bad = ((m == 0) & earlier).any(dim=0)
    compared = int(((m >= 0) & earlier).any(dim=0).sum())
    if compared == 0:
        return _record("monotone_success", False,
                       "not checked: no example was attacked above a budget it succeeded at "
                       "(use sweep_chunk >= 2 or check_monotone_sweep)")
    return _record("monotone_success", not bad.any(),
                   f"{int(bad.sum())} of {compared} examples succeed at a budget and fail at a larger one")


def _success_matrix(victim: Victim, attack: Attack, waves: Tensor, labels: Tensor, epsilons: list[float] | None,
                    batch_size: int) -> Tensor:
    """``(K, n)`` success of an untargeted attack on the base set of ``waves`` (every budget, no cascade)."""
    if attack.targeted:
        raise ValueError("this sanity check needs an untargeted attack")
    device = victim_device(victim)
    columns = []
    was_training = victim.training
    victim.eval()
    try:
        for i in range(0, waves.shape[0], batch_size):
            w, y = waves[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
            with torch.no_grad():
                keep = victim(w).argmax(dim=1) == y
            if keep.any():
                columns.append(attack(victim, w[keep], y[keep], epsilons=epsilons).success.cpu())
    finally:
        victim.train(was_training)
    k = len(epsilons) if epsilons is not None else 1
    return torch.cat(columns, dim=1) if columns else torch.zeros(k, 0, dtype=torch.bool)


def check_monotone_sweep(victim: Victim, attack: Attack, waves: Tensor, labels: Tensor, *,
                         epsilons: list[float], batch_size: int = 64) -> SanityRecord:
    """:func:`check_monotone` on a full ``(K, n)`` success matrix: one call with every budget on every
    base example (no cascade), for a sample the runner picks."""
    return check_monotone(_success_matrix(victim, attack, waves, labels, sorted(epsilons), batch_size).to(torch.int8))


def check_unbounded(victim: Victim, attack: Attack, waves: Tensor, labels: Tensor, *, eps: float,
                    threshold: float = 0.99, batch_size: int = 64) -> SanityRecord:
    """An untargeted iterative attack with a huge budget ``eps`` (and many steps) breaks ≥ ``threshold``
    of the base set; if not, the attack or the gradients are broken."""
    success = _success_matrix(victim, attack, waves, labels, [eps] if attack.fixed_budget else None, batch_size)
    base = success.shape[1]
    if base == 0:
        return _record("unbounded_attack", False, "not checked: the base set is empty")
    rate = float(success[0].double().mean())
    return _record("unbounded_attack", rate >= threshold,
                   f"{type(attack).__name__} at eps {eps:g} fools {rate:.3f} of {base} (threshold {threshold:g})")


def _dominance(strong: AttackEvaluation, weak: AttackEvaluation, tolerance: float) -> tuple[bool | None, str]:
    """Whether FR_strong(ε) ≥ FR_weak(ε) − tolerance on both grids up to the smaller ε_max."""
    if (strong.norm, strong.domain) != (weak.norm, weak.domain):
        return None, f"not comparable: {strong.norm}/{strong.domain} vs {weak.norm}/{weak.domain}"
    if not torch.equal(strong.base, weak.base):
        return None, "not comparable: different base sets (another victim or data)"
    top = min(strong.eps_max, weak.eps_max)
    grid = torch.cat([strong.epsilons, weak.epsilons]).unique()
    grid = grid[grid <= top]
    gap = M.fooling_rate(weak.eps_star, grid) - M.fooling_rate(strong.eps_star, grid)
    if grid.numel() == 0 or torch.isnan(gap).all():
        return None, "not comparable: empty base set or grid"
    worst = int(gap.argmax())
    ok = bool(gap[worst] <= tolerance)
    return ok, (f"{strong.attack} vs {weak.attack}: worst FR deficit {float(gap[worst]):.3f} "
                f"at eps {float(grid[worst]):.4g} (tolerance {tolerance:g})")


def check_iterative_beats_single(iterative: AttackEvaluation, single: AttackEvaluation,
                                 tolerance: float = 0.0) -> SanityRecord:
    """An iterative attack (BIM, PGD) fools at least as many as a single-step one (FGSM) at every budget."""
    ok, detail = _dominance(iterative, single, tolerance)
    return _record("iterative_ge_single_step", bool(ok), detail)


def check_attack_ordering(white_box: AttackEvaluation, black_box: AttackEvaluation | None,
                          noise: AttackEvaluation, tolerance: float = 0.0) -> SanityRecord:
    """white-box ≥ black-box ≥ noise at matched budget (``black_box`` may be ``None``)."""
    chain = [e for e in (white_box, black_box, noise) if e is not None]
    results = [_dominance(a, b, tolerance) for a, b in zip(chain, chain[1:])]
    ok = all(r is True for r, _ in results)
    return _record("white_ge_black_ge_noise", ok, "; ".join(d for _, d in results))


def check_gradients(victim: Victim, waves: Tensor, labels: Tensor, domain: Domain = "representation",
                    loss: Literal["ce", "margin"] = "ce", atol: float = 1e-10) -> SanityRecord:
    """Input gradients of the loss are finite and not zero (AutoAttack's zero-gradient check: an
    example whose summed absolute gradient is below ``atol`` counts as zero).

    With ``loss="ce"`` an over-confident victim warns too: its softmax saturates, the cross-entropy
    gradient vanishes and cross-entropy attacks (FGSM, BIM, PGD) are blind there, so their fooling rate
    overstates robustness. ``loss="margin"`` separates that from a model whose gradients are masked.
    """
    was_training = victim.training
    victim.eval()
    try:
        x = victim.to_domain(waves.to(victim_device(victim)), domain).requires_grad_(True)
        logits, y = victim.logits_fn(domain)(x), labels.to(x.device)
        value = F.cross_entropy(logits, y, reduction="sum") if loss == "ce" else -class_margin(logits, y).sum()
        (grad,) = torch.autograd.grad(value, x)
    finally:
        victim.train(was_training)
    flat = grad.flatten(1)
    nonfinite = int((~torch.isfinite(flat)).any(dim=1).sum())
    zero = int((flat.abs().sum(dim=1) < atol).sum())
    return _record(f"gradients_{domain}_{loss}", nonfinite == 0 and zero == 0,
                   f"{domain}, {loss} loss: {nonfinite} of {flat.shape[0]} examples with non-finite, "
                   f"{zero} with zero gradient")


@torch.no_grad()
def check_deterministic(victim: Victim, waves: Tensor) -> SanityRecord:
    """Two eval-mode forward passes give the same logits (a randomised defense needs EOT attacks)."""
    was_training = victim.training
    victim.eval()
    try:
        w = waves.to(victim_device(victim))
        diff = float((victim(w) - victim(w)).abs().max()) if w.shape[0] else 0.0
    finally:
        victim.train(was_training)
    return _record("deterministic", diff == 0.0, f"max logit difference between two passes {diff:.3g}")


def check_gradient_masking(naive: AttackEvaluation, adaptive: AttackEvaluation, *, n_boot: int = 1000,
                           level: float = 0.95, seed: int = 0) -> SanityRecord:
    """Robustness from gradient masking (Athalye, Carlini & Wagner 2018): on the clips both evaluations
    attacked (the same clips and base set), the median of ε*_naive / ε*_adaptive has a bootstrap interval
    above ``1 + 2·rtol`` (each ε* is known to a relative ``rtol``), i.e. the adaptive attack (BPDA, EoT) needs
    clearly less than the attack that differentiated the transform as it is. Clips the adaptive attack did not
    break are left out (their ratio is unknown); a clip only the adaptive attack broke has ratio ∞."""
    name = f"gradient_masking.{naive.attack}"
    n_d, a_d = naive.eps_clip().numpy(), adaptive.eps_clip().numpy()
    both = ~np.isnan(n_d) & ~np.isnan(a_d) & np.isfinite(a_d)
    if not both.any():
        return _record(name, True, "not compared: the adaptive attack broke no clip of the shared base set")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isinf(n_d[both]), np.inf, n_d[both] / a_d[both])
    idx = stats.bootstrap_indices(ratio.size, n_boot, seed)
    found = stats.percentile_interval(np.median(ratio[idx], axis=1), float(np.median(ratio)), level)
    bound = 1 + 2 * max(naive.rtol, adaptive.rtol)
    masked = found.low > bound
    return _record(name, not masked,
                   f"median naive/adaptive eps* {found.value:.3g} [{found.low:.3g}, {found.high:.3g}] over "
                   f"{ratio.size} clips (bound {bound:.3g})" + (": robustness from gradient masking" if masked else ""))
