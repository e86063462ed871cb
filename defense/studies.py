"""The registry of studies: experiments that reproduce one paper each (``study: <name>`` in the experiment file).

A grid (``defense/grid.py``) is the default kind of experiment; a file with a ``study:`` key is run by the study
registered under that name. Each study package (``experiments/<paper>/``) registers itself when imported, with
what the command line needs of it:

- ``run(raw, overrides, *, tracking_uri, outputs, progress) -> str`` trains and attacks what the study needs,
  logs it to MLflow (nested runs under one parent, the experiment tagged :data:`STUDY_TAG` = the study's name)
  and returns the MLflow experiment name;
- ``report(experiment, tracking_uri, outputs) -> str`` rebuilds the study's tables from MLflow alone and returns
  them as text (also writing CSV/Markdown under ``outputs/reports/<experiment>``);
- ``dry(raw, overrides)`` its dry run (:mod:`defense.dryrun`) and ``plan(raw, overrides)`` its cost plan
  (:mod:`defense.plan_run`).

The registry sits below the studies: ``defense.cli``, ``defense.dryrun`` and ``defense.plan_run`` read it and
import no study. Its first lookup imports the packages named in :data:`PLUGINS` (as pytest loads the plugins its
settings name), whose import registers their studies.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from evaluation.tracking import tag
from victims.registry import Registry

STUDY_TAG = tag("study")
"""MLflow experiment tag naming the study that logged it (``advaudio report`` dispatches on it)."""
PLUGINS = ("experiments",)
"""Packages whose import registers studies."""


@dataclass(frozen=True)
class Study:
    """One registered study.

    Attributes:
        name: the study's name (the ``study:`` value of its experiment files, the :data:`STUDY_TAG` value).
        paper: the paper it reproduces (authors, title), for listings.
        run, report, dry, plan: see the module docstring.
        aliases: earlier names of the study, accepted as ``study:`` values and :data:`STUDY_TAG` values.
        experiments: earlier experiment option names → the current ones (``advaudio experiment <old>`` runs
            ``configs/experiment/<current>.yaml``).
    """

    name: str
    paper: str
    run: Callable[..., str]
    report: Callable[[str, str | None, Path], str]
    dry: Callable[[dict[str, Any], dict[str, Any]], Any]
    plan: Callable[[dict[str, Any], dict[str, Any]], Any]
    aliases: tuple[str, ...] = ()
    experiments: Mapping[str, str] = field(default_factory=dict)


class StudyRegistry:
    """Studies by name, with their earlier names as aliases."""

    def __init__(self) -> None:
        self._studies: Registry[Study] = Registry("study")
        self._aliases: dict[str, str] = {}
        self._experiments: dict[str, str] = {}
        self._loaded = False

    def register(self, study: Study) -> Study:
        """Add ``study`` (its name and aliases must be new).

        Raises:
            ValueError: if the name or an alias is taken.
        """
        taken = [a for a in (study.name, *study.aliases) if a in self._studies or a in self._aliases]
        if taken:
            raise ValueError(f"study '{taken[0]}' is registered twice")
        self._studies.register(study.name)(study)
        self._aliases.update({alias: study.name for alias in study.aliases})
        self._experiments.update(study.experiments)
        return study

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for package in PLUGINS:
                importlib.import_module(package)

    def get(self, name: str) -> Study:
        """The study registered as ``name`` or under it as an earlier name.

        Raises:
            ConfigError: for an unknown name, listing the known ones.
        """
        self._load()
        return self._studies.get(self._aliases.get(name, name))

    def names(self) -> list[str]:
        """The registered studies' names, sorted."""
        self._load()
        return self._studies.names()

    def experiment_option(self, name: str) -> str:
        """The current experiment option of ``name`` (an earlier name of a study's experiment file, else itself)."""
        self._load()
        return self._experiments.get(name, name)


STUDIES = StudyRegistry()
