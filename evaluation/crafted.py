"""The successful adversarial inputs an attack run keeps (``adversarial.pt``), read back to replay them on other
models: a grid's transfer matrix (:mod:`defense.grid_transfer`) and Subramanian et al.'s transfer rows
(:mod:`experiments.subramanian.run`)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient
from torch import Tensor

from evaluation.tracking import downloaded

CRAFTED_ARTIFACT = "adversarial.pt"
"""``{"index": positions among the attacked clips, "adversarial": the inputs, in the attack's domain}``."""


def log_crafted(index: Tensor, adversarial: Tensor) -> None:
    """Keep the successful examples ``adversarial`` of the clips at ``index`` on the active run (as float32)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CRAFTED_ARTIFACT
        torch.save({"index": index, "adversarial": adversarial.float()}, path)
        mlflow.log_artifact(str(path))


def load_crafted(run_id: str, client: MlflowClient | None = None) -> tuple[Tensor, Tensor] | None:
    """``(index, adversarial)`` kept by :func:`log_crafted` on run ``run_id``, or ``None`` if it kept none."""
    client = client or MlflowClient()
    if CRAFTED_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with downloaded(run_id, CRAFTED_ARTIFACT, client) as path:
        data = torch.load(path, weights_only=True)
    return data["index"], data["adversarial"]
