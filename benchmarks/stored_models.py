"""A finished grid's trained models, clips and stored per-clip ε*, for the benchmarks that re-attack them
(``optimality.py``, ``convergence.py``)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from mlflow.tracking import MlflowClient
from torch import Tensor

from defense.grid import Grid, load_grid
from evaluation.selection import select_examples
from evaluation.report_data import collect
from evaluation.tracking import ORIGINAL, default_tracking_uri, downloaded, setup_tracking
from training.checkpoints import load_victim
from training.data import load_splits
from victims.victim import Victim


@dataclass
class StoredModel:
    """One trained model of a grid's first column, on the grid's first ``clips`` evaluation clips."""

    defense: str
    victim: Victim
    waves: Tensor
    labels: Tensor
    stored: dict[str, np.ndarray]
    """Per-clip ε* of the stored representation-L2 attack runs (baselines left out), by attack option."""


def store_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every re-attacking benchmark takes: the store, its experiment, the clips and the device."""
    parser.add_argument("--outputs", required=True, type=Path, help="a finished grid's --outputs folder")
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--clips", type=int, default=40, help="first N of the grid's evaluation clips")
    parser.add_argument("--device", default="cpu")


def stored_models(outputs: Path, experiment: str, clips: int, device: str) -> tuple[Grid, Iterator[StoredModel]]:
    """The grid and its first column's trained models (exits with the command to run when none is finished)."""
    grid = load_grid(experiment)
    uri = default_tracking_uri(outputs)
    if not (outputs / "mlflow.db").exists():
        sys.exit(f"no store in {outputs}: run `advaudio experiment {grid.name} --outputs {outputs}` first")
    setup_tracking(grid.name, uri, outputs)
    data = collect(grid.name, uri, n_boot=10)
    dataset, frontend, victim_name, seed = next(iter(grid.models()))
    runs = data.runs[(data.runs["dataset"] == dataset) & (data.runs["frontend"] == frontend)
                     & (data.runs["victim"] == victim_name)]
    trained = runs[runs["kind"].isin(["train", "defend"])]
    if trained.empty:
        sys.exit(f"no finished {grid.name} models in {outputs}: run `advaudio experiment {grid.name} "
                 f"--outputs {outputs}` first")
    cfg = grid.cell_config(dataset, frontend, victim_name, ORIGINAL, seed)
    waves, labels = select_examples(load_splits(cfg["dataset"]).test, grid.evaluation.n_examples, grid.evaluation.seed)
    waves, labels = waves[:clips].to(device), labels[:clips].to(device)
    client = MlflowClient(uri)

    def models() -> Iterator[StoredModel]:
        for _, model_run in trained.iterrows():
            key = client.get_run(model_run["run_id"]).data.tags["advaudio.run_key"]
            with downloaded(model_run["run_id"], f"model/{key}.victim.pt", client) as path:
                victim = load_victim(path).to(device)
            victim.eval()
            attacks = runs[(runs["kind"] == "attack") & (runs["defense"] == model_run["defense"])
                           & (runs["domain"] == "representation") & (runs["norm"] == "l2")]
            stored = {a["attack"]: data.records[a["run_id"]].eps_clip().numpy()[:clips]
                      for _, a in attacks.iterrows() if a["run_id"] in data.records and a["attack"] in grid.attack_info
                      and grid.attack_info[a["attack"]].family != "baseline"}
            yield StoredModel(model_run["defense"], victim, waves, labels, stored)

    print(f"# {grid.name}: {dataset} / {frontend} / {victim_name}, {len(labels)} clips, device {device}")
    return grid, models()
