"""The grid's cells of inference-time defenses (Athalye et al. 2018; Cohen et al. 2019): a trained model wrapped in
an input transform as a model run of its own, the attack modes it is evaluated with (naive and adaptive), and
randomized smoothing's certificates with the check of every attack against them.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from torch import Tensor

from attacks.base import GRADIENT_FREE
from defense.grid import Grid, ModelColumn
from defense.channel import channel_identity
from defense.grid_transfer import crafted_examples
from defense.inference import (accuracy, adaptive_options, certify, certify_metrics, certify_settings, deployed,
                               transform_config, violation_check)
from defense.pipeline import TrainedVictim
from evaluation import plots, sanity, stats
from evaluation.harness import AttackEvaluation
from evaluation.tracking import artifact_json, flatten, log_once, reopened_run, resumable_run, stable_key, tags
from training.data.base import ClipSet
from victims.victim import Victim


CERTIFY_RECORD = "certify.json"
"""Randomized smoothing's per-clip certificates on the smoothed model's run (:func:`defense.inference.certify`)."""


def attack_modes(grid: Grid, option: str, attack_cfg: dict[str, Any], defense_cfg: dict[str, Any]
                 ) -> dict[str, dict[str, Any]]:
    """The attack configs one defense is evaluated with: ``{"": cfg}`` for a trained defense; ``naive`` and, where
    BPDA or EoT changes the attack (a white-box attack on a non-differentiable or random transform), ``adaptive``
    for an inference-time one (Athalye et al. 2018)."""
    if transform_config(defense_cfg) is None:
        return {"": attack_cfg}
    modes = {"naive": attack_cfg}
    options = adaptive_options(defense_cfg, grid.adaptive)
    if options and grid.attack_info[option].family not in GRADIENT_FREE:
        modes["adaptive"] = {**attack_cfg, **options}
    return modes


def accuracy_metrics(grid: Grid, victim: Victim, test: ClipSet, name: str) -> dict[str, float]:
    """``<name>`` = the test accuracy of a model as deployed (one draw of a random transform, seeded) and its
    Wilson interval ``<name>_ci_low/high``."""
    ev_cfg = grid.evaluation
    acc = accuracy(victim, test.waves, test.labels, ev_cfg.batch_size, ev_cfg.seed)
    low, high = stats.wilson_interval(acc, len(test))
    return {name: acc, f"{name}_ci_low": low, f"{name}_ci_high": high}


def wrap_model(grid: Grid, column: ModelColumn, defense: str, defense_cfg: dict[str, Any], base: TrainedVictim,
               test: ClipSet, parent_run_id: str | None) -> TrainedVictim:
    """An input-transform defense's model run (``advaudio.kind = defend``): the ``base`` model wrapped in the
    transform, with the deployed model's test accuracy (its clean-accuracy cost) and Wilson interval."""
    key = stable_key([base.key, channel_identity(defense_cfg)])
    exp_id = mlflow.get_experiment_by_name(grid.name).experiment_id
    metrics = accuracy_metrics(grid, deployed(base.result.victim, defense_cfg), test, "test_accuracy")
    run_tags = {**column.tags(defense), **tags(kind="defend", base_run=base.run_id, grid_run=parent_run_id)}
    run_name = f"{column.victim}/{defense}/{column.frontend}/{column.dataset}"
    with resumable_run(exp_id, "run_key", key, run_name=run_name, tags=run_tags,
                       what=f"wrapping {column.label}/{defense}") as run:
        if not run.finished:
            if not run.resumed:
                mlflow.log_params({**flatten(defense_cfg, "defense."), "defense.base_run": base.run_id})
            log_once(run.run_id, {**metrics, "base_test_accuracy": base.result.test_accuracy})
    return TrainedVictim(replace(base.result, test_accuracy=metrics["test_accuracy"]), run.run_id,
                         base.checkpoint, key, reused=run.finished)


def _logged_certificate(run_id: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The ``certify.json`` already on ``run_id`` if it was made with ``settings``, else ``None``."""
    client = MlflowClient()
    if CERTIFY_RECORD not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    record = artifact_json(run_id, CERTIFY_RECORD, client)
    return record if all(record.get(k) == v for k, v in settings.items()) else None


def certify_smoothed(grid: Grid, tv: TrainedVictim, defense_cfg: dict[str, Any], waves: Tensor, labels: Tensor,
                     evals: dict[str, AttackEvaluation], run_ids: dict[str, str]) -> list[sanity.SanityRecord]:
    """CERTIFY the smoothed model on the evaluation clips (metrics and ``certify.json`` on its run; a rerun reads a
    logged record of the same settings back instead of certifying again) and check every attack of its domain
    and the L2 norm against the certificates (:func:`defense.inference.violation_check`)."""
    ev_cfg = grid.evaluation
    record = _logged_certificate(tv.run_id, certify_settings(defense_cfg, labels, ev_cfg))
    if record is None:
        record = certify(tv.result.victim, defense_cfg, waves, labels, ev_cfg)
        with reopened_run(tv.run_id):
            log_once(tv.run_id, certify_metrics(record, ev_cfg.confidence, ev_cfg.n_boot, ev_cfg.seed))
            mlflow.log_dict(record, CERTIFY_RECORD)
            units = "normalised" if record["domain"] == "representation" else "waveform"
            mlflow.log_figure(plots.certified_accuracy_curve(record["pred"], record["radius"], record["label"],
                                                             units=units, level=ev_cfg.confidence,
                                                             marks=record["radii"],
                                                             title=f"certified accuracy, σ = {record['sigma']:g}"),
                              "plots/certified_accuracy.png")
    records = []
    for option, ev in evals.items():
        if (ev.domain, ev.norm) != (record["domain"], "l2"):
            continue
        index, adversarial = crafted_examples(ev, run_ids[option])
        check = violation_check(tv.result.victim, record, index, adversarial, waves, ev_cfg.batch_size)
        records.append(sanity.SanityRecord(
            f"certified_radius.{option}", "warn" if check.flagged else "pass",
            f"{check.count} of {check.eligible} adversarial examples inside a correct certificate's radius change "
            f"the smoothed prediction (chance bound {check.threshold} at rate {check.failure_rate:.3g})"))
    return records
