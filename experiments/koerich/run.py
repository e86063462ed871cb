"""Koerich et al. (Koerich et al., "Cross-representation transferability of adversarial attacks: from
spectrograms to audio waveforms"): ``advaudio experiment koerich`` and ``advaudio report koerich``.

Per test fold: train a 2D CNN on each spectrogram (STFT-dB, mel-dB) and the gammatone 1D CNN on the
raw audio, all on segments cut with overlap (Section II); attack each 2D CNN's dB spectrogram with FGSM
and BIM (Section III); turn the spectrograms back into audio (kept-phase iSTFT, Griffin-Lim for mel;
Section III-A); measure the 2D CNN on its own adversarial input, the 1D CNN on the reconstructed audio,
the SNR of the reconstructions, and aggregate every segment prediction per recording by majority vote
and by the sum rule (Section IV, Tables III-VII).

MLflow layout: one parent run ``study:<name>`` (tag ``advaudio.kind=study``, the composed config as
``study.yaml``), the training runs of :func:`defense.pipeline.train_from_config` nested under it, and one
nested evaluation run per fold and input (``advaudio.kind=seed003_eval``; input ``original`` is the 1D
CNN on the original audio) holding metrics and the per-recording record ``koerich.json`` from which
:func:`experiments.koerich.report.report` rebuilds every table. A rerun reuses finished training and evaluation runs.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np

from attacks import create_attack
from defense.pipeline import train_from_config
from evaluation.audio_out import write_adversarial_wavs, write_wav
from evaluation.tracking import log_once, reopened_run, resumable_run, stable_key
from experiments.koerich.config import STUDY, EvalOptions, Study, load_study
from experiments.koerich.measure import EVAL_KIND, RECORD, choose_recordings, record, run_input, waveform_probs
from experiments.koerich.report import combine, report
from experiments.shared import Progress, audio_artifacts, finish_parent, parent_run, study_experiment
from training.data import load_splits
from training.data.base import Splits

log = logging.getLogger(__name__)


def run(raw: dict[str, Any], overrides: dict[str, Any], *, tracking_uri: str | None, outputs: Path,
        progress: Progress) -> str:
    """Train, attack, reconstruct and log the study (see the module docstring); returns the experiment name.

    Raises:
        ConfigError: for a bad config, before any data is read.
    """
    study = load_study(raw, overrides)
    exp_id = study_experiment(study.name, STUDY, tracking_uri, outputs)
    uri = mlflow.get_tracking_uri()
    study_key = stable_key([study.source])
    parent_id = parent_run(exp_id, study_key, study.name, STUDY, study.source, "study.yaml")
    for fold in study.folds():
        _run_fold(study, fold, parent_id, study_key, uri, outputs, progress)
    text = report(study.name, uri, outputs)
    with reopened_run(parent_id), tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tables.md").write_text(text + "\n")
        mlflow.log_artifacts(tmp, "tables")
    finish_parent(parent_id)
    return study.name


def _run_fold(study: Study, fold: int | None, parent_id: str, study_key: str, uri: str, outputs: Path,
              progress: Progress) -> None:
    """Train the three models of one test fold and log its evaluation runs."""
    splits = load_splits(study.dataset_for(fold))
    fold_tag = {"advaudio.fold": str(fold)}
    where = "test split" if fold is None else f"fold {fold}"
    ev = study.evaluation
    index = choose_recordings(splits.test.groups, splits.test.labels, ev.max_recordings, ev.seed)
    waves, labels = splits.test.waves[index], splits.test.labels[index]
    groups = splits.test.groups[index].numpy()

    def train(model: dict[str, Any], name: str) -> Any:
        done = train_from_config(study.train_config(model, fold), experiment=study.name, tracking_uri=uri,
                                 outputs=outputs, splits=splits, parent_run_id=parent_id,
                                 extra_tags={**fold_tag, "advaudio.model": name})
        progress(f"{where}: trained {name}")
        return done.result.victim

    victim1d = train(study.waveform_model, "waveform")
    _evaluation(study, fold, "original", parent_id, study_key, splits, lambda: (
        record(groups, labels.numpy(), {"1d/original": waveform_probs(victim1d, waves, ev.batch_size)}), []))
    progress(f"{where}: 1D CNN on the original audio")
    for name, model in study.spectrogram_models.items():
        victim2d = train(model, name)
        attacks = {k: create_attack(c["name"], **{x: v for x, v in c.items() if x != "name"})
                   for k, c in study.attacks.items()}

        def measure(victim2d: Any = victim2d, attacks: Any = attacks) -> tuple[dict[str, Any], list[Any]]:
            out = run_input(victim2d, victim1d, attacks, waves, labels, batch_size=ev.batch_size,
                            griffin_lim_iters=ev.griffin_lim_iters, n_examples=ev.wavs, controls=study.controls(),
                            seed=ev.seed)
            return record(groups, labels.numpy(), out.probs, out.snr), out.examples

        _evaluation(study, fold, name, parent_id, study_key, splits, measure)
        progress(f"{where}: attacked and reconstructed {name}")


def _evaluation(study: Study, fold: int | None, name: str, parent_id: str, study_key: str, splits: Splits,
                measure: Callable[[], tuple[dict[str, Any], list[Any]]]) -> None:
    """Log one evaluation run (metrics, record, WAVs), or skip it when a finished one exists."""
    exp_id = mlflow.get_experiment_by_name(study.name).experiment_id
    key = stable_key([study_key, fold, name])
    tags = {"advaudio.kind": EVAL_KIND, "advaudio.fold": str(fold), "advaudio.input": name,
            "mlflow.parentRunId": parent_id}
    run_name = name if fold is None else f"fold{fold}/{name}"
    with resumable_run(exp_id, "cell_key", key, run_name=run_name, tags=tags,
                       what=f"study {study.name}: {run_name}") as run:
        if run.finished:
            return
        data, examples = measure()
        attacks = [] if name == "original" else [*study.attacks, *study.controls()]
        mlflow.log_dict({"fold": fold, "input": name, "attacks": attacks, "class_names": splits.class_names,
                         "data": data}, RECORD)
        log_once(run.run_id, _metrics(data, study.evaluation))
        _log_wavs(examples, name, splits)


def _metrics(data: dict[str, Any], ev: EvalOptions) -> dict[str, float]:
    """Each accuracy, mean SNR and transfer rate of one record with its cluster-bootstrap interval."""
    segments, ones = np.asarray(data["recordings"]["segments"], float), np.ones(len(data["recordings"]["ids"]))
    parts: dict[str, tuple[Any, Any]] = {}
    for cond, counts in data["counts"].items():
        for agg, num in counts.items():
            parts[f"{cond}.{agg}_accuracy"] = (np.asarray(num, float), segments if agg == "segment" else ones)
    for key, s in data["snr"].items():
        parts[f"snr_db.{key}"] = (np.asarray(s["sum"], float), np.asarray(s["n"], float))
    for key, t in data["transfer"].items():
        parts[f"transfer.{key}"] = (np.asarray(t["num"], float), np.asarray(t["den"], float))
    out: dict[str, float] = {}
    for name, pair in parts.items():
        cell = combine([pair], n_boot=ev.n_boot, seed=ev.seed, level=ev.confidence)
        out.update({name: cell.value, f"{name}_ci_low": cell.low, f"{name}_ci_high": cell.high})
    return out


def _log_wavs(examples: list[Any], name: str, splits: Splits) -> None:
    """A few fooled segments as WAV: ``_source`` (the segment), ``_original`` (its reconstruction from the clean
    spectrogram, the reference of the SNR), ``_adversarial`` and the amplified ``_perturbation``."""
    classes, rate = splits.class_names, splits.test.sample_rate
    with audio_artifacts() as folder:
        for ex in examples:
            stem = f"{name}_{ex.attack}_{ex.index:05d}_{classes[ex.clean_pred]}_to_{classes[ex.adv_pred]}"
            write_wav(folder / f"{stem}_source.wav", ex.source[0], rate)
            write_adversarial_wavs(folder, stem, ex.clean[0], ex.adversarial[0], rate)

