"""One training run from a resolved config: data → victim → objective → trainer → MLflow.

Shared by ``advaudio train`` and the experiment runner. A run is keyed by a hash of the parts of
the config that determine the model, so the same command resumes its checkpoint and its MLflow run, and a
second command on the same store waits for the first, then reuses its finished run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch

from defense.channel import channel_identity
from defense.objectives import OBJECTIVES
from defense.defended_victim import check_trainable
from evaluation.stats import wilson_interval
from evaluation.tracking import (OUTPUTS, EpochLogger, flatten, log_once, logged_steps, resumable_run, setup_tracking,
                                 stable_key, tags)
from training.checkpoints import publish_victim
from training.data import load_splits
from training.data.base import Splits
from training.devices import resolve_device
from training.trainer import MetricsCallback, TrainConfig, TrainResult, selection_criterion, train
from victims.registry import to_dataclass
from victims.registry import ConfigError
from victims.victim import build_victim

log = logging.getLogger(__name__)
TRAIN_KEYS = ("dataset", "frontend", "victim", "train", "defense")
LARGE_MODEL_PARAMETERS = 50_000_000
"""Above this many parameters :func:`warn_if_large` warns (ResNet-18: 11 M; VGG-16's dense head: ~130 M)."""


@dataclass
class TrainedVictim:
    """A finished training run: the result, its MLflow run id and its model checkpoint."""

    result: TrainResult
    run_id: str
    checkpoint: Path
    key: str
    reused: bool = False
    """The run was finished before (by an earlier or a concurrent command): nothing was trained or logged."""


def run_key(cfg: dict[str, Any]) -> str:
    """Stable 12-hex-digit hash of the config groups that determine a trained victim."""
    return stable_key(channel_identity({k: cfg.get(k) for k in TRAIN_KEYS}))


def build_objective(cfg: dict[str, Any]) -> Any:
    """The training objective named by the ``defense`` config group.

    Raises:
        ConfigError: for ``eps: auto``, which only a grid can resolve (it measures the original model), and
            for an input-transform defense, which wraps a trained model instead of training one.
    """
    check_trainable(cfg)
    if cfg.get("eps") == "auto":
        raise ConfigError("defense eps: auto is measured on the original model of a grid; run it with "
                          "`advaudio experiment`, or set defense.eps=<number>")
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    return OBJECTIVES.create(cfg.get("name", "clean"), **kwargs)


def train_from_config(cfg: dict[str, Any], *, experiment: str = "advaudio", tracking_uri: str | None = None,
                      outputs: Path = OUTPUTS, splits: Splits | None = None,
                      parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None,
                      on_epoch: MetricsCallback | None = None) -> TrainedVictim:
    """Train (or resume, or reuse when finished) the victim described by ``cfg`` and log it to MLflow.

    Args:
        cfg: resolved config with ``dataset``, ``frontend``, ``victim``, ``train`` and ``defense``.
        experiment: MLflow experiment name.
        tracking_uri: MLflow URI (default: SQLite under ``outputs``).
        outputs: folder for checkpoints and the default store.
        splits: already-loaded data (the runner shares it between cells).
        parent_run_id: nest the run under this MLflow run.
        extra_tags: more tags for the run (the grid runner's coordinates).
        on_epoch: called after each epoch with its metrics and number (after they are logged).

    Raises:
        ConfigError: for a wrong key or value anywhere in ``cfg``.
    """
    tcfg = to_dataclass(TrainConfig, cfg["train"], "train")
    resolve_device(tcfg.device)  # a device this machine lacks is one line before any data or run
    objective = build_objective(cfg.get("defense") or {"name": "clean"})
    criterion = selection_criterion(tcfg.select_on, objective)
    exp_id = setup_tracking(experiment, tracking_uri, outputs)
    key = run_key(cfg)
    ckpt_dir = outputs / "checkpoints"
    final_path = ckpt_dir / f"{key}.victim.pt"
    splits = splits or load_splits(cfg["dataset"])
    torch.manual_seed(tcfg.seed)
    victim = build_victim(cfg["frontend"], cfg["victim"], splits.class_names, splits.train.sample_rate,
                          splits.train.num_samples)
    n_params = sum(p.numel() for p in victim.parameters())
    warn_if_large(n_params, f"{cfg['victim'].get('backbone')} on {cfg['frontend'].get('name')}")
    run_tags = {**tags(kind="train"), **(extra_tags or {})}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    train_ckpt = ckpt_dir / f"{key}.train.pt"
    with resumable_run(exp_id, "run_key", key, run_name=_run_name(cfg), tags=run_tags,
                       what=f"training {_run_name(cfg)}") as run:
        if run.finished:  # the slim checkpoint of the finished training: no epoch runs, nothing is logged
            if not train_ckpt.is_file():
                log.warning("run %s is finished but %s is missing: training again (nothing is logged)",
                            run.run_id, train_ckpt)
            result = train(victim, splits.train, splits.val, splits.test, tcfg, objective=objective,
                           checkpoint_path=train_ckpt, on_epoch=on_epoch)
            if not final_path.is_file():
                publish_victim(train_ckpt, final_path, result.victim)
            return TrainedVictim(result, run.run_id, final_path, key, reused=True)
        if not run.resumed:
            mlflow.log_params(flatten(cfg))
            mlflow.log_dict(cfg, "config.yaml")
            mlflow.log_params({"data.train_size": len(splits.train), "data.val_size": len(splits.val),
                               "data.test_size": len(splits.test), "model.n_parameters": n_params})
        mlflow.log_param("best_epoch_criterion", criterion)  # idempotent on a resumed run (same key → same value)
        logged = logged_steps(run.run_id, "val_loss") if run.resumed else frozenset()
        result = train(victim, splits.train, splits.val, splits.test, tcfg, objective=objective,
                       checkpoint_path=train_ckpt, on_epoch=EpochLogger(on_epoch, logged))
        publish_victim(train_ckpt, final_path, result.victim)
        low, high = wilson_interval(result.test_accuracy, len(splits.test))
        log_once(run.run_id, {"test_accuracy": result.test_accuracy, "test_accuracy_ci_low": low,
                              "test_accuracy_ci_high": high, "test_loss": result.test_loss,
                              "best_epoch": float(result.best_epoch),
                              "checkpoint_mb": final_path.stat().st_size / 2**20})
        mlflow.log_artifact(str(final_path), "model")
        norm = result.victim.normalizer
        mlflow.log_dict({"mean": norm.mean.flatten().tolist(), "std": norm.std.flatten().tolist()},
                        "model/normalizer.json")
        return TrainedVictim(result, run.run_id, final_path, key)


def warn_if_large(n_params: int, what: str, limit: int = LARGE_MODEL_PARAMETERS) -> bool:
    """Log a warning when a model has more than ``limit`` parameters: a dense layer after a convolutional
    stack grows with the input (seed 003's 2D CNN on 5 s clips: ~150 M parameters), and a training
    checkpoint written every epoch holds about four float32 copies of them (weights, Adam's two moments,
    the best weights). Returns whether it warned."""
    if n_params <= limit:
        return False
    log.warning("%s has %.1f M parameters (%.0f MB of float32 weights; a training checkpoint holds ~4 copies): "
                "its input may be larger than the architecture was designed for (shorter clips or a smaller "
                "front-end shrink it)", what, n_params / 1e6, n_params * 4 / 2**20)
    return True


def _run_name(cfg: dict[str, Any]) -> str:
    """``victim/defense/frontend/dataset``: what tells models apart first, so a cut name in the UI still does."""
    parts = [cfg["victim"].get("backbone"), (cfg.get("defense") or {}).get("name", "clean"),
             cfg["frontend"].get("name"), cfg["dataset"].get("name")]
    return "/".join(str(p) for p in parts)
