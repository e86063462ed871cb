"""The dry run of the leaderboard study: its backbones, the threat models' attacks, and the runs it must leave.

A threat model fixes its clips and protocol, so the dry run cannot shrink them through overrides: it writes a dry
copy of each threat model (same name; the data set's stand-in and short clips; ten clips, two budgets, ε* to 50 %,
few resamples and certification draws; every attack's counts lowered as :mod:`defense.dryrun_shrink` lowers them)
into the throw-away folder and runs the study on those files.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import yaml

from defense.config import load_option, read_yaml
from defense.dryrun_data import DryData, key_of
from defense.dryrun_grid import Model, store_uri
from defense.dryrun_shrink import ATTACK_CAPS, EPOCHS, EVAL_CAPS, EVAL_FLOORS, FRONTEND_CAPS, capped, lowered
from experiments.dryrun import StudyDry
from experiments.leaderboard.config import load_study
from experiments.leaderboard.report import ENTRY_KIND, report
from experiments.leaderboard.run import run
from leaderboard.threat_model import GROUP

DRY_CLIPS = 10
"""Clips of a dry threat model: a model trained for one epoch is right on some of them, so the attacks run."""


class LeaderboardDry(StudyDry, load=load_study, run=run, report=report):
    """The dry run of the leaderboard study."""

    def models(self) -> list[Model]:
        seen: dict[str, Model] = {}
        for model in self.study.models.values():
            cfg = model.config
            seen.setdefault(model.backbone, (f"{cfg['dataset']['name']} / {cfg['frontend']['name']} / "
                                             f"{cfg['victim']['backbone']} ({model.backbone})", cfg["dataset"],
                                             cfg["frontend"], cfg["victim"]))
        return list(seen.values())

    def attacks(self) -> dict[str, dict[str, Any]]:
        return {f"{tm.name}.{name}": {k: v for k, v in cfg.items() if k != "name"}
                for tm in self.study.threat_models.values() for name, cfg in tm.attacks.items()}

    def dry_overrides(self, data: dict[str, DryData]) -> dict[str, Any]:
        out: dict[str, Any] = {"train.epochs": EPOCHS}
        for model in self.study.models.values():
            out.update(capped(model.config["frontend"], FRONTEND_CAPS, f"backbones.{model.backbone}.frontend."))
        return out

    def run(self, data: dict[str, DryData], folder: Path, progress: Callable[..., None]) -> None:
        short = data[key_of(self.datasets()[0])].short
        paths = [str(self.dry_threat_model(source, short, folder / "threat_models"))
                 for source in self.study.threat_model_sources.values()]
        self.run_study(self.raw, {**self.overrides, **self.dry_overrides(data), "threat_models": paths},
                       tracking_uri=store_uri(folder / "outputs"), outputs=folder / "outputs", progress=progress)

    @staticmethod
    def dry_threat_model(source: str, short: dict[str, Any], folder: Path) -> Path:
        """Write the dry copy of threat model ``source`` (an option or a YAML file) into ``folder``."""
        raw = read_yaml(Path(source)) if Path(source).suffix in (".yaml", ".yml") else \
            copy.deepcopy(load_option(GROUP, source))
        raw["dataset"]["overrides"] = {**(raw["dataset"].get("overrides") or {}), **short}
        protocol = lowered(raw["protocol"], {**EVAL_CAPS, "n_clips": DRY_CLIPS, "batch_size": DRY_CLIPS})
        protocol["eps_rtol"] = max(float(protocol["eps_rtol"]), EVAL_FLOORS["eps_rtol"])
        protocol["adaptive"] = lowered(protocol["adaptive"], ATTACK_CAPS)
        for attack in protocol["attacks"]:
            resolved = {**load_option("attack", str(attack["option"])), **(attack.get("overrides") or {})}
            attack["overrides"] = {**(attack.get("overrides") or {}), **capped(resolved, ATTACK_CAPS, "")}
        raw["protocol"] = protocol
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{raw['name']}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def expected(self) -> dict[str, tuple[int, str | None]]:
        models = len(self.study.models)
        return {"train": (models, None), ENTRY_KIND: (models * len(self.study.threat_models), "n_clips")}
