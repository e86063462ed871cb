"""Subramanian et al. (2019, "Adversarial attacks in sound event classification") as a study.

Several models trained on one data set (log-mel models of different architectures and a raw-waveform
model, Sec. 2.2) are attacked end to end on the waveform (Sec. 2.1): untargeted white noise and FGSM
at a fixed SNR (the baselines), DeepFool and C&W (Experiment 1, Tables 2-3); targeted C&W and L-BFGS
from every targeted class to every other (Experiment 2, Table 4); and the untargeted DeepFool and C&W
examples of each model are replayed on every other model (Experiment 3, Table 5).

MLflow layout (experiment tagged ``advaudio.study = subramanian``): a parent run ``study:<name>``; one
training run per model (``advaudio.kind = train``, tag ``advaudio.model``) nested under it; one attack
run per model and attack (``advaudio.kind = attack``) nested under the model's run, with its summary
metrics and intervals and the per-attempt record ``seed001_record.json``; one transfer run per replayed
attack (``advaudio.kind = transfer``) with ``transfer.json``. :mod:`experiments.subramanian.report` rebuilds
every table from these alone. A rerun resumes: finished training runs are reused by their config hash,
finished attack and transfer runs are read back (the replayed attacks' adversarial waveforms are kept
as ``adversarial.pt`` for that).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import torch
from torch import Tensor

from attacks import create_attack
from defense.pipeline import TrainedVictim, train_from_config
from evaluation.audio_out import write_adversarial_wavs
from evaluation.crafted import CRAFTED_ARTIFACT, load_crafted, log_crafted
from evaluation.harness import victim_device
from evaluation.selection import select_examples
from evaluation.tracking import TRANSFER_ARTIFACT, log_once, resumable_run, stable_key
from evaluation.transfer import replay
from experiments.shared import (Progress, audio_artifacts, batched_logits, finish_parent, parent_run,
                                study_experiment)
from experiments.subramanian.config import STUDY, Study, load_study
from experiments.subramanian.metrics import (RECORD, attempt_record, record_frame, snr_budgets,
                                             summary_metrics)
from training.data import load_splits
from training.data.base import ClipSet
from victims.registry import ConfigError
from victims.victim import Victim

log = logging.getLogger(__name__)


@dataclass
class Attempts:
    """The attempts an attack makes on every model: clip ``clip[j]`` with label ``labels[j]`` (and target)."""

    waves: Tensor
    labels: Tensor
    clip: Tensor
    targets: Tensor | None = None


def untargeted_attempts(test: ClipSet, n_examples: int, seed: int) -> Attempts:
    """The seeded, class-balanced test clips every model is attacked on (Subramanian et al.: 6 per class)."""
    waves, labels = select_examples(test, n_examples, seed)
    return Attempts(waves, labels, torch.arange(len(labels)))


def targeted_attempts(test: ClipSet, classes: list[str], per_class: int, seed: int) -> Attempts:
    """``per_class`` test clips of each targeted class, each aimed at every other targeted class (Sec. 3.2).

    Raises:
        ConfigError: for a class the data set lacks, or too few test clips of one.
    """
    missing = [c for c in classes if c not in test.class_names]
    if missing:
        raise ConfigError(f"targeted class '{missing[0]}' is not in the data set; classes: "
                          f"{', '.join(test.class_names)}")
    ids = torch.tensor([test.class_names.index(c) for c in classes])
    counts = [int((test.labels == i).sum()) for i in ids]
    if min(counts) < per_class:
        raise ConfigError(f"targeted class '{classes[counts.index(min(counts))]}' has {min(counts)} test clips, "
                          f"fewer than evaluation.targeted_per_class = {per_class}")
    waves, labels = select_examples(test.subset(torch.isin(test.labels, ids)), per_class * len(ids), seed)
    pairs = [(j, int(t)) for j in range(len(labels)) for t in ids if int(t) != int(labels[j])]
    clip = torch.tensor([j for j, _ in pairs])
    return Attempts(waves[clip], labels[clip], clip, torch.tensor([t for _, t in pairs]))


def run(raw: dict[str, Any], overrides: dict[str, Any], *, tracking_uri: str | None, outputs: Path,
        progress: Progress) -> str:
    """Train the study's models, run every attack on each, replay the transferable ones, log to MLflow.

    Returns:
        The MLflow experiment name (for :func:`report`).

    Raises:
        ConfigError: for a bad study configuration (see :func:`experiments.subramanian.config.load_study`).
    """
    study = load_study(raw, overrides)
    threads = torch.get_num_threads()
    if study.evaluation.threads is not None:
        torch.set_num_threads(study.evaluation.threads)
    try:
        return _run(study, tracking_uri, outputs, progress)
    finally:
        torch.set_num_threads(threads)


def _run(study: Study, tracking_uri: str | None, outputs: Path, progress: Progress) -> str:
    exp_id = study_experiment(study.name, STUDY, tracking_uri, outputs)
    parent = parent_run(exp_id, stable_key([study.source]), study.name, STUDY, study.source, "study.json")
    splits = load_splits(next(iter(study.models.values()))["dataset"])
    ev = study.evaluation
    plain = untargeted_attempts(splits.test, ev.n_examples, ev.seed)
    aimed = (targeted_attempts(splits.test, study.targeted_classes, ev.targeted_per_class, ev.seed)
             if any(study.targeted.values()) else None)
    trained: dict[str, TrainedVictim] = {}
    for name, cfg in study.models.items():
        tags = {"advaudio.model": name, "advaudio.frontend": str(cfg["frontend"].get("name")),
                "advaudio.victim": str(cfg["victim"].get("backbone")), "advaudio.defense": "none"}
        trained[name] = train_from_config(cfg, experiment=study.name, tracking_uri=tracking_uri, outputs=outputs,
                                          splits=splits, parent_run_id=parent, extra_tags=tags)
        progress(f"trained {name}")
    crafted: dict[str, dict[str, tuple[Tensor, Tensor]]] = {label: {} for label in study.transfer}
    keys: dict[str, list[str]] = {label: [] for label in study.transfer}
    for name, tv in trained.items():
        for label in study.attacks:
            attempts = aimed if study.targeted[label] else plain
            key, found = _attack(study, exp_id, name, tv, label, attempts)  # type: ignore[arg-type]
            if label in crafted:
                crafted[label][name] = found
                keys[label].append(key)
            progress(f"attacked {name} with {label}")
    victims = {name: tv.result.victim for name, tv in trained.items()}
    for label in study.transfer:
        _transfer(study, exp_id, parent, label, keys[label], victims, plain, crafted[label])
        progress(f"replayed {label} on every model")
    finish_parent(parent)
    return study.name


def _attack(study: Study, exp_id: str, model: str, tv: TrainedVictim, label: str, attempts: Attempts
            ) -> tuple[str, tuple[Tensor, Tensor]]:
    """Run one attack on one model's base-set attempts (or read its finished run back).

    Returns:
        The run's key and the successful attempts' indices with their adversarial waveforms.
    """
    cfg, ev = study.attacks[label], study.evaluation
    scope = {k: v for k, v in asdict(ev).items() if k not in ("n_boot", "confidence", "wavs", "batch_size", "threads")}
    key = stable_key([tv.key, label, cfg, study.fixed_snr_db, scope,
                      study.targeted_classes if study.targeted[label] else None])
    victim = tv.result.victim
    attack = create_attack(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})
    tags = {"advaudio.kind": "attack", "advaudio.model": model, "advaudio.attack": label,
            "advaudio.targeted": str(study.targeted[label]).lower(), "advaudio.domain": attack.domain,
            "advaudio.norm": attack.norm, "advaudio.family": attack.family, "mlflow.parentRunId": tv.run_id}
    with resumable_run(exp_id, "cell_key", key, run_name=f"{model}/{label}", tags=tags,
                       what=f"study {study.name}: {label} on {model}") as run:
        if run.finished:
            return key, _read_crafted(run.run_id) if label in study.transfer else _nothing(attempts)
        return key, _attack_logged(study, victim, attack, label, model, attempts, run.run_id)


def _attack_logged(study: Study, victim: Victim, attack: Any, label: str, model: str, attempts: Attempts,
                   run_id: str) -> tuple[Tensor, Tensor]:
    """Craft, measure and log one attack in the active run; returns the successful attempts' indices and
    adversarial waveforms."""
    cfg, ev = study.attacks[label], study.evaluation
    device = victim_device(victim)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=True):
        torch.manual_seed(ev.seed)
        clean_logits = batched_logits(victim, attempts.waves, ev.batch_size).float()
        attempts, base = _base_set(attempts, clean_logits.argmax(dim=1), ev.base_set)
        adversarial, iterations = _craft(victim, attack, attempts, base, study.fixed_snr_db, ev.batch_size)
    adv_logits = batched_logits(victim, adversarial, ev.batch_size).float()
    targets = attempts.targets[base] if attempts.targets is not None else None
    record = {"model": model, "attack": label, "targeted": study.targeted[label], "class_names": victim.class_names,
              "attempts": len(attempts.labels), "clip": attempts.clip[base].tolist(),
              "label": attempts.labels[base].tolist(), "target": None if targets is None else targets.tolist(),
              "iterations": iterations.tolist(),
              **attempt_record(attempts.labels[base], clean_logits[base], adv_logits, attempts.waves[base],
                               adversarial, targets)}
    success = torch.tensor(record["success"], dtype=torch.bool)
    mlflow.log_params({f"attack.{k}": json.dumps(v)[:500] for k, v in cfg.items()})
    log_once(run_id, summary_metrics(record_frame(record), n_boot=ev.n_boot, level=ev.confidence, seed=ev.seed))
    mlflow.log_dict(record, RECORD)
    crafted = (base[success], adversarial[success])
    if label in study.transfer:
        log_crafted(*crafted)
    _log_wavs(victim, attempts, base, adversarial, success, ev.wavs, label)
    return crafted


def _base_set(attempts: Attempts, pred: Tensor, base_set: str) -> tuple[Attempts, Tensor]:
    """The attempts an attack runs (``evaluation.base_set``): those whose clip the model classifies correctly, or
    every one not already predicted as its target, each labelled with its clean prediction (``all``)."""
    if base_set == "correct":
        return attempts, (pred == attempts.labels).nonzero().flatten()
    keep = pred != attempts.targets if attempts.targets is not None else torch.ones_like(pred, dtype=torch.bool)
    return replace(attempts, labels=pred), keep.nonzero().flatten()


def _craft(victim: Victim, attack: Any, attempts: Attempts, base: Tensor, fixed_snr_db: float | None,
           batch_size: int) -> tuple[Tensor, Tensor]:
    """Adversarial waveforms and iterations of the attempts ``base``, in batches."""
    device = victim_device(victim)
    advs, iters = [], []
    for start in range(0, len(base), batch_size):
        idx = base[start:start + batch_size]
        wave = attempts.waves[idx]
        budgets = snr_budgets(wave, fixed_snr_db, attack.norm).view(1, -1) if attack.fixed_budget else None
        targets = attempts.targets[idx].to(device) if attempts.targets is not None else None
        res = attack(victim, wave.to(device), attempts.labels[idx].to(device), targets=targets, epsilons=budgets)
        advs.append(res.adversarial[0].detach().cpu())
        iters.append(res.iterations[0].cpu())
    if not advs:
        return attempts.waves[:0], torch.zeros(0, dtype=torch.int64)
    return torch.cat(advs), torch.cat(iters)


def _nothing(attempts: Attempts) -> tuple[Tensor, Tensor]:
    return torch.zeros(0, dtype=torch.int64), attempts.waves[:0]


def _read_crafted(run_id: str) -> tuple[Tensor, Tensor]:
    """The successful attempts' indices and adversarial waveforms a finished attack run kept.

    Raises:
        ConfigError: for a finished run without them (its store was edited or comes from an older advaudio).
    """
    found = load_crafted(run_id)
    if found is None:
        raise ConfigError(f"finished attack run {run_id} has no {CRAFTED_ARTIFACT} to replay: delete the run or use "
                          "a new --outputs")
    return found


def _log_wavs(victim: Victim, attempts: Attempts, base: Tensor, adversarial: Tensor, success: Tensor, count: int,
              label: str) -> None:
    """WAV files (original, adversarial, amplified perturbation) of the first ``count`` successful attempts."""
    names = victim.class_names
    with audio_artifacts() as folder:
        for j in success.nonzero().flatten()[:count].tolist():
            i = int(base[j])
            stem = f"{label}_clip{int(attempts.clip[i]):03d}_{names[int(attempts.labels[i])]}"
            if attempts.targets is not None:
                stem += f"_to_{names[int(attempts.targets[i])]}"
            write_adversarial_wavs(folder, stem, attempts.waves[i], adversarial[j], victim.sample_rate)


def _transfer(study: Study, exp_id: str, parent: str, label: str, attack_keys: list[str],
              victims: dict[str, Victim], attempts: Attempts, crafted: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Replay one attack's examples of every model on every model (Table 5), unless already logged."""
    key = stable_key(["transfer", label, attack_keys])
    tags = {"advaudio.kind": "transfer", "advaudio.attack": label, "mlflow.parentRunId": parent}
    with resumable_run(exp_id, "cell_key", key, run_name=f"transfer/{label}", tags=tags,
                       what=f"study {study.name}: transfer of {label}") as run:
        if not run.finished:
            record = replay(label, victims, attempts.waves, attempts.labels, crafted,
                            batch_size=study.evaluation.batch_size)
            mlflow.log_dict(record.to_dict(), TRANSFER_ARTIFACT)
