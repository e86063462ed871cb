"""A tiny grid run through the CLI in its own process, and its tables read back from the default store: what the
kill -9, signal and Ray-crash tests run, interrupt and compare (``tests/conftest.py`` ``clean_tables`` holds the one
uninterrupted reference of a session)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from evaluation.report import format_tables
from evaluation.report_data import collect

RUN_S = 600.0
"""Bound of one grid command (a kill included): the tiny grid takes a minute or two on two busy cores."""


def grid_command(grid_file: Path, outputs: Path, *executor: str) -> list[str]:
    """``advaudio experiment GRID_FILE`` into ``outputs``, with ``executor`` arguments (e.g. ``--executor ray``)."""
    return [sys.executable, "-m", "defense.cli", "experiment", str(grid_file), "--outputs", str(outputs), *executor,
            "--no-progress"]


def grid_env(folder: Path) -> dict[str, str]:
    """The environment of a grid command: its data cache in ``folder``, the default store under its outputs, and the
    one torch thread ``tests/conftest.py`` gives every process a test starts (a Ray task with ``num_cpus=1`` gets
    one too: the clean local run and a cluster's run compute the same tables)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "ADVAUDIO_CACHE": str(folder / "cache"), "RAY_USAGE_STATS_ENABLED": "0"}


def tables(outputs: Path) -> str:
    """Tables I-III of experiment ``tiny`` in the default store under ``outputs``."""
    return format_tables(collect("tiny", f"sqlite:///{(outputs / 'mlflow.db').resolve()}", n_boot=200))


def clean_run_tables(grid: str, folder: Path) -> str:
    """The tables of one uninterrupted run of the grid text ``grid`` with the local executor, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    grid_file = folder / "tiny.yaml"
    grid_file.write_text(grid)
    done = subprocess.run(grid_command(grid_file, folder / "outputs", "--executor", "local"), env=grid_env(folder),
                          capture_output=True, text=True, timeout=RUN_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return tables(folder / "outputs")
