"""A grid's dry run (:mod:`defense.dryrun`): its models, its cells end to end through :func:`defense.runner.run_grid`,
and the check that every cell ran.

The end-to-end part runs the real grid once per ``(data set, front-end)`` group (the unit of seed 001's transfer
matrix), narrowed to that group, with the dry settings of :mod:`defense.dryrun_shrink` written into an experiment
file of the dry run's folder, into a store of its own: every victim, seed, defense and attack of the group, its
Tables I-III, plots, transfer matrix and UI view. (A grid's cell overrides apply to every cell, and a stand-in's root
and a front-end's shrunk keys belong to one data set and one front-end; one store per group keeps each group's
report to its own runs.) Example plots and WAVs, confusion matrices, quality scores, seed 004's Fig. 1 and the
monotonicity sweep run in the first group only: they draw the same figures in every group. With two or more
defended models the first group runs the original model with every attack first, then the defended models without
confusion matrices, quality scores and Fig. 1 (:data:`ORIGINAL_ONLY`), which draw and score alike on every model.

With ``cover`` the groups are single model columns, as few as cover every data set, front-end, backbone and seed.
The first column runs every defense with every attack; each later one covers every pair (pairwise testing, the
classic cut of a combinatorial test): every defense with the first table attack, and the original model with every
attack, two passes into one store (the second reuses the original model and its first attack). So each backbone
and front-end meets every defense and every attack, and each defense meets each attack in the first column. The
first column gets the smallest backbone (fewest parameters in the full-size check, :meth:`GridDry.sized`), so the
full product runs on the cheapest model.
"""
from __future__ import annotations

import itertools
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import yaml
from mlflow.tracking import MlflowClient

from defense.dryrun_data import DryData, key_of
from defense.dryrun_models import ModelCheck
from defense.dryrun_shrink import (ATTACK_CAPS, EPOCHS, FRONTEND_CAPS, SEEDS, capped, dry_evaluation,
                                   lowered, widest_window)
from defense.grid import Grid, load_grid
from defense.grid_transfer import run_coords
from defense.grid import Progress
from defense.inference_cells import attack_modes
from defense.runner import run_grid
from defense.defended_victim import is_transform
from evaluation.report import format_tables, write_tables
from evaluation.report_data import collect
from evaluation.tracking import ORIGINAL, is_finished, iter_runs
from evaluation.ui_view import VIEW_TAG

Model = tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]
"""``(label, dataset config, frontend config, victim config)`` of a model to check at its real size."""
FIRST_GROUP_ONLY = {"wavs": 0, "monotone_sample": 0, "confusion": False, "fig1": False, "quality": False}
"""Evaluation settings that only draw, score or re-check what the first group already did (0 or False turns them
off)."""
ORIGINAL_ONLY = {"confusion": False, "quality": False, "fig1": False}
"""Evaluation settings that the first group of a grid with two or more defended models applies to the original
model only: confusion matrices and quality scores (with their figure) follow from an attack's examples alike on every
model, and seed 004's Fig. 1 draws each model's figure with the same code (the first pass's report draws the
original model's; the second pass's report none). All three stay out of an attack run's key
(:data:`defense.attack_cell.NOT_IN_KEY`), so the defended models' pass reuses the original's runs.

Measured (2026-12-04, 2-core CPU): ``defenses_full``'s dry run took 58.4 instead of 86.7 CPU-s with confusion
matrices and quality scores off for every model, and its test 65 instead of 90 s with the split
(``audio_threats_full`` 60 instead of 71 s, ``defenses`` 28 instead of 39 s); with one defended model the extra pass
costs what it spares (``paper_004`` 116 instead of 109 s, ``fsdd`` and ``demo`` unchanged), so there is none. Fig. 1
drawn for the original model only, with the report's shared cells (:meth:`evaluation.report_data.ReportData.memo`):
``defenses_full`` 53.7 instead of 70.5 s, ``audio_threats_full`` 41.7 instead of 52.4 s (2026-12-05)."""


class Pass(NamedTuple):
    """One run of :func:`defense.runner.run_grid` into a group's store: its defenses and attacks, and the evaluation
    settings it turns off (0 or False)."""

    defenses: list[str]
    attacks: list[str]
    off: dict[str, Any]


class MissingCells(Exception):
    """A cell of the grid left no finished run in the dry run's store (or attacked no clip)."""


