"""Seed 001's transfer matrix (Table 5) between the models of a seed 004 grid.

Within one ``(dataset, representation, seed)`` of a grid, every model (each victim × defense) was
attacked on the same clips; the examples one model's attack crafted are replayed on every other model
(:func:`evaluation.transfer.replay`; a representation-domain example moves through the two models'
normalisers, they share the front-end). One transfer run per group and table attack (``advaudio.kind =
transfer``, nested under the grid's run, the group's coordinate tags) holds ``transfer.json``;
:func:`evaluation.report.transfer_sections` renders it.

Two hooks feed it: each attack run keeps its successful adversarial inputs at ε* (:mod:`defense.attack_cell`,
:func:`evaluation.crafted.log_crafted`), and :func:`log_grid_transfer` replays them after every column has
finished.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import torch
from mlflow.tracking import MlflowClient
from torch import Tensor

from defense.grid import Grid
from evaluation.crafted import load_crafted
from evaluation.harness import AttackEvaluation
from evaluation.selection import select_examples
from evaluation.tracking import ORIGINAL, TRANSFER_ARTIFACT, downloaded, iter_runs, resumable_run, tag
from evaluation.transfer import replay
from training.checkpoints import load_victim
from training.data import load_splits

log = logging.getLogger(__name__)


def crafted_examples(ev: AttackEvaluation, run_id: str) -> tuple[Tensor, Tensor | None]:
    """``(index, adversarial)`` of an evaluation's successful examples: held in memory after a fresh run, else read
    back from the attack run's ``adversarial.pt`` (none: an empty index and ``None``)."""
    if ev.adversarial is not None:
        return ev.base_index[ev.success], ev.adversarial[ev.success]
    return load_crafted(run_id) or (torch.zeros(0, dtype=torch.long), None)


def log_grid_transfer(grid: Grid, parent_id: str, tracking_uri: str) -> int:
    """Replay the table attacks' examples between the models of each ``(dataset, frontend, seed)`` group.

    Models whose attack run kept no ``adversarial.pt`` are left out (logged). Groups of fewer than two
    models are skipped.

    Returns:
        The number of transfer runs logged.
    """

    client = MlflowClient(tracking_uri)
    exp_id = client.get_experiment_by_name(grid.name).experiment_id
    runs = [r for r in iter_runs(exp_id, client=client) if r.data.tags.get("advaudio.status") == "finished"]
    trains = {run_coords(r): r for r in runs if r.data.tags.get("advaudio.kind") == "train"}
    logged = 0
    for dataset, frontend, victim0, seed in grid.models():
        if victim0 != grid.axes["victim"][0]:
            continue  # one group per (dataset, frontend, seed)
        names = [(v, d) for v in grid.axes["victim"] for d in grid.axes["defense"]]
        victims = {f"{v}/{d}": _victim(client, trains.get((dataset, frontend, v, d, str(seed)))) for v, d in names}
        victims = {k: v for k, v in victims.items() if v is not None}
        if len(victims) < 2:
            continue
        waves, labels = None, None
        for attack in (a for a, info in grid.attack_info.items() if info.in_tables):
            crafted = {}
            for name in victims:
                v, d = name.split("/")
                run = next((r for r in runs if r.data.tags.get("advaudio.kind") == "attack"
                            and run_coords(r) == (dataset, frontend, v, d, str(seed))
                            and r.data.tags.get("advaudio.attack") == attack), None)
                found = load_crafted(run.info.run_id, client) if run is not None else None
                if found is None:
                    log.info("transfer: %s/%s %s kept no adversarial inputs; left out", frontend, name, attack)
                    continue
                crafted[name] = found
            if len(crafted) < 2:
                continue
            if waves is None:
                cfg = grid.cell_config(dataset, frontend, grid.axes["victim"][0], ORIGINAL, seed)
                waves, labels = select_examples(load_splits(cfg["dataset"]).test, grid.evaluation.n_examples,
                                                grid.evaluation.seed)
            record = replay(attack, {k: victims[k] for k in crafted}, waves, labels, crafted,
                            domain=grid.attack_info[attack].domain, batch_size=grid.evaluation.batch_size)
            coords = {"advaudio.dataset": dataset, "advaudio.frontend": frontend, "advaudio.seed": str(seed),
                      "advaudio.attack": attack}
            _log(client, exp_id, parent_id, record.to_dict(), coords)
            logged += 1
    return logged


def run_coords(run: Any) -> tuple[str, ...]:
    """A model or attack run's ``(dataset, frontend, victim, defense, seed)`` tags."""
    t = run.data.tags
    return (t.get("advaudio.dataset", ""), t.get("advaudio.frontend", ""), t.get("advaudio.victim", ""),
            t.get("advaudio.defense", ""), t.get("advaudio.seed", "0"))


def _victim(client: MlflowClient, run: Any) -> Any:
    if run is None:
        return None
    key = run.data.tags["advaudio.run_key"]
    with downloaded(run.info.run_id, f"model/{key}.victim.pt", client) as path:
        return load_victim(path)


def _log(client: MlflowClient, exp_id: str, parent_id: str, record: dict[str, Any], coords: dict[str, str]) -> None:
    """Log ``transfer.json`` on the group's transfer run; a finished one is rewritten (the group's models may have
    changed under the same coordinates)."""
    key = json.dumps(coords, sort_keys=True)
    name = f"transfer/{coords['advaudio.frontend']}/{coords['advaudio.attack']}"
    with resumable_run(exp_id, "transfer_key", key, run_name=name, tags={**coords, tag("kind"): "transfer",
                                                                         "mlflow.parentRunId": parent_id},
                       what=name) as run:
        client.log_dict(run.run_id, record, TRANSFER_ARTIFACT)
