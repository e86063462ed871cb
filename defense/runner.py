"""Runs an experiment grid: trains original and defended victims, evaluates every attack on both,
computes ε_r, runs the sanity checks, and logs everything to MLflow; resumes by skipping finished work.

Unit of work: a *model column* ``(dataset, representation, victim, seed)``. It trains the original
model (``none``) and then every trained defense of the grid (resolving ``eps: auto`` from the original
model), wraps trained models in the grid's input-transform defenses (:mod:`defense.inference`), evaluates
every attack on each with the budgets of the attack's norm and domain — inference-time defenses twice, naive
and adaptive (BPDA/EoT) — and logs ε_r of each defended model against the original with its paired-bootstrap
interval and Wilcoxon p-value; randomized smoothing is certified. Columns
are independent, so they run one after another locally or as Ray tasks (``executor="ray"``) when a grid
outgrows one machine. Resuming: a finished training run is found by its config hash and its checkpoint
reused; a finished attack run is skipped and its per-clip record (``evaluation.json``) read back, so
intervals, curves and pairwise sanity checks are rebuilt without attacking again.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import mlflow
import torch
from mlflow.tracking import MlflowClient
from torch import Tensor

from attacks import create_attack
from attacks.base import GRADIENT_FREE
from defense.grid import Grid
from defense.grid_transfer import load_crafted, log_crafted, log_grid_transfer
from defense.interrupt import interruptible, keep_handlers
from defense.inference import (accuracy, adaptive_options, attacked_labels, base_defense, certify, certify_metrics,
                               certify_settings, deployed, is_smoothing, transform_config, violation_check)
from defense.transformed import is_transform
from defense.worst_case import log_worst_cases
from evaluation.config import EvalConfig
from defense.pipeline import TrainedVictim, train_from_config
from evaluation import metrics as M
from evaluation import plots, report, sanity, stats
from evaluation.audio_out import to_waveforms, why_inaudible, write_adversarial_wavs
from evaluation.examples import log_example, write_example_figures
from evaluation.harness import METRIC_BUDGETS, AttackEvaluation, evaluate, from_record, to_record
from evaluation.intervals import ratio_intervals, summary_intervals
from evaluation.tracking import (ORIGINAL, OUTPUTS, RECORD_ARTIFACT, flatten, load_record, log_once, mark_finished,
                                 owned, resumable_run, setup_tracking, stable_key, tag, tags)
from evaluation.ui_view import save_runs_view
from training.data import load_splits
from training.data.base import ClipSet
from victims.registry import ConfigError
from victims.victim import Victim

log = logging.getLogger(__name__)


CERTIFY_RECORD = "certify.json"
"""Randomized smoothing's per-clip certificates on the smoothed model's run (:func:`defense.inference.certify`)."""
FIGURES_ONLY = ("confusion", "fig1")
"""Evaluation settings that only draw figures: kept out of an attack cell's key (the same results either way)."""
RAY_TASK_RETRIES = 3
RAY_CANCEL_GRACE_S = 30.0
"""How long an interrupted driver waits for its cancelled Ray tasks to mark their runs KILLED."""
"""Retries of a model column whose Ray worker died (a killed process, a lost node)."""


class Progress(Protocol):
    """Progress of a grid: ``advance=True`` after each trained model and attack evaluation (the steps of
    :func:`count_steps`), ``advance=False`` for what runs inside one (epochs, the attack under way)."""

    def __call__(self, message: str, advance: bool = True) -> None:
        ...


def _no_progress(message: str, advance: bool = True) -> None:
    """The default :class:`Progress`: report nothing."""


@dataclass
class ModelColumn:
    """One ``(dataset, frontend, victim, seed)`` column of a grid."""

    dataset: str
    frontend: str
    victim: str
    seed: int = 0

    def tags(self, defense: str) -> dict[str, str]:
        return tags(dataset=self.dataset, frontend=self.frontend, victim=self.victim, defense=defense, seed=self.seed)

    @property
    def label(self) -> str:
        return f"{self.frontend}/{self.victim}/seed{self.seed}"


def select_examples(test: ClipSet, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded, class-balanced subset of ``n`` test clips (all of them if fewer)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test), generator=gen)
    labels = test.labels[order]
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        hit = labels == c
        rank[hit] = torch.arange(int(hit.sum()))
    chosen = order[torch.argsort(rank * len(test) + torch.arange(len(test)), stable=True)][:n]
    return test.waves[chosen], test.labels[chosen]


