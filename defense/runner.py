"""Runs an experiment grid: trains original and defended victims, evaluates every attack on both,
computes ε_r, runs the sanity checks, and logs everything to MLflow; resumes by skipping finished work.

This module schedules: the grid's parent run, its model columns (:mod:`defense.column`: one
``(dataset, representation, victim, seed)`` each, independent) one after another locally or as Ray tasks
(``executor="ray"``) when a grid outgrows one machine, then the transfer matrix and the report
(:mod:`defense.grid_report`). Resuming: a finished training run is found by its config hash and its checkpoint
reused; a finished attack run is skipped and its per-clip record (``evaluation.json``) read back, so
intervals, curves and pairwise sanity checks are rebuilt without attacking again.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import mlflow
import torch

from defense.column import run_column
from defense.grid import Grid, ModelColumn, Progress
from defense.grid_report import log_grid_report
from defense.grid_transfer import log_grid_transfer
from defense.inference_cells import attack_modes
from defense.interrupt import interruptible, keep_handlers
from evaluation.tracking import ORIGINAL, OUTPUTS, owned, resumable_run, setup_tracking, stable_key, tags
from victims.registry import ConfigError

RAY_TASK_RETRIES = 3
"""Retries of a model column whose Ray worker died (a killed process, a lost node)."""
RAY_CANCEL_GRACE_S = 30.0
"""How long an interrupted driver waits for its cancelled Ray tasks to mark their runs KILLED."""


def count_steps(grid: Grid) -> int:
    """Progress ticks of a grid: one per trained (or wrapped) model and one per attack evaluation."""
    per_column = 0
    for defense in grid.axes["defense"]:
        cfg = grid.defense_config(defense)
        per_column += 1 + sum(len(attack_modes(grid, option, attack_cfg, cfg))
                              for option, attack_cfg in grid.attacks.items())
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
        ConfigError: for an unknown executor.
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
        log_grid_report(grid, parent_id, uri)
    return rows


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
