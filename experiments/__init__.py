"""Studies: experiments that are not seed 004's defense grid (seeds 000, 001 and 003).

An experiment config with a ``study: <name>`` key is run by the module ``experiments/<name>.py``,
which exposes two functions:

- ``run(raw, overrides, *, tracking_uri, outputs, progress) -> str`` trains and attacks what the
  study needs, logs it to MLflow (nested runs under one parent, the experiment tagged
  ``advaudio.study=<name>``), and returns the MLflow experiment name;
- ``report(experiment, tracking_uri, outputs) -> str`` rebuilds the study's tables from MLflow alone
  and returns them as text (also writing CSV/Markdown under ``outputs/reports/<experiment>``).

Experiments without ``study:`` are seed 004 grids (``defense/grid.py``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from evaluation.tracking import tag
from victims.registry import ConfigError

STUDY_TAG = tag("study")
"""MLflow experiment tag naming the study that logged it (``advaudio report`` dispatches on it)."""
STUDIES = ("seed000", "seed001", "seed003")


def study_module(name: str) -> ModuleType:
    """The module that runs and reports study ``name``; an unknown name is a one-line ConfigError."""
    if name not in STUDIES:
        raise ConfigError(f"unknown study '{name}'; known: {', '.join(STUDIES)}")
    return importlib.import_module(f"experiments.{name}")
