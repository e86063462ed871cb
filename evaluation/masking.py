"""Gradient masking on trained defenses: does a stronger or a gradient-free attack remove the gain?

An adversarially trained model can look robust because its gradients stopped pointing at the nearby adversarial
examples, not because those examples moved away. FGSM-trained models are the textbook case (Tramèr et al. 2018,
"Ensemble adversarial training": single-step attacks overstate their robustness, and black-box attacks beat white-box
ones on them; Wong, Rice & Kolter 2020, "Fast is better than free": catastrophic overfitting). Carlini et al. 2019
("On evaluating adversarial robustness") list both signs. For every trained defense, per attack group (domain and
norm), two ratios of the defense's gain ε_r (seed 004, Eq. 15: defended over original ε*), each with one paired
bootstrap over the clips (the same draw for both models and every attack):

- ``gradient_masking.single_step_<group>``: ε_r measured by the single-step attacks (FGSM) ÷ ε_r measured by the
  multi-step ones (per clip the smallest ε* over the group's iterative and minimum-norm attacks);
- ``gradient_masking.black_box_<group>``: ε_r measured by the gradient-based attacks (per clip the smallest over
  them) ÷ ε_r measured by the gradient-free ones (NES, Square).

A ratio whose interval lies above ``1 + 2·rtol`` (each ε* is known to a relative ``rtol``) warns: the weaker or
gradient-dependent attack credits the defense with a gain the other attack does not find. A side that broke fewer than
half of either model's base set (:data:`~evaluation.ensemble.WEAK_SHARE`) leaves the check undetermined: its ε* are
then mostly the search's ceiling, which caps the gain it can show (a weak NES on the original model, ε* five times the
white-box ones, cannot show a gain of 2.5 below a ceiling of 12), and a capped gain is no sign of masking. A third check,
``gradient_masking.transfer_<group>``, replays the examples the group's attacks crafted on the original model on the
defended one: a white-box attack on the model itself should find a smaller perturbation than an example made for
another model on most clips (:func:`check_transfer`; Carlini et al. 2019 list "transfer beats white-box" as a sign
of masking).
The runner logs them as sanity checks on the defended model's run; the defense comparison table shows them.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy.stats import binomtest
from torch import Tensor

from evaluation import stats
from evaluation.ensemble import WEAK_SHARE, ensemble_name
from evaluation.harness import AttackEvaluation
from evaluation.sanity import SanityRecord

MULTI_STEP = ("iterative", "minimum_norm")
GRADIENT_BASED = ("single_step", *MULTI_STEP)


def _worst(evals: Sequence[AttackEvaluation]) -> np.ndarray:
    """Per clip the smallest ε* over ``evals`` (one model, the same clips: ``nan`` outside its base set)."""
    return np.fmin.reduce([ev.eps_clip().numpy() for ev in evals])


def _broken_share(eps: np.ndarray) -> float:
    """Share of a model's base set that per-clip ``eps`` (:mod:`evaluation.stats` encoding) broke."""
    base = eps[~np.isnan(eps)]
    return float(np.isfinite(base).mean()) if base.size else math.nan


def gain_ratio(measured: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray], *,
               n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> stats.Interval:
    """ε_r(measured) ÷ ε_r(reference) with a paired percentile-bootstrap interval.

    Args:
        measured: ``(defended, original)`` per-clip ε* (:mod:`evaluation.stats` encoding) of one attack (or the
            per-clip worst case of several).
        reference: the same of the attack it is checked against, on the same clips.
    """
    n = len(measured[0])
    if any(len(a) != n for a in (*measured, *reference)):
        raise ValueError("the gain ratio needs every ε* array over the same clips")

    def ratio(idx: np.ndarray) -> np.ndarray:
        num = stats.ratio_draws(*measured, idx)["eps_r"]
        den = stats.ratio_draws(*reference, idx)["eps_r"]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isnan(num) | np.isnan(den) | (den == 0), math.nan, num / den)

    point = float(ratio(np.arange(n)[None, :])[0])
    return stats.percentile_interval(ratio(stats.bootstrap_indices(n, n_boot, seed)), point, level)


def _check(name: str, what: str, measured: Sequence[str], reference: Sequence[str],
           defended: Mapping[str, AttackEvaluation], original: Mapping[str, AttackEvaluation], *, n_boot: int,
           level: float, seed: int) -> SanityRecord:
    """One gain ratio of the attack options ``measured`` against ``reference`` (see the module docstring)."""
    pairs = [(_worst([defended[o] for o in group]), _worst([original[o] for o in group]))
             for group in (measured, reference)]
    n = min(stats.ratio_base_size(*pair) for pair in pairs)
    if n < stats.N_MIN:
        return SanityRecord(name, "pass", f"not determined: {n} clips in the smaller base set (< {stats.N_MIN})")
    for options, pair in zip((measured, reference), pairs):
        for model, eps in zip(("defended", "original"), pair):
            share = _broken_share(eps)
            if share < WEAK_SHARE:  # its eps* are mostly the search's ceiling: a gain it cannot see is no sign
                return SanityRecord(name, "pass", f"not determined: {','.join(options)} broke {share:.0%} of the "
                                    f"{model} model's base set (< {WEAK_SHARE:.0%}) within its search range, so its "
                                    "eps_r is a mean of lower bounds")
    found = gain_ratio(pairs[0], pairs[1], n_boot=n_boot, level=level, seed=seed)
    bound = 1 + 2 * max(defended[o].rtol for o in [*measured, *reference])
    masked = found.low > bound  # False when the interval is undetermined (nan)
    return SanityRecord(name, "warn" if masked else "pass",
                        f"eps_r by {','.join(measured)} / eps_r by {','.join(reference)}: {found.value:.3g} "
                        f"[{found.low:.3g}, {found.high:.3g}] over {n} clips (bound {bound:.3g})"
                        + (f": {what}" if masked else ""))


