"""One attack on one (deployed) model of a grid, evaluated and logged: the attack run (ε* per clip through the
harness, summary metrics with intervals, the per-clip record, the monotonicity check, example figures and WAVs),
read back instead when it finished before, and ε_r against the original model with its verdict.
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import torch
from torch import Tensor

from attacks import create_attack
from defense.channel import channel_identity, load_channel
from defense.grid import Grid, ModelColumn
from defense.inference import attacked_labels
from defense.model_checks import log_sanity
from defense.over_the_air import over_the_air_of
from defense.pipeline import TrainedVictim
from evaluation import plots, sanity, stats
from evaluation.audio_out import to_waveforms, why_inaudible, write_adversarial_wavs
from evaluation.config import EvalConfig
from evaluation.crafted import log_crafted
from evaluation.examples import log_example
from evaluation.harness import METRIC_BUDGETS, AttackEvaluation, evaluate, from_record, quality_scores, to_record
from evaluation.intervals import ratio_intervals, summary_intervals
from evaluation.selection import random_targets
from evaluation.tracking import RECORD_ARTIFACT, flatten, load_record, log_once, resumable_run, stable_key, tag, tags
from victims.registry import ConfigError
from victims.victim import Victim

log = logging.getLogger(__name__)


NOT_IN_KEY = ("confusion", "fig1", "quality")
"""Evaluation settings that only add figures or scores beside ε*: kept out of an attack cell's key (a run made
without them still answers the cell)."""


def evaluate_cell(grid: Grid, column: ModelColumn, defense: str, tv: TrainedVictim, victim: Victim, option: str,
                  attack_cfg: dict[str, Any], waves: Tensor, labels: Tensor, mode: str = ""
                  ) -> tuple[str, AttackEvaluation]:
    """Evaluate one attack on one (deployed) model, or read its finished run (and per-clip record) back; ``mode``
    is ``naive``/``adaptive`` for an inference-time defense, else empty."""
    ev_cfg = grid.evaluation
    info = grid.attack_info[option]
    settings = cell_settings(ev_cfg)
    key = stable_key(channel_identity([tv.key, option, attack_cfg, settings]))
    exp_id = mlflow.get_experiment_by_name(grid.name).experiment_id
    run_tags = {**column.tags(defense), **tags(kind="attack", attack=option, domain=info.domain, norm=info.norm,
                                               family=info.family, targeted=info.targeted, in_tables=info.in_tables),
                "mlflow.parentRunId": tv.run_id}
    if mode:
        run_tags[tag("mode")] = mode
    name = f"{defense}/{option}" + ("+adaptive" if mode == "adaptive" else "")
    with resumable_run(exp_id, "cell_key", key, run_name=name, tags=run_tags,
                       what=f"attack {option}{attack_suffix(mode)} on {column.label}/{defense}") as run:
        if run.finished:
            record = load_record(run.run_id)
            if record is None:
                raise ConfigError(f"finished attack run {run.run_id} has no {RECORD_ARTIFACT}: it comes from an "
                                  "older advaudio; delete it or use a new --outputs")
            return run.run_id, from_record(record)
        kwargs = {k: v for k, v in attack_cfg.items() if k != "name"}
        attack = create_attack(attack_cfg["name"], **kwargs)
        attacked = attacked_labels(victim, waves, labels, ev_cfg)
        targets = random_targets(attacked, victim.num_classes, ev_cfg.seed) if attack.targeted else None
        ev = evaluate(victim, attack, waves, attacked, ev_cfg, targets=targets, name=option)
        ev.labels = labels  # what ratios pair the models' clips on and confusion matrices show (base_set: all)
        mlflow.log_params({**flatten(attack_cfg, "attack."), **flatten(asdict(ev_cfg), "evaluation.")})
        intervals = summary_intervals(ev, n_boot=ev_cfg.n_boot, level=ev_cfg.confidence, seed=ev_cfg.seed)
        log_once(run.run_id, {**ev.summary, **intervals})  # a resumed run may hold them from a killed command
        _log_over_the_air(ev, victim, waves, ev_cfg, run.run_id)
        mlflow.log_dict({m: {"budget": b, "value": ev.summary[b]} for m, b in METRIC_BUDGETS.items()},
                        "metric_budgets.json")
        mlflow.log_dict(to_record(ev), RECORD_ARTIFACT)
        if ev.adversarial is not None:  # replayed on the group's other models (defense.grid_transfer)
            log_crafted(ev.base_index[ev.success], ev.adversarial[ev.success])
        log_sanity([_monotone(ev, victim, attack, waves, attacked, ev_cfg)])
        _log_quality(ev, f"{column.label}/{defense} {name.split('/')[1]}")
        _log_examples(ev, victim, waves[ev.base_index], ev_cfg, f"{defense}_{name.split('/')[1]}")
        return run.run_id, ev


OVER_THE_AIR = ("over_the_air", "over_the_air_draws")


def cell_settings(ev_cfg: EvalConfig) -> dict[str, Any]:
    """The evaluation settings that make an attack cell's key: all but :data:`NOT_IN_KEY`, and the over-the-air
    ones only when set (a store made before they existed still resumes)."""
    settings = {k: v for k, v in asdict(ev_cfg).items() if k not in NOT_IN_KEY}
    if ev_cfg.over_the_air is None:
        for name in OVER_THE_AIR:
            settings.pop(name)
    return settings


def _log_over_the_air(ev: AttackEvaluation, victim: Victim, waves: Tensor, ev_cfg: EvalConfig,
                      run_id: str) -> None:
    """A waveform attack's examples played through ``evaluation.over_the_air``'s channel: the rates with their
    intervals as metrics (``ota_success``, ``ota_clean_accuracy``, ...), per clip in ``over_the_air.json``."""
    if ev_cfg.over_the_air is None or ev.domain != "waveform" or ev.adversarial is None:
        return
    channel = load_channel(ev_cfg.over_the_air, victim.sample_rate)
    found = over_the_air_of(ev, victim, channel, waves, draws=ev_cfg.over_the_air_draws, seed=ev_cfg.seed,
                            batch_size=ev_cfg.batch_size, n_boot=ev_cfg.n_boot, level=ev_cfg.confidence)
    log_once(run_id, found.metrics())
    mlflow.log_dict({"channel": ev_cfg.over_the_air, "draws": found.draws, "fooled": found.fooled.tolist(),
                     "correct": found.correct.tolist()}, "over_the_air.json")


def attack_suffix(mode: str) -> str:
    return " (adaptive)" if mode == "adaptive" else ""


def _monotone(ev: AttackEvaluation, victim: Victim, attack: Any, waves: Tensor, labels: Tensor,
              ev_cfg: EvalConfig) -> sanity.SanityRecord:
    """Success never falls as ε grows: on the sweep's own matrix, or on a full sweep of a sample."""
    if not attack.fixed_budget or attack.targeted or ev_cfg.monotone_sample <= 0:
        return sanity.check_monotone(ev)
    n = ev_cfg.monotone_sample
    return sanity.check_monotone_sweep(victim, attack, waves[:n], labels[:n], epsilons=ev.epsilons.tolist(),
                                       batch_size=ev_cfg.batch_size)


