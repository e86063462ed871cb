"""The dry run of the Subramanian et al. study: its models, its attacks, and the runs it must leave."""
from __future__ import annotations

from typing import Any

from defense.dryrun_grid import Model
from defense.dryrun_shrink import FRONTEND_CAPS, capped
from experiments.dryrun import StudyDry
from experiments.subramanian.config import load_study
from experiments.subramanian.report import report
from experiments.subramanian.run import run


class SubramanianDry(StudyDry, load=load_study, run=run, report=report):
    """The dry run of Subramanian et al.'s study."""

    def models(self) -> list[Model]:
        return [(f"{cfg['dataset']['name']} / {cfg['frontend']['name']} / {cfg['victim']['backbone']} ({name})",
                 cfg["dataset"], cfg["frontend"], cfg["victim"]) for name, cfg in self.study.models.items()]

    def attacks(self) -> dict[str, dict[str, Any]]:
        return {label: {k: v for k, v in cfg.items() if k != "name"} for label, cfg in self.study.attacks.items()}

    def own_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, cfg in self.study.models.items():
            out.update(capped(cfg["frontend"], FRONTEND_CAPS, f"models.{name}.frontend."))
        return out

    def expected(self) -> dict[str, tuple[int, str | None]]:
        models, attacks = len(self.study.models), len(self.study.attacks)
        return {"train": (models, None), "attack": (models * attacks, "base_size"),
                "transfer": (len(self.study.transfer), None)}
