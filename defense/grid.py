"""Experiment grids: data sets × representations × victims × defenses × attacks, from one YAML file.

A grid file (``configs/experiment/demo.yaml``)::

    name: demo                     # MLflow experiment
    train: demo                    # configs/train/demo.yaml, shared by every cell
    grid:
      dataset: [gm_instruments]
      frontend: [stft_db_small, cwt_tonnetz_small]
      victim: [resnet18, koerich_cnn2d]
      defense: [none, fgsm_mix]    # "none" is the original model every defense is compared with
      attack: [bim_a, deepfool_l2, cw_l2, nes_pia]
    attack_overrides:              # per attack option: keys of configs/attack/<option>.yaml
      cw_l2: {max_iterations: 50}
    evaluation: {...}              # see EvalConfig
    overrides:                     # dotted keys applied to every cell, e.g. train.epochs: 5
      train.epochs: 5

Command-line overrides use the same dotted keys (``train.epochs=2``, ``evaluation.n_examples=16``,
``grid.attack=[fgsm]``, ``attack_overrides.cw_l2.max_iterations=10``).
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from victims.config import CONFIG_ROOT, compose, load_option, read_yaml, set_dotted, to_dataclass
from victims.registry import ConfigError

CELL_GROUPS = ("dataset", "frontend", "victim", "defense")
GRID_AXES = (*CELL_GROUPS, "attack")
ORIGINAL = "none"


@dataclass
class EvalConfig:
    """How each attack is evaluated (``evaluation:`` in a grid file).

    Attributes:
        n_examples: test clips attacked per model (a fixed, seeded, class-balanced subset).
        eps_max: right end of the fooling AUC and of FR(ε_max); seed 004 integrates over ‖ε‖₂ ≤ 3.
        search_eps_max: largest budget searched for ε* (``None`` = ``eps_max``); seed 004 allocates
            budgets until FR reaches 0.9 "without the condition ‖ε‖₂ ≤ 3" for ε_r, so set it higher.
        n_budgets: size of the geometric budget sweep of fixed-budget attacks.
        n_bisect: bisection steps refining ε* per example.
        batch_size: examples per attack call.
        sweep_chunk: budgets per attack call in the sweep.
        seed: seeds example selection, targets and stochastic attacks.
        snr_trim: samples trimmed at each end of a waveform for the SNR (seed 000: 2048).
        wavs: adversarial examples per model and attack saved as WAV/plots.
        unbounded_eps: budget of the "unbounded attack reaches ~100 %" sanity check (PGD-L2).
        unbounded_steps: iterations of that check.
        monotone_sample: examples attacked at every budget (no cascade) for the "success never falls as
            ε grows" check of fixed-budget attacks; 0 reads the cascade's own, sparser, success matrix.
    """

    n_examples: int = 64
    eps_max: float = 3.0
    search_eps_max: float | None = None
    n_budgets: int = 8
    n_bisect: int = 4
    batch_size: int = 64
    sweep_chunk: int = 2
    seed: int = 0
    snr_trim: int = 0
    wavs: int = 2
    unbounded_eps: float = 1000.0
    unbounded_steps: int = 100
    monotone_sample: int = 16


@dataclass
class Grid:
    """A resolved grid: its axes, shared train config, per-attack configs and evaluation settings."""

    name: str
    axes: dict[str, list[str]]
    train: str | dict[str, Any]
    cell_overrides: dict[str, Any]
    attacks: dict[str, dict[str, Any]]
    evaluation: EvalConfig
    source: dict[str, Any] = field(default_factory=dict)

    def models(self) -> Iterator[tuple[str, str, str]]:
        """``(dataset, frontend, victim)`` columns; each trains every defense and runs every attack."""
        yield from itertools.product(self.axes["dataset"], self.axes["frontend"], self.axes["victim"])

    def cell_config(self, dataset: str, frontend: str, victim: str, defense: str) -> dict[str, Any]:
        """Resolved training config of one model of the grid."""
        spec = {"dataset": dataset, "frontend": frontend, "victim": victim, "defense": defense, "train": self.train}
        return compose(spec, self.cell_overrides)

    @property
    def size(self) -> int:
        n = 1
        for axis in GRID_AXES:
            n *= len(self.axes[axis])
        return n


def load_grid(experiment: str | Path, overrides: Mapping[str, Any] | None = None,
              root: Path = CONFIG_ROOT) -> Grid:
    """Read a grid experiment and apply command-line ``overrides``.

    Raises:
        ConfigError: for a missing axis, an unknown option, key or wrong value (one line).
    """
    path = Path(str(experiment))
    raw = read_yaml(path) if path.suffix in (".yaml", ".yml") else load_option("experiment", str(experiment), root)
    if "grid" not in raw:
        raise ConfigError(f"experiment '{experiment}' has no 'grid:' section (is it a single-run experiment?)")
    spec = copy.deepcopy(raw)
    merged = {**(spec.pop("overrides", None) or {}), **(overrides or {})}
    spec.setdefault("attack_overrides", {})
    spec.setdefault("evaluation", {})
    cell_overrides: dict[str, Any] = {}
    for key, value in merged.items():
        head = key.split(".")[0]
        if head in (*CELL_GROUPS, "train"):
            cell_overrides[key] = value
        elif head == "evaluation":
            _set_eval(spec["evaluation"], key, value)
        else:
            set_dotted(spec, key, value)
    known = {"name", "train", "grid", "attack_overrides", "evaluation"}
    extra = sorted(set(spec) - known)
    if extra:
        raise ConfigError(f"unknown key '{extra[0]}' in experiment '{experiment}'; accepted: {', '.join(sorted(known))}")
    axes = {axis: _as_list(spec["grid"], axis, experiment) for axis in GRID_AXES}
    if ORIGINAL not in axes["defense"]:
        raise ConfigError(f"grid.defense must include '{ORIGINAL}' (the original model ε_r compares with)")
    unknown_attacks = sorted(set(spec["attack_overrides"]) - set(axes["attack"]))
    if unknown_attacks:
        raise ConfigError(f"attack_overrides names '{unknown_attacks[0]}', which is not in grid.attack")
    attacks = {}
    for option in axes["attack"]:
        cfg = load_option("attack", option, root)
        for key, value in (spec["attack_overrides"].get(option) or {}).items():
            set_dotted(cfg, key, value)
        attacks[option] = cfg
    evaluation = to_dataclass(EvalConfig, spec["evaluation"], "evaluation")
    grid = Grid(str(spec.get("name") or Path(str(experiment)).stem), axes, spec.get("train", "default"),
                cell_overrides, attacks, evaluation, spec)
    for model in grid.models():  # resolve every cell now: a typo fails before hours of training
        for defense in axes["defense"]:
            grid.cell_config(*model, defense)
    return grid


def _set_eval(evaluation: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"unknown key '{key}'")
    evaluation[parts[1]] = value  # checked by to_dataclass


def _as_list(grid: Mapping[str, Any], axis: str, experiment: str | Path) -> list[str]:
    value = grid.get(axis)
    if value is None:
        raise ConfigError(f"experiment '{experiment}' lacks grid.{axis}")
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"grid.{axis} must be a non-empty list of option names, got {value!r}")
    return items
