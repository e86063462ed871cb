"""The grid's worst case per clip: one ensemble attack run per model and attack group (issue 18 item 1).

After every attack of a model column has run, each model's table attacks of one domain and norm (two or more)
form a group; :func:`evaluation.ensemble.ensemble` takes each clip's smallest ε* over them (AutoAttack's
principle, Croce & Hein 2020) and it is logged as an attack run of its own (``advaudio.attack =
ensemble_<norm>``, family ``ensemble``) with its summary, intervals, per-clip record (which attack decided each
clip: ``found_by`` in the record, ``found_by.<attack>`` counts as metrics) and, on a defended model, ε_r against
the original model's ensemble — so the tables, the MLflow columns (``eps_r.ensemble_l2``) and the UI view get it
like any attack. Each model's run also gets every attack's optimality against the per-clip best
(:func:`log_optimality`). Every attack run also gets ``broke_share`` (the share of the base set it broke) and, below
:data:`evaluation.ensemble.WEAK_SHARE`, the tag ``advaudio.weak = true``; the model's run ``broke_share.<attack>``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import mlflow
from mlflow.tracking import MlflowClient

from defense.attack_cell import log_ratio
from defense.grid import Grid
from evaluation.ensemble import broke_share, ensemble, ensemble_name, found_by_counts, is_weak
from evaluation.harness import AttackEvaluation, from_record, to_record
from evaluation.intervals import summary_intervals
from evaluation.optimality import optimality
from evaluation.tracking import (ORIGINAL, RECORD_ARTIFACT, load_record, log_once, resumable_run, stable_key, tag,
                                 tags)

def groups(grid: Grid, options: list[str]) -> dict[tuple[str, str], list[str]]:
    """The table attacks of ``options`` by (domain, norm), in grid order; only groups of two or more."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for option in options:
        info = grid.attack_info[option]
        if info.in_tables:
            found[info.domain, info.norm].append(option)
    return {key: members for key, members in found.items() if len(members) > 1}


def flag_weak(evals: dict[str, AttackEvaluation], run_ids: dict[str, str], model_run_id: str) -> None:
    """``broke_share`` on each attack run and the model's run, and the ``weak`` tag where it is below half."""
    client = MlflowClient()
    for option, ev in evals.items():
        share = broke_share(ev)
        log_once(run_ids[option], {"broke_share": share})
        client.set_tag(run_ids[option], tag("weak"), str(is_weak(ev)).lower())
        log_once(model_run_id, {f"broke_share.{option}": share})


def log_worst_cases(grid: Grid, column_tags: Callable[[str], dict[str, str]], model_runs: dict[str, tuple[str, str]],
                    evals: dict[str, dict[str, AttackEvaluation]], run_ids: dict[str, dict[str, str]]
                    ) -> dict[str, dict[str, AttackEvaluation]]:
    """Log the ensemble of every group of every model (the original model's first) and ε_r of each defended one.

    Args:
        grid: the grid (attack metadata, evaluation settings).
        column_tags: the coordinate tags of a defense's model in this column.
        model_runs: defense → (model run id, model key).
        evals: defense → attack option → its evaluation (the stronger mode of an inference-time defense).
        run_ids: defense → attack option → the attack run.

    Returns:
        defense → ensemble name → its evaluation.
    """
    exp_id = mlflow.get_experiment_by_name(grid.name).experiment_id
    out: dict[str, dict[str, AttackEvaluation]] = {}
    for defense in sorted(evals, key=lambda d: d != ORIGINAL):
        model_run, model_key = model_runs[defense]
        flag_weak(evals[defense], run_ids[defense], model_run)
        log_optimality(grid, evals[defense], model_run)
        out[defense] = {}
        for (domain, norm), members in groups(grid, list(evals[defense])).items():
            name = ensemble_name(domain, norm)
            run_id, ens = _ensemble_run(grid, exp_id, name, [evals[defense][o] for o in members],
                                        [run_ids[defense][o] for o in members], model_key,
                                        {**column_tags(defense), **tags(kind="attack", attack=name, domain=domain,
                                                                         norm=norm, family="ensemble", in_tables=True),
                                         "mlflow.parentRunId": model_run})
            out[defense][name] = ens
            original = out.get(ORIGINAL, {}).get(name)
            if defense != ORIGINAL and original is not None:
                log_ratio(grid, name, "", ens, original, run_id, model_run)
    return out


def log_optimality(grid: Grid, evals: dict[str, AttackEvaluation], model_run_id: str) -> None:
    """``optimality.<attack>`` (share of clips within 5 % of the per-clip best, :mod:`evaluation.optimality`, with its
    Wilson interval ``optimality_ci_low.<attack>`` / ``optimality_ci_high.<attack>``) and
    ``optimality_excess.<attack>`` (mean ε*/best − 1) on the model's run, per domain and norm of two or more
    untargeted attacks that are not baselines — table attacks or not, so a long reference attack in the grid
    (e.g. ``fmn_l2`` with ``steps: 1000``) raises the bar for every other."""
    found: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    for option, ev in evals.items():
        if not ev.targeted and grid.attack_info[option].family != "baseline":
            found[ev.domain, ev.norm][option] = ev.eps_clip().numpy()
    metrics: dict[str, float] = {}
    for group in (g for g in found.values() if len(g) > 1):
        for row in optimality(group).itertuples():
            metrics[f"optimality.{row.attack}"] = float(row.optimal_share)
            metrics[f"optimality_ci_low.{row.attack}"] = float(row.optimal_share_ci_low)  # Wilson interval
            metrics[f"optimality_ci_high.{row.attack}"] = float(row.optimal_share_ci_high)
            metrics[f"optimality_excess.{row.attack}"] = float(row.mean_excess)
    log_once(model_run_id, metrics)


def _ensemble_run(grid: Grid, exp_id: str, name: str, members: list[AttackEvaluation], member_runs: list[str],
                  model_key: str, run_tags: dict[str, Any]) -> tuple[str, AttackEvaluation]:
    """The ensemble's attack run, made once (keyed by the model and its members' runs) or read back."""
    ev_cfg = grid.evaluation
    key = stable_key([model_key, name, member_runs])
    with resumable_run(exp_id, "cell_key", key, run_name=f"{run_tags[tag('defense')]}/{name}", tags=run_tags,
                       what=f"{name} of {run_tags[tag('defense')]}") as run:
        if run.finished:
            record = load_record(run.run_id)
            if record is None:
                raise RuntimeError(f"finished ensemble run {run.run_id} has no {RECORD_ARTIFACT}")
            return run.run_id, from_record(record)
        ens, found_by = ensemble(members, name)
        mlflow.log_params({"ensemble.members": ",".join(ev.attack for ev in members),
                           "ensemble.member_runs": ",".join(member_runs)})
        intervals = summary_intervals(ens, n_boot=ev_cfg.n_boot, level=ev_cfg.confidence, seed=ev_cfg.seed)
        counts = {f"found_by.{ev.attack}": float(found_by_counts(found_by).get(ev.attack, 0)) for ev in members}
        log_once(run.run_id, {**ens.summary, **intervals, **counts, "broke_share": broke_share(ens)})
        mlflow.log_dict({**to_record(ens), "found_by": found_by}, RECORD_ARTIFACT)
        return run.run_id, ens