def _log_quality(ev: AttackEvaluation, title: str) -> None:
    """The quality scores of a waveform attack's examples against their ε* (``plots/quality.png``) and the
    reasons a score was ruled out (``quality_not_applicable.json``)."""
    scores = quality_scores(ev)
    if ev.domain != "waveform" or not scores or ev.snr_db is None:
        return
    scores["snr_db"] = ev.snr_db
    mlflow.log_figure(plots.quality_against_eps(ev.eps_star, scores, eps_max=ev.eps_max, title=title,
                                                units=ev.norm), "plots/quality.png")
    if ev.quality_notes:
        mlflow.log_dict(ev.quality_notes, "quality_not_applicable.json")


def _log_examples(ev: AttackEvaluation, victim: Victim, base_waves: Tensor, ev_cfg: EvalConfig, stem: str) -> None:
    """Confusion matrices (``ev_cfg.confusion``), original/adversarial/perturbation representations and WAVs of
    ``ev_cfg.wavs`` examples, and the example of the report's Fig. 1 (:func:`evaluation.examples.log_example`)."""
    if ev_cfg.confusion:
        mlflow.log_figure(plots.confusion_matrices(ev.confusion(False), ev.confusion(True), victim.class_names,
                                                   title=stem), "plots/confusion.png")
    log_example(ev, victim, base_waves)
    count = ev_cfg.wavs
    if ev.adversarial is None or not count:
        return
    device = next(iter(victim.buffers())).device
    for i, label in shown_examples(ev, count):
        wave = base_waves[i:i + 1].to(device)
        adv = ev.adversarial[i:i + 1].to(device)
        with torch.no_grad():
            clean_rep = victim.represent(wave)
            adv_rep = adv if ev.domain == "representation" else victim.represent(adv)
        pred = ev.clean_pred[ev.base_index[i]], ev.adv_logits[i].argmax()
        names = (victim.class_names[int(pred[0])], victim.class_names[int(pred[1])])
        mlflow.log_figure(plots.perturbation_triplet(clean_rep[0, 0].cpu(), adv_rep[0, 0].cpu(), title=stem,
                                                     labels=names, units="normalised"), f"plots/{label}.png")
        reason = why_inaudible(victim, ev.domain)
        if reason is not None:
            log.info("no audio for %s: %s", stem, reason)
            continue
        reference, adv_wave = to_waveforms(victim, wave, adv, ev.domain)
        with tempfile.TemporaryDirectory() as tmp:
            write_adversarial_wavs(Path(tmp), label, reference[0].cpu(), adv_wave[0].cpu(),
                                   victim.sample_rate)
            mlflow.log_artifacts(tmp, "audio")