class GridDry:
    """The dry run of a grid experiment (an attack-less one trains its models, as ``advaudio train`` would)."""

    def __init__(self, grid: Grid, executor: str = "local", ray_address: str | None = None,
                 cover: bool = False) -> None:
        self.grid = grid
        self.executor = executor
        self.ray_address = ray_address
        self.cover = cover
        self.seeds = grid.seeds[:SEEDS]
        self.victims = list(grid.axes["victim"])
        self.done: list[tuple[Path, dict[str, list[Any]]]] = []

    @property
    def name(self) -> str:
        return self.grid.name

    def models(self) -> list[Model]:
        out = []
        for dataset, frontend, victim in itertools.product(*(self.grid.axes[a] for a in ("dataset", "frontend",
                                                                                           "victim"))):
            cfg = self.grid.cell_config(dataset, frontend, victim, ORIGINAL)
            out.append((_label(dataset, frontend, victim), cfg["dataset"], cfg["frontend"], cfg["victim"]))
        return out

    def sized(self, checks: Sequence[ModelCheck]) -> None:
        """Order the backbones by their largest parameter count in the full-size ``checks`` (of :meth:`models`),
        smallest first: with ``cover`` the first model column runs every defense with every attack, so that product
        runs on the cheapest model. Parameters only approximate the cost: ``defenses_full``'s dry run took 18 % less
        CPU with AveragePoolCNN's column first than with ResNet-18's (108.7 against 132.7 CPU-s), ``paper_004``'s the
        same with ResNet-56's first as with GoogLeNet's (94.9 against 94.8 CPU-s; 2026-12-04, 2-core CPU)."""
        size = {check.label: check.parameters for check in checks}
        axes = self.grid.axes
        largest = {v: max(size[_label(d, f, v)] for d in axes["dataset"] for f in axes["frontend"])
                   for v in axes["victim"]}
        self.victims = sorted(axes["victim"], key=largest.__getitem__)

    def datasets(self) -> list[dict[str, Any]]:
        return [self._cell(d, self.grid.axes["frontend"][0])["dataset"] for d in self.grid.axes["dataset"]]

    def window(self) -> int:
        fronts = [lowered(self._cell(self.grid.axes["dataset"][0], f)["frontend"], FRONTEND_CAPS)
                  for f in self.grid.axes["frontend"]]
        return widest_window(fronts, [lowered(c, ATTACK_CAPS) for c in self.grid.attacks.values()])

    def groups(self) -> list[dict[str, list[Any]]]:
        """The narrowed axes (and seeds) of each end-to-end run: every ``(data set, front-end)`` with all its
        victims and seeds, or (``cover``) single columns covering every data set, front-end, victim and seed."""
        axes = self.grid.axes
        if not self.cover:
            return [{"dataset": [d], "frontend": [f], "victim": axes["victim"], "seeds": self.seeds}
                    for d, f in itertools.product(axes["dataset"], axes["frontend"])]
        lists = [axes["dataset"], axes["frontend"], self.victims, self.seeds]
        count = max(len(values) for values in lists)
        return [{"dataset": [lists[0][i % len(lists[0])]], "frontend": [lists[1][i % len(lists[1])]],
                 "victim": [lists[2][i % len(lists[2])]], "seeds": [lists[3][i % len(lists[3])]]}
                for i in range(count)]

    def passes(self, index: int) -> list[Pass]:
        """The runs of group ``index`` into its store. The first group: the original model with every attack, then
        every defense with every attack without :data:`ORIGINAL_ONLY` (with one defended model, every defense with
        every attack at once). A later group, without :data:`FIRST_GROUP_ONLY`: every defense with every attack, or
        (a later ``cover`` column) every defense with the first table attack, then the original model with every
        attack. A grid without the original model, or with it alone, runs its product in one pass."""
        defenses, attacks = list(self.grid.axes["defense"]), list(self.grid.axes["attack"])
        split = bool(attacks) and ORIGINAL in defenses and defenses != [ORIGINAL]
        if index == 0:
            if split and len(defenses) > 2:  # two or more defended models
                return [Pass([ORIGINAL], attacks, {}), Pass(defenses, attacks, ORIGINAL_ONLY)]
            return [Pass(defenses, attacks, {})]
        if not self.cover or not split:
            return [Pass(defenses, attacks, FIRST_GROUP_ONLY)]
        first = next((a for a in attacks if self.grid.attack_info[a].in_tables), attacks[0])
        return [Pass(defenses, [first], FIRST_GROUP_ONLY), Pass([ORIGINAL], attacks, FIRST_GROUP_ONLY)]

    def cells(self, index: int) -> list[tuple[str, str]]:
        """The ``(defense, attack)`` pairs group ``index`` evaluates on each of its models (:meth:`passes`)."""
        return list(dict.fromkeys((d, a) for part in self.passes(index) for d in part.defenses for a in part.attacks))

    def steps(self) -> int:
        """Progress steps of the end-to-end part (:func:`defense.runner.count_steps` of each pass's narrowed grid:
        one per model and attack evaluation, a reused model ticking again)."""
        total = 0
        for index, group in enumerate(self.groups()):
            columns = len(group["dataset"]) * len(group["frontend"]) * len(group["victim"]) * len(group["seeds"])
            for part in self.passes(index):
                total += columns * sum(1 + sum(len(self._modes(d, a)) for a in part.attacks) for d in part.defenses)
        return total

    def run(self, data: dict[str, DryData], folder: Path, progress: Progress) -> None:
        """Every group end to end, each in its own store (see the module docstring)."""
        self.done = []
        for index, group in enumerate(self.groups()):
            dataset, frontend = group["dataset"][0], group["frontend"][0]
            outputs = folder / "outputs" / f"{index:02d}-{dataset}-{frontend}"
            for number, part in enumerate(self.passes(index)):
                spec = self.spec(group, data[key_of(self._cell(dataset, frontend)["dataset"])], part)
                path = folder / "experiments" / f"{outputs.name}{f'-{number}' if number else ''}.yaml"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(yaml.safe_dump(spec, sort_keys=False))
                grid = load_grid(path)
                if grid.axes["attack"]:
                    run_grid(grid, tracking_uri=store_uri(outputs), outputs=outputs, executor=self.executor,
                             ray_address=self.ray_address, progress=_pruning(progress, outputs))
                else:
                    _train_only(grid, outputs, _pruning(progress, outputs))
            for weights in outputs.glob("mlartifacts/**/model/*.victim.pt"):  # read only by this group's transfer
                weights.unlink()
            self.done.append((outputs, group))

    def spec(self, group: dict[str, list[Any]], data: DryData, part: Pass) -> dict[str, Any]:
        """The dry experiment file of one group's pass."""
        grid = self.grid
        cell = self._cell(group["dataset"][0], group["frontend"][0])
        seconds = float(data.short["clip_seconds"])
        overrides = {**grid.cell_overrides, **{f"dataset.{k}": v for k, v in data.short.items()},
                     **capped(cell["frontend"], FRONTEND_CAPS, "frontend."),
                     "train.epochs": min(EPOCHS, int(cell["train"]["epochs"]))}
        evaluation = dry_evaluation(asdict(grid.evaluation), round(seconds * int(cell["dataset"]["sample_rate"])))
        evaluation.update({k: min(evaluation[k], v) for k, v in part.off.items()})
        return {"name": grid.name, "train": grid.train, "seeds": group["seeds"],
                "grid": {**grid.axes, **{k: v for k, v in group.items() if k != "seeds"}, "defense": part.defenses,
                         "attack": part.attacks},
                "table_attacks": [a for a, info in grid.attack_info.items() if info.in_tables and a in part.attacks],
                "attack_overrides": {a: lowered(c, ATTACK_CAPS) for a, c in grid.attacks.items()
                                     if a in part.attacks},
                "evaluation": evaluation, "adaptive": lowered(asdict(grid.adaptive), ATTACK_CAPS),
                "overrides": overrides}

    def check(self, uri: str) -> list[str]:
        """What each group's store shows ran; raises :class:`MissingCells` naming the first cell that did not run
        (or attacked no clip), or a group without its transfer runs or UI view."""
        models = attacks = transfers = 0
        for index, (outputs, group) in enumerate(self.done):
            found = _finished(store_uri(outputs), self.name)
            got_models = {run_coords(r) for r in found.get("train", []) + found.get("defend", [])}
            got_attacks = {(*run_coords(r), r.data.tags.get("advaudio.attack"), r.data.tags.get("advaudio.mode", "")): r
                           for r in found.get("attack", [])}
            for dataset, frontend, victim, seed in itertools.product(group["dataset"], group["frontend"],
                                                                     group["victim"], group["seeds"]):
                pairs = self.cells(index)
                for defense in dict.fromkeys(d for d, _ in pairs):
                    cell = (dataset, frontend, victim, defense, str(seed if seed is not None else 0))
                    if cell not in got_models:
                        raise MissingCells(f"{' / '.join(cell[:4])} (seed {cell[4]}): no finished model run")
                    models += 1
                    for option in (a for d, a in pairs if d == defense):
                        for mode in self._modes(defense, option):
                            where = f"{' / '.join(cell[:4])} / {option}{f' ({mode})' if mode else ''} (seed {cell[4]})"
                            run = got_attacks.get((*cell, option, mode))
                            if run is None:
                                raise MissingCells(f"{where}: no finished attack run")
                            if run.data.metrics.get("base_size", 0) < 1:
                                raise MissingCells(f"{where}: the attack ran on no clip")
                            attacks += 1
            if self.grid.axes["attack"] and len(group["victim"]) * len(self.grid.axes["defense"]) > 1:
                if not found.get("transfer"):
                    raise MissingCells(f"{group['dataset'][0]} / {group['frontend'][0]}: no transfer run (no table "
                                       "attack crafted examples on two models)")
                transfers += len(found["transfer"])
        trained = sum(not is_transform(self.grid.defense_config(d)) for d in self.grid.axes["defense"])
        kind = "model columns covering every data set, front-end, victim and seed" if self.cover else \
            "(data set, front-end) groups, every victim and seed"
        return [f"{len(self.done)} {kind}: {models} models ({trained} of {len(self.grid.axes['defense'])} defenses "
                f"trained, the others wrapped), {attacks} attack runs (each on >= 1 clip), {transfers} transfer runs"]

    def report(self, uri: str, folder: Path) -> str:
        """Tables I-III rebuilt from each group's store (as ``advaudio report`` does)."""
        if not self.grid.axes["attack"]:
            return "no attacks: no tables"
        files = 0
        for outputs, _ in self.done:
            uri = store_uri(outputs)
            client = MlflowClient(uri)
            if VIEW_TAG not in client.get_experiment_by_name(self.name).tags:
                raise MissingCells(f"{outputs.name}: the MLflow UI view was not saved")
            data = collect(self.name, uri, n_boot=20)
            files += len(write_tables(data, outputs / "reports" / self.name))
            format_tables(data)
        return f"{files} table files over {len(self.done)} stores"

    def _modes(self, defense: str, attack: str) -> dict[str, dict[str, Any]]:
        """The modes (naive, adaptive) ``attack`` runs in against ``defense``."""
        return attack_modes(self.grid, attack, self.grid.attacks[attack], self.grid.defense_config(defense))

    def _cell(self, dataset: str, frontend: str) -> dict[str, Any]:
        return self.grid.cell_config(dataset, frontend, self.grid.axes["victim"][0], ORIGINAL)


