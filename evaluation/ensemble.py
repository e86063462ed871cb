"""The strongest attack decides: each clip's worst case over an attack group ("ensemble ε*").

AutoAttack's principle (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"): a model is as robust on a clip as the strongest attack
makes it, so per clip the ensemble ε* is the smallest ε* any attack of the group found, and which
attack found it is kept. The group is one model's evaluations in one domain and norm on the same
clips (budgets belong to a norm, so L2 and L∞ never mix). Fooling AUC, ε₀.₉, ε_r with its paired
interval and the verdict are then computed on the ensemble exactly as on one attack
(:func:`evaluation.harness.summarize`, :func:`evaluation.intervals.ratio_intervals`).

A targeted success is also a misclassification, so an untargeted group may include targeted attacks;
the ensemble is targeted only when every member is, with the same targets.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

from evaluation.harness import AttackEvaluation, summarize
from evaluation.quality import SCORES

ENSEMBLE = "ensemble"
"""Prefix of an ensemble's name (its MLflow attack run's ``advaudio.attack``: :func:`ensemble_name`)."""
WEAK_SHARE = 0.5
"""An attack that broke fewer than this share of a model's base set is flagged wherever its ε_r appears."""


def ensemble_name(domain: str, norm: str) -> str:
    """The ensemble of one group: ``ensemble_l2`` in the representation domain, ``ensemble_wave_l2`` on the waveform."""
    return f"{ENSEMBLE}_{'wave_' if domain == 'waveform' else ''}{norm}"


def is_ensemble(attack: str) -> bool:
    """Whether an attack name is an ensemble's (:func:`ensemble_name`)."""
    return attack == ENSEMBLE or attack.startswith(ENSEMBLE + "_")


def broke_share(ev: AttackEvaluation) -> float:
    """Share of the base set an attack broke within its search range (``nan`` for an empty base set)."""
    n = ev.eps_star.numel()
    return float(ev.success.sum()) / n if n else float("nan")


def is_weak(ev: AttackEvaluation) -> bool:
    """True when the attack broke fewer than :data:`WEAK_SHARE` of the base set: its own ε* statistics then
    describe the easy clips only."""
    share = broke_share(ev)
    return share == share and share < WEAK_SHARE


def _check_group(evals: Sequence[AttackEvaluation]) -> None:
    first = evals[0]
    for ev in evals[1:]:
        if (ev.domain, ev.norm) != (first.domain, first.norm):
            raise ValueError(f"an ensemble takes one domain and norm: {first.attack} is {first.domain}/{first.norm}, "
                             f"{ev.attack} is {ev.domain}/{ev.norm}")
        if not (torch.equal(ev.labels, first.labels) and torch.equal(ev.base, first.base)):
            raise ValueError(f"an ensemble takes one model's evaluations on the same clips: {ev.attack} and "
                             f"{first.attack} differ")
        if (ev.eps_max, ev.search_eps_max) != (first.eps_max, first.search_eps_max):
            raise ValueError(f"{ev.attack} and {first.attack} were measured at different budgets")


def _pick(values: list[Tensor | None], found_by: Tensor) -> Tensor | None:
    """Per clip, the value of the member that found its ε* (``None`` if any member lacks the field)."""
    if any(v is None for v in values):
        return None
    stacked = torch.stack([v for v in values if v is not None])
    return stacked[found_by, torch.arange(found_by.numel())]


def _targets(evals: Sequence[AttackEvaluation]) -> tuple[bool, Tensor | None]:
    first = evals[0].targets
    same = all(ev.targeted and ev.targets is not None and first is not None and torch.equal(ev.targets, first)
               for ev in evals)
    return (True, first) if same else (False, None)


def ensemble(evals: Sequence[AttackEvaluation], name: str = ENSEMBLE) -> tuple[AttackEvaluation, list[str]]:
    """The per-clip worst case over ``evals`` (one model, one domain and norm, the same clips).

    Returns:
        The ensemble's evaluation — ``eps_star`` the per-clip minimum, ``eps_lower``, the stored example,
        its norm, iterations and queries those of the attack that found it, ``total_queries`` and
        ``attack_calls`` summed over the members, ``sweep_success`` the best member's outcome per budget —
        with its summary, and per clip the name of the attack that found its ε* (``""`` where none broke it).

    Raises:
        ValueError: for an empty group, or members of different norms, domains, clips or budgets.
    """
    if not evals:
        raise ValueError("an ensemble needs at least one attack evaluation")
    _check_group(evals)
    stars = torch.stack([ev.eps_star for ev in evals])
    eps_star, found_by = stars.min(dim=0)
    cols = torch.arange(eps_star.numel())
    first = evals[0]
    fixed = [ev for ev in evals if ev.fixed_budget]
    same_grid = all(torch.equal(ev.epsilons, first.epsilons) for ev in evals)
    targeted, targets = _targets(evals)
    ens = replace(
        first, attack=name, targeted=targeted, targets=targets, fixed_budget=bool(fixed),
        rtol=max((ev.rtol for ev in fixed), default=0.0),
        eps_floor=min((ev.eps_floor for ev in fixed), default=first.eps_floor),
        eps_star=eps_star, eps_lower=torch.stack([ev.eps_lower for ev in evals])[found_by, cols],
        sweep_success=(torch.stack([ev.sweep_success for ev in evals]).amax(dim=0) if same_grid
                       else torch.full_like(first.sweep_success, -1)),
        total_queries=torch.stack([ev.total_queries for ev in evals]).sum(dim=0),
        adversarial=None, adv_logits=_pick([ev.adv_logits for ev in evals], found_by),
        norms=_pick([ev.norms for ev in evals], found_by), iterations=_pick([ev.iterations for ev in evals], found_by),
        queries=_pick([ev.queries for ev in evals], found_by), snr_db=_pick([ev.snr_db for ev in evals], found_by),
        **{score: _pick([getattr(ev, score) for ev in evals], found_by) for score in SCORES}, quality_notes={},
        attack_calls=sum(ev.attack_calls for ev in evals), summary={})
    if all(ev.adversarial is not None for ev in evals) and len({tuple(ev.adversarial.shape) for ev in evals}) == 1:
        ens.adversarial = _pick([ev.adversarial for ev in evals], found_by)
    ens.summary = summarize(ens)
    names = [evals[int(k)].attack if torch.isfinite(s) else "" for k, s in zip(found_by, eps_star)]
    return ens, names


def found_by_counts(names: Sequence[str]) -> dict[str, int]:
    """How many clips each attack decided (its ε* was the smallest), for the run's metrics."""
    counts: dict[str, int] = {}
    for name in names:
        if name:
            counts[name] = counts.get(name, 0) + 1
    return counts
