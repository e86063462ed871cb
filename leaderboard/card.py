"""Model cards of leaderboard entries: what a model is and how it was trained.

Our checkpoints (``<key>.victim.pt``, :mod:`training.checkpoints`) hold the victim's spec (front-end, backbone, class
names, sample rate, clip length) and weights; ``<key>`` is the run key of its training config
(:func:`defense.pipeline.run_key`). The rest of the card comes from the MLflow training run tagged with that key (in
any experiment of the store): the resolved config (``config.yaml``: data set, objective and its settings), the wall
time between the run's start and end, and the git commit MLflow recorded. A checkpoint whose run is not in the store
gets a card from its spec alone (objective ``unknown``, no training time), said in a warning.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from evaluation.tracking import artifact_text, tag
from victims.victim import Victim

log = logging.getLogger(__name__)
GIT_COMMIT_TAG = "mlflow.source.git.commit"
KEY_PATTERN = re.compile(r"^([0-9a-f]{12})\.(victim|train)\.pt$")


def sha256(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_key_of(checkpoint: Path) -> str | None:
    """The training run key in a checkpoint's file name (``<key>.victim.pt`` / ``<key>.train.pt``), else ``None``."""
    found = KEY_PATTERN.match(checkpoint.name)
    return found.group(1) if found else None


def training_run(key: str, tracking_uri: str) -> tuple[Any, dict[str, Any]] | None:
    """The finished MLflow training run of ``key`` and its config, or ``None`` when the store holds none."""
    client = MlflowClient(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    runs = client.search_runs(ids, filter_string=f"tags.`{tag('run_key')}` = '{key}' and tags.`{tag('kind')}` = 'train'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = runs[0]
    config = yaml.safe_load(artifact_text(run.info.run_id, "config.yaml", client))
    return run, config


def _settings(frontend: dict[str, Any]) -> str:
    """A front-end as ``name(key=value, ...)`` (its non-default settings as the spec holds them)."""
    args = ", ".join(f"{k}={v}" for k, v in sorted(frontend.items()) if k != "name")
    return f"{frontend['name']}({args})" if args else str(frontend["name"])


def parameters(victim: Victim) -> int:
    """Trainable and frozen parameters of the model (not its buffers)."""
    return sum(p.numel() for p in victim.parameters())


def advaudio_card(victim: Victim, checkpoint: Path, tracking_uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card of one of our checkpoints and the ``defense`` config it was trained with (``{}`` if unknown)."""
    spec = victim.spec
    key = run_key_of(checkpoint)
    found = training_run(key, tracking_uri) if key else None
    if found is None:
        log.warning("no MLflow training run of %s in %s: its card has the checkpoint's spec only (objective unknown, "
                    "no training time); pass --outputs or --tracking-uri of the store that trained it", checkpoint,
                    tracking_uri)
    run, cfg = found if found is not None else (None, {})
    defense = dict(cfg.get("defense") or {})
    info = run.info if run is not None else None
    took = (info.end_time - info.start_time) / 1000 if info is not None and info.end_time else None
    data = {"dataset": str((cfg.get("dataset") or {}).get("name", "unknown")), "classes": list(victim.class_names),
            "sample_rate": int(victim.sample_rate), "num_samples": int(victim.num_samples)}
    if run is not None and "data.train_size" in run.data.params:
        data["train_size"] = int(run.data.params["data.train_size"])
    card = {"architecture": str(spec["victim"]["backbone"]), "representation": _settings(spec["frontend"]),
            "objective": str(defense.get("name", "unknown")),
            "objective_settings": {k: v for k, v in defense.items() if k != "name"},
            "data": data, "parameters": parameters(victim), "training_time_s": took,
            "code_version": (run.data.tags.get(GIT_COMMIT_TAG) if run is not None else None) or "unknown",
            "config_hash": key,
            "smoothing_sigma": float(defense["sigma"]) if defense.get("name") == "gaussian_augment" else None}
    if run is not None:
        card["objective_settings"]["train"] = cfg.get("train") or {}
    return card, defense


def external_card(victim: Victim, spec: str) -> dict[str, Any]:
    """The card of an external module: what the adapter tells (its class, classes, rate, parameters)."""
    module = victim.backbone.module
    return {"architecture": f"{type(module).__module__}.{type(module).__name__}", "representation": "waveform",
            "objective": "unknown", "objective_settings": {"external": spec},
            "data": {"dataset": "unknown", "classes": list(victim.class_names), "sample_rate": int(victim.sample_rate)},
            "parameters": parameters(victim), "training_time_s": None, "code_version": "unknown",
            "config_hash": None, "smoothing_sigma": None}