def random_targets(labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """A random class other than the true one per example (seed 004 draws targets at random)."""
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=gen)
    return (labels + shift) % num_classes


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
            _log_to(trained[defense].run_id, measured)
        tick(f"trained {column.label}/{defense}")
    for defense in grid.axes["defense"]:
        if is_transform(defense_cfgs[defense]):
            base = trained[base_defense(defense_cfgs[defense], ORIGINAL)]
            trained[defense] = _wrap_model(grid, column, defense, defense_cfgs[defense], base, splits.test,
                                           parent_run_id)
            tick(f"wrapped {column.label}/{defense}")
    models = {d: deployed(tv.result.victim, defense_cfgs[d]) for d, tv in trained.items()}
    for defense in trained:
        if is_smoothing(defense_cfgs[defense]):  # its training run's test accuracy is the base model's, noiseless
            _log_to(trained[defense].run_id, _accuracy_metrics(grid, models[defense], splits.test,
                                                              "deployed_test_accuracy"))
    rows: list[dict[str, Any]] = []
    evals: dict[str, dict[str, AttackEvaluation]] = {d: {} for d in trained}
    eval_runs: dict[str, dict[str, str]] = {d: {} for d in trained}
    masking: dict[str, list[sanity.SanityRecord]] = {d: [] for d in trained}
    for option, attack_cfg in grid.attacks.items():
        for defense, tv in trained.items():
            modes = _modes(grid, option, attack_cfg, defense_cfgs[defense])
            found: dict[str, AttackEvaluation] = {}
            run_ids: dict[str, str] = {}
            for mode, cfg in modes.items():
                tick(f"attacking {column.label}/{defense} with {option}{_suffix(mode)}", advance=False)
                run_ids[mode], found[mode] = _evaluate(grid, column, defense, tv, models[defense], option, cfg,
                                                       waves, labels, mode)
                tick(f"attacked {column.label}/{defense} with {option}{_suffix(mode)}")
                row = {**asdict(column), "defense": defense, "attack": option, "mode": mode, **found[mode].summary}
                if defense != ORIGINAL:
                    row.update(_log_ratio(grid, option, mode, found[mode], evals[ORIGINAL][option], run_ids[mode],
                                          tv.run_id))
                rows.append(row)
            strongest = max(found, key=lambda m: (_auc(found[m]), m == "adaptive"))
            evals[defense][option], eval_runs[defense][option] = found[strongest], run_ids[strongest]
            if len(found) == 2:
                masking[defense].append(sanity.check_gradient_masking(
                    found["naive"], found["adaptive"], n_boot=ev_cfg.n_boot, level=ev_cfg.confidence, seed=ev_cfg.seed))
    log_worst_cases(grid, column.tags, {d: (tv.run_id, tv.key) for d, tv in trained.items()}, evals, eval_runs,
                    _log_ratio)
    _log_curves(grid, evals, {d: tv.run_id for d, tv in trained.items()})
    for defense, tv in trained.items():
        extra = masking[defense]
        if is_smoothing(defense_cfgs[defense]):
            tick(f"certifying {column.label}/{defense}", advance=False)
            extra = extra + _certify(grid, tv, defense_cfgs[defense], waves, labels, evals[defense],
                                     eval_runs[defense])
        _sanity_for_model(grid, models[defense], waves, labels, evals[defense], tv.run_id, extra)
    return rows


def _auc(ev: AttackEvaluation) -> float:
    """Fooling AUC for ranking attacks (−∞ when undefined, an empty base set)."""
    value = ev.summary.get("fooling_auc", math.nan)
    return value if math.isfinite(value) else -math.inf


def _suffix(mode: str) -> str:
    return " (adaptive)" if mode == "adaptive" else ""


