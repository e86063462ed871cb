"""Prinz & Flexer's study: end-to-end waveform attacks on an instrument classifier ("End-to-end adversarial
white box attacks on music instrument classification", 2021).

``advaudio experiment prinz_flexer`` trains the AveragePoolCNN on mel-dB (Sec. 4.1), attacks a seeded,
class-balanced set of test clips on the waveform through the differentiable front-end with every row
of ``attacks:`` (FGSM, PGDn, C&W, multi-scale C&W; Sec. 4.2), untargeted or targeted (random targets,
one class, or every source × target pair), and for each row records per attempt: success, SNR over
the paper's trimmed window, iterations, the adversarial prediction's confidence, and the prediction
under white noise of the same SNR (Sec. 5.2's check that the attack is not merely loud); also
accuracy under noise at the row's mean SNR on every clip (Sec. 5.2: 0.79 vs 0.835 clean).

MLflow layout (experiment tagged ``advaudio.study=prinz_flexer``): one parent run (``advaudio.kind=study``,
keyed by the resolved config, holding ``study.json`` with the run ids of its rows and the tables);
the training run nested under it; under the training run one ``clean`` run and one run per attack
row, each with its per-attempt record ``evaluation.json``, summary metrics with intervals, figures
and WAVs. A rerun finds finished runs by their keys and skips them. ``report`` rebuilds every table
from the records alone (:mod:`experiments.prinz_flexer.report`).

Success follows the paper's code: untargeted, the prediction differs from the clean prediction (the
attack ascends the loss of the clean prediction); targeted, it equals the target. Every clip is
attacked, correctly classified or not, and accuracy counts the adversarial prediction where an
example was found and the clean one elsewhere (Table 1).
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import torch
from torch import Tensor

from defense.pipeline import TrainedVictim, train_from_config
from defense.studies import STUDY_TAG
from evaluation import plots
from evaluation.audio_out import write_adversarial_wavs, write_wav
from evaluation.harness import victim_device
from evaluation.metrics import confusion_matrix, snr_db
from evaluation.selection import select_examples
from evaluation.tracking import RECORD_ARTIFACT, flatten, log_once, reopened_run, resumable_run, stable_key
from experiments.prinz_flexer.config import STUDY, AttackSpec, EvalOptions, Study, check_classes, load_study
from experiments.prinz_flexer.metrics import matched_noise, noise_at_snr, random_target_attempts, target_pairs
from experiments.prinz_flexer.report import final_predictions, log_tables, pair_matrix_figure, summarize
from experiments.shared import (Progress, audio_artifacts, batched_logits, finish_parent, finite, parent_run,
                                study_experiment)
from training.data import load_splits
from victims.victim import Victim

log = logging.getLogger(__name__)


def run(raw: dict, overrides: dict, *, tracking_uri: str | None, outputs: Path, progress: Progress) -> str:
    """Train the victim, run every attack row (skipping finished ones), log to MLflow; return the experiment.

    Raises:
        ConfigError: for a bad configuration (see :func:`experiments.prinz_flexer.config.load_study`).
    """
    study = load_study(raw, overrides)
    exp_id = study_experiment(study.name, STUDY, tracking_uri, outputs)
    splits = load_splits(study.train_cfg["dataset"])
    check_classes(study, splits.class_names)
    parent_id = parent_run(exp_id, study.key, study.name, STUDY, study.source, "study.yaml")
    tv = train_from_config(study.train_cfg, experiment=study.name, tracking_uri=tracking_uri, outputs=outputs,
                           splits=splits, parent_run_id=parent_id, extra_tags={STUDY_TAG: STUDY})
    progress("trained the victim")
    victim = tv.result.victim.eval()
    waves, labels = select_examples(splits.test, study.evaluation.n_examples, study.evaluation.seed)
    clean_logits = batched_logits(victim, waves, study.evaluation.batch_size).double()
    rows = {"clean": _clean_run(exp_id, study, tv, labels, clean_logits)}
    for spec in study.attacks.values():
        rows[spec.name] = _attack_run(exp_id, study, tv, spec, waves, labels, clean_logits.argmax(1))
        with reopened_run(parent_id):  # after every row, so an interrupted study still reports
            mlflow.log_dict({"model_run": tv.run_id, "evaluation": asdict(study.evaluation), "rows": rows},
                            "study.json")
        progress(f"attacked with {spec.name}")
    log_tables(parent_id)
    finish_parent(parent_id)
    return study.name


def _row_tags(tv: TrainedVictim, kind: str, name: str, key: str) -> dict[str, str]:
    return {"advaudio.kind": kind, "advaudio.attack": name, "advaudio.cell_key": key, STUDY_TAG: STUDY,
            "mlflow.parentRunId": tv.run_id}


def _clean_run(exp_id: str, study: Study, tv: TrainedVictim, labels: Tensor, logits: Tensor) -> str:
    """The clean row (Table 1's first line): predictions and confidences on the evaluation clips."""
    key = stable_key([tv.key, "clean", asdict(study.evaluation)])
    with resumable_run(exp_id, "cell_key", key, run_name="clean", tags=_row_tags(tv, "clean", "clean", key),
                       what=f"study {study.name}: clean row") as run:
        if run.finished:
            return run.run_id
        prob = logits.softmax(dim=1)
        record = {"row": "clean", "mode": "clean", "paper": "clean", "class_names": tv.result.victim.class_names,
                  "labels": labels.tolist(), "clean_pred": prob.argmax(1).tolist(),
                  "clean_conf": prob.amax(1).tolist()}
        mlflow.log_params(flatten(asdict(study.evaluation), "evaluation."))
        mlflow.log_dict(record, RECORD_ARTIFACT)
        log_once(run.run_id, finite(summarize(record, study.evaluation)))
        return run.run_id


def attempts_of(spec: AttackSpec, labels: Tensor, clean_pred: Tensor, class_names: list[str],
                seed: int) -> tuple[Tensor, Tensor | None]:
    """``(clip, target)`` of every attempt of a row (``target`` is ``None`` for an untargeted row).

    The paper's code skips a clip whose clean prediction already is the target; every mode here does, and
    skips a clip whose true class is the target (reaching it would restore the correct label).
    """
    n, classes = len(labels), len(class_names)
    if spec.mode == "untargeted":
        return torch.arange(n), None
    if spec.mode == "random":
        return random_target_attempts(labels, clean_pred, classes, seed)
    if spec.mode == "all":
        return target_pairs(labels, clean_pred, classes)
    pairs = [(None, spec.targets)] if spec.mode == "class" else spec.targets
    clips, targets = [], []
    for source, target in pairs:
        t = class_names.index(target)
        keep = (clean_pred != t) & (labels != t if source is None else labels == class_names.index(source))
        idx = keep.nonzero().flatten()
        clips.append(idx)
        targets.append(torch.full_like(idx, t))
    return torch.cat(clips), torch.cat(targets)


def _attack_run(exp_id: str, study: Study, tv: TrainedVictim, spec: AttackSpec, waves: Tensor, labels: Tensor,
                clean_pred: Tensor) -> str:
    """Run one attack row (or find it finished) and log its record, metrics, figures and WAVs."""
    ev = study.evaluation
    key = stable_key([tv.key, spec.name, spec.config, asdict(ev)])
    with resumable_run(exp_id, "cell_key", key, run_name=spec.name, tags=_row_tags(tv, "attack", spec.name, key),
                       what=f"study {study.name}: attack {spec.name}") as run:
        if run.finished:
            return run.run_id
        victim = tv.result.victim
        names = victim.class_names
        clips, targets = attempts_of(spec, labels, clean_pred, names, ev.seed)
        torch.manual_seed(ev.seed)  # PGDn's random start
        noise_gen = torch.Generator().manual_seed(ev.seed + 1)
        found = _execute(victim, spec, waves, clean_pred, clips, targets, ev, noise_gen)
        record = {"row": spec.name, "option": spec.option, "attack": spec.registry, "mode": spec.mode,
                  "paper": spec.paper, "class_names": names, "snr_trim": ev.snr_trim,
                  "sample_rate": victim.sample_rate, "labels": labels.tolist(), "clean_pred": clean_pred.tolist(),
                  "clip": clips.tolist(),
                  "target": (targets if targets is not None else torch.full_like(clips, -1)).tolist(),
                  **{k: v.tolist() for k, v in found["per_attempt"].items()}}
        record.update(_noise_at_mean_snr(victim, waves, record, ev.snr_trim, ev.batch_size, noise_gen))
        mlflow.log_params({**flatten(spec.config, "attack."), **flatten(asdict(ev), "evaluation.")})
        mlflow.log_dict(record, RECORD_ARTIFACT)
        log_once(run.run_id, finite(summarize(record, ev)))
        _log_figures(record, spec)
        _log_wavs(found["examples"], victim.sample_rate, names, spec.name)
        return run.run_id


def _execute(victim: Victim, spec: AttackSpec, waves: Tensor, clean_pred: Tensor, clips: Tensor,
             targets: Tensor | None, ev: EvalOptions, noise_gen: torch.Generator) -> dict[str, Any]:
    """Attack every attempt in batches; per attempt the outcome, and the matched-SNR noise's prediction
    (the first ``ev.wavs`` examples found are kept to be heard)."""
    attack, device = spec.build(), victim_device(victim)
    batch_size, trim = ev.batch_size, ev.snr_trim
    keys = ("success", "adv_pred", "adv_conf", "snr_db", "iterations", "noise_pred", "noise_snr_db")
    parts: dict[str, list[Tensor]] = {k: [] for k in keys}
    examples: list[dict[str, Any]] = []
    for start in range(0, len(clips), batch_size):
        idx = clips[start:start + batch_size]
        wave, lab = waves[idx].to(device), clean_pred[idx].to(device)
        tgt = targets[start:start + batch_size].to(device) if targets is not None else None
        res = attack(victim, wave, lab, targets=tgt)
        adv, prob = res.adversarial[0], res.adv_logits[0].double().softmax(dim=1)
        noisy = victim.bounds("waveform").clip(wave + matched_noise(wave.cpu(), adv.cpu(), trim, noise_gen).to(device))
        with torch.no_grad():
            noise_pred = victim(noisy).argmax(dim=1)
        out = {"success": res.success[0], "adv_pred": prob.argmax(1), "adv_conf": prob.amax(1),
               "snr_db": snr_db(wave, adv, trim), "iterations": res.iterations[0], "noise_pred": noise_pred,
               "noise_snr_db": snr_db(wave, noisy, trim)}
        for k in keys:
            parts[k].append(out[k].detach().cpu())
        for j in res.success[0].nonzero().flatten().tolist()[:max(0, ev.wavs - len(examples))]:
            examples.append({"clip": int(idx[j]), "clean": wave[j].cpu(), "adv": adv[j].cpu(), "noisy": noisy[j].cpu(),
                             "clean_pred": int(lab[j]), "adv_pred": int(out["adv_pred"][j])})
    return {"per_attempt": {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()},
            "examples": examples}


def _noise_at_mean_snr(victim: Victim, waves: Tensor, record: dict[str, Any], trim: int, batch_size: int,
                       gen: torch.Generator) -> dict[str, Any]:
    """The paper's own check (Sec. 5.2): every clip overlaid with noise at the row's mean SNR."""
    snr = torch.tensor(record["snr_db"], dtype=torch.float64)
    ok = torch.tensor(record["success"], dtype=torch.bool) & torch.isfinite(snr)
    if not bool(ok.any()):
        return {"noise_mean_snr_db": None, "noise_mean_pred": None}
    level = float(snr[ok].mean())
    noisy = victim.bounds("waveform").clip(waves + noise_at_snr(waves, level, trim, gen))
    return {"noise_mean_snr_db": level, "noise_mean_pred": batched_logits(victim, noisy, batch_size).argmax(1).tolist()}


def _log_figures(record: dict[str, Any], spec: AttackSpec) -> None:
    """Confusion of the true class with the final prediction; the pair matrix of a targeted row."""
    labels = torch.tensor(record["labels"])
    clip = torch.tensor(record["clip"], dtype=torch.long)
    final = torch.tensor(final_predictions(record))
    names = record["class_names"]
    mlflow.log_figure(plots.confusion_matrices(confusion_matrix(labels[clip], torch.tensor(record["clean_pred"])[clip],
                                                                len(names)),
                                               confusion_matrix(labels[clip], final, len(names)), names,
                                               title=spec.name), "plots/confusion.png")
    if spec.mode != "untargeted":
        mlflow.log_figure(pair_matrix_figure(record), "plots/pair_matrix.png")


def _log_wavs(examples: list[dict[str, Any]], rate: int, names: list[str], row: str) -> None:
    """Original, adversarial, amplified perturbation and matched-SNR noise of the first examples found."""
    with audio_artifacts() as folder:
        for ex in examples:
            stem = f"{row}_clip{ex['clip']}_{names[ex['clean_pred']]}_to_{names[ex['adv_pred']]}"
            write_adversarial_wavs(folder, stem, ex["clean"], ex["adv"], rate)
            write_wav(folder / f"{stem}_noise_same_snr.wav", ex["noisy"], rate)