def check_trained_masking(defended: Mapping[str, AttackEvaluation], original: Mapping[str, AttackEvaluation],
                          families: Mapping[str, str], *, n_boot: int = 1000, level: float = 0.95,
                          seed: int = 0) -> list[SanityRecord]:
    """The two ratio checks of the module docstring for one defended model, per (domain, norm) group of untargeted
    attacks that ran on both models.

    Args:
        defended: attack option → the defended model's evaluation.
        original: attack option → the original model's evaluation on the same clips.
        families: attack option → its family (:data:`attacks.base.FAMILIES`).

    Returns:
        One record per check a group allows; a single warning naming what is missing when no group allows any.
    """
    by_group: dict[tuple[str, str], dict[str, list[str]]] = {}
    for option, ev in defended.items():
        if option in original and not ev.targeted and option in families:
            by_group.setdefault((ev.domain, ev.norm), {}).setdefault(families[option], []).append(option)
    records = []
    options = {"n_boot": n_boot, "level": level, "seed": seed}
    for (domain, norm), fam in sorted(by_group.items()):
        group = ensemble_name(domain, norm).removeprefix("ensemble_")
        multi = [o for f in MULTI_STEP for o in fam.get(f, [])]
        gradient = [o for f in GRADIENT_BASED for o in fam.get(f, [])]
        if fam.get("single_step") and multi:
            records.append(_check(f"gradient_masking.single_step_{group}",
                                  "single-step attacks credit the defense with a gain multi-step attacks remove",
                                  fam["single_step"], multi, defended, original, **options))
        if fam.get("black_box") and gradient:
            records.append(_check(f"gradient_masking.black_box_{group}",
                                  "gradient-based attacks credit the defense with a gain a gradient-free attack removes",
                                  gradient, fam["black_box"], defended, original, **options))
    if not records:
        records.append(SanityRecord("gradient_masking.trained", "warn",
                                    "not run: no attack group has a single-step and a multi-step attack, nor a "
                                    "black-box and a gradient-based one, on both models"))
    return records


def check_transfer(white: AttackEvaluation, transferred: Mapping[str, tuple[Tensor, Tensor]],
                   level: float = 0.95) -> SanityRecord:
    """White-box ≥ transfer on a defended model (the module docstring's third check), as a one-sided sign test.

    Per clip of the defended model's base set, the transferred size is the smallest perturbation among the
    examples crafted on the original model that fool the defended one (∞ if none does). A clip counts for the
    transfer where that size is below the white-box ε* by more than its resolution (``size·(1 + 2·rtol) < ε*``, ε* = ∞
    included), for the white-box attack where the reverse holds. Without masking a white-box attack on the model itself
    finds the smaller perturbation on most clips; the check warns when the transfer wins significantly more clips
    (binomial sign test, one-sided, at ``1 − level``).

    Args:
        white: the defended model's white-box evaluation of the group (its per-clip worst case).
        transferred: attack → ``(fooled, size)``, each ``(N,)`` over the evaluated clips: the example the attack
            crafted on the original model for clip ``i`` fools the defended model, and its perturbation's size in
            the defended model's units (:func:`evaluation.transfer.fooled_by`, :func:`~evaluation.transfer.carried_sizes`).
        level: confidence level of the test.
    """
    name = f"gradient_masking.transfer_{ensemble_name(white.domain, white.norm).removeprefix('ensemble_')}"
    size = torch.full((white.labels.numel(),), math.inf, dtype=torch.float64)
    for fooled, sizes in transferred.values():
        size = torch.where(fooled.cpu(), torch.minimum(size, sizes.double().cpu()), size)
    size = size[white.base_index].numpy()
    star = white.eps_star.double().numpy()
    slack = 1 + 2 * white.rtol
    transfer_wins = int((np.isfinite(size) & (size * slack < star)).sum())
    white_wins = int((np.isfinite(star) & (star * slack < size)).sum())
    decided = transfer_wins + white_wins
    p_value = float(binomtest(transfer_wins, decided, 0.5, alternative="greater").pvalue) if decided else 1.0
    masked = p_value < 1 - level
    return SanityRecord(name, "warn" if masked else "pass",
                        f"of {star.size} clips, {int(np.isfinite(size).sum())} fooled by transferred examples; those "
                        f"smaller than the white-box eps* on {transfer_wins} clips, larger (or failing) on {white_wins} "
                        f"(one-sided sign test p {p_value:.3g})"
                        + (": transferred examples beat the white-box attacks on the defended model" if masked else ""))
