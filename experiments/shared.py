"""What every study does the same way: its MLflow experiment and parent run, progress, a victim's logits in
batches, WAV examples as artifacts, and metrics MLflow can store."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import mlflow
import torch
from mlflow.tracking import MlflowClient
from torch import Tensor

from defense.studies import STUDY_TAG
from evaluation.harness import victim_device
from evaluation.tracking import mark_finished, reopened_run, resumable_run, setup_tracking, tag
from victims.victim import Victim

Progress = Callable[[str], None]
"""The command line's progress callback: one call per finished step, with what was done."""


def study_experiment(experiment: str, study: str, tracking_uri: str | None, outputs: Path) -> str:
    """Select (or create) the MLflow experiment ``experiment`` tagged as study ``study``; returns its id."""
    exp_id = setup_tracking(experiment, tracking_uri, outputs)
    MlflowClient().set_experiment_tag(exp_id, STUDY_TAG, study)
    return exp_id


def parent_run(exp_id: str, key: str, experiment: str, study: str, source: Mapping[str, Any], artifact: str) -> str:
    """The study's parent run ``study:<experiment>``, found by ``key`` or started (logging the resolved config
    ``source`` as ``artifact``, JSON or YAML by its suffix); returns its id. It is marked finished by
    :func:`finish_parent` once every nested run is in place."""
    tags = {tag("kind"): "study", STUDY_TAG: study}
    with resumable_run(exp_id, "study_key", key, run_name=f"study:{experiment}", tags=tags,
                       what=f"study {experiment}", finish=False) as run:
        if not (run.finished or run.resumed):
            mlflow.log_dict(dict(source), artifact)
        return run.run_id


def finish_parent(run_id: str) -> None:
    """Mark the study's parent run finished."""
    with reopened_run(run_id):
        mark_finished()


@torch.no_grad()
def batched_logits(victim: Victim, waves: Tensor, batch_size: int) -> Tensor:
    """``(N, C)`` logits of ``victim`` (put in eval mode) on waveforms ``(N, 1, T)``, ``batch_size`` at a time on
    the victim's device, returned on the CPU in the model's dtype."""
    device = victim_device(victim)
    victim.eval()
    parts = [victim(waves[i:i + batch_size].to(device)).cpu() for i in range(0, len(waves), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, victim.num_classes)


@contextlib.contextmanager
def audio_artifacts() -> Iterator[Path]:
    """A temporary folder for WAV examples, logged to the active run under ``audio/`` if anything was written."""
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
        if any(Path(tmp).iterdir()):
            mlflow.log_artifacts(tmp, "audio")


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """The defined metrics: MLflow stores no ``nan`` (the run's record keeps everything)."""
    return {k: float(v) for k, v in metrics.items() if v == v}
