"""A model's sanity checks in a grid (SPEC "Sanity checks"), logged on the model's run: input gradients,
determinism, an unbounded attack, iterative ≥ single-step and white-box ≥ black-box ≥ noise between its attacks,
plus the checks other parts hand over (gradient masking, certified radii).
"""
from __future__ import annotations

import logging

import mlflow

from attacks import create_attack
from defense.grid import Grid
from evaluation import sanity
from evaluation.harness import AttackEvaluation
from evaluation.tracking import log_once, reopened_run
from torch import Tensor
from victims.victim import Victim

log = logging.getLogger(__name__)


def sanity_for_model(grid: Grid, victim: Victim, waves: Tensor, labels: Tensor,
                     evals: dict[str, AttackEvaluation], run_id: str,
                     extra: list[sanity.SanityRecord] | None = None) -> None:
    """Model-level sanity checks, logged on the model's run (never skipped silently); ``extra`` adds the
    inference-time defenses' checks (gradient masking, certified radii)."""
    ev_cfg = grid.evaluation
    domains = sorted({ev.domain for ev in evals.values()} or {"representation"})
    records = [sanity.check_gradients(victim, waves, labels, domain, loss)
               for domain in domains for loss in ("ce", "margin")]
    records.append(sanity.check_deterministic(victim, waves))
    pgd = create_attack("pgd", domain=domains[0], norm="l2", eps=ev_cfg.unbounded_eps,
                        steps=ev_cfg.unbounded_steps)
    records.append(sanity.check_unbounded(victim, pgd, waves, labels, eps=ev_cfg.unbounded_eps,
                                          batch_size=ev_cfg.batch_size))
    records.extend(pairwise_checks(grid, evals))
    records.extend(extra or [])
    with reopened_run(run_id):
        log_sanity(records)


def pairwise_checks(grid: Grid, evals: dict[str, AttackEvaluation]) -> list[sanity.SanityRecord]:
    """Iterative ≥ single-step and white-box ≥ black-box ≥ noise, between attacks of one norm and domain."""
    def pick(families: tuple[str, ...], like: AttackEvaluation | None = None) -> AttackEvaluation | None:
        for family in families:
            for name, ev in evals.items():
                same = like is None or (ev.norm, ev.domain) == (like.norm, like.domain)
                if grid.attack_info[name].family == family and same and not ev.targeted:
                    return ev
        return None

    records = []
    single = pick(("single_step",))
    iterative = pick(("iterative",), single) if single is not None else None
    if single is not None and iterative is not None:
        records.append(sanity.check_iterative_beats_single(iterative, single))
    else:
        records.append(sanity.SanityRecord("iterative_ge_single_step", "warn", "not run: the grid needs an "
                                           "untargeted single-step and iterative attack of one norm and domain"))
    noise = pick(("baseline",))
    white = pick(("iterative", "minimum_norm", "single_step"), noise) if noise is not None else None
    if noise is not None and white is not None:
        records.append(sanity.check_attack_ordering(white, pick(("black_box",), noise), noise))
    else:
        records.append(sanity.SanityRecord("white_ge_black_ge_noise", "warn", "not run: the grid needs a white-box "
                                           "attack and the noise baseline of one norm and domain"))
    return records


def log_sanity(records: list[sanity.SanityRecord]) -> None:
    """Log each check as metric ``sanity.<name>`` (1 pass, 0 warn) and all details as ``sanity.json``."""
    log_once(mlflow.active_run().info.run_id, {f"sanity.{r.name}": float(r.status == "pass") for r in records})
    mlflow.log_dict({r.name: r.as_dict() for r in records}, "sanity.json")
    for r in records:
        if r.status != "pass":
            log.warning("sanity %s: %s", r.name, r.detail)
