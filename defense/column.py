"""One model column of a grid ``(dataset, representation, victim, seed)``: trains the original model and every trained
defense (resolving ``eps: auto`` from the original), wraps the inference-time defenses, evaluates every attack on
each model (:mod:`defense.attack_cell`), the per-clip worst cases, the masking and sanity checks and the
certificates; returns one summary row per evaluation.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attacks import create_attack
from defense.attack_cell import attack_suffix, evaluate_cell, log_ratio
from defense.grid import Grid, ModelColumn, Progress
from defense.grid_report import log_curves
from defense.inference import attacked_labels, base_defense, deployed, is_smoothing
from defense.inference_cells import accuracy_metrics, attack_modes, certify_smoothed, wrap_model
from defense.masking_checks import masking_checks
from defense.model_checks import sanity_for_model
from defense.pipeline import TrainedVictim, train_from_config
from defense.defended_victim import is_transform
from defense.worst_case import log_worst_cases
from evaluation import metrics as M
from evaluation import sanity
from evaluation.config import EvalConfig
from evaluation.harness import AttackEvaluation, evaluate
from evaluation.selection import select_examples
from evaluation.tracking import ORIGINAL, log_once, setup_tracking, tags
from training.data import load_splits
from training.data.base import ClipSet
from victims.victim import Victim

log = logging.getLogger(__name__)


def _no_progress(message: str, advance: bool = True) -> None:
    """The default :class:`Progress`: report nothing."""


def auto_defense_eps(defense_cfg: dict[str, Any], original: Victim, val: ClipSet, ev_cfg: EvalConfig
                     ) -> tuple[dict[str, Any], dict[str, float]]:
    """Resolve ``eps: auto``: ``eps_fraction`` × the original model's median FGSM ε* on validation clips.

    The median ε* is the budget at which one-step FGSM (in the defense's norm and domain) fools half of
    the original model's correctly classified validation clips, so ``eps_fraction: 1`` trains on
    examples at the typical clip's decision boundary. Seed 004 does not state its training budget.
    Unbroken clips count as ∞; if half are never broken, the search range is used (and logged).

    Returns:
        The defense config with a number for ``eps`` (``eps_fraction`` removed), and what was measured.
    """
    cfg = dict(defense_cfg)
    fraction = float(cfg.pop("eps_fraction", 1.0))
    if cfg.get("eps") != "auto":
        return cfg, {}
    domain, norm = cfg.get("domain", "representation"), cfg.get("norm", "l2")
    search = ev_cfg.budgets(domain, norm, "fgsm (defense eps: auto)")[1]
    waves, labels = select_examples(val, ev_cfg.n_examples, ev_cfg.seed)
    labels = attacked_labels(original, waves, labels, ev_cfg)
    ev = evaluate(original, create_attack("fgsm", domain=domain, norm=norm), waves, labels, ev_cfg, name="fgsm")
    median = M.median(ev.eps_star)  # nan for an empty base set
    base_eps = median if math.isfinite(median) else search
    cfg["eps"] = round(fraction * base_eps, 6)
    log.info("defense eps auto: %g x median FGSM eps* %.4g on %d validation clips = %g", fraction, median,
             ev.eps_star.numel(), cfg["eps"])
    return cfg, {"defense_eps_auto": cfg["eps"], "defense_eps_fraction": fraction,
                 "original_val_median_fgsm_eps_star": median, "original_val_base_size": float(ev.eps_star.numel())}


def run_column(grid: Grid, column: ModelColumn, parent_run_id: str | None, tracking_uri: str | None,
               outputs: Path, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Train and attack one model column; returns one summary row per (defense, attack)."""
    setup_tracking(grid.name, tracking_uri, outputs)
    tick = progress or _no_progress
    dataset_cfg = grid.cell_config(column.dataset, column.frontend, column.victim, ORIGINAL)["dataset"]
    splits = load_splits(dataset_cfg)
    ev_cfg = grid.evaluation
    waves, labels = select_examples(splits.test, ev_cfg.n_examples, ev_cfg.seed)
    trained: dict[str, TrainedVictim] = {}
    defense_cfgs = {d: grid.defense_config(d) for d in grid.axes["defense"]}
    trainable = [d for d in grid.axes["defense"] if d != ORIGINAL and not is_transform(defense_cfgs[d])]
    for defense in [ORIGINAL, *trainable]:
        cfg = grid.cell_config(column.dataset, column.frontend, column.victim, defense, column.seed)
        measured: dict[str, float] = {}
        if defense != ORIGINAL:
            cfg["defense"], measured = auto_defense_eps(cfg["defense"], trained[ORIGINAL].result.victim, splits.val,
                                                        ev_cfg)
        epochs = cfg["train"]["epochs"]

        def epoch_done(metrics: dict[str, float], epoch: int, cell: str = f"{column.label}/{defense}") -> None:
            tick(f"training {cell}: epoch {epoch}/{epochs}, val acc {metrics['val_accuracy']:.3f}", advance=False)

        tick(f"training {column.label}/{defense}", advance=False)
        trained[defense] = train_from_config(cfg, experiment=grid.name, tracking_uri=tracking_uri, outputs=outputs,
                                             splits=splits, on_epoch=epoch_done,
                                             extra_tags={**column.tags(defense), **tags(grid_run=parent_run_id)})
        if measured:
            log_once(trained[defense].run_id, measured)
        tick(f"trained {column.label}/{defense}")
    for defense in grid.axes["defense"]:
        if is_transform(defense_cfgs[defense]):
            base = trained[base_defense(defense_cfgs[defense], ORIGINAL)]
            trained[defense] = wrap_model(grid, column, defense, defense_cfgs[defense], base, splits.test,
                                          parent_run_id)
            tick(f"wrapped {column.label}/{defense}")
    models = {d: deployed(tv.result.victim, defense_cfgs[d]) for d, tv in trained.items()}
    for defense in trained:
        if is_smoothing(defense_cfgs[defense]):  # its training run's test accuracy is the base model's, noiseless
            log_once(trained[defense].run_id, accuracy_metrics(grid, models[defense], splits.test,
                                                               "deployed_test_accuracy"))
    rows: list[dict[str, Any]] = []
    evals: dict[str, dict[str, AttackEvaluation]] = {d: {} for d in trained}
    eval_runs: dict[str, dict[str, str]] = {d: {} for d in trained}
    masking: dict[str, list[sanity.SanityRecord]] = {d: [] for d in trained}
    for option, attack_cfg in grid.attacks.items():
        for defense, tv in trained.items():
            modes = attack_modes(grid, option, attack_cfg, defense_cfgs[defense])
            found: dict[str, AttackEvaluation] = {}
            run_ids: dict[str, str] = {}
            for mode, cfg in modes.items():
                tick(f"attacking {column.label}/{defense} with {option}{attack_suffix(mode)}", advance=False)
                run_ids[mode], found[mode] = evaluate_cell(grid, column, defense, tv, models[defense], option,
                                                           cfg, waves, labels, mode)
                tick(f"attacked {column.label}/{defense} with {option}{attack_suffix(mode)}")
                row = {**asdict(column), "defense": defense, "attack": option, "mode": mode, **found[mode].summary}
                if defense != ORIGINAL:
                    row.update(log_ratio(grid, option, mode, found[mode], evals[ORIGINAL][option], run_ids[mode],
                                         tv.run_id))
                rows.append(row)
            strongest = max(found, key=lambda m: (_auc(found[m]), m == "adaptive"))
            evals[defense][option], eval_runs[defense][option] = found[strongest], run_ids[strongest]
            if len(found) == 2:
                masking[defense].append(sanity.check_gradient_masking(
                    found["naive"], found["adaptive"], n_boot=ev_cfg.n_boot, level=ev_cfg.confidence, seed=ev_cfg.seed))
    ensembles = log_worst_cases(grid, column.tags, {d: (tv.run_id, tv.key) for d, tv in trained.items()}, evals,
                                eval_runs)
    for defense in trained:
        if defense != ORIGINAL:
            transfer_target = None if is_transform(defense_cfgs[defense]) or is_smoothing(defense_cfgs[defense]) \
                else trained[defense].result.victim
            masking[defense].extend(masking_checks(grid, evals, eval_runs, ensembles, defense,
                                                   trained[ORIGINAL].result.victim, transfer_target, waves, labels))
    log_curves(grid, evals, {d: tv.run_id for d, tv in trained.items()})
    for defense, tv in trained.items():
        extra = masking[defense]
        if is_smoothing(defense_cfgs[defense]):
            tick(f"certifying {column.label}/{defense}", advance=False)
            extra = extra + certify_smoothed(grid, tv, defense_cfgs[defense], waves, labels, evals[defense],
                                             eval_runs[defense])
        sanity_for_model(grid, models[defense], waves, labels, evals[defense], tv.run_id, extra)
    return rows


def _auc(ev: AttackEvaluation) -> float:
    """Fooling AUC for ranking attacks (−∞ when undefined, an empty base set)."""
    value = ev.summary.get("fooling_auc", math.nan)
    return value if math.isfinite(value) else -math.inf
