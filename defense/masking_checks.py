"""The gradient-masking checks of one defended model in a grid column (:mod:`evaluation.masking`).

The runner calls :func:`masking_checks` after every attack of the column has run and the worst cases are logged: the
single-step and black-box gain ratios for every defended model, and, for a trained one (not an input transform or a
smoothed classifier, whose deployed model is not the trained network), the white-box ≥ transfer check with the
examples each table attack crafted on the original model replayed on it.
"""
from __future__ import annotations

from torch import Tensor

from defense.grid import Grid
from defense.grid_transfer import crafted_examples
from evaluation.ensemble import ensemble_name
from evaluation.harness import AttackEvaluation
from evaluation.masking import check_trained_masking, check_transfer
from evaluation.sanity import SanityRecord
from evaluation.tracking import ORIGINAL
from evaluation.transfer import carried_sizes, fooled_by
from victims.victim import Victim


def masking_checks(grid: Grid, evals: dict[str, dict[str, AttackEvaluation]], run_ids: dict[str, dict[str, str]],
                   ensembles: dict[str, dict[str, AttackEvaluation]], defense: str, original: Victim,
                   target: Victim | None, waves: Tensor, labels: Tensor) -> list[SanityRecord]:
    """Records of the checks for ``defense`` (``target``: its trained model for the transfer check, or ``None``).

    Args:
        grid: the grid (attack families, evaluation settings).
        evals, run_ids: defense → attack option → its evaluation and attack run (the runner's).
        ensembles: defense → ensemble name → the group's per-clip worst case (:func:`defense.worst_case.log_worst_cases`).
        defense: the defended model's defense.
        original: the original model (the transferred examples' source).
        target: the defended model the examples are replayed on; ``None`` leaves the transfer check out.
        waves, labels: the evaluated clips.
    """
    ev_cfg = grid.evaluation
    families = {option: info.family for option, info in grid.attack_info.items()}
    records = check_trained_masking(evals[defense], evals[ORIGINAL], families, n_boot=ev_cfg.n_boot,
                                    level=ev_cfg.confidence, seed=ev_cfg.seed)
    if target is None:
        return records
    groups: dict[tuple[str, str], list[str]] = {}
    for option, ev in evals[defense].items():
        if grid.attack_info[option].in_tables and not ev.targeted and option in evals[ORIGINAL]:
            groups.setdefault((ev.domain, ev.norm), []).append(option)
    for (domain, norm), members in sorted(groups.items()):
        white = ensembles.get(defense, {}).get(ensemble_name(domain, norm))
        white = evals[defense][members[0]] if white is None else white
        transferred = {}
        for option in members:
            index, adversarial = crafted_examples(evals[ORIGINAL][option], run_ids[ORIGINAL][option])
            if adversarial is None:
                continue
            transferred[option] = (
                fooled_by(original, target, index, adversarial, labels, domain=domain, batch_size=ev_cfg.batch_size),
                carried_sizes(original, target, index, adversarial, waves, norm, domain=domain))
        if transferred:
            records.append(check_transfer(white, transferred, level=ev_cfg.confidence))
    return records