def _modes(grid: Grid, option: str, attack_cfg: dict[str, Any], defense_cfg: dict[str, Any]
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


def _log_ratio(grid: Grid, option: str, mode: str, ev: AttackEvaluation, original: AttackEvaluation, run_id: str,
               model_run_id: str) -> dict[str, float]:
    """ε_r of one evaluation against the original model's, on the attack run and (as ``eps_r.<attack>``, adaptive
    ones ``eps_r.<attack>.adaptive``) on the model's run for the UI's columns."""
    ev_cfg = grid.evaluation
    ratio = ratio_intervals(ev, original, n_boot=ev_cfg.n_boot, level=ev_cfg.confidence, seed=ev_cfg.seed)
    _log_to(run_id, ratio)
    name = option + (".adaptive" if mode == "adaptive" else "")
    on_model = {f"{k}.{name}": ratio[k] for k in ("eps_r", "eps_r_ci_low", "eps_r_ci_high", "eps_r_p")}
    on_model[f"fooling_auc.{name}"] = ev.summary["fooling_auc"]
    on_model = {k: _shown(v) for k, v in on_model.items()}  # the UI's columns: the attack run keeps full precision
    on_model[f"eps_r_n.{name}"] = ratio["eps_r_n"]
    on_model[f"verdict.{name}"] = VERDICT_VALUE[stats.verdict(ratio["eps_r_ci_low"], ratio["eps_r_ci_high"],
                                                              ratio["eps_r_n"])]
    _log_to(model_run_id, on_model)
    return ratio


VERDICT_VALUE = {"↑": 1.0, "≈": 0.0, "↓": -1.0, stats.UNDETERMINED: math.nan}
"""Table III's verdict as a metric (``verdict.<attack>`` on a defended model's run): +1 ε_r's interval above 1,
−1 below, 0 undecided, ``nan`` undetermined (fewer than ``stats.N_MIN`` clips in a base set, ``eps_r_n.<attack>``)."""


def _shown(value: float) -> float:
    """A value as the UI shows it: four significant digits."""
    return float(f"{value:.4g}") if math.isfinite(value) else value


def _accuracy_metrics(grid: Grid, victim: Victim, test: ClipSet, name: str) -> dict[str, float]:
    """``<name>`` = the test accuracy of a model as deployed (one draw of a random transform, seeded) and its
    Wilson interval ``<name>_ci_low/high``."""
    ev_cfg = grid.evaluation
    acc = accuracy(victim, test.waves, test.labels, ev_cfg.batch_size, ev_cfg.seed)
    low, high = stats.wilson_interval(acc, len(test))
    return {name: acc, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _wrap_model(grid: Grid, column: ModelColumn, defense: str, defense_cfg: dict[str, Any], base: TrainedVictim,
                test: ClipSet, parent_run_id: str | None) -> TrainedVictim:
    """An input-transform defense's model run (``advaudio.kind = defend``): the ``base`` model wrapped in the
    transform, with the deployed model's test accuracy (its clean-accuracy cost) and Wilson interval."""
    key = stable_key([base.key, defense_cfg])
    exp_id = mlflow.get_experiment_by_name(grid.name).experiment_id
    metrics = _accuracy_metrics(grid, deployed(base.result.victim, defense_cfg), test, "test_accuracy")
    run_tags = {**column.tags(defense), **tags(kind="defend", base_run=base.run_id, grid_run=parent_run_id)}
    with resumable_run(exp_id, "run_key", key, run_name=f"{column.victim}/{defense}/{column.frontend}/{column.dataset}", tags=run_tags,
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
    record = json.loads(Path(client.download_artifacts(run_id, CERTIFY_RECORD)).read_text())
    return record if all(record.get(k) == v for k, v in settings.items()) else None


def _certify(grid: Grid, tv: TrainedVictim, defense_cfg: dict[str, Any], waves: Tensor, labels: Tensor,
             evals: dict[str, AttackEvaluation], run_ids: dict[str, str]) -> list[sanity.SanityRecord]:
    """CERTIFY the smoothed model on the evaluation clips (metrics and ``certify.json`` on its run; a rerun reads a
    logged record of the same settings back instead of certifying again) and check every attack of its domain
    and the L2 norm against the certificates (:func:`defense.inference.violation_check`)."""
    ev_cfg = grid.evaluation
    record = _logged_certificate(tv.run_id, certify_settings(defense_cfg, labels, ev_cfg))
    if record is None:
        record = certify(tv.result.victim, defense_cfg, waves, labels, ev_cfg)
        with mlflow.start_run(run_id=tv.run_id):
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
        if ev.adversarial is not None:
            index, adversarial = ev.base_index[ev.success], ev.adversarial[ev.success]
        else:  # read back from a finished run: its adversarial.pt
            index, adversarial = load_crafted(MlflowClient(), run_ids[option]) or (torch.zeros(0, dtype=torch.long), None)
        check = violation_check(tv.result.victim, record, index, adversarial, waves, ev_cfg.batch_size)
        records.append(sanity.SanityRecord(
            f"certified_radius.{option}", "warn" if check.flagged else "pass",
            f"{check.count} of {check.eligible} adversarial examples inside a correct certificate's radius change "
            f"the smoothed prediction (chance bound {check.threshold} at rate {check.failure_rate:.3g})"))
    return records


def _evaluate(grid: Grid, column: ModelColumn, defense: str, tv: TrainedVictim, victim: Victim, option: str,
              attack_cfg: dict[str, Any], waves: Tensor, labels: Tensor, mode: str = "") -> tuple[str, AttackEvaluation]:
    """Evaluate one attack on one (deployed) model, or read its finished run (and per-clip record) back; ``mode``
    is ``naive``/``adaptive`` for an inference-time defense, else empty."""
    ev_cfg = grid.evaluation
    info = grid.attack_info[option]
    settings = {k: v for k, v in asdict(ev_cfg).items() if k not in FIGURES_ONLY}
    key = stable_key([tv.key, option, attack_cfg, settings])
    exp_id = mlflow.get_experiment_by_name(grid.name).experiment_id
    run_tags = {**column.tags(defense), **tags(kind="attack", attack=option, domain=info.domain, norm=info.norm,
                                               family=info.family, targeted=info.targeted, in_tables=info.in_tables),
                "mlflow.parentRunId": tv.run_id}
    if mode:
        run_tags[tag("mode")] = mode
    name = f"{defense}/{option}" + ("+adaptive" if mode == "adaptive" else "")
    with resumable_run(exp_id, "cell_key", key, run_name=name, tags=run_tags,
                       what=f"attack {option}{_suffix(mode)} on {column.label}/{defense}") as run:
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
        mlflow.log_dict({m: {"budget": b, "value": ev.summary[b]} for m, b in METRIC_BUDGETS.items()},
                        "metric_budgets.json")
        mlflow.log_dict(to_record(ev), RECORD_ARTIFACT)
        log_crafted(ev)
        _log_sanity([_monotone(ev, victim, attack, waves, attacked, ev_cfg)])
        _log_examples(ev, victim, waves[ev.base_index], ev_cfg, f"{defense}_{name.split('/')[1]}")
        return run.run_id, ev


def _monotone(ev: AttackEvaluation, victim: Victim, attack: Any, waves: Tensor, labels: Tensor,
              ev_cfg: EvalConfig) -> sanity.SanityRecord:
    """Success never falls as ε grows: on the sweep's own matrix, or on a full sweep of a sample."""
    if not attack.fixed_budget or attack.targeted or ev_cfg.monotone_sample <= 0:
        return sanity.check_monotone(ev)
    n = ev_cfg.monotone_sample
    return sanity.check_monotone_sweep(victim, attack, waves[:n], labels[:n], epsilons=ev.epsilons.tolist(),
                                       batch_size=ev_cfg.batch_size)


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
    shown = ev.success.nonzero().flatten()[:count]
    for i in shown.tolist():
        wave = base_waves[i:i + 1].to(device)
        adv = ev.adversarial[i:i + 1].to(device)
        with torch.no_grad():
            clean_rep = victim.represent(wave)
            adv_rep = adv if ev.domain == "representation" else victim.represent(adv)
        pred = ev.clean_pred[ev.base_index[i]], ev.adv_logits[i].argmax()
        names = (victim.class_names[int(pred[0])], victim.class_names[int(pred[1])])
        mlflow.log_figure(plots.perturbation_triplet(clean_rep[0, 0].cpu(), adv_rep[0, 0].cpu(), title=stem,
                                                     labels=names, units="normalised"), f"plots/example_{i}.png")
        reason = why_inaudible(victim, ev.domain)
        if reason is not None:
            log.info("no audio for %s: %s", stem, reason)
            continue
        reference, adv_wave = to_waveforms(victim, wave, adv, ev.domain)
        with tempfile.TemporaryDirectory() as tmp:
            write_adversarial_wavs(Path(tmp), f"example_{i}", reference[0].cpu(), adv_wave[0].cpu(),
                                   victim.sample_rate)
            mlflow.log_artifacts(tmp, "audio")


def _log_curves(grid: Grid, evals: dict[str, dict[str, AttackEvaluation]], run_ids: dict[str, str]) -> None:
    """Fooling-rate curves with bootstrap bands, original solid and defended dashed, one figure per norm and
    domain, on each defended model's run (budgets of different norms never share an axis)."""
    for defense, run_id in run_ids.items():
        if defense == ORIGINAL or not evals[defense]:
            continue
        groups: dict[tuple[str, str], list[str]] = {}
        for name, ev in evals[defense].items():
            groups.setdefault((ev.domain, ev.norm), []).append(name)
        with mlflow.start_run(run_id=run_id):
            for (domain, norm), names in sorted(groups.items()):
                eps_max = evals[defense][names[0]].eps_max
                fig = plots.fooling_rate_curves({k: evals[ORIGINAL][k].eps_star for k in names}, eps_max,
                                                {k: evals[defense][k].eps_star for k in names}, norm=norm,
                                                title=f"original vs {defense}, {domain} {norm}",
                                                n_boot=grid.evaluation.n_boot, level=grid.evaluation.confidence)
                mlflow.log_figure(fig, f"plots/fooling_rate_curves_{domain}_{norm}.png")


def _sanity_for_model(grid: Grid, victim: Victim, waves: Tensor, labels: Tensor,
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
    records.extend(_pairwise_checks(grid, evals))
    records.extend(extra or [])
    with mlflow.start_run(run_id=run_id):
        _log_sanity(records)


def _pairwise_checks(grid: Grid, evals: dict[str, AttackEvaluation]) -> list[sanity.SanityRecord]:
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


def _log_sanity(records: list[sanity.SanityRecord]) -> None:
    """Log each check as metric ``sanity.<name>`` (1 pass, 0 warn) and all details as ``sanity.json``."""
    log_once(mlflow.active_run().info.run_id, {f"sanity.{r.name}": float(r.status == "pass") for r in records})
    mlflow.log_dict({r.name: r.as_dict() for r in records}, "sanity.json")
    for r in records:
        if r.status != "pass":
            log.warning("sanity %s: %s", r.name, r.detail)


def _log_to(run_id: str, metrics: dict[str, float]) -> None:
    log_once(run_id, metrics)


def count_steps(grid: Grid) -> int:
    """Progress ticks of a grid: one per trained (or wrapped) model and one per attack evaluation."""
    per_column = 0
    for defense in grid.axes["defense"]:
        cfg = grid.defense_config(defense)
        per_column += 1 + sum(len(_modes(grid, option, attack_cfg, cfg)) for option, attack_cfg in grid.attacks.items())
    return len(list(grid.models())) * per_column


def run_grid(grid: Grid, *, tracking_uri: str | None = None, outputs: Path = OUTPUTS, executor: str = "local",
             ray_address: str | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``grid`` (skipping finished ones) and return one summary row per evaluation.

    Args:
        grid: the resolved grid (:func:`defense.grid.load_grid`).
        tracking_uri: MLflow URI (default: SQLite under ``outputs``).
        outputs: checkpoints, caches and the default store.
        executor: ``"local"`` (columns one after another) or ``"ray"`` (one Ray task per column).
        ray_address: Ray cluster address (``None`` starts a local Ray instance).
        progress: called with a short message after each trained model and each evaluation.

    Raises:
        ValueError: for an unknown executor.
    """
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor '{executor}'; known: local, ray")
    exp_id = setup_tracking(grid.name, tracking_uri, outputs)
    uri = mlflow.get_tracking_uri()
    grid_key = stable_key([grid.source])
    with resumable_run(exp_id, "grid_key", grid_key, run_name=f"grid:{grid.name}", tags=tags(kind="grid"),
                       what=f"grid {grid.name}", finish=False) as run:
        parent_id = run.run_id
        if not (run.finished or run.resumed):
            mlflow.log_dict(grid.source, "grid.yaml")
    columns = [ModelColumn(*model) for model in grid.models()]
    if executor == "local":
        rows = [row for c in columns for row in run_column(grid, c, parent_id, uri, outputs, progress)]
    else:
        rows = _run_on_ray(grid, columns, parent_id, uri, outputs, ray_address, progress)
    with owned(grid_key, f"the report of grid {grid.name}"):  # a second command rewrites it after the first
        log_grid_transfer(grid, parent_id, uri)
        _log_grid_report(grid, parent_id, uri)
    return rows


def _log_grid_report(grid: Grid, parent_id: str, uri: str) -> None:
    """Tables I-III, the ε_r heat maps and seed 004's Fig. 1 (``plots/fig1_*.png``) as artifacts of the grid's
    parent run."""
    data = report.collect(grid.name, uri, n_boot=grid.evaluation.n_boot, level=grid.evaluation.confidence)
    save_runs_view(mlflow.get_run(parent_id).info.experiment_id)
    with mlflow.start_run(run_id=parent_id), tempfile.TemporaryDirectory() as tmp:
        report.write_tables(data, Path(tmp))
        mlflow.log_artifacts(tmp, "tables")
        if grid.evaluation.fig1 and write_example_figures(data, Path(tmp) / "fig1", uri):
            mlflow.log_artifacts(str(Path(tmp) / "fig1"), "plots")
        for defense in grid.axes["defense"]:
            if defense == ORIGINAL:
                continue
            found = report.table_3_matrices(data, defense)
            mlflow.log_figure(plots.epsilon_ratio_heatmap(found["value"], partial=found["partial"], low=found["low"],
                                                          high=found["high"], n=found["n"], title=f"eps_r ({defense})"),
                              f"plots/eps_r_{defense}.png")
        mark_finished()


def _run_on_ray(grid: Grid, columns: list[ModelColumn], parent_id: str, uri: str, outputs: Path,
                address: str | None, progress: Progress | None) -> list[dict[str, Any]]:
    """One Ray task per model column; the tracking URI must be reachable from every worker.

    Workers get the driver's ``ADVAUDIO_*`` and ``MLFLOW_*`` environment (cache, configs, outputs, store).
    A task whose worker dies is retried (``max_retries``): the retry resumes its training from the last
    epoch's checkpoint and reuses every finished MLflow run, so nothing is logged twice. Interrupted
    (Ctrl-C, SIGTERM: :mod:`defense.interrupt`), the driver cancels the tasks left, which mark their active
    runs KILLED, waits for them up to ``RAY_CANCEL_GRACE_S`` and shuts down the Ray it started.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        forwarded = {k: v for k, v in os.environ.items() if k.startswith(("ADVAUDIO_", "MLFLOW_"))}
        # address None: a fresh local instance ("local"), never whatever cluster this machine started last
        with keep_handlers():
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": forwarded} if forwarded else None)
    pending: dict[Any, ModelColumn] = {}
    try:
        task = ray.remote(max_retries=RAY_TASK_RETRIES)(_column_task)
        pending = {task.options(num_gpus=_gpus(grid, c)).remote(grid, c, parent_id, uri, outputs.resolve()): c
                   for c in columns}
        rows: list[dict[str, Any]] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            column = pending.pop(done[0])
            rows.extend(ray.get(done[0]))
            if progress is not None:
                progress(f"finished column {column.label}")
        return rows
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=RAY_CANCEL_GRACE_S)
        raise
    finally:
        if started:
            ray.shutdown()


def _column_task(grid: Grid, column: ModelColumn, parent_id: str, uri: str, outputs: Path) -> list[dict[str, Any]]:
    """:func:`run_column` as a Ray task: Ray cancels a task by raising SIGINT's handler in its worker, which
    then marks the task's active MLflow runs KILLED (SIGTERM stays Ray's: it stops the worker process)."""
    with interruptible((signal.SIGINT,)):
        return run_column(grid, column, parent_id, uri, outputs)


def _gpus(grid: Grid, column: ModelColumn) -> int:
    """GPUs a column's Ray task asks for: one if its ``train.device`` names CUDA, or is ``auto`` on a driver
    that sees a GPU (the cluster is then assumed to have them), else none."""
    device = str(grid.cell_config(column.dataset, column.frontend, column.victim, ORIGINAL, column.seed)["train"]
                 .get("device", "auto"))
    return int(device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()))
