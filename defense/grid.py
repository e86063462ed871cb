"""Experiment grids: data sets × representations × victims × defenses × attacks, from one YAML file.

A grid file (``configs/experiment/demo.yaml``)::

    name: demo                     # MLflow experiment
    train: demo                    # configs/train/demo.yaml, shared by every cell
    seeds: [0, 1, 2]               # every model is trained once per seed (train.seed); default [0]
    grid:
      dataset: [gm_instruments]
      frontend: [stft_db_small, cwt_tonnetz_small]
      victim: [resnet18, koerich_cnn2d]
      defense: [none, fgsm_mix]    # "none" is the original model every defense is compared with
      attack: [bim_a, deepfool_l2, cw_l2, nes_pia, fgsm, noise]
    table_attacks: [bim_a, deepfool_l2, cw_l2, nes_pia]   # Tables II-III average these (per norm);
                                   # default: every attack but baselines and single-step ones
    attack_overrides:              # per attack option: keys of configs/attack/<option>.yaml
      cw_l2: {max_iterations: 50}
    evaluation: {...}              # see EvalConfig; budgets by domain and norm
    adaptive: {bpda: identity, eot_samples: 16}   # how input-transform and smoothing defenses are attacked
                                   # adaptively besides naively (defense.inference.AdaptiveConfig)
    overrides:                     # dotted keys applied to every cell, e.g. train.epochs: 5
      train.epochs: 5

A single-model experiment (``configs/experiment/train.yaml``: one option per group, as
:func:`defense.config.compose` reads it) is the one-cell grid it describes (:func:`one_cell`): one schema,
one loader. ``advaudio train`` trains the single model of any experiment, so one model of a grid is
``advaudio train -e demo grid.frontend=[stft_db_128] grid.victim=[resnet18] grid.defense=[none]``.

Command-line overrides use the same dotted keys (``train.epochs=2``, ``evaluation.n_examples=16``,
``evaluation.eps_max.representation.l2=3``, ``grid.attack=[fgsm]``, ``seeds=[0,1]``,
``attack_overrides.cw_l2.max_iterations=10``).
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from defense.config import CONFIG_ROOT, compose, load_option, read_yaml, set_dotted
from defense.inference import AdaptiveConfig, base_defense, transform_domain
from defense.defended_victim import is_transform
from evaluation.config import EvalConfig
from evaluation.tracking import ORIGINAL, tags
from training.data import parse_config
from training.trainer import TrainConfig
from victims.registry import ConfigError, to_dataclass

CELL_GROUPS = ("dataset", "frontend", "victim", "defense")
GRID_AXES = (*CELL_GROUPS, "attack")


@dataclass(frozen=True)
class AttackInfo:
    """What the tables and the sanity checks need to know of an attack option (from its registry class)."""

    domain: str
    norm: str
    family: str
    targeted: bool
    in_tables: bool


@dataclass
class Grid:
    """A resolved grid: its axes, seeds, shared train config, per-attack configs and evaluation settings."""

    name: str
    axes: dict[str, list[str]]
    train: str | dict[str, Any]
    cell_overrides: dict[str, Any]
    attacks: dict[str, dict[str, Any]]
    evaluation: EvalConfig
    seeds: list[int | None] = field(default_factory=lambda: [0])
    attack_info: dict[str, AttackInfo] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)

    def models(self) -> Iterator[tuple[str, str, str, int | None]]:
        """``(dataset, frontend, victim, seed)`` columns; each trains every defense and runs every attack."""
        yield from itertools.product(self.axes["dataset"], self.axes["frontend"], self.axes["victim"], self.seeds)

    def cell_config(self, dataset: str, frontend: str, victim: str, defense: str, seed: int | None = None
                    ) -> dict[str, Any]:
        """Resolved training config of one model of the grid (``train.seed`` = ``seed`` when given)."""
        spec = {"dataset": dataset, "frontend": frontend, "victim": victim, "defense": defense, "train": self.train}
        overrides = dict(self.cell_overrides)
        if seed is not None:
            overrides["train.seed"] = int(seed)
        return compose(spec, overrides)

    def defense_config(self, defense: str) -> dict[str, Any]:
        """The resolved ``defense`` group of one defense option (the same in every column)."""
        dataset, frontend, victim, _ = next(iter(self.models()))
        return self.cell_config(dataset, frontend, victim, defense)["defense"]

    def cells(self) -> Iterator[tuple[str, str, str, str, int | None]]:
        """Every trained model: ``(dataset, frontend, victim, defense, seed)``."""
        for dataset, frontend, victim, seed in self.models():
            for defense in self.axes["defense"]:
                yield dataset, frontend, victim, defense, seed

    def single_cell(self) -> dict[str, Any]:
        """The resolved training config of a grid of one model.

        Raises:
            ConfigError: when the grid has several models, naming the command that runs them all.
        """
        cells = list(self.cells())
        if len(cells) != 1:
            raise ConfigError(f"experiment '{self.name}' is a grid of {len(cells)} models: run it with `advaudio "
                              f"experiment {self.name}`, or narrow it to one model with grid.<axis>=[option] overrides")
        return self.cell_config(*cells[0])


def load_grid(experiment: str | Path, overrides: Mapping[str, Any] | None = None,
              root: Path = CONFIG_ROOT) -> Grid:
    """Read a grid experiment and apply command-line ``overrides``.

    Raises:
        ConfigError: for a missing axis, an unknown option, key or wrong value, or a value outside its domain
            (:mod:`victims.schema`: the train, data set and evaluation settings of every cell), in one line.
    """
    path = Path(str(experiment))
    raw = read_yaml(path) if path.suffix in (".yaml", ".yml") else load_option("experiment", str(experiment), root)
    spec = copy.deepcopy(raw) if "grid" in raw else one_cell(raw)
    merged = {**(spec.pop("overrides", None) or {}), **(overrides or {})}
    spec.setdefault("attack_overrides", {})
    spec.setdefault("evaluation", {})
    spec.setdefault("seeds", [0] if "grid" in raw else [None])
    spec.setdefault("table_attacks", None)
    spec.setdefault("adaptive", {})
    cell_overrides: dict[str, Any] = {}
    for key, value in merged.items():
        head = key.split(".")[0]
        if head in (*CELL_GROUPS, "train"):
            cell_overrides[key] = value
        elif head == "evaluation":
            _set_eval(spec["evaluation"], key, value)
        else:
            set_dotted(spec, key, value)
    known = {"name", "train", "seeds", "grid", "table_attacks", "attack_overrides", "evaluation", "adaptive"}
    extra = sorted(set(spec) - known)
    if extra:
        raise ConfigError(f"unknown key '{extra[0]}' in experiment '{experiment}'; accepted: {', '.join(sorted(known))}")
    axes = {axis: _as_list(spec["grid"], axis, experiment) for axis in GRID_AXES}
    if axes["attack"] and ORIGINAL not in axes["defense"]:
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
    seeds = spec["seeds"]
    if seeds != [None] and (not isinstance(seeds, list) or not seeds or not all(isinstance(v, int) for v in seeds)
                            or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
    info = _attack_info(attacks, spec["table_attacks"], evaluation)
    grid = Grid(str(spec.get("name") or Path(str(experiment)).stem), axes, spec.get("train", "default"),
                cell_overrides, attacks, evaluation, list(seeds), info, spec,
                to_dataclass(AdaptiveConfig, spec["adaptive"], "adaptive"))
    trained = [d for d in grid.axes["defense"] if not is_transform(grid.defense_config(d))]
    for cell in grid.cells():  # resolve and check every cell now: a typo or a value out of range fails before training
        cfg = grid.cell_config(*cell)
        to_dataclass(TrainConfig, cfg["train"], "train")
        parse_config(cfg["dataset"])
        _check_inference_defense(grid, cell[3], cfg["defense"], trained)
    return grid


def _check_inference_defense(grid: Grid, defense: str, cfg: dict[str, Any], trained: list[str]) -> None:
    """An input-transform defense wraps a trained model of the grid (its ``base``, default the original; ``trained``:
    the grid's trained defenses); a waveform transform (or smoothing on the waveform) is attacked on the waveform,
    since a representation-domain attack would start after it and bypass it."""
    if is_transform(cfg):
        base = base_defense(cfg, ORIGINAL)
        if base not in trained:
            raise ConfigError(f"input-transform defense '{defense}' wraps base '{base}', which is not a trained "
                              f"defense of grid.defense ({', '.join(trained) or 'none'})")
    if transform_domain(cfg) != "waveform":
        return
    for option, info in grid.attack_info.items():
        if info.domain != "waveform":
            raise ConfigError(f"defense '{defense}' acts on the waveform; attack '{option}' works on the representation "
                              f"and would bypass it: set attack_overrides.{option}.domain=waveform")


def _attack_info(attacks: dict[str, dict[str, Any]], table_attacks: Any, evaluation: EvalConfig
                 ) -> dict[str, AttackInfo]:
    """Build each attack once to read its registry metadata, and check its budgets and the table set."""
    from attacks import create_attack

    if table_attacks is not None and (not isinstance(table_attacks, list) or not set(table_attacks) <= set(attacks)):
        extra = sorted(set(table_attacks or []) - set(attacks)) if isinstance(table_attacks, list) else table_attacks
        raise ConfigError(f"table_attacks must list attacks of grid.attack; not in it: {extra}")
    info = {}
    for option, cfg in attacks.items():
        try:
            attack = create_attack(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"attack '{option}': {err}") from None
        evaluation.budgets(attack.domain, attack.norm, option)
        default_in = attack.family not in ("baseline", "single_step")
        in_tables = option in table_attacks if table_attacks is not None else default_in
        info[option] = AttackInfo(attack.domain, attack.norm, attack.family, attack.targeted, in_tables)
    return info


def _set_eval(evaluation: dict[str, Any], key: str, value: Any) -> None:
    """``evaluation.<field>=v`` or, for the budget maps, ``evaluation.eps_max.<domain>.<norm>=v``."""
    parts = key.split(".")
    if len(parts) == 2:
        evaluation[parts[1]] = value  # checked by to_dataclass
    elif len(parts) == 4 and parts[1] in ("eps_max", "search_eps_max"):
        default = EvalConfig().eps_max if parts[1] == "eps_max" else {}
        budgets = copy.deepcopy(evaluation.get(parts[1], default))
        budgets.setdefault(parts[2], {})[parts[3]] = value
        evaluation[parts[1]] = budgets
    else:
        raise ConfigError(f"unknown key '{key}'")


def one_cell(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A single-model experiment (``dataset: x``, ``frontend: y``, ... one option per group) as the
    one-cell grid it is: every group option becomes a one-element axis, with no attacks and the
    configured ``train.seed`` (``seeds: [null]``)."""
    spec = {k: copy.deepcopy(v) for k, v in raw.items() if k not in CELL_GROUPS}
    spec["grid"] = {group: [raw.get(group, ORIGINAL if group == "defense" else None)] for group in CELL_GROUPS}
    spec["grid"]["attack"] = []
    return spec


def _as_list(grid: Mapping[str, Any], axis: str, experiment: str | Path) -> list[str]:
    value = grid.get(axis)
    if value is None or value == [None]:
        raise ConfigError(f"experiment '{experiment}' lacks grid.{axis}")
    items = [value] if isinstance(value, str) else list(value)
    if (not items and axis != "attack") or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"grid.{axis} must be a {'' if axis == 'attack' else 'non-empty '}list of option names, "
                          f"got {value!r}")
    return items


class Progress(Protocol):
    """Progress of a grid: ``advance=True`` after each trained model and attack evaluation (the steps of
    :func:`defense.runner.count_steps`), ``advance=False`` for what runs inside one (epochs, the attack under way)."""

    def __call__(self, message: str, advance: bool = True) -> None:
        ...


@dataclass
class ModelColumn:
    """One ``(dataset, frontend, victim, seed)`` column of a grid."""

    dataset: str
    frontend: str
    victim: str
    seed: int = 0

    def tags(self, defense: str) -> dict[str, str]:
        return tags(dataset=self.dataset, frontend=self.frontend, victim=self.victim, defense=defense, seed=self.seed)

    @property
    def label(self) -> str:
        return f"{self.frontend}/{self.victim}/seed{self.seed}"
