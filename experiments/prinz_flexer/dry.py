"""The dry run of the Prinz & Flexer study: its one model, its attack rows, and the runs it must leave."""
from __future__ import annotations

from typing import Any

from defense.dryrun_grid import Model
from defense.dryrun_shrink import FRONTEND_CAPS, capped
from experiments.dryrun import StudyDry
from experiments.prinz_flexer.config import load_study
from experiments.prinz_flexer.report import report
from experiments.prinz_flexer.run import run


class PrinzFlexerDry(StudyDry, load=load_study, run=run, report=report):
    """The dry run of Prinz & Flexer's study."""

    def models(self) -> list[Model]:
        cfg = self.study.train_cfg
        return [(f"{cfg['dataset']['name']} / {cfg['frontend']['name']} / {cfg['victim']['backbone']}",
                 cfg["dataset"], cfg["frontend"], cfg["victim"])]

    def attacks(self) -> dict[str, dict[str, Any]]:
        return {name: spec.kwargs for name, spec in self.study.attacks.items()}

    def own_overrides(self) -> dict[str, Any]:
        return capped(self.study.train_cfg["frontend"], FRONTEND_CAPS, "frontend.")

    def expected(self) -> dict[str, tuple[int, str | None]]:
        return {"train": (1, None), "clean": (1, None), "attack": (len(self.study.attacks), "attempts")}