def shown_examples(ev: AttackEvaluation, count: int) -> list[tuple[int, str]]:
    """The broken examples whose figures and WAVs are logged, with their file stems: where the examples were scored,
    the least and the most audible first (smallest and largest perceptual distance: a person can listen to both
    ends), then the first broken ones up to ``count``; else the first ``count`` broken ones."""
    broken = ev.success.nonzero().flatten().tolist()
    chosen: list[tuple[int, str]] = []
    distance = ev.perceptual_db
    if distance is not None and count and not bool(torch.isnan(distance[broken]).all()):
        scored = [i for i in broken if not math.isnan(float(distance[i]))]
        ends = [(min(scored, key=lambda i: float(distance[i])), "least_audible"),
                (max(scored, key=lambda i: float(distance[i])), "most_audible")]
        for i, end in ends[:count]:
            if all(i != j for j, _ in chosen):
                chosen.append((i, f"example_{i}_{end}"))
    for i in broken:
        if len(chosen) >= count:
            break
        if all(i != j for j, _ in chosen):
            chosen.append((i, f"example_{i}"))
    return chosen


def log_ratio(grid: Grid, option: str, mode: str, ev: AttackEvaluation, original: AttackEvaluation, run_id: str,
              model_run_id: str) -> dict[str, float]:
    """ε_r of one evaluation against the original model's, on the attack run and (as ``eps_r.<attack>``, adaptive
    ones ``eps_r.<attack>.adaptive``) on the model's run for the UI's columns."""
    ev_cfg = grid.evaluation
    ratio = ratio_intervals(ev, original, n_boot=ev_cfg.n_boot, level=ev_cfg.confidence, seed=ev_cfg.seed)
    log_once(run_id, ratio)
    name = option + (".adaptive" if mode == "adaptive" else "")
    on_model = {f"{k}.{name}": ratio[k] for k in ("eps_r", "eps_r_ci_low", "eps_r_ci_high", "eps_r_p")}
    on_model[f"fooling_auc.{name}"] = ev.summary["fooling_auc"]
    on_model = {k: _shown(v) for k, v in on_model.items()}  # the UI's columns: the attack run keeps full precision
    on_model[f"eps_r_n.{name}"] = ratio["eps_r_n"]
    on_model[f"verdict.{name}"] = VERDICT_VALUE[stats.verdict(ratio["eps_r_ci_low"], ratio["eps_r_ci_high"],
                                                              ratio["eps_r_n"])]
    log_once(model_run_id, on_model)
    return ratio


VERDICT_VALUE = {"↑": 1.0, "≈": 0.0, "↓": -1.0, stats.UNDETERMINED: math.nan}
"""Table III's verdict as a metric (``verdict.<attack>`` on a defended model's run): +1 ε_r's interval above 1,
−1 below, 0 undecided, ``nan`` undetermined (fewer than ``stats.N_MIN`` clips in a base set, ``eps_r_n.<attack>``)."""


def _shown(value: float) -> float:
    """A value as the UI shows it: four significant digits."""
    return float(f"{value:.4g}") if math.isfinite(value) else value