def _label(dataset: str, frontend: str, victim: str) -> str:
    return f"{dataset} / {frontend} / {victim}"


def store_uri(outputs: Path) -> str:
    """The dry run's own SQLite store under ``outputs`` (never the user's ``MLFLOW_TRACKING_URI``)."""
    outputs.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(outputs / 'mlflow.db').resolve()}"


def _finished(uri: str, name: str) -> dict[str, list[Any]]:
    """Finished runs of experiment ``name`` in the store at ``uri`` (and transfer runs), by ``advaudio.kind``."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    out: dict[str, list[Any]] = {}
    for run in iter_runs(exp.experiment_id, client=client) if exp is not None else []:
        kind = run.data.tags.get("advaudio.kind", "")
        if is_finished(run) or kind == "transfer":
            out.setdefault(kind, []).append(run)
    return out


def _pruning(progress: Progress, outputs: Path) -> Progress:
    """``progress``, deleting the checkpoints of each model once it is trained: the dry run never resumes, and a
    VGG-16's training checkpoint alone holds 2 GB (weights, Adam's moments, the best weights)."""

    def tick(message: str, advance: bool = True) -> None:
        if advance and message.startswith("trained "):
            shutil.rmtree(outputs / "checkpoints", ignore_errors=True)
        progress(message, advance)

    return tick


def _train_only(grid: Grid, outputs: Path, progress: Progress) -> None:
    """Train every model of an attack-less grid, as ``advaudio train`` trains a single-model experiment."""
    from defense.pipeline import train_from_config
    from evaluation.tracking import tags

    for dataset, frontend, victim, defense, seed in grid.cells():
        progress(f"training {frontend}/{victim}/seed{seed}/{defense}", advance=False)
        coordinates = tags(dataset=dataset, frontend=frontend, victim=victim, defense=defense,
                           seed=seed if seed is not None else 0)
        train_from_config(grid.cell_config(dataset, frontend, victim, defense, seed), experiment=grid.name,
                          tracking_uri=store_uri(outputs), outputs=outputs, extra_tags=coordinates)
        progress(f"trained {frontend}/{victim}/seed{seed}/{defense}")
